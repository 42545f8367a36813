"""Making an image again from its marks and a checkpoint: the strong check of where it came from.

The marks record what `fastgen sample` and the training loop's sample grids did (the fields
of fastgen.provenance.record); ``regenerate`` does it again with the checkpoint given and
returns the pixels the file should hold. On the same device kind (the ``device`` field:
CPU kernel copy, or GPU model) under the recorded CPU convolution policy the computation is
the same, so the pixels are the same bit for bit. A VAE's reconstruction grid needs the run's
training images, which no checkpoint holds, and cannot be made again.
"""

from __future__ import annotations

import math
import os

import numpy as np
import torch

from fastgen.provenance.record import device_kind, fields_text, file_sha256


class NotRegenerable(ValueError):
    """The marks do not say enough to make the image again (the message says what is missing)."""


def sample_fields(
    loaded,
    *,
    seed: int,
    n: int,
    nrow: int,
    class_label,
    interpolation_steps: int,
    device,
    conv_cpu: str,
) -> dict[str, str]:
    """The marks of a `fastgen sample` grid from `loaded` (fastgen.models.loading.LoadedModel)
    with these sampling arguments (see fastgen.provenance.record.FIELDS)."""  # fmt: skip
    return fields_text(
        {
            "source": "fastgen sample",
            "image": "interpolation" if interpolation_steps else "grid",
            "kind": loaded.kind,
            "weights": loaded.name,
            "checkpoint_sha256": file_sha256(loaded.path),
            "run_id": loaded.run_id,
            "step": loaded.step,
            "seed": seed,
            "n": n,
            "nrow": nrow,
            "class_label": class_label,
            "interpolation_steps": interpolation_steps or None,
            "device": device_kind(device),
            "conv_cpu": conv_cpu,
        }
    )


def train_grid_fields(config, run_id, step: int, name: str, nrow, count: int, device, conv_cpu):
    """The marks of a training run's sample grid samples/<name> (step_*.png: the fixed noise
    through the EMA generator or the VAE's decoder; recon_*.png: inputs and reconstructions)."""
    recon = name.startswith("recon_")
    nrow = nrow or math.ceil(math.sqrt(count))  # make_grid's default, recorded as it ran
    return fields_text(
        {
            "source": "fastgen train",
            "image": "train_reconstructions" if recon else "train_samples",
            "kind": config.kind,
            "weights": "vae" if config.kind == "vae" else "ema",
            "run_id": run_id,
            "step": step,
            "seed": config.seed,
            "n": count,
            "nrow": nrow,
            "device": device_kind(device),
            "conv_cpu": conv_cpu,
        }
    )


def _int(marks: dict, name: str, default=None) -> int | None:
    value = marks.get(name)
    if value is None:
        if default is not None:
            return default
        raise NotRegenerable(f"the marks have no {name!r}")
    try:
        return int(value)
    except ValueError:
        raise NotRegenerable(f"the marks' {name!r} is not an integer: {value!r}") from None


@torch.no_grad()
def regenerate(marks: dict, checkpoint: str | os.PathLike, device="cpu") -> np.ndarray:
    """The uint8 pixels [H, W, C] of the image that `marks` describe, computed again from
    `checkpoint` on `device`. Raises NotRegenerable when the marks do not describe a
    computation fastgen can repeat, and CheckpointError for a checkpoint it cannot read."""
    from fastgen.provenance.record import CONV_POLICY_ENV, reproducible_convolutions
    from fastgen.utils.images import grid_pixels

    source, image = marks.get("source"), marks.get("image")
    policy = marks.get("conv_cpu", "fixed")
    if policy not in CONV_POLICY_ENV:
        raise NotRegenerable(f"unknown CPU convolution policy {policy!r} in the marks")
    with reproducible_convolutions(policy):
        if source == "fastgen sample":
            images = _sample(marks, checkpoint, device)
        elif source == "fastgen train" and image == "train_samples":
            images = _train_samples(marks, checkpoint, device)
        elif image == "train_reconstructions":
            raise NotRegenerable("a reconstruction grid needs the run's training images")
        else:
            raise NotRegenerable(f"the marks name no source fastgen can repeat ({source!r})")
    if image == "single":
        index = _int(marks, "index")
        if not 0 <= index < len(images):
            raise NotRegenerable(f"index {index} is outside the {len(images)} images sampled")
        return grid_pixels(images[index : index + 1], padding=0)
    return grid_pixels(images, _int(marks, "nrow"))


def _sample(marks: dict, checkpoint, device) -> torch.Tensor:
    from fastgen.models.loading import load_model
    from fastgen.sample import draw

    loaded = load_model(checkpoint, device=device)
    weights = marks.get("weights", loaded.name)
    if weights not in loaded.models:
        raise NotRegenerable(f"the checkpoint has no {weights!r} weights")
    label = marks.get("class_label")
    return draw(
        loaded.kind, loaded.models[weights], _int(marks, "n"), seed=_int(marks, "seed"),
        class_label=None if label is None else int(label),
        interpolation_steps=_int(marks, "interpolation_steps", 0),
    )  # fmt: skip


def _train_samples(marks: dict, checkpoint, device) -> torch.Tensor:
    """A run's sample grid: the fixed noise of fastgen.train.task.fixed_noise through the EMA
    generator (with the classes in turn, if conditional) or the VAE's decoder, as the tasks'
    sample_grids draw it."""
    from fastgen.models.loading import load_models
    from fastgen.train.task import fixed_noise

    config, models = load_models(checkpoint, device)
    device = torch.device(device)
    _, z = fixed_noise(config, device)
    if config.kind == "vae":
        vae = models["vae"]
        return vae.to_image(vae.decode(z)).float().cpu()
    ema = models[marks.get("weights", "ema")]
    classes = getattr(ema, "num_classes", 0)
    labels = torch.arange(config.num_samples, device=device) % classes if classes else None
    return (ema(z) if labels is None else ema(z, labels)).float().cpu()
