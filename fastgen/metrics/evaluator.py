"""Evaluating a model dict: the metrics of `fastgen eval` and the training-time evaluator.

``evaluate_models(models, real=..., extractor=...)`` generates n images with the model to
sample (fastgen.models.loading.sampled_model: the EMA generator, else the generator, else
the VAE, through its ``generate``), streams them and the real images through the feature
extractor and computes the metrics; "nll" adds a VAE's likelihood bounds on held-out images.
``make_evaluator`` wraps it as the ``evaluator(step, models)`` that train_gan/train_vae call.
fastgen.metrics.cli is the command around it.

The digits classifier is refused for data that is not single-channel (it would grade RGB
photographs by how much they look like handwritten digits), and warned about on
single-channel data other than fastgen's "digits" (``check_extractor_fits``).
"""

from __future__ import annotations

import warnings
from collections.abc import Callable

import torch
from torch import nn

from fastgen.metrics.evaluate import (
    IS_SPLITS,
    METRICS,
    check_c2st_input,
    check_metrics,
    compute_metrics,
    pixel_sample_size,
)
from fastgen.metrics.features import (
    FeatureAccumulator,
    FeatureExtractor,
    ImageSource,
    stream_features,
)
from fastgen.metrics.inception_score import check_sample_count
from fastgen.models.loading import sampled_model
from fastgen.utils.checks import check_int
from fastgen.utils.devices import resolve_device
from fastgen.utils.errors import ArgumentError

VAE_METRICS = ("nll",)
EXTRACTORS = ("digits", "inception")


def make_extractor(
    name: str = "digits", *, inception_weights: str | None = None
) -> FeatureExtractor:
    """ "digits" (the shipped classifier) or "inception" (local, checksum-verified weights)."""
    if name == "digits":
        from fastgen.metrics.digits_classifier import DigitsExtractor

        return DigitsExtractor()
    if name == "inception":
        from fastgen.metrics.inception import InceptionExtractor

        return InceptionExtractor(inception_weights)
    raise ValueError(
        f"fastgen eval: --extractor expected one of {', '.join(EXTRACTORS)}, got {name!r}"
    )


def describe_extractor(extractor: FeatureExtractor) -> str:
    """What the numbers were measured with, for the table and the JSON."""
    if extractor.name == "digits":
        return "digits (fastgen's digits classifier; not comparable with Inception numbers)"
    if extractor.name == "inception":
        variant = getattr(getattr(extractor, "network", None), "variant", "")
        if variant == "fid":
            return "inception (pytorch-fid's Inception-v3 weights)"
        return "inception (torchvision's ImageNet weights; not comparable with published FIDs)"
    return extractor.name


def check_extractor_fits(
    extractor: FeatureExtractor, *, channels: int, data: str, fn: str, option: str
) -> None:
    """Refuses the digits classifier on data that is not single-channel, and warns when it
    meets single-channel data other than fastgen's digits: its features mean something only
    for handwritten digits."""
    if extractor.name != "digits":
        return
    if channels != 1:
        raise ValueError(
            f"{fn}: the digits extractor is a classifier of single-channel handwritten digits, "
            f"but the images of {data!r} have {channels} channels: its FID/KID/IS would not measure "
            f"image quality; use {option} inception (local Inception-v3 weights)"
        )
    if data != "digits":
        warnings.warn(
            f"{fn}: the digits extractor was trained on fastgen's 'digits' only; on {data!r} its "
            f"numbers compare runs on that data with each other, nothing more ({option} "
            "inception for Inception features)",
            stacklevel=2,
        )


def split_metrics(
    metrics, fn: str = "fastgen.metrics.split_metrics"
) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """(sample metrics, VAE likelihood metrics) from "fid,kid,nll" or a list; an
    ArgumentError for the argument `metrics` of `fn` names the unknown ones."""
    names = [
        m.strip().lower() for m in (metrics.split(",") if isinstance(metrics, str) else metrics)
    ]
    names = [m for m in names if m]
    unknown = [m for m in names if m not in METRICS + VAE_METRICS]
    if unknown or not names:
        raise ArgumentError(
            fn,
            "metrics",
            f"expected names from {','.join(METRICS + VAE_METRICS)}, "
            f"got {','.join(unknown) if unknown else 'nothing'}",
        )
    return tuple(m for m in names if m in METRICS), tuple(m for m in names if m in VAE_METRICS)


