"""Checkpoint files: the format, the atomic writer, the safe reader, run-folder look-ups.

Pure file IO, with no training or model code, so that sampling, export and evaluation read
checkpoints without the trainers (fastgen.models.loading turns one into models;
fastgen.train.resume resumes a run from one; fastgen.train.checkpoint, a public alias,
re-exports every name here).

A checkpoint is a dict of tensors and primitive containers only (the config as a dict), so
``torch.load(weights_only=True)`` reads it and loading can never run code::

    {"format": "fastgen-checkpoint", "version": 1, "step": int, "config": dict,
     "models": {"generator"|"discriminator"|"ema"|"vae": state_dict},
     "optimizers": {name: state_dict}, "scalers": {name: state_dict},
     "rng": {"torch": ByteTensor, "cuda": [ByteTensor, ...], "seed": int},
     "meta": dict, "run_id": str, "sha256": str}

The data order and all noise of step ``s`` are functions of ``(seed, s)`` (see
fastgen.train.rng), so ``step`` and ``seed`` fully determine where a resumed run continues.
``run_id`` names the run that wrote the file (see fastgen.train.run_folder.RunFolder).

``sha256`` is a digest of everything else in the file (``state_digest``: key names, values
and every tensor's dtype, shape and bytes), checked on load: torch does not check the data it
reads back, so without it a flipped block of weights would train on unnoticed. Checkpoints
from before the digest load with a RunFileWarning.

Writes go through fastgen.utils.atomic.atomic_write (a temporary in the same folder, fsync'ed,
renamed over the final name), so a crash leaves the old file or the new one, never a torn
one; a failed write raises WriteError naming the file. Only the newest ``keep`` files named
``ckpt_XXXXXX.pt`` up to the one just written are kept.
"""

from __future__ import annotations

import hashlib
import io
import re
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from fastgen.utils.atomic import atomic_write
from fastgen.utils.errors import one_line as _detail

FORMAT = "fastgen-checkpoint"
VERSION = 1
NAME = re.compile(r"^ckpt_(\d+)\.pt$")


class CheckpointError(RuntimeError):
    """A checkpoint file that cannot be used (missing, truncated, damaged, malformed, unsafe,
    not fastgen's); the message names the file and what is wrong with it."""


class RunFileWarning(UserWarning):
    """A run or checkpoint file read with a caveat (a checkpoint without a checksum, a torn
    log line that was skipped); the message names the file."""


def checkpoint_name(step: int) -> str:
    return f"ckpt_{step:06d}.pt"


def state_digest(state: Mapping[str, Any]) -> str:
    """sha256 (hex) of a checkpoint's contents, its "sha256" entry left out: every key, every
    primitive value (with its type) and every tensor's dtype, shape and bytes, in order."""
    digest = hashlib.sha256()

    def feed(value) -> None:
        if isinstance(value, torch.Tensor):
            data = value.detach().cpu().contiguous()
            digest.update(f"T{data.dtype}{tuple(data.shape)}".encode())
            digest.update(data.reshape(-1).view(torch.uint8).numpy())
        elif isinstance(value, Mapping):
            digest.update(f"D{len(value)}".encode())
            for key, item in value.items():
                feed(key)
                feed(item)
        elif isinstance(value, list | tuple):
            digest.update(f"{'L' if isinstance(value, list) else 'U'}{len(value)}".encode())
            for item in value:
                feed(item)
        elif isinstance(value, str):
            data = value.encode()
            digest.update(b"S%d:" % len(data) + data)
        elif isinstance(value, bytes):
            digest.update(b"B%d:" % len(value) + value)
        elif isinstance(value, bool) or value is None:
            digest.update(repr(value).encode())
        elif isinstance(value, int):
            digest.update(b"I%d;" % value)
        elif isinstance(value, float):
            digest.update(f"F{value.hex()};".encode())  # exact, nan and inf included
        else:
            digest.update(f"R{type(value).__name__}:{value!r};".encode())

    feed({key: value for key, value in state.items() if key != "sha256"})
    return digest.hexdigest()


