"""From a checkpoint file to models: the one place that builds them and picks the one to sample.

    loaded = load_model("runs/dcgan")            # a checkpoint, or a run folder (its newest)
    images = loaded.model.generate(z, labels)    # [-1, 1], for a DCGAN or a VAE alike
    loaded.kind, loaded.step, loaded.hash, loaded.num_classes, loaded.config

The model to sample is the EMA generator of a DCGAN checkpoint (the raw generator when the
run kept no EMA), or the VAE (its ``generate`` decodes z). Sampling, export and evaluation
call ``load_model``; the trainers call ``build_models`` (fresh models for a config) and, for
the weights of a resumed run, ``load_weights``. The file is read once, without unpickling
code (fastgen.checkpoint_io.read_checkpoint).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from fastgen.checkpoint_io import CheckpointError, checkpoint_file, read_checkpoint
from fastgen.utils.errors import one_line

# The model each kind samples, in order of preference (a DCGAN run may keep no EMA).
SAMPLED = ("ema", "generator", "vae")


@dataclass
class LoadedModel:
    """A checkpoint's model to sample, in eval mode, and what is known about it.

    kind: "dcgan" or "vae"; name: which of ``models`` it is ("ema", "generator" or "vae");
    models: every model of the checkpoint ({"generator", "discriminator", "ema"} or {"vae"});
    config: the run's GANConfig or VAEConfig; step: the training step; hash: the first 12 hex
    digits of the file's sha256 (names the model in image metadata); path: the file read;
    num_classes: the classes a conditional generator takes (0: unconditional, and the VAE);
    meta: the checkpoint's "meta" entry (num_classes, channels, ... of the training data);
    run_id: the id of the run that wrote it (None in checkpoints from before run ids).
    """

    model: nn.Module
    kind: str
    name: str
    config: Any
    step: int
    hash: str
    path: Path
    num_classes: int = 0
    models: dict[str, nn.Module] = field(default_factory=dict)
    meta: dict[str, Any] = field(default_factory=dict)
    run_id: str | None = None


def sampled_model(
    models: dict[str, nn.Module], fn: str = "fastgen.models.sampled_model"
) -> tuple[str, nn.Module]:
    """(name, model) of the model to sample from a model dict (a checkpoint's or a trainer's):
    "ema", else "generator", else "vae"; a ValueError naming `fn` when it has none of them."""
    for name in SAMPLED:
        if name in models:
            return name, models[name]
    raise ValueError(f"{fn}: expected models 'ema', 'generator' or 'vae', got {sorted(models)}")


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


def load_weights(path, state: dict, name: str, model: nn.Module, fn: str, misfit: str) -> None:
    """state["models"][name] into model, or a CheckpointError naming the file (`misfit` says
    what does not fit what)."""
    if name not in state["models"]:
        raise CheckpointError(f"{fn}: {path} has no {name!r} weights")
    try:
        model.load_state_dict(state["models"][name])
    except (RuntimeError, ValueError, TypeError, KeyError) as exc:
        raise CheckpointError(f"{fn}: {path}: {misfit}: {one_line(exc)}") from exc


def load_models(path, device="cpu", *, fused: bool | None = None, state=None):
    """(config, models) from a checkpoint: {"generator", "discriminator", "ema"} or {"vae"},
    in eval mode on `device`. `fused` overrides the config's choice of layers (the state
    dicts are the same). `state`: the checkpoint as load_checkpoint(path) returned it, to
    read the file once. A checkpoint whose entries do not make the models is a
    CheckpointError naming the file."""
    from fastgen.checkpoint_io import load_checkpoint
    from fastgen.config import config_from_dict

    fn = "fastgen.models.loading.load_models"
    state = load_checkpoint(path) if state is None else state
    try:
        config = config_from_dict(state["config"])
    except (ValueError, TypeError, KeyError) as exc:
        raise CheckpointError(f"{fn}: {path} has a bad 'config' entry: {one_line(exc)}") from exc
    if fused is not None:
        config.fused = fused
    meta = state.get("meta", {})
    try:
        models = build_models(config, meta.get("num_classes", 0), meta.get("channels"))
    except (ValueError, TypeError) as exc:
        raise CheckpointError(
            f"{fn}: {path}: its 'config' and 'meta' entries do not make models: {one_line(exc)}"
        ) from exc
    for name, model in models.items():
        load_weights(path, state, name, model, fn, f"models[{name!r}] does not fit its config")
        model.to(device).eval()
    return config, models


def load_model(
    checkpoint: str | os.PathLike, device="cpu", *, fused: bool | None = None
) -> LoadedModel:
    """The model to sample from a checkpoint file (or a run folder: its newest checkpoint),
    read once, in eval mode on `device`; `fused` as for load_models. A file that is not a
    usable checkpoint is a one-line CheckpointError naming it."""
    path = Path(checkpoint_file(checkpoint))
    state, digest = read_checkpoint(path)
    config, models = load_models(path, device, fused=fused, state=state)
    name, model = sampled_model(models)
    return LoadedModel(
        model=model,
        kind="vae" if name == "vae" else "dcgan",
        name=name,
        config=config,
        step=state["step"],
        hash=digest,
        path=path,
        num_classes=getattr(model, "num_classes", 0),
        models=models,
        meta=dict(state.get("meta", {})),
        run_id=state.get("run_id"),
    )
