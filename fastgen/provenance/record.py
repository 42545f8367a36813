"""What an image's marks record: the generator that made it and the sampling that reproduces it.

Each field is written as ``fastgen:<name>`` in the XMP packet (fastgen.provenance.marks) and,
in a signed image, in the C2PA assertion ``org.fastgen.generation`` (fastgen.provenance.signing).
Fields that do not apply are left out.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
from pathlib import Path

from fastgen.utils.environment import environment

# name -> what it records (the README's and verify's vocabulary)
FIELDS = {
    "source": "what wrote the image: 'fastgen sample' or 'fastgen train'",
    "image": "grid (n images, nrow a row), interpolation (n rows of interpolation_steps), single "
    "(image `index` of a sample), train_samples (a run's sample grid), train_reconstructions",
    "kind": "dcgan or vae",
    "weights": "the weights sampled: ema (a DCGAN's moving average), generator (raw), or vae",
    "checkpoint_sha256": "sha256 of the checkpoint file sampled (not known for training grids)",
    "run_id": "the training run's id (run.json, and every checkpoint of the run)",
    "step": "the training step of the weights",
    "seed": "seed of the latents (fastgen sample --seed; a run's --seed for its grids)",
    "n": "images (rows, for an interpolation) sampled",
    "nrow": "images per row of the grid",
    "class_label": "the class every image was drawn for (conditional DCGAN; absent: the "
    "classes in turn, 0, 1, ...)",
    "interpolation_steps": "images per interpolation row",
    "index": "which of the n images this file holds (fastgen sample --separate)",
    "device": "device kind that computed it: cpu/<CPU kernel copy> or cuda/<GPU name>",
    "conv_cpu": "the CPU convolution policy it ran under (fixed, fastgen or aten)",
}

# The CPU convolution choice must not be measured while sampling: timed choices can differ
# between processes, and the two candidates round float32 differently (README, "Which CPU
# convolution runs"), so images are computed under the fixed rules unless the user forced one.
CONV_POLICY_ENV = {"fixed": ("FASTGEN_AUTOTUNE", "0"), "fastgen": ("FASTGEN_CONV_CPU", "fastgen"),
                   "aten": ("FASTGEN_CONV_CPU", "aten")}  # fmt: skip


def conv_cpu_policy() -> str:
    """The reproducible CPU convolution policy to sample under: the one FASTGEN_CONV_CPU forces,
    else "fixed" (FASTGEN_AUTOTUNE=0's rules)."""
    forced = os.environ.get("FASTGEN_CONV_CPU", "")
    return forced if forced in ("fastgen", "aten") else "fixed"


@contextlib.contextmanager
def reproducible_convolutions(policy: str):
    """Runs the block under CPU convolution `policy` (a CONV_POLICY_ENV key), then restores the
    environment. The native selector reads it on every call."""
    if policy not in CONV_POLICY_ENV:
        raise ValueError(
            f"fastgen.provenance.reproducible_convolutions: policy must be one of "
            f"{', '.join(CONV_POLICY_ENV)}, got {policy!r}"
        )
    name, value = CONV_POLICY_ENV[policy]
    values = {other: None for other in ("FASTGEN_AUTOTUNE", "FASTGEN_CONV_CPU")}
    with environment({**values, name: value}):
        yield


def device_kind(device) -> str:
    """The kind of device images are computed on, as the marks record it: ``cpu/<capability>``
    (the CPU kernels' copy: avx512, avx2, baseline) or ``cuda/<GPU name>``. Regeneration is
    bit-exact only on the same kind."""
    import torch

    device = torch.device(device)
    if device.type == "cuda":
        return f"cuda/{torch.cuda.get_device_name(device)}"
    from fastgen import _extension

    capability = "reference"  # no extension: every op runs its PyTorch reference
    if _extension.LOADED:
        try:
            capability = _extension._C._cpu_capability()[0]
        except ValueError:  # a bad FASTGEN_CPU_CAPABILITY: fastgen info says so
            capability = "unknown"
    return f"{device.type}/{capability}"


def file_sha256(path: str | os.PathLike) -> str:
    """sha256 (hex) of a file's bytes."""
    digest = hashlib.sha256()
    with open(Path(path), "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def fields_text(fields: dict) -> dict[str, str]:
    """`fields` with None left out and every value as the marks write it (str)."""
    return {name: str(value) for name, value in fields.items() if value is not None}