def generator_sampler(
    model: nn.Module, *, device: torch.device, seed: int = 0
) -> Callable[[int], torch.Tensor]:
    """sample(batch) -> images in [-1, 1] from a DCGAN generator (z ~ N(0, I), a conditional
    one cycling its labels 0..K-1 so every class is asked for equally) or a VAE (prior)."""
    generator = torch.Generator().manual_seed(seed)
    drawn = 0

    @torch.no_grad()
    def sample(batch: int) -> torch.Tensor:
        nonlocal drawn
        z = torch.randn(batch, model.latent_dim, generator=generator).to(device)
        classes = getattr(model, "num_classes", 0)  # a VAE has none
        labels = (torch.arange(drawn, drawn + batch) % classes).to(device) if classes else None
        images = model.generate(z, labels)
        drawn += batch
        return images.float().clamp(-1, 1)

    return sample


def load_real(data: str, resolution: int, channels: int | None, split: str) -> ImageSource:
    """The reference images: split `split` of dataset `data` at the model's size."""
    from fastgen.data import load_dataset

    return load_dataset(data, resolution=resolution, channels=channels, split=split)


def evaluate_models(
    models: dict[str, nn.Module],
    *,
    real: ImageSource | FeatureAccumulator | None,
    held_out: torch.Tensor | None = None,
    metrics="fid,kid,is,pr,coverage",
    extractor: FeatureExtractor,
    n: int = 10_000,
    batch_size: int = 250,
    device: torch.device | str = "cpu",
    seed: int = 0,
    sample_size: int = 10_000,
    iw_samples: int = 64,
    quantize: bool = True,
    c2st_input: str = "features",
    **metric_options,
) -> dict:
    """The metrics of a model dict ({"ema", ...} or {"vae"}) against real images (a tensor or
    a dataset) or their streamed features. The generator runs in eval mode without autograd,
    in batches of `batch_size`; c2st_input: "features" or "pixels" (see compute_metrics)."""
    device = torch.device(device)
    sample_metrics, vae_metrics_wanted = split_metrics(metrics, "fastgen.metrics.evaluate_models")
    check_c2st_input(c2st_input, "fastgen.metrics.evaluate_models")
    results: dict = {}
    if sample_metrics:
        check_metrics(sample_metrics, extractor, fn="evaluate_models")
        if "is" in sample_metrics:
            check_sample_count(n, IS_SPLITS, "fastgen.metrics.evaluate_models", "n")
        _, model = sampled_model(models, fn="fastgen eval")
        was_training = model.training
        model.eval()
        try:
            stream = dict(
                batch_size=batch_size, device=device, sample_size=sample_size, seed=seed,
                num_splits=IS_SPLITS, quantize=quantize,
                pixel_sample_size=pixel_sample_size(sample_metrics, c2st_input),
            )  # fmt: skip
            if real is not None and not isinstance(real, FeatureAccumulator):
                real = stream_features(extractor, real, n=len(real), **stream)
            fake = stream_features(
                extractor, generator_sampler(model, device=device, seed=seed), n=n, **stream
            )
        finally:
            model.train(was_training)
        results.update(
            compute_metrics(
                real, fake, sample_metrics, seed=seed, c2st_input=c2st_input, **metric_options
            )
        )
    if vae_metrics_wanted:
        if "vae" not in models:
            raise ValueError("fastgen eval: metric nll needs a VAE checkpoint")
        if held_out is None:
            raise ValueError("fastgen eval: metric nll needs held-out images")
        from fastgen.metrics.vae import vae_metrics

        nll = vae_metrics(models["vae"], held_out, k=iw_samples, n=n, device=device, seed=seed)
        results.update(
            {f"vae_{key}" if key in ("n", "k") else key: value for key, value in nll.items()}
        )
    return results


