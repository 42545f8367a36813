"""`fastgen eval CKPT` and the training-time evaluator (``make_evaluator``).

    fastgen eval runs/dcgan/checkpoints/ckpt_002000.pt --metrics fid,kid,is,pr,coverage \
        --n 10000 [--extractor digits|inception] [--data digits] [--out eval.json]

Generates n images with the checkpoint's EMA generator (a VAE: decoded prior samples), streams
them and the real images through the feature extractor, prints a table and writes a JSON
(metrics, settings, checkpoint hash). For a VAE checkpoint the metric "nll" adds the ELBO,
the k-sample importance-weighted NLL bound and bits/dim on the held-out split.
Reference ("real") images: the checkpoint's dataset (``--data`` overrides it), split
``--split`` (default "train", the set the generator was trained to match).

The table and the JSON name the extractor: numbers from the digits classifier are not
Inception numbers and are comparable only with other digits-classifier runs. The digits
classifier is refused for data that is not single-channel (it would grade RGB photographs
by how much they look like handwritten digits), and warned about on single-channel data
other than fastgen's "digits". Images are quantised to 8-bit levels before extraction, as
the reference implementations measure saved PNGs (``--no-quantize`` feeds the floats).
KID is printed x 10^-3 (the JSON keeps the plain value); the JSON records the KID subset
size actually used, which is smaller than ``--kid-subset-size`` when there are fewer rows.
"""

from __future__ import annotations

import argparse
import datetime
import json
import math
import warnings
from collections.abc import Callable
from pathlib import Path

import torch
from torch import nn

from fastgen.metrics.evaluate import IS_SPLITS, METRICS, check_metrics, compute_metrics
from fastgen.metrics.features import (
    FeatureAccumulator,
    FeatureExtractor,
    ImageSource,
    stream_features,
)
from fastgen.metrics.inception_score import check_sample_count
from fastgen.utils.devices import resolve_device

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


