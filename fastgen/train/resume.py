"""Resuming a run from the command line: the checkpoint's own config, and only what is safe
to change on top of it (fastgen train --resume)."""

from __future__ import annotations

import os
from typing import Any

from fastgen.checkpoint_io import latest_checkpoint, load_checkpoint
from fastgen.config import config_from_dict
from fastgen.options import flag_of

# What a resumed run may change: how long it runs and what it writes, never what it trains.
RESUME_MAY_CHANGE = {
    "steps", "sample_every", "checkpoint_every", "keep_checkpoints", "log_every", "eval_every",
    "out_dir", "device", "num_threads", "compile", "num_samples", "max_nonfinite", "provenance",
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
            "steps, cadences, output, device and threads may change on resume"
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
