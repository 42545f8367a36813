"""Checkpoints: the whole training state in one file, written atomically, loaded safely.

A checkpoint is a dict of tensors and primitive containers only (the config as a dict), so
``torch.load(weights_only=True)`` reads it and loading can never run code::

    {"format": "fastgen-checkpoint", "version": 1, "step": int, "config": dict,
     "models": {"generator"|"discriminator"|"ema"|"vae": state_dict},
     "optimizers": {name: state_dict}, "scalers": {name: state_dict},
     "rng": {"torch": ByteTensor, "cuda": [ByteTensor, ...], "seed": int}}

The data order and all noise of step ``s`` are functions of ``(seed, s)`` (see
fastgen.train.runtime), so ``step`` and ``seed`` fully determine where a resumed run continues.

Writes go to a temporary file in the same folder, are fsync'ed, then renamed over the final
name (and the folder fsync'ed): a crash leaves either the old file or the new one, never a
torn one. Only the newest ``keep`` files named ``ckpt_XXXXXX.pt`` are kept.
"""

from __future__ import annotations

import hashlib
import os
import re
import tempfile
from pathlib import Path
from typing import Any

import torch

FORMAT = "fastgen-checkpoint"
VERSION = 1
NAME = re.compile(r"^ckpt_(\d+)\.pt$")


class CheckpointError(RuntimeError):
    """A checkpoint file that cannot be read (missing, truncated, corrupt, not fastgen's)."""


def checkpoint_name(step: int) -> str:
    return f"ckpt_{step:06d}.pt"


def _fsync_dir(folder: Path) -> None:
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:  # some platforms cannot open folders
        return
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def save_checkpoint(path, state: dict[str, Any], *, keep: int | None = None) -> Path:
    """Writes `state` to `path` atomically; with `keep`, deletes all but the newest `keep`
    ckpt_*.pt files in its folder. Returns the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    state = {"format": FORMAT, "version": VERSION, **state}
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as handle:
            torch.save(state, handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    _fsync_dir(path.parent)
    if keep is not None:
        prune_checkpoints(path.parent, keep)
    return path


def list_checkpoints(folder) -> list[Path]:
    """ckpt_XXXXXX.pt files in `folder`, oldest step first."""
    folder = Path(folder)
    if not folder.is_dir():
        return []
    found = [(int(m.group(1)), p) for p in folder.iterdir() if (m := NAME.match(p.name))]
    return [p for _, p in sorted(found)]


def prune_checkpoints(folder, keep: int) -> None:
    for old in list_checkpoints(folder)[: -keep if keep > 0 else None]:
        old.unlink(missing_ok=True)


def latest_checkpoint(out_dir) -> Path | None:
    """The newest checkpoint of a run folder (or of its checkpoints/ folder), or None."""
    out_dir = Path(out_dir)
    for folder in (out_dir / "checkpoints", out_dir):
        found = list_checkpoints(folder)
        if found:
            return found[-1]
    return None


def load_checkpoint(path, map_location="cpu") -> dict[str, Any]:
    """Reads a checkpoint with torch.load(weights_only=True); CheckpointError names the file."""
    path = Path(path)
    fn = "fastgen.train.checkpoint.load_checkpoint"
    if not path.is_file():
        raise CheckpointError(f"{fn}: no checkpoint file at {path}")
    try:
        state = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as exc:  # torch raises several types for truncated/corrupt/unsafe files
        detail = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise CheckpointError(
            f"{fn}: {path} is not a readable checkpoint (truncated, corrupt or not saved by "
            f"fastgen): {detail}"
        ) from exc
    if not isinstance(state, dict) or state.get("format") != FORMAT:
        raise CheckpointError(f"{fn}: {path} is not a fastgen checkpoint (no format tag)")
    if state.get("version") != VERSION:
        raise CheckpointError(
            f"{fn}: {path} has checkpoint format version {state.get('version')!r}, "
            f"this fastgen reads version {VERSION}"
        )
    for key in ("step", "config", "models"):
        if key not in state:
            raise CheckpointError(f"{fn}: {path} lacks the {key!r} entry")
    return state


def checkpoint_hash(path) -> str:
    """The first 12 hex digits of the file's sha256 (names the model in image metadata)."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()[:12]


def build_models(
    config, num_classes: int = 0, channels: int | None = None
) -> dict[str, torch.nn.Module]:
    """Fresh models for a GANConfig ({"generator", "discriminator", "ema"}) or VAEConfig ({"vae"})."""
    from fastgen.models import ConvVAE, DCGANDiscriminator, DCGANGenerator

    channels = channels or config.channels or 1
    if config.kind == "vae":
        vae = ConvVAE(
            config.resolution,
            channels,
            latent_dim=config.latent_dim,
            width=config.width,
            likelihood=config.likelihood,
            beta=config.beta,
            fused=config.fused,
        )
        return {"vae": vae}
    classes = num_classes if config.conditional else 0
    kwargs = {"resolution": config.resolution, "channels": channels, "width": config.width}
    return {
        "generator": DCGANGenerator(
            latent_dim=config.latent_dim, num_classes=classes, fused=config.fused, **kwargs
        ),
        "discriminator": DCGANDiscriminator(
            num_classes=classes, fused=config.fused, spectral_norm=config.spectral_norm, **kwargs
        ),
        "ema": DCGANGenerator(
            latent_dim=config.latent_dim, num_classes=classes, fused=config.fused, **kwargs
        ),
    }


def load_models(path, device="cpu", *, fused: bool | None = None):
    """(config, models) from a checkpoint: {"generator", "discriminator", "ema"} or {"vae"},
    in eval mode on `device`. `fused` overrides the config's choice of layers (the state
    dicts are the same)."""
    from fastgen.train.config import config_from_dict

    state = load_checkpoint(path)
    config = config_from_dict(state["config"])
    if fused is not None:
        config.fused = fused
    meta = state.get("meta", {})
    models = build_models(config, meta.get("num_classes", 0), meta.get("channels"))
    for name, model in models.items():
        if name not in state["models"]:
            raise CheckpointError(
                f"fastgen.train.checkpoint.load_models: {path} has no {name!r} weights"
            )
        model.load_state_dict(state["models"][name])
        model.to(device).eval()
    return config, models