def split_metrics(metrics) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """(sample metrics, VAE likelihood metrics) from "fid,kid,nll" or a list."""
    names = [
        m.strip().lower() for m in (metrics.split(",") if isinstance(metrics, str) else metrics)
    ]
    names = [m for m in names if m]
    unknown = [m for m in names if m not in METRICS + VAE_METRICS]
    if unknown or not names:
        raise ValueError(
            f"fastgen eval: --metrics expected names from {','.join(METRICS + VAE_METRICS)}, "
            f"got {','.join(unknown) if unknown else 'nothing'}"
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
        if hasattr(model, "encode"):  # a VAE: decode prior samples
            images = model.to_image(model.decode(z))
        else:
            classes = getattr(model, "num_classes", 0)
            labels = (torch.arange(drawn, drawn + batch) % classes).to(device) if classes else None
            images = model(z, labels)
        drawn += batch
        return images.float().clamp(-1, 1)

    return sample


def _sampled_model(models: dict[str, nn.Module]) -> nn.Module:
    for name in ("ema", "generator", "vae"):
        if name in models:
            return models[name]
    raise ValueError(
        f"fastgen eval: expected models 'ema', 'generator' or 'vae', got {sorted(models)}"
    )


def _load_real(data: str, resolution: int, channels: int | None, split: str) -> ImageSource:
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
    **metric_options,
) -> dict:
    """The metrics of a model dict ({"ema", ...} or {"vae"}) against real images (a tensor or
    a dataset) or their streamed features."""
    device = torch.device(device)
    sample_metrics, vae_metrics_wanted = split_metrics(metrics)
    results: dict = {}
    if sample_metrics:
        check_metrics(sample_metrics, extractor, fn="evaluate_models")
        if "is" in sample_metrics:
            check_sample_count(n, IS_SPLITS, "fastgen.metrics.evaluate_models", "n")
        model = _sampled_model(models)
        was_training = model.training
        model.eval()
        try:
            stream = dict(
                batch_size=batch_size, device=device, sample_size=sample_size, seed=seed,
                num_splits=IS_SPLITS, quantize=quantize,
            )  # fmt: skip
            if real is not None and not isinstance(real, FeatureAccumulator):
                real = stream_features(extractor, real, n=len(real), **stream)
            fake = stream_features(
                extractor, generator_sampler(model, device=device, seed=seed), n=n, **stream
            )
        finally:
            model.train(was_training)
        results.update(compute_metrics(real, fake, sample_metrics, seed=seed, **metric_options))
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
    batch_size: int = 250,
    seed: int = 0,
    **options,
) -> Callable[[int, dict[str, nn.Module]], dict[str, float]]:
    """The ``evaluator(step, models) -> {name: float}`` that train_gan/train_vae call.

    dataset: the training ImageDataset (its images are the reference set; their features are
    computed once, at the first call). config: the training config (device, data,
    resolution). Metrics: as ``fastgen eval``; "nll" (VAE) uses the dataset's "test" split when
    it can be loaded, else the dataset itself. The models dict is left in the mode it came in.
    """
    if dataset is None:
        raise ValueError(
            "fastgen.metrics.make_evaluator: dataset expected the training ImageDataset, got None"
        )
    # Fail at start-up, not at the first evaluation (after training ran for a while).
    sample_metrics, _ = split_metrics(metrics)
    if "is" in sample_metrics:
        check_sample_count(n, IS_SPLITS, "fastgen.metrics.make_evaluator", "n (--eval-n)")
    chosen = make_extractor(extractor) if isinstance(extractor, str) else extractor
    if sample_metrics:
        check_extractor_fits(
            chosen, channels=dataset.channels, data=getattr(dataset, "name", "") or "the dataset",
            fn="fastgen.metrics.make_evaluator", option="--eval-extractor",
        )  # fmt: skip
    device = resolve_device(device or getattr(config, "device", None), "fastgen eval")
    quantize = options.pop("quantize", True)
    cache: dict = {}

    def evaluator(step: int, models: dict[str, nn.Module]) -> dict[str, float]:
        sample_metrics, nll = split_metrics(metrics)
        if sample_metrics and "real" not in cache:
            cache["real"] = stream_features(
                chosen,
                dataset,
                n=len(dataset),
                batch_size=batch_size,
                device=device,
                seed=seed,
                num_splits=IS_SPLITS,
                quantize=quantize,
            )
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
            **options,
        )
        return {k: float(v) for k, v in results.items() if isinstance(v, int | float)}

    evaluator.extractor = describe_extractor(chosen)  # logged beside the numbers
    return evaluator


def _held_out_images(dataset, config) -> torch.Tensor:
    data = getattr(config, "data", None)
    if data:
        try:
            return _load_real(data, dataset.resolution, dataset.channels, "test").images
        except (ValueError, OSError):
            pass
    return dataset.images


# --- the command ----------------------------------------------------------------------------


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("checkpoint", metavar="CKPT", help="a checkpoint written by fastgen train")
    parser.add_argument(
        "--metrics",
        default=None,
        help=f"comma-separated, from {','.join(METRICS + VAE_METRICS)} "
        "(default: fid,kid,is,pr,coverage; a VAE adds nll)",
    )
    parser.add_argument("--n", type=int, default=10_000, help="generated images (default 10000)")
    parser.add_argument(
        "--extractor",
        choices=EXTRACTORS,
        default="digits",
        help="digits (shipped; single-channel digit data only) or inception (local weights)",
    )
    parser.add_argument(
        "--inception-weights",
        default=None,
        help="local Inception-v3 state_dict (else $FASTGEN_INCEPTION_WEIGHTS); never downloaded",
    )
    parser.add_argument("--data", default=None, help="reference images (default: the checkpoint's)")
    parser.add_argument("--split", default="train", choices=("train", "test", "all"))
    parser.add_argument("--batch-size", type=int, default=250)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--sample-size", type=int, default=10_000,
                        help="feature rows kept per set for KID and precision/recall")  # fmt: skip
    parser.add_argument("--kid-subsets", type=int, default=100)
    parser.add_argument("--kid-subset-size", type=int, default=1000)
    parser.add_argument("--pr-k", type=int, default=3, help="k of the k-NN manifolds")
    parser.add_argument("--iw-samples", type=int, default=64, help="k of the IWAE bound (nll)")
    parser.add_argument(
        "--no-quantize",
        dest="quantize",
        action="store_false",
        help="feed generated images as floats (default: rounded to 8-bit levels, as PNGs)",
    )
    parser.add_argument("--out", default=None, help="JSON to write (default: CKPT with .eval.json)")


