"""Checkpoints: the whole training state in one file, written atomically, loaded safely.

A checkpoint is a dict of tensors and primitive containers only (the config as a dict), so
``torch.load(weights_only=True)`` reads it and loading can never run code::

    {"format": "fastgen-checkpoint", "version": 1, "step": int, "config": dict,
     "models": {"generator"|"discriminator"|"ema"|"vae": state_dict},
     "optimizers": {name: state_dict}, "scalers": {name: state_dict},
     "rng": {"torch": ByteTensor, "cuda": [ByteTensor, ...], "seed": int},
     "meta": dict, "run_id": str, "sha256": str}

The data order and all noise of step ``s`` are functions of ``(seed, s)`` (see
fastgen.train.runtime), so ``step`` and ``seed`` fully determine where a resumed run continues.
``run_id`` names the run that wrote the file (see fastgen.train.runtime.RunFolder).

``sha256`` is a digest of everything else in the file (``state_digest``: key names, values
and every tensor's dtype, shape and bytes), checked on load: torch does not check the data it
reads back, so without it a flipped block of weights would train on unnoticed. Checkpoints
from before the digest load with a RunFileWarning.

Writes go through ``atomic_write``, fastgen's one writer of files that must never be seen
half-written: a temporary ``.<name>.<random>.tmp`` in the same folder, fsync'ed, then renamed
over the final name (and the folder fsync'ed), so a crash leaves the old file or the new one,
never a torn one. A write that fails (full disk, read-only file system) raises WriteError
naming the file and leaves no temporary behind; one killed mid-write leaves its temporary,
which the next start of the run removes (RunFolder). Only the newest ``keep`` files named
``ckpt_XXXXXX.pt`` up to the one just written are kept.
"""

from __future__ import annotations

import errno
import hashlib
import os
import re
import tempfile
import warnings
from collections.abc import Callable, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any

import torch

FORMAT = "fastgen-checkpoint"
VERSION = 1
NAME = re.compile(r"^ckpt_(\d+)\.pt$")
# atomic_write's temporaries: "." + final name + "." + mkstemp's 8 random characters + ".tmp"
TEMPORARY = re.compile(r"^\.(?P<name>.+)\.[a-z0-9_]{8}\.tmp$")


class CheckpointError(RuntimeError):
    """A checkpoint file that cannot be used (missing, truncated, damaged, malformed, unsafe,
    not fastgen's); the message names the file and what is wrong with it."""


class WriteError(OSError):
    """A file fastgen could not write (full disk, read-only file system, no permission). The
    message names the file; ``errno`` is the operating system's; the file is unchanged."""

    def __init__(self, message: str, path, code: int | None) -> None:
        super().__init__(message)
        self.errno = code  # set after __init__ so that str() stays the one-line message
        self.path = Path(path)


class RunFileWarning(UserWarning):
    """A run or checkpoint file read with a caveat (a checkpoint without a checksum, a torn
    log line that was skipped); the message names the file."""


def checkpoint_name(step: int) -> str:
    return f"ckpt_{step:06d}.pt"


def _detail(exc: BaseException, limit: int = 240) -> str:
    """An exception's message on one line (torch's span several), at most `limit` characters."""
    text = " ".join(line.strip() for line in str(exc).splitlines() if line.strip())
    text = text or type(exc).__name__
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _fsync_dir(folder: Path) -> None:
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:  # some platforms cannot open folders
        return
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


@contextmanager
def writing(path, fn: str, note: str = ""):
    """Turns an OSError of the block (a full disk, a read-only file system, no permission)
    into a one-line WriteError: `fn` (the writing function), `path`, the reason, `note`."""
    try:
        yield
    except WriteError:
        raise
    except OSError as exc:
        code = exc.errno
        if code in errno.errorcode:
            reason = f"{exc.strerror or os.strerror(code)} [{errno.errorcode[code]}]"
        else:
            reason = _detail(exc)
        raise WriteError(f"{fn}: cannot write {path}: {reason}{note}", path, code) from exc


