"""Checkpoints of training runs: the file format and reader, and resuming from them.

The file side (format, atomic writes, safe loading, sha256, run-folder look-ups) is
fastgen.checkpoint_io and the model side (``build_models``, ``load_models``, the model to
sample) fastgen.models.loading, so that sampling, export and evaluation need no training
code; every name of theirs that the trainers and the CLI use is importable from here too.
What is training's own: ``restore_training_state``, which puts a checkpoint's models,
optimizers, GradScalers and RNG state back into a trainer's objects to resume a run.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from fastgen.checkpoint_io import (
    FORMAT,
    NAME,
    VERSION,
    CheckpointError,
    RunFileWarning,
    check_entries,
    checkpoint_file,
    checkpoint_hash,
    checkpoint_name,
    checkpoint_step,
    latest_checkpoint,
    list_checkpoints,
    load_checkpoint,
    prune_checkpoints,
    read_checkpoint,
    save_checkpoint,
    state_digest,
)
from fastgen.models.loading import build_models, load_models, load_weights
from fastgen.utils.atomic import TEMPORARY, WriteError, atomic_write, writing
from fastgen.utils.errors import one_line as _detail

__all__ = [
    "FORMAT", "NAME", "TEMPORARY", "VERSION", "CheckpointError", "RunFileWarning",
    "WriteError", "atomic_write", "build_models", "check_entries", "checkpoint_file",
    "checkpoint_hash", "checkpoint_name", "checkpoint_step", "latest_checkpoint",
    "list_checkpoints", "load_checkpoint", "load_models", "load_weights", "prune_checkpoints",
    "read_checkpoint", "restore_training_state", "save_checkpoint", "state_digest", "writing",
]  # fmt: skip

_load_weights = load_weights  # the name it had here


def _prefer_conv_cpu_choices(choices) -> None:
    from fastgen import ops

    if not isinstance(choices, list) or not all(
        isinstance(c, Mapping)
        and isinstance(c.get("key"), str)
        and c.get("choice") in ("fastgen", "aten")
        for c in choices
    ):
        raise ValueError("expected a list of {'key': str, 'choice': 'fastgen' | 'aten'}")
    ops.prefer_conv_cpu_choices(choices)


def restore_training_state(
    path, state: dict[str, Any], *, models: dict, optimizers: dict, scalers, fn: str
) -> int:
    """Loads a checkpoint's models, optimizers and GradScalers (`scalers.load_state_dict`)
    into a trainer's objects, checks its RNG entry and takes its CPU convolution choices;
    returns its step. A checkpoint that does
    not fit (missing entries, other shapes, a bad RNG entry) is a CheckpointError naming the
    file."""
    from fastgen.train.rng import check_rng_entry

    for name, model in models.items():
        load_weights(path, state, name, model, fn, f"does not fit this config's {name}")
    saved = state.get("optimizers")
    if saved is None:
        raise CheckpointError(
            f"{fn}: {path} has no 'optimizers' entry, which resuming needs (it can still be "
            f"sampled and exported)"
        )
    for name, optimizer in optimizers.items():
        if not isinstance(saved.get(name), Mapping):
            raise CheckpointError(
                f"{fn}: {path}: optimizers[{name!r}] must be an optimizer state dict, not "
                f"{type(saved[name]).__name__ if name in saved else 'missing'}"
            )
        try:
            optimizer.load_state_dict(saved[name])
        except Exception as exc:  # torch.optim raises several types for malformed state
            raise CheckpointError(
                f"{fn}: {path}: optimizers[{name!r}] does not fit this config's optimizer: "
                f"{_detail(exc)}"
            ) from exc
    for key, load, value in (
        ("scalers", scalers.load_state_dict, state.get("scalers", {})),
        ("rng", check_rng_entry, state.get("rng", {})),
        # the CPU convolutions the run chose (absent in checkpoints before it was recorded)
        ("conv_cpu_choices", _prefer_conv_cpu_choices, state.get("conv_cpu_choices", [])),
    ):
        try:
            load(value)
        except Exception as exc:  # a malformed entry reaches torch as any of several types
            raise CheckpointError(f"{fn}: {path}: bad {key!r} entry: {_detail(exc)}") from exc
    return state["step"]