KID_KEYS = ("kid", "kid_std", "kid_std_error")


def format_table(results: dict) -> str:
    width = max(len(k) for k in results)
    lines = []
    for key, value in results.items():
        if isinstance(value, float) and key in KID_KEYS and math.isfinite(value):
            text = f"{value * 1e3:.6g} x 10^-3"  # the scale papers print KID at
        elif isinstance(value, float):
            text = f"{value:.6g}" if math.isfinite(value) else str(value)
        else:
            text = json.dumps(value) if isinstance(value, list) else str(value)
        lines.append(f"{key:<{width}}  {text}")
    return "\n".join(lines)


def _write_json(path: Path, payload: dict) -> None:
    from fastgen.train.checkpoint import atomic_write

    text = json.dumps(payload, indent=2) + "\n"
    atomic_write(path, lambda handle: handle.write(text.encode()), fn="fastgen eval")


def run(args: argparse.Namespace) -> int:
    from fastgen.train.checkpoint import checkpoint_file, checkpoint_hash, load_models

    args.checkpoint = checkpoint_file(args.checkpoint)
    if args.n < 2:
        raise ValueError(f"fastgen eval: --n expected >= 2, got {args.n}")
    device = resolve_device(args.device, "fastgen eval")
    config, models = load_models(args.checkpoint, device=device)
    is_vae = "vae" in models
    metrics = args.metrics or ("fid,kid,is,pr,coverage" + (",nll" if is_vae else ""))
    sample_metrics, nll = split_metrics(metrics)
    if "is" in sample_metrics:
        check_sample_count(args.n, IS_SPLITS, "fastgen eval", "--n")
    extractor = (
        make_extractor(args.extractor, inception_weights=args.inception_weights)
        if sample_metrics
        else None
    )
    data = args.data or config.data
    model = _sampled_model(models)
    resolution, channels = model.resolution, model.channels
    if extractor is not None:
        check_extractor_fits(
            extractor, channels=channels, data=data, fn="fastgen eval", option="--extractor"
        )
    real = _load_real(data, resolution, channels, args.split) if sample_metrics else None
    held_out = _load_real(data, resolution, channels, "test").images if nll else None
    results = evaluate_models(
        models,
        real=real,
        held_out=held_out,
        metrics=metrics,
        extractor=extractor,
        n=args.n,
        batch_size=args.batch_size,
        device=device,
        seed=args.seed,
        sample_size=args.sample_size,
        iw_samples=args.iw_samples,
        kid_subsets=args.kid_subsets,
        kid_subset_size=args.kid_subset_size,
        pr_k=args.pr_k,
        quantize=args.quantize,
    )
    if extractor is not None:
        results = {"extractor": describe_extractor(extractor), **results}
    payload = {
        "checkpoint": str(args.checkpoint),
        "checkpoint_hash": checkpoint_hash(args.checkpoint),
        "model": "vae" if is_vae else "dcgan (ema generator)",
        "metrics": results,
        "settings": {
            "metrics": metrics,
            "n": args.n,
            "extractor": args.extractor if extractor is not None else None,
            "quantize": args.quantize if extractor is not None else None,
            "data": data,
            "split": args.split,
            "real_images": None if real is None else len(real),
            "seed": args.seed,
            "device": str(device),
            "kid_subsets": args.kid_subsets,
            # the size used (smaller than requested when there were fewer feature rows)
            "kid_subset_size": results.get("kid_subset_size", args.kid_subset_size),
            "kid_subset_size_requested": args.kid_subset_size,
            "pr_k": args.pr_k,
            "iw_samples": args.iw_samples if nll else None,
        },
        "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "torch": torch.__version__,
    }
    out = Path(args.out) if args.out else Path(args.checkpoint).with_suffix(".eval.json")
    _write_json(out, payload)
    print(format_table(results))
    print(f"wrote {out}")
    return 0