def atomic_write(path, write: Callable[[IO[bytes]], None], *, fn: str) -> Path:
    """Writes a file with ``write(handle)`` so that `path` holds the old contents or the whole
    new ones, never a part (see the module docstring). The file gets the mode open() would
    give it (mkstemp's is 0600). An OSError becomes a WriteError naming `path` and `fn`, the
    calling function; the temporary is removed on any error. Returns the path."""
    from fastgen.utils.images import default_file_mode

    path = Path(path)
    tmp = None
    try:
        with writing(path, fn, " (the file there, if any, is unchanged)"):
            path.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
            with os.fdopen(fd, "wb") as handle:
                os.fchmod(handle.fileno(), default_file_mode())
                write(handle)
                handle.flush()
                os.fsync(handle.fileno())
            os.replace(tmp, path)
            tmp = None
    finally:
        if tmp is not None:
            try:
                Path(tmp).unlink(missing_ok=True)
            except OSError:
                pass  # the run's next start removes it (RunFolder)
    _fsync_dir(path.parent)  # after the rename: the file is new now, whatever this raises
    return path


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
        fn="fastgen.train.checkpoint.save_checkpoint",
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
        raise ValueError(
            f"fastgen.train.checkpoint.checkpoint_step: {path} is not a ckpt_XXXXXX.pt"
        )
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


def checkpoint_file(path) -> str:
    """`path` itself when it is a file, else the newest checkpoint of the run folder it
    names (what `fastgen sample|export|eval RUN_FOLDER` read)."""
    if Path(path).is_dir():
        found = latest_checkpoint(path)
        if found is None:
            raise FileNotFoundError(
                f"{path} is a folder with no checkpoint (nor a checkpoints/ one)"
            )
        return str(found)
    return str(path)


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
    path = Path(path)
    fn = "fastgen.train.checkpoint.load_checkpoint"
    if not path.is_file():
        raise CheckpointError(f"{fn}: no checkpoint file at {path}")
    try:
        with warnings.catch_warnings():
            # torch notes the pickle protocol of files it refuses anyway
            warnings.filterwarnings("ignore", message="Detected pickle protocol")
            state = torch.load(path, map_location=map_location, weights_only=True)
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
            stacklevel=2,
        )
    elif stored != state_digest(state):
        raise CheckpointError(
            f"{fn}: {path} is damaged: its contents do not match the sha256 checksum stored in "
            f"it (a disk or copy error); use an earlier checkpoint"
        )
    check_entries(path, state, fn)
    return state


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


def _load_weights(path, state: dict, name: str, model, fn: str, misfit: str) -> None:
    """state["models"][name] into model, or a CheckpointError naming the file."""
    if name not in state["models"]:
        raise CheckpointError(f"{fn}: {path} has no {name!r} weights")
    try:
        model.load_state_dict(state["models"][name])
    except (RuntimeError, ValueError, TypeError, KeyError) as exc:
        raise CheckpointError(f"{fn}: {path}: {misfit}: {_detail(exc)}") from exc


def restore_training_state(
    path, state: dict[str, Any], *, models: dict, optimizers: dict, scalers, fn: str
) -> int:
    """Loads a checkpoint's models, optimizers, GradScalers (`scalers.load_state_dict`) and
    torch RNG state into a trainer's objects; returns its step. A checkpoint that does not fit
    (missing entries, other shapes, a bad RNG state) is a CheckpointError naming the file."""
    from fastgen.train.runtime import restore_rng

    for name, model in models.items():
        _load_weights(path, state, name, model, fn, f"does not fit this config's {name}")
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
                f"{_type_name(saved[name]) if name in saved else 'missing'}"
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
        ("rng", restore_rng, state.get("rng", {})),
    ):
        try:
            load(value)
        except Exception as exc:  # a malformed entry reaches torch as any of several types
            raise CheckpointError(f"{fn}: {path}: bad {key!r} entry: {_detail(exc)}") from exc
    return state["step"]


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


def load_models(path, device="cpu", *, fused: bool | None = None, state=None):
    """(config, models) from a checkpoint: {"generator", "discriminator", "ema"} or {"vae"},
    in eval mode on `device`. `fused` overrides the config's choice of layers (the state
    dicts are the same). `state`: the checkpoint as load_checkpoint(path) returned it, to
    read the file once. A checkpoint whose entries do not make the models is a
    CheckpointError naming the file."""
    from fastgen.train.config import config_from_dict

    fn = "fastgen.train.checkpoint.load_models"
    state = load_checkpoint(path) if state is None else state
    try:
        config = config_from_dict(state["config"])
    except (ValueError, TypeError, KeyError) as exc:
        raise CheckpointError(f"{fn}: {path} has a bad 'config' entry: {_detail(exc)}") from exc
    if fused is not None:
        config.fused = fused
    meta = state.get("meta", {})
    try:
        models = build_models(config, meta.get("num_classes", 0), meta.get("channels"))
    except (ValueError, TypeError) as exc:
        raise CheckpointError(
            f"{fn}: {path}: its 'config' and 'meta' entries do not make models: {_detail(exc)}"
        ) from exc
    for name, model in models.items():
        _load_weights(path, state, name, model, fn, f"models[{name!r}] does not fit its config")
        model.to(device).eval()
    return config, models