def save_checkpoint(path, state: dict[str, Any], *, keep: int | None = None) -> Path:
    """Writes `state` to `path` atomically, with its format tag and sha256; with `keep`,
    deletes all but the newest `keep` ckpt_*.pt files in its folder up to this one (later
    steps, left by a run resumed from an earlier checkpoint, are not this write's to delete).
    Returns the path; a failed write raises WriteError and deletes nothing."""
    path = Path(path)
    state = {"format": FORMAT, "version": VERSION, **state}
    state["sha256"] = state_digest(state)
    atomic_write(
        path,
        lambda handle: torch.save(state, handle),
        fn="fastgen.checkpoint_io.save_checkpoint",
    )
    if keep is not None:
        match = NAME.match(path.name)
        prune_checkpoints(path.parent, keep, newest=int(match.group(1)) if match else None)
    return path


def list_checkpoints(folder) -> list[Path]:
    """ckpt_XXXXXX.pt files in `folder`, oldest step first."""
    folder = Path(folder)
    if not folder.is_dir():
        return []
    found = [(int(m.group(1)), p) for p in folder.iterdir() if (m := NAME.match(p.name))]
    return [p for _, p in sorted(found)]


def checkpoint_step(path) -> int:
    """The step in a ckpt_XXXXXX.pt file name."""
    match = NAME.match(Path(path).name)
    if match is None:
        raise ValueError(f"fastgen.checkpoint_io.checkpoint_step: {path} is not a ckpt_XXXXXX.pt")
    return int(match.group(1))


def prune_checkpoints(folder, keep: int, *, newest: int | None = None) -> None:
    """Deletes all but the newest `keep` ckpt_*.pt files of `folder` with step <= `newest`
    (all steps when None). The folder must hold one run's checkpoints (RunFolder sees to it)."""
    found = list_checkpoints(folder)
    if newest is not None:
        found = [p for p in found if checkpoint_step(p) <= newest]
    for old in found[: -keep if keep > 0 else None]:
        old.unlink(missing_ok=True)


def latest_checkpoint(out_dir) -> Path | None:
    """The newest checkpoint of a run folder (or of its checkpoints/ folder), or None."""
    out_dir = Path(out_dir)
    for folder in (out_dir / "checkpoints", out_dir):
        found = list_checkpoints(folder)
        if found:
            return found[-1]
    return None


WHICH = ("latest", "best")


def checkpoint_file(path, which: str = "latest") -> str:
    """`path` itself when it is a file, else the checkpoint of the run folder it names (what
    `fastgen sample|export|eval RUN_FOLDER` read): its newest (`which` "latest"), or the
    best evaluation's, checkpoints/best.pt (`which` "best", `--checkpoint best`)."""
    if which not in WHICH:
        raise ValueError(f"--checkpoint expected one of {', '.join(WHICH)}, got {which!r}")
    if which == "best":
        folder = Path(path)
        if not folder.is_dir():
            raise ValueError(
                f"--checkpoint best expected a run folder, got the file {path} (name the run's "
                f"folder, or the checkpoint file alone)"
            )
        for best in (folder / "checkpoints" / "best.pt", folder / "best.pt"):
            if best.is_file():
                return str(best)
        raise FileNotFoundError(
            f"--checkpoint best: {path} has no checkpoints/best.pt (a run keeps one only with "
            f"--eval-every)"
        )
    if Path(path).is_dir():
        found = latest_checkpoint(path)
        if found is None:
            raise FileNotFoundError(
                f"{path} is a folder with no checkpoint (nor a checkpoints/ one)"
            )
        return str(found)
    return str(path)


