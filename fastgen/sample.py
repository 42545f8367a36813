"""Sampling from a training checkpoint: image grids and latent interpolation strips.

A DCGAN checkpoint samples its EMA generator (the raw generator if the run kept no EMA); a
VAE checkpoint decodes z ~ N(0, I). Noise is drawn on the CPU from a torch.Generator seeded
with `seed`, so a (checkpoint, seed) pair gives the same latents on every device. Written
images carry the provenance marks of fastgen.provenance (XMP: what made them and how to make
them again) and, in a PNG, the text chunks of fastgen.utils.images plus model (checkpoint
hash), step, seed and, where used, class.
"""

from __future__ import annotations

import argparse
import math
import os
from pathlib import Path

import torch
from torch import nn

BATCH = 256  # latents decoded per forward pass (bounds memory for large --n)


def load_sampler(checkpoint: str | os.PathLike, device: str = "cpu"):
    """(kind, model, info) for a checkpoint: kind "dcgan" or "vae", the model to sample in eval
    mode (fastgen.models.loading.load_model), info = {"model": checkpoint hash, "step": str}."""
    from fastgen.models.loading import load_model

    loaded = load_model(checkpoint, device=device)
    return loaded.kind, loaded.model, {"model": loaded.hash, "step": str(loaded.step)}


def _labels(model: nn.Module, n: int, class_label: int | None) -> torch.Tensor | None:
    num_classes = getattr(model, "num_classes", 0)
    if class_label is None:
        # a conditional model without a chosen class: cycle through the classes
        return torch.arange(n) % num_classes if num_classes else None
    if not num_classes:
        raise ValueError(
            f"fastgen.sample: class {class_label} given but the checkpoint's model is "
            f"unconditional (train with --conditional to sample by class)"
        )
    if not 0 <= class_label < num_classes:
        raise ValueError(f"fastgen.sample: class must be in [0, {num_classes}), got {class_label}")
    return torch.full((n,), class_label, dtype=torch.int64)


@torch.no_grad()
def decode(kind: str, model: nn.Module, z: torch.Tensor, labels=None) -> torch.Tensor:
    """Latents [N, latent_dim] (CPU) -> images [N, C, R, R] in [-1, 1] (CPU float32), by the
    model's ``generate`` (`kind` is kept for callers; labels: a conditional DCGAN's)."""
    device = next(model.parameters()).device
    out = []
    for start in range(0, z.shape[0], BATCH):
        zb = z[start : start + BATCH].to(device)
        lb = None if labels is None else labels[start : start + BATCH].to(device)
        out.append(model.generate(zb, lb).float().cpu())
    return torch.cat(out)


def generate(kind, model, n: int, *, seed: int = 0, class_label: int | None = None) -> torch.Tensor:
    """n images [n, C, R, R] in [-1, 1] from latents drawn with `seed`."""
    if not isinstance(n, int) or n < 1:
        raise ValueError(f"fastgen.sample.generate: n must be an int >= 1, got {n!r}")
    labels = _labels(model, n, class_label) if kind == "dcgan" else None
    if kind == "vae" and class_label is not None:
        raise ValueError("fastgen.sample: --class needs a conditional DCGAN, this is a VAE")
    z = torch.randn(n, model.latent_dim, generator=torch.Generator().manual_seed(seed))
    return decode(kind, model, z, labels)


