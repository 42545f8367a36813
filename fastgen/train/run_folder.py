"""The run folder: out/run.json, out/config.json, out/log.jsonl, out/samples/,
out/checkpoints/, out/losses.png; one folder holds one run."""

from __future__ import annotations

import json
import time
import uuid
import warnings
from pathlib import Path
from typing import Any

import torch

from fastgen.train.checkpoint import (
    NAME,
    TEMPORARY,
    RunFileWarning,
    WriteError,
    atomic_write,
    checkpoint_name,
    checkpoint_step,
    list_checkpoints,
    save_checkpoint,
    writing,
)
from fastgen.train.precision import TrainingError
from fastgen.train.run_log import plot_losses, read_log


class RunFolderError(ValueError):
    """An out folder this run must not write into: it holds another run."""


MARKER = "run.json"


def new_run_id() -> str:
    return uuid.uuid4().hex[:16]


class RunFolder:
    """out/run.json, out/config.json, out/log.jsonl, out/samples/, out/checkpoints/, out/losses.png.

    One folder holds one run. run.json names the run by a random id, which every checkpoint
    of the run also stores ("run_id"), so that what a run deletes or rewrites in its folder
    (pruned checkpoints, the log after the step it resumed from) is always its own:

    - a fresh run (no resume) refuses a folder that already holds a run (run.json, log rows
      or checkpoints): it would delete that run's log and mix checkpoints with it, and its
      pruning, which keeps the highest steps, would delete its own;
    - a resumed run continues its checkpoint's run: in the folder of that run (same id, or a
      checkpoint from before run ids lying in the folder), or in a folder that holds no run,
      which then becomes that run's folder; never in a folder of another run.

    `--resume latest` therefore picks the newest checkpoint of the folder's one run. At start
    the temporaries of the run's interrupted writes are removed. Only the main process
    writes; the others get a RunFolder that checks and writes nothing.
    """

    def __init__(self, out_dir, config, *, active: bool, resume=None, state=None) -> None:
        """`resume`: the checkpoint path the run continues from and `state`, what
        load_checkpoint read from it; None for a fresh run."""
        self.root = Path(out_dir)
        self.active = active
        self.samples = self.root / "samples"
        self.checkpoints = self.root / "checkpoints"
        self.log_path = self.root / "log.jsonl"
        self.marker = self.root / MARKER
        self.run_id: str | None = None
        if not active:
            return
        self.run_id = self._claim(config, resume, state or {})
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

    def _claim(self, config, resume, state) -> str:
        folder_id, held = self.held_run()
        if resume is None:
            if held:
                raise RunFolderError(
                    f"fastgen.train: {self.root} already holds a run ({', '.join(held)}); "
                    f"continue it with --resume latest, or train into "
                    f"a new or empty folder (delete this one to start over)"
                )
            run_id = new_run_id()
        else:
            checkpoint_id = state.get("run_id")
            if held:
                path = Path(resume).resolve()
                inside = path.parent in (self.root.resolve(), self.checkpoints.resolve())
                same = checkpoint_id == folder_id if checkpoint_id and folder_id else inside
                if not same:
                    raise RunFolderError(
                        f"fastgen.train: {resume} is a checkpoint of another run than the one "
                        f"in {self.root} ({', '.join(held)}); resuming it there would mix the "
                        f"two runs' files: resume it into its own folder or a new or empty one"
                    )
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
            run_id = folder_id or checkpoint_id or new_run_id()
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

    def remove_stale_temporaries(self) -> None:
        """Deletes what killed writes of this run left: atomic_write's temporaries of the run's
        own files (and the fixed-name one of older fastgen's losses.png). The folder holds
        only this run, which has not started writing yet, so none is being written."""
        own = {
            self.root: lambda name: (
                name in (MARKER, "config.json", self.log_path.name, "losses.png")
            ),
            self.checkpoints: lambda name: NAME.match(name) is not None,
            self.samples: lambda name: name.endswith(".png"),
        }
        for folder, is_own in own.items():
            if not folder.is_dir():
                continue
            for path in folder.iterdir():
                match = TEMPORARY.match(path.name)
                if (match and is_own(match.group("name"))) or (
                    folder == self.root and path.name == ".losses.png.tmp"
                ):
                    path.unlink(missing_ok=True)

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
        self, images: torch.Tensor, name: str, *, nrow=None, metadata=None
    ) -> Path | None:
        if not self.active:
            return None
        from fastgen.utils.images import save_image_grid

        meta = {k: str(v) for k, v in (metadata or {}).items()}
        path = self.samples / name
        with writing(path, "fastgen.train.RunFolder.save_grid"):
            return save_image_grid(images, path, nrow=nrow, metadata=meta)

    def plot_losses(self, keys: list[str]) -> Path | None:
        if not self.active or not self.log_path.exists():
            return None
        return plot_losses(read_log(self.log_path), keys, self.root / "losses.png")


def open_run_folder(config, processes, resume=None, state=None) -> RunFolder:
    """The RunFolder of a run (see RunFolder), claimed by the main process; every rank raises
    when it refuses, so no rank is left waiting for the others. `processes`: the run's
    fastgen.train.distributed.Distributed."""
    folder, error = None, None
    if processes.is_main:
        try:
            folder = RunFolder(config.out_dir, config, active=True, resume=resume, state=state)
        except (RunFolderError, WriteError) as err:
            error = err
    if not processes.all_true(error is None):
        raise error or RunFolderError(
            f"fastgen.train: rank 0 refused the out folder {config.out_dir} (see its error)"
        )
    return folder or RunFolder(config.out_dir, config, active=False)
