"""fastgen.train.checkpoint: a public alias, kept so that code written against it goes on
working. Nothing in fastgen imports it; new code imports the modules that define the names:

- fastgen.checkpoint_io: the file side (format, atomic writes, safe loading, sha256,
  run-folder look-ups): save_checkpoint, load_checkpoint, read_checkpoint, latest_checkpoint,
  checkpoint_file, CheckpointError, RunFileWarning, ...;
- fastgen.models.loading: the model side, build_models, load_models, load_weights;
- fastgen.utils.atomic: atomic_write, writing, WriteError, TEMPORARY;
- fastgen.train.resume: restore_training_state (resuming a run).

Errors name the function that raised in its own module (``fastgen.checkpoint_io.
load_checkpoint: ...``), not this alias.
"""

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
from fastgen.train.resume import restore_training_state
from fastgen.utils.atomic import TEMPORARY, WriteError, atomic_write, writing

__all__ = [
    "FORMAT", "NAME", "TEMPORARY", "VERSION", "CheckpointError", "RunFileWarning",
    "WriteError", "atomic_write", "build_models", "check_entries", "checkpoint_file",
    "checkpoint_hash", "checkpoint_name", "checkpoint_step", "latest_checkpoint",
    "list_checkpoints", "load_checkpoint", "load_models", "load_weights", "prune_checkpoints",
    "read_checkpoint", "restore_training_state", "save_checkpoint", "state_digest", "writing",
]  # fmt: skip

_load_weights = load_weights  # the name it had here