def slerp(a: torch.Tensor, b: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """Spherical interpolation between rows of a and b [N, D] at fractions t [S] -> [N, S, D].

    Gaussian latents live near a sphere; walking along it (not the chord) keeps every
    intermediate latent at a typical norm, so the middle images are not washed out.
    """
    a_unit = a / a.norm(dim=1, keepdim=True)
    b_unit = b / b.norm(dim=1, keepdim=True)
    omega = torch.acos((a_unit * b_unit).sum(1).clamp(-1 + 1e-7, 1 - 1e-7))[:, None, None]
    t = t[None, :, None]
    sin = torch.sin(omega)
    return (torch.sin((1 - t) * omega) * a[:, None] + torch.sin(t * omega) * b[:, None]) / sin


def interpolate(
    kind, model, rows: int, steps: int, *, seed: int = 0, class_label: int | None = None
) -> torch.Tensor:
    """rows x steps images [rows * steps, C, R, R]: each row walks from one latent to another."""
    if not isinstance(steps, int) or steps < 2:
        raise ValueError(f"fastgen.sample.interpolate: steps must be an int >= 2, got {steps!r}")
    gen = torch.Generator().manual_seed(seed)
    ends = torch.randn(2, rows, model.latent_dim, generator=gen)
    z = slerp(ends[0], ends[1], torch.linspace(0, 1, steps)).reshape(rows * steps, -1)
    labels = None
    if kind == "dcgan":
        row_labels = _labels(model, rows, class_label)
        labels = None if row_labels is None else row_labels.repeat_interleave(steps)
    elif class_label is not None:
        raise ValueError("fastgen.sample: --class needs a conditional DCGAN, this is a VAE")
    return decode(kind, model, z, labels)


def draw(
    kind,
    model,
    n: int,
    *,
    seed: int = 0,
    class_label: int | None = None,
    interpolation_steps: int = 0,
) -> torch.Tensor:
    """The images `fastgen sample` draws: n samples (generate), or, with interpolation_steps
    >= 2, n interpolation rows of that many images each (interpolate)."""  # fmt: skip
    if interpolation_steps:
        return interpolate(kind, model, n, interpolation_steps, seed=seed, class_label=class_label)
    return generate(kind, model, n, seed=seed, class_label=class_label)


def separate_paths(out: str | os.PathLike, count: int) -> list[Path]:
    """Where `fastgen sample --separate` writes its images: <stem>_0000<suffix>, ..."""
    out = Path(out)
    return [out.with_name(f"{out.stem}_{index:04d}{out.suffix}") for index in range(count)]


def sample_to_png(
    checkpoint: str | os.PathLike,
    out: str | os.PathLike,
    *,
    n: int = 64,
    seed: int = 0,
    class_label: int | None = None,
    interpolation_steps: int = 0,
    device: str = "cpu",
    nrow: int | None = None,
    separate: bool = False,
    provenance: bool = True,
    signer=None,
) -> Path:
    """Writes a grid of n samples (or, with interpolation_steps >= 2, n interpolation rows of
    that many images each) from a checkpoint to an image file (.png, .jpg or .webp) and
    returns its path; `separate` also writes each image alone (separate_paths).

    Every file carries the XMP marks (fastgen.provenance): the checkpoint's sha256, run id and
    step, the weights sampled, these arguments, and, for a separate image, its index, so that
    ``fastgen verify --checkpoint`` can compute it again; the images are computed under a
    fixed CPU convolution policy for that. `provenance=False` leaves the marks out; `signer`
    (fastgen.provenance.Signer) adds a signed C2PA manifest to every file."""
    from fastgen.models.loading import load_model
    from fastgen.provenance.record import conv_cpu_policy, reproducible_convolutions
    from fastgen.provenance.regenerate import sample_fields
    from fastgen.utils.images import save_image_grid

    loaded = load_model(checkpoint, device=device)
    kind = loaded.kind
    metadata = {"model": loaded.hash, "step": str(loaded.step), "seed": str(seed), "kind": kind}
    if class_label is not None:
        metadata["class"] = str(class_label)
    policy = conv_cpu_policy()
    with reproducible_convolutions(policy):
        images = draw(
            kind, loaded.model, n, seed=seed, class_label=class_label,
            interpolation_steps=interpolation_steps,
        )  # fmt: skip
    if interpolation_steps:
        nrow = interpolation_steps
        metadata["interpolation"] = f"{n} rows x {interpolation_steps} steps (slerp)"
    else:
        nrow = nrow or math.ceil(math.sqrt(n))
    fields = sample_fields(
        loaded, seed=seed, n=n, nrow=nrow, class_label=class_label,
        interpolation_steps=interpolation_steps, device=device, conv_cpu=policy,
    )  # fmt: skip
    write = dict(provenance=provenance, signer=signer)
    path = save_image_grid(images, out, nrow=nrow, metadata=metadata, marks=fields, **write)
    if separate:
        for index, file in enumerate(separate_paths(out, len(images))):
            marks = {**fields, "image": "single", "index": index}
            save_image_grid(
                images[index], file, padding=0, metadata={**metadata, "index": str(index)},
                marks=marks, **write,
            )  # fmt: skip
    return path


# --- the command ----------------------------------------------------------------------------


def add_arguments(p: argparse.ArgumentParser) -> None:
    """`fastgen sample CKPT --n 64 --out grid.png [--seed S] [--class C] [--interpolate STEPS]`."""
    from fastgen.options import add_which_checkpoint
    from fastgen.provenance.cli import add_sample_options

    p.add_argument("checkpoint", metavar="CKPT", help="a checkpoint, or a run folder (its newest)")
    p.add_argument("--n", type=int, default=64, help="images (or rows with --interpolate)")
    p.add_argument("--out", required=True, help="image file to write (.png, .jpg, .webp)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument(
        "--class", dest="class_label", type=int, default=None, help="class (conditional models)"
    )
    p.add_argument(
        "--interpolate",
        type=int,
        default=0,
        metavar="STEPS",
        help="latent interpolation: N rows of STEPS images",
    )
    p.add_argument("--nrow", type=int, default=None, help="images per row of the grid")
    p.add_argument("--device", default="auto", help="auto (cuda if available), cpu, cuda[:N]")
    add_sample_options(p)
    add_which_checkpoint(p)


def run(args: argparse.Namespace) -> int:
    from fastgen.checkpoint_io import checkpoint_file
    from fastgen.provenance.cli import signer_from_options
    from fastgen.utils.devices import resolve_device
    from fastgen.utils.errors import UsageError

    if args.n < 1:
        raise UsageError(f"--n must be >= 1, got {args.n}")
    if args.interpolate == 1 or args.interpolate < 0:
        raise UsageError(f"--interpolate needs at least 2 steps, got {args.interpolate}")
    device = str(resolve_device(args.device, "fastgen sample"))
    signer = signer_from_options(args)  # a bad key or certificate stops here, nothing written
    path = sample_to_png(
        checkpoint_file(args.checkpoint, args.which), args.out, n=args.n, seed=args.seed,
        class_label=args.class_label, interpolation_steps=args.interpolate, device=device,
        nrow=args.nrow, separate=args.separate, provenance=args.provenance, signer=signer,
    )  # fmt: skip
    print(f"wrote {path}" + (" and each image alone" if args.separate else ""))
    return 0
