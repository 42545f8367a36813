"""The run folder: out/run.json, out/config.json, out/log.jsonl, out/samples/,
out/checkpoints/, out/losses.png, out/run.lock; one folder holds one run."""

from __future__ import annotations

import json
import os
import re
import time
import uuid
import warnings
from pathlib import Path
from typing import Any

try:
    import fcntl
except ImportError:  # Windows: no advisory locks; runs are not locked there
    fcntl = None

import torch

from fastgen.checkpoint_io import (
    RunFileWarning,
    checkpoint_name,
    checkpoint_step,
    list_checkpoints,
    save_checkpoint,
)
from fastgen.train.best import BEST_NAME
from fastgen.train.precision import TrainingError
from fastgen.train.run_log import plot_losses, read_log
from fastgen.utils.atomic import TEMPORARY, WriteError, atomic_write, writing


class RunFolderError(ValueError):
    """An out folder this run must not write into: it holds another run."""


MARKER = "run.json"
LOCK = "run.lock"  # flock'ed by the process training in the folder, for the run's life

# The files a run writes, by subfolder ("" the folder itself): what --overwrite removes, and
# what a fresh run removes from a folder whose run has no checkpoint. ckpt_*.eval.json are
# `fastgen eval CKPT`'s results beside a checkpoint; ckpt_*.pt in the folder itself are older
# fastgen's checkpoints; best.pt the best evaluation's checkpoint (fastgen.train.best);
# real_features.pt the evaluator's cache of the real set's features (fastgen.metrics.cache).
# run.lock stays: removing it could let two runs hold "the" lock.
RUN_FILES = {
    "": re.compile(
        r"^(run\.json|config\.json|log\.jsonl|losses\.png|real_features\.pt|"
        r"ckpt_\d+\.(pt|eval\.json))$"
    ),
    "samples": re.compile(r"^(step|recon)_\d+\.png$"),
    "checkpoints": re.compile(r"^(ckpt_\d+|best)\.(pt|eval\.json)$"),
}


def new_run_id() -> str:
    return uuid.uuid4().hex[:16]


