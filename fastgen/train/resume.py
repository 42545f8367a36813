"""Resuming a run, in one place: the checkpoint `fastgen train --resume` names
(``resume_path``), its own config with only what is safe to change on top of it
(``resumed_config``), and putting its models, optimizers, GradScalers and RNG state back into a
trainer's objects (``restore_training_state``, which TrainingTask.restore calls for
fastgen.train.loop)."""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

from fastgen.checkpoint_io import CheckpointError, latest_checkpoint, load_checkpoint
from fastgen.config import config_from_dict
from fastgen.models.loading import load_weights
from fastgen.options import flag_of
from fastgen.utils.errors import one_line

# What a resumed run may change: how long it runs and what it writes, never what it trains.
RESUME_MAY_CHANGE = {
    "steps", "sample_every", "checkpoint_every", "keep_checkpoints", "log_every", "eval_every",
    "out_dir", "device", "num_threads", "compile", "memory_format", "num_samples",
    "max_nonfinite", "provenance",
}  # fmt: skip


class RunComplete(Exception):
    """--resume of a checkpoint that is already at --steps: the run has nothing left to do
    (a preempted job that reruns its command after its last checkpoint). Not an error."""


def resume_path(resume: str | None, out_dir: str) -> str | None:
    """The checkpoint --resume names: a file, or 'latest' in the run folder."""
    if resume == "latest":
        found = latest_checkpoint(out_dir)
        if found is None:
            started = any(
                os.path.exists(os.path.join(out_dir, n)) for n in ("run.json", "log.jsonl")
            )
            raise FileNotFoundError(
                f"--resume latest: no checkpoint in {out_dir}/checkpoints: "
                + (
                    "its run stopped before its first; start it again without --resume "
                    "(that run's files are replaced)"
                    if started
                    else "no run to resume there; start one without --resume"
                )
            )
        return str(found)
    if resume is not None and not os.path.isfile(resume):
        raise FileNotFoundError(f"--resume: no checkpoint file at {resume}")
    return resume


def resumed_config(trainer: str, given: dict[str, Any], resume: str):
    """The checkpoint's own config, with only the options in RESUME_MAY_CHANGE taken from
    the command line; any other option given with a different value is refused, so a resumed
    run never trains on with settings its checkpoint, optimiser and config.json do not have.
    A checkpoint already at --steps raises RunComplete; one past it, ValueError."""
    state = load_checkpoint(resume)
    try:
        config = config_from_dict(state["config"])
    except (KeyError, TypeError, ValueError) as err:
        raise ValueError(f"--resume: {resume} has no usable config ({err})") from err
    if config.kind != trainer:
        raise ValueError(f"--resume: {resume} is a {config.kind} checkpoint, not {trainer}")
    differ = []
    for field, value in given.items():
        if field in RESUME_MAY_CHANGE:
            setattr(config, field, value)
        elif getattr(config, field) != value:
            differ.append(
                f"{flag_of(field)} {value!r} (the checkpoint's: {getattr(config, field)!r})"
            )
    if differ:
        raise ValueError(
            f"--resume: {resume} was trained with other settings: {'; '.join(differ)}; only "
            "steps, cadences, output, device, threads, compilation and memory format may "
            "change on resume"
        )
    config.validate()
    if state["step"] == config.steps:
        raise RunComplete(
            f"the run is complete: {resume} is at step {config.steps}, --steps {config.steps}; "
            "nothing to train (give a larger --steps to train on)"
        )
    if state["step"] > config.steps:
        raise ValueError(
            f"--resume: {resume} is at step {state['step']}, past --steps {config.steps}; "
            "give a larger --steps to train on"
        )
    return config


# --- loading a checkpoint's state into a trainer --------------------------------------------


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
                f"{one_line(exc)}"
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
            raise CheckpointError(f"{fn}: {path}: bad {key!r} entry: {one_line(exc)}") from exc
    return state["step"]