def _short_hash(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()[:12]


def checkpoint_hash(path) -> str:
    """The first 12 hex digits of the file's sha256 (names the model in image metadata)."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()[:12]


def _unsafe_pickle_reason(exc: BaseException) -> str | None:
    """What torch's weights_only unpickler refused, without its advice on how to load the file
    anyway (that advice is to run the file's code)."""
    text = str(exc)
    if "Weights only load failed" not in text:
        return None
    for line in text.splitlines():
        line = line.strip()
        if line.startswith("WeightsUnpickler error:"):
            line = line[len("WeightsUnpickler error:") :].strip()
        if (
            line
            and not any(
                word in line.lower() for word in ("weights_only", "weights only", "file an issue")
            )
            and not line.startswith("Check the documentation")
        ):
            return line
    return "it holds objects other than tensors and plain containers"


def load_checkpoint(path, map_location="cpu") -> dict[str, Any]:
    """Reads a checkpoint with torch.load(weights_only=True) and checks its sha256 and the
    types of its entries; every problem is a one-line CheckpointError naming the file."""
    return _read(path, map_location, stacklevel=3)[0]


def read_checkpoint(path, map_location="cpu") -> tuple[dict[str, Any], str]:
    """(load_checkpoint's state, checkpoint_hash's hash) from ONE read of the file, so the
    hash names the very bytes the state came from (a run may overwrite the file meanwhile)."""
    return _read(path, map_location, stacklevel=3)


def _read(path, map_location, stacklevel: int) -> tuple[dict[str, Any], str]:
    path = Path(path)
    fn = "fastgen.checkpoint_io.load_checkpoint"
    if not path.is_file():
        raise CheckpointError(f"{fn}: no checkpoint file at {path}")
    try:
        data = path.read_bytes()  # once: the state and the hash come from the same bytes
        with warnings.catch_warnings():
            # torch notes the pickle protocol of files it refuses anyway
            warnings.filterwarnings("ignore", message="Detected pickle protocol")
            state = torch.load(io.BytesIO(data), map_location=map_location, weights_only=True)
    except Exception as exc:  # torch raises several types for truncated/corrupt/unsafe files
        unsafe = _unsafe_pickle_reason(exc)
        if unsafe is not None:
            raise CheckpointError(
                f"{fn}: {path} was refused: it holds Python objects that no fastgen checkpoint "
                f"contains, and loading them could run code ({unsafe})"
            ) from exc
        raise CheckpointError(
            f"{fn}: {path} is not a readable checkpoint (truncated, corrupt or not saved by "
            f"fastgen): {_detail(exc)}"
        ) from exc
    if not isinstance(state, dict) or state.get("format") != FORMAT:
        raise CheckpointError(f"{fn}: {path} is not a fastgen checkpoint (no format tag)")
    if state.get("version") != VERSION:
        raise CheckpointError(
            f"{fn}: {path} has checkpoint format version {state.get('version')!r}, "
            f"this fastgen reads version {VERSION}"
        )
    stored = state.get("sha256")
    if stored is None:
        warnings.warn(
            f"{fn}: {path} has no checksum (written before fastgen stored one), so damage to "
            f"it cannot be detected",
            RunFileWarning,
            stacklevel=stacklevel,
        )
    elif stored != state_digest(state):
        raise CheckpointError(
            f"{fn}: {path} is damaged: its contents do not match the sha256 checksum stored in "
            f"it (a disk or copy error); use an earlier checkpoint"
        )
    check_entries(path, state, fn)
    return state, _short_hash(data)


def _type_name(value) -> str:
    return type(value).__name__


def check_entries(path, state: dict[str, Any], fn: str) -> None:
    """CheckpointError unless the entries every reader relies on have their types: step an
    int >= 0, config a dict, models a dict of state dicts (name -> tensor), and optimizers,
    scalers, rng and meta dicts where present."""
    for key in ("step", "config", "models"):
        if key not in state:
            raise CheckpointError(f"{fn}: {path} lacks the {key!r} entry")
    step = state["step"]
    if not isinstance(step, int) or isinstance(step, bool) or step < 0:
        raise CheckpointError(f"{fn}: {path}: 'step' must be an int >= 0, got {step!r}")
    for key in ("config", "models", "optimizers", "scalers", "rng", "meta"):
        if key in state and not isinstance(state[key], Mapping):
            raise CheckpointError(
                f"{fn}: {path}: {key!r} must be a dict, not {_type_name(state[key])}"
            )
    for name, weights in state["models"].items():
        if not isinstance(weights, Mapping):
            raise CheckpointError(
                f"{fn}: {path}: models[{name!r}] must be a state dict (name -> tensor), not "
                f"{_type_name(weights)}"
            )
        for key, value in weights.items():
            if not isinstance(value, torch.Tensor):
                raise CheckpointError(
                    f"{fn}: {path}: models[{name!r}][{key!r}] must be a tensor, not "
                    f"{_type_name(value)}"
                )
    if "run_id" in state and not isinstance(state["run_id"], str):
        raise CheckpointError(f"{fn}: {path}: 'run_id' must be a str, got {state['run_id']!r}")