class RunFolder:
    """out/run.json, out/config.json, out/log.jsonl, out/samples/, out/checkpoints/,
    out/losses.png, out/run.lock.

    One folder holds one run. run.json names the run by a random id, which every checkpoint
    of the run also stores ("run_id"), so that what a run deletes or rewrites in its folder
    (pruned checkpoints, the log after the step it resumed from) is always its own:

    - a fresh run (no resume) refuses a folder that already holds a run (run.json, log rows
      or checkpoints): it would delete that run's log and mix checkpoints with it, and its
      pruning, which keeps the highest steps, would delete its own;
    - a resumed run continues its checkpoint's run: in the folder of that run (same id, or a
      checkpoint from before run ids lying in the folder), or in a folder that holds no run,
      which then becomes that run's folder; never in a folder of another run.

    A run that left no checkpoint in its folder (it stopped before its first) blocks nothing:
    a fresh run, or a resume of another run, replaces its files (with a note), and
    `overwrite` replaces a run that has checkpoints. Every refusal comes before anything is
    written. While a run trains, its process holds an advisory lock (flock) on out/run.lock,
    so a second run started into the folder refuses instead of mixing its files with the
    first's; close() releases it (so does the process's end, however it ends).

    `--resume latest` therefore picks the newest checkpoint of the folder's one run. At start
    the temporaries of the run's interrupted writes are removed. Only the main process
    writes; the others get a RunFolder that checks and writes nothing.
    """

    def __init__(
        self, out_dir, config, *, active: bool, resume=None, state=None, overwrite=False
    ) -> None:
        """`resume`: the checkpoint path the run continues from and `state`, what
        load_checkpoint read from it; None for a fresh run. `overwrite`: a fresh run replaces
        the run the folder holds (its files, RUN_FILES) instead of refusing it."""
        self.root = Path(out_dir)
        self.active = active
        self.samples = self.root / "samples"
        self.checkpoints = self.root / "checkpoints"
        self.log_path = self.root / "log.jsonl"
        self.marker = self.root / MARKER
        self.best_path = self.checkpoints / BEST_NAME
        self.run_id: str | None = None
        self.lock: int | None = None  # the locked run.lock's descriptor
        if not active:
            return
        self._check(resume, state or {}, overwrite)  # reads only: a refusal writes nothing
        self.lock = self._take_lock()
        try:
            self.run_id = self._claim(config, resume, state or {}, overwrite)
            self.remove_stale_temporaries()
            for folder in (self.samples, self.checkpoints):
                with writing(folder, "fastgen.train.RunFolder"):
                    folder.mkdir(parents=True, exist_ok=True)
            text = json.dumps(config.to_dict(), indent=2) + "\n"
            atomic_write(
                self.root / "config.json",
                lambda h: h.write(text.encode()),
                fn="fastgen.train.RunFolder",
            )
            if resume is not None:
                self.truncate_log(int(state["step"]))
        except BaseException:
            self.close()
            raise

    def close(self) -> None:
        """Releases the folder's lock (the run is over)."""
        if self.lock is not None:
            os.close(self.lock)
            self.lock = None

    def _busy(self) -> RunFolderError:
        return RunFolderError(
            f"fastgen.train: {self.root} is in use: another process holds its lock "
            f"({self.root / LOCK}), a run training there; wait for it to end, or train into "
            f"another folder"
        )

    def _lock_held_elsewhere(self) -> bool:
        """True when another process holds run.lock (opens it read-only: creates nothing)."""
        if fcntl is None:
            return False
        try:
            fd = os.open(self.root / LOCK, os.O_RDONLY)
        except OSError:  # no lock file: no run has locked this folder
            return False
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return True
        except OSError:  # a file system without flock: nothing to learn
            return False
        finally:
            os.close(fd)  # and with it the lock, if this took it
        return False

    def _take_lock(self) -> int | None:
        """Creates and locks run.lock for the run's life; its descriptor (None where there are
        no advisory locks). Refuses when another process holds it."""
        if fcntl is None:
            return None
        path = self.root / LOCK
        with writing(path, "fastgen.train.RunFolder"):
            self.root.mkdir(parents=True, exist_ok=True)
            fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise self._busy() from None
        except OSError:  # a file system without flock (some network ones): run unlocked
            os.close(fd)
            return None
        return fd

    def held_run(self) -> tuple[str | None, list[str]]:
        """(the id in run.json or None, what of a run the folder holds: [] when none)."""
        held, folder_id = [], None
        if self.marker.exists():
            held.append(MARKER)
            try:
                folder_id = json.loads(self.marker.read_text()).get("run_id")
            except (OSError, ValueError, AttributeError):
                folder_id = None  # unreadable: a run of unknown id, refused like any other
        if self.log_path.exists() and self.log_path.stat().st_size > 0:
            held.append(self.log_path.name)
        found = list_checkpoints(self.checkpoints) + list_checkpoints(self.root)
        if found:
            newest = max(found, key=checkpoint_step)
            held.append(f"{len(found)} checkpoint(s) up to {newest.name}")
        return folder_id, held

    def _has_checkpoint(self) -> bool:
        return bool(list_checkpoints(self.checkpoints) or list_checkpoints(self.root))

    def _check(self, resume, state, overwrite, *, locked=False) -> tuple[str | None, list, bool]:
        """(run.json's run id, what of a run the folder holds, whether that run's files are
        to be removed first); raises RunFolderError where this run must not start. Reads
        only; `locked`: this process holds the lock (so it is not another's)."""
        if not locked and self._lock_held_elsewhere():
            raise self._busy()
        folder_id, held = self.held_run()
        if resume is None and overwrite:
            return folder_id, held, True
        if not held:
            return folder_id, held, False
        if resume is None:
            if not self._has_checkpoint():
                return folder_id, held, True
            raise RunFolderError(
                f"fastgen.train: {self.root} already holds a run ({', '.join(held)}); "
                f"continue it with --resume latest, replace it with --overwrite, or train "
                f"into a new or empty folder"
            )
        checkpoint_id = state.get("run_id")
        path = Path(resume).resolve()
        inside = path.parent in (self.root.resolve(), self.checkpoints.resolve())
        same = checkpoint_id == folder_id if checkpoint_id and folder_id else inside
        if same:
            return folder_id, held, False
        if not self._has_checkpoint():
            return folder_id, held, True
        raise RunFolderError(
            f"fastgen.train: {resume} is a checkpoint of another run than the one in "
            f"{self.root} ({', '.join(held)}); resuming it there would mix the two runs' "
            f"files: resume it into its own folder or a new or empty one"
        )

    def _claim(self, config, resume, state, overwrite) -> str:
        """Checks the folder again, now under the lock, replaces the files of a run it is to
        replace, and writes run.json; returns the run's id."""
        folder_id, held, replace = self._check(resume, state, overwrite, locked=True)
        if replace:
            self.clear()
            folder_id = None
            if not overwrite:
                warnings.warn(
                    f"fastgen.train: {self.root} held a run with no checkpoint "
                    f"({', '.join(held)}); its files are replaced by this run's",
                    RunFileWarning,
                    stacklevel=4,
                )
        if resume is None:
            run_id = new_run_id()
        else:
            if held and not replace:
                step = int(state["step"])
                later = [p.name for p in list_checkpoints(self.checkpoints)
                         if checkpoint_step(p) > step]  # fmt: skip
                if later:
                    warnings.warn(
                        f"fastgen.train: resuming from step {step} in {self.root}, which holds "
                        f"later checkpoints of the run ({', '.join(later)}); they stay until "
                        f"this run rewrites their steps",
                        RunFileWarning,
                        stacklevel=4,
                    )
            run_id = folder_id or state.get("run_id") or new_run_id()
            if folder_id == run_id:
                return run_id
        record = {
            "run_id": run_id,
            "kind": config.kind,
            "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        }
        text = json.dumps(record, indent=2) + "\n"
        atomic_write(self.marker, lambda h: h.write(text.encode()), fn="fastgen.train.RunFolder")
        return run_id

    def _run_files(self):
        """(path, the final name it stands for, whether it is a temporary) of every file of
        RUN_FILES in the folder, and of the temporaries of their writes."""
        for sub, pattern in RUN_FILES.items():
            folder = self.root / sub if sub else self.root
            if not folder.is_dir():
                continue
            for path in folder.iterdir():
                temporary = TEMPORARY.match(path.name)
                name = temporary.group("name") if temporary else path.name
                if pattern.match(name) and path.is_file():
                    yield path, name, temporary is not None

    def clear(self) -> list[str]:
        """Removes every file a run writes into the folder (RUN_FILES, and temporaries of
        them) and nothing else; returns what it removed."""
        removed = []
        for path, _, _ in self._run_files():
            with writing(path, "fastgen.train.RunFolder.clear"):
                path.unlink(missing_ok=True)
            removed.append(str(path))
        return removed

    def remove_stale_temporaries(self) -> None:
        """Deletes what killed writes of this run left: atomic_write's temporaries of the run's
        own files (and the fixed-name one of older fastgen's losses.png). The folder holds
        only this run, which has not started writing yet, so none is being written. (Those
        of ckpt_*.eval.json stay: `fastgen eval` may be writing one now.)"""
        for path, name, temporary in list(self._run_files()):
            if temporary and not name.endswith(".eval.json"):
                path.unlink(missing_ok=True)
        (self.root / ".losses.png.tmp").unlink(missing_ok=True)

    def write_checkpoint(self, step: int, state: dict[str, Any], keep: int, last) -> Path:
        """Saves the run's checkpoint of `step` (with its run id), pruning to `keep`. A failed
        write stops training with a TrainingError that names the file, the reason and the
        last checkpoint, which is intact. `last`: that checkpoint's path or None."""
        path = self.checkpoints / checkpoint_name(step)
        try:
            return save_checkpoint(path, {**state, "run_id": self.run_id}, keep=keep)
        except WriteError as err:
            kept = (
                f"the last checkpoint, {last}, is intact" if last else "no checkpoint was written"
            )
            raise TrainingError(f"fastgen.train: stopped at step {step}: {err}; {kept}") from err

    def write_best(self, step: int, state: dict[str, Any], last) -> Path:
        """Saves checkpoints/best.pt (the checkpoint of `step`, with the run id), atomically
        over the previous one; it is never pruned. A failed write stops training as a failed
        checkpoint does (write_checkpoint)."""
        try:
            return save_checkpoint(self.best_path, {**state, "run_id": self.run_id})
        except WriteError as err:
            kept = (
                f"the last checkpoint, {last}, is intact" if last else "no checkpoint was written"
            )
            raise TrainingError(f"fastgen.train: stopped at step {step}: {err}; {kept}") from err

    def log(self, row: dict[str, Any]) -> None:
        if self.active:
            with writing(self.log_path, "fastgen.train.RunFolder.log"):
                with open(self.log_path, "a") as handle:
                    handle.write(json.dumps(row) + "\n")

    def truncate_log(self, after_step: int) -> None:
        """On resume, drop rows logged after the checkpoint (they will be logged again), and
        any torn row (read_log notes it), rewriting the log atomically."""
        if not self.active or not self.log_path.exists():
            return
        rows = read_log(self.log_path)
        kept = [r for r in rows if r.get("step", 0) <= after_step]
        text = "".join(json.dumps(r) + "\n" for r in kept)
        atomic_write(
            self.log_path,
            lambda h: h.write(text.encode()),
            fn="fastgen.train.RunFolder.truncate_log",
        )

    def save_grid(
        self,
        images: torch.Tensor,
        name: str,
        *,
        nrow=None,
        metadata=None,
        marks=None,
        provenance: bool = True,
    ) -> Path | None:
        """samples/<name> (fastgen.utils.images.save_image_grid, with its provenance marks)."""
        if not self.active:
            return None
        from fastgen.utils.images import save_image_grid

        meta = {k: str(v) for k, v in (metadata or {}).items()}
        path = self.samples / name
        with writing(path, "fastgen.train.RunFolder.save_grid"):
            return save_image_grid(
                images, path, nrow=nrow, metadata=meta, marks=marks, provenance=provenance
            )

    def plot_losses(self, keys: list[str]) -> Path | None:
        if not self.active or not self.log_path.exists():
            return None
        return plot_losses(read_log(self.log_path), keys, self.root / "losses.png")


def open_run_folder(config, processes, resume=None, state=None, overwrite=False) -> RunFolder:
    """The RunFolder of a run (see RunFolder), claimed by the main process; every rank raises
    when it refuses, so no rank is left waiting for the others. `processes`: the run's
    fastgen.train.distributed.Distributed."""
    folder, error = None, None
    if processes.is_main:
        try:
            folder = RunFolder(
                config.out_dir, config, active=True, resume=resume, state=state,
                overwrite=overwrite,
            )  # fmt: skip
        except (RunFolderError, WriteError) as err:
            error = err
    if not processes.all_true(error is None):
        raise error or RunFolderError(
            f"fastgen.train: rank 0 refused the out folder {config.out_dir} (see its error)"
        )
    return folder or RunFolder(config.out_dir, config, active=False)