def make_evaluator(
    *,
    dataset=None,
    metrics="fid,kid",
    n: int = 1000,
    config=None,
    extractor: str | FeatureExtractor = "digits",
    device: str | None = None,
    batch_size: int = 500,
    seed: int = 0,
    c2st_input: str = "features",
    cache_dir=None,
    **options,
) -> Callable[[int, dict[str, nn.Module]], dict[str, float]]:
    """The ``evaluator(step, models) -> {name: float}`` that train_gan/train_vae call.

    dataset: the training ImageDataset (its images are the reference set; their features are
    computed once, at the first call). config: the training config (device, data,
    resolution). Metrics: as ``fastgen eval``; "nll" (VAE) uses the dataset's "test" split when
    it can be loaded, else the dataset itself. c2st_input: what the C2ST classifies, the
    extractor's "features" or the "pixels". cache_dir: the run folder, where the real set's
    features are kept (real_features.pt, fastgen.metrics.cache) for later evaluations and a
    resumed run; None keeps them in memory only. The generator is sampled in eval mode without
    autograd, `batch_size` images at a time; the models dict is left in the mode it came in.
    """
    if dataset is None:
        raise ValueError(
            "fastgen.metrics.make_evaluator: dataset expected the training ImageDataset, got None"
        )
    # Fail at start-up, not at the first evaluation (after training ran for a while).
    fn = "fastgen.metrics.make_evaluator"
    sample_metrics, _ = split_metrics(metrics, fn)
    check_int(fn, "n", n, minimum=2)  # statistics need two feature vectors
    check_c2st_input(c2st_input, fn)
    if "is" in sample_metrics:
        check_sample_count(n, IS_SPLITS, fn, "n")
    chosen = make_extractor(extractor) if isinstance(extractor, str) else extractor
    if sample_metrics:
        check_extractor_fits(
            chosen, channels=dataset.channels, data=getattr(dataset, "name", "") or "the dataset",
            fn="fastgen.metrics.make_evaluator", option="--eval-extractor",
        )  # fmt: skip
    device = resolve_device(device or getattr(config, "device", None), "fastgen eval")
    quantize = options.pop("quantize", True)
    cache: dict = {}

    def real_features():
        stream = dict(
            n=len(dataset), batch_size=batch_size, device=device, seed=seed,
            num_splits=IS_SPLITS, quantize=quantize,
            pixel_sample_size=pixel_sample_size(sample_metrics, c2st_input),
            sample_size=options.get("sample_size", 10_000),
        )  # fmt: skip
        key = real_cache_key(dataset, chosen, stream) if cache_dir is not None else None
        if key is not None:
            from fastgen.metrics.cache import load_cached

            cached = load_cached(cache_dir, key)
            if cached is not None:
                return cached
        real = stream_features(chosen, dataset, **stream)
        if key is not None:
            from fastgen.metrics.cache import accumulator_from_state, accumulator_state, save_cached

            save_cached(cache_dir, key, real)
            # what later evaluations and a resumed run read is the saved state: the same
            # numbers either way, to the bit
            real = accumulator_from_state(accumulator_state(real))
        return real

    def evaluator(step: int, models: dict[str, nn.Module]) -> dict[str, float]:
        sample_metrics, nll = split_metrics(metrics)
        if sample_metrics and "real" not in cache:
            cache["real"] = real_features()
        if nll and "held_out" not in cache:
            cache["held_out"] = _held_out_images(dataset, config)
        results = evaluate_models(
            models,
            real=cache.get("real"),
            held_out=cache.get("held_out"),
            metrics=metrics,
            extractor=chosen,
            n=n,
            batch_size=batch_size,
            device=device,
            seed=seed,
            quantize=quantize,
            c2st_input=c2st_input,
            **options,
        )
        return {k: float(v) for k, v in results.items() if isinstance(v, int | float)}

    evaluator.extractor = describe_extractor(chosen)  # logged beside the numbers
    return evaluator


def real_cache_key(dataset, extractor: FeatureExtractor, stream: dict) -> dict | None:
    """What the real set's features depend on (fastgen.metrics.cache); None when the dataset
    exposes no image tensor to name it by (then nothing is cached on disk)."""
    from fastgen.metrics.cache import data_key, extractor_key

    data = data_key(dataset)
    if data is None:
        return None
    # batch boundaries and the device change the float64 moments' last bits: part of the key
    settings = {k: str(v) if k == "device" else v for k, v in stream.items()}
    return {"data": data, "extractor": extractor_key(extractor), **settings}


def _held_out_images(dataset, config) -> torch.Tensor:
    data = getattr(config, "data", None)
    if data:
        try:
            return load_real(data, dataset.resolution, dataset.channels, "test").images
        except (ValueError, OSError):
            pass
    return dataset.images
