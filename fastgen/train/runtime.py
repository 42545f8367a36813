"""What every trainer needs around its step: devices, processes, seeds, data order, AMP,
the run folder (run.json, config.json, log.jsonl, samples/, checkpoints/, losses.png), progress.

Reproducibility: the data order and every random draw of step ``s`` on rank ``r`` are
functions of ``(seed, s, r)`` alone: the batch comes from a per-epoch permutation seeded by
``(seed, epoch)``, and torch's generators are re-seeded from ``(seed, s, r)`` at the start of
each step. A run resumed from a checkpoint at step k therefore draws exactly what the
uninterrupted run draws from step k + 1 on, with no RNG state to replay.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import sys
import time
import uuid
import warnings
from contextlib import nullcontext
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist

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


def mix_seed(*parts: int) -> int:
    """A 63-bit seed from integers, well mixed (nearby steps give unrelated streams)."""
    digest = hashlib.blake2b(repr(tuple(int(p) for p in parts)).encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") >> 1


class Distributed:
    """The process group when launched by torchrun (WORLD_SIZE > 1), else a single process."""

    def __init__(self, device: torch.device) -> None:
        self.world_size = int(os.environ.get("WORLD_SIZE", "1"))
        self.rank = int(os.environ.get("RANK", "0"))
        self.local_rank = int(os.environ.get("LOCAL_RANK", "0"))
        self.owns_group = False
        self.device = device
        if self.world_size > 1:
            if device.type == "cuda":
                self.device = torch.device("cuda", self.local_rank)
                torch.cuda.set_device(self.device)
            if not dist.is_initialized():
                dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
                self.owns_group = True
            self.rank, self.world_size = dist.get_rank(), dist.get_world_size()

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def barrier(self) -> None:
        if self.enabled:
            dist.barrier()

    def all_true(self, flag: bool) -> bool:
        """True when `flag` holds on every rank (so all ranks take the same branch)."""
        if not self.enabled:
            return flag
        value = torch.tensor([1.0 if flag else 0.0], device=self.device)
        dist.all_reduce(value, op=dist.ReduceOp.MIN)
        return bool(value.item() > 0)

    def in_sync(self, modules) -> bool:
        """True when the modules' parameters are bitwise equal on every rank. (Buffers are not
        compared: without sync BN each rank's running statistics follow its own batches and
        DDP re-broadcasts rank 0's at every forward; checkpoints hold rank 0's.)"""
        digest = hashlib.sha256()
        for module in modules:
            for key, value in module.named_parameters():
                digest.update(key.encode())
                digest.update(
                    value.detach().cpu().contiguous().view(-1).view(torch.uint8).numpy().tobytes()
                )
        if not self.enabled:
            return True
        digests: list[str | None] = [None] * self.world_size
        dist.all_gather_object(digests, digest.hexdigest())
        return len(set(digests)) == 1

    def close(self) -> None:
        if self.owns_group and dist.is_initialized():
            dist.destroy_process_group()


def setup_torch(config) -> None:
    if config.num_threads > 0:
        torch.set_num_threads(config.num_threads)
    if config.deterministic:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        torch.use_deterministic_algorithms(True)
        torch.backends.cudnn.benchmark = False


def require_train_extras(progress: bool, fn: str) -> None:
    """Fails before training when a package of the [train] extra that the run will use is
    missing: Pillow (sample grids), matplotlib (the loss plot, written at the end) and, with a
    progress bar, tqdm."""
    from fastgen.utils.extras import require

    require(*(("tqdm",) if progress else ()), "matplotlib", "PIL", fn=fn)


class BatchSampler:
    """The images of step s on rank r: a deterministic function of (seed, s, r).

    All ranks walk one sequence of per-epoch permutations (each seeded by (seed, epoch)) in
    global batches of ``batch_size * world_size``; rank r takes its slice of each.
    """

    def __init__(self, dataset, batch_size: int, seed: int, device, rank: int = 0, world: int = 1):
        # An ImageDataset held as uint8 (image folders) stays uint8 on the device, a quarter of
        # float32, and each batch is converted as the dataset converts its items.
        pixels = getattr(dataset, "pixels", None)
        images = pixels if pixels is not None else getattr(dataset, "images", None)
        if images is None:  # any (image, label) Dataset: stacked once (the datasets are small)
            items = [dataset[i] for i in range(len(dataset))]
            images = torch.stack([torch.as_tensor(item[0]) for item in items])
            labels = torch.tensor([int(item[1]) for item in items])
        else:
            labels = getattr(dataset, "labels", None)
        if len(images) == 0:
            raise ValueError("fastgen.train: the dataset is empty")
        dtype = torch.uint8 if pixels is not None else torch.float32
        self.storage = images.to(device=device, dtype=dtype)
        self.labels = None if labels is None else torch.as_tensor(labels).to(device)
        self.n, self.batch_size, self.seed = len(self.storage), batch_size, seed
        self.rank, self.world = rank, world
        self._perms: dict[int, torch.Tensor] = {}

    def _permutation(self, epoch: int) -> torch.Tensor:
        if epoch not in self._perms:
            if len(self._perms) > 4:
                self._perms.clear()
            gen = torch.Generator().manual_seed(mix_seed(self.seed, epoch, 0xDA7A))
            self._perms[epoch] = torch.randperm(self.n, generator=gen)
        return self._perms[epoch]

    def indices(self, step: int) -> torch.Tensor:
        global_batch = self.batch_size * self.world
        start = (step - 1) * global_batch + self.rank * self.batch_size
        positions = torch.arange(start, start + self.batch_size)
        epochs, offsets = positions // self.n, positions % self.n
        return torch.stack(
            [self._permutation(int(e))[int(o)] for e, o in zip(epochs.tolist(), offsets.tolist())]
        )

    def images(self, index: torch.Tensor) -> torch.Tensor:
        """Images ``index`` as float32 in [-1, 1] on the device."""
        index = index.to(self.storage.device)
        if self.storage.dtype == torch.uint8:
            from fastgen.data.dataset import pixels_to_unit_range

            return pixels_to_unit_range(self.storage[index])
        return self.storage[index]

    def batch(self, step: int) -> tuple[torch.Tensor, torch.Tensor | None]:
        index = self.indices(step).to(self.storage.device)
        labels = None if self.labels is None else self.labels[index]
        return self.images(index), labels


def dataset_shape(dataset) -> tuple[int, int]:
    """(channels, resolution) of a dataset's images."""
    first = torch.as_tensor(dataset[0][0])
    if first.dim() != 3 or first.shape[1] != first.shape[2]:
        raise ValueError(
            f"fastgen.train: dataset images must be [C, R, R], got {tuple(first.shape)}"
        )
    return int(first.shape[0]), int(first.shape[1])


def check_dataset(config, dataset) -> int:
    """The channel count to build the models with; errors if the data does not fit config."""
    channels, resolution = dataset_shape(dataset)
    if resolution != config.resolution:
        raise ValueError(
            f"fastgen.train: config.resolution is {config.resolution} but the dataset's images are "
            f"{resolution}x{resolution} (load the data at resolution={config.resolution})"
        )
    if config.channels not in (None, channels):
        raise ValueError(
            f"fastgen.train: config.channels is {config.channels} but the dataset has {channels}"
        )
    return channels


class Precision:
    """Autocast context and GradScalers for config.amp ("", "bf16", "fp16")."""

    def __init__(self, amp: str, device: torch.device, names: list[str]) -> None:
        self.amp, self.device = amp, device
        self.dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(amp)
        # fp16 needs loss scaling; one scaler per optimizer, since their overflows differ.
        enabled = amp == "fp16"
        self.scalers = {name: torch.amp.GradScaler(device.type, enabled=enabled) for name in names}

    def autocast(self):
        if self.dtype is None:
            return nullcontext()
        return torch.autocast(self.device.type, dtype=self.dtype)

    def step(self, name: str, loss: torch.Tensor, optimizer: torch.optim.Optimizer) -> None:
        scaler = self.scalers[name]
        optimizer.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        scaler.step(optimizer)
        scaler.update()

    def state_dict(self) -> dict[str, Any]:
        return {name: scaler.state_dict() for name, scaler in self.scalers.items()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        for name, scaler in self.scalers.items():
            if state.get(name):
                scaler.load_state_dict(state[name])


class NonFiniteGuard:
    """Counts non-finite losses in a row; the step is skipped, after `limit` training stops."""

    def __init__(self, limit: int) -> None:
        self.limit, self.in_a_row, self.total = limit, 0, 0

    def ok(self, step: int, losses: dict[str, torch.Tensor], dist_: Distributed) -> bool:
        finite = all(bool(torch.isfinite(v).all()) for v in losses.values())
        finite = dist_.all_true(finite)
        if finite:
            self.in_a_row = 0
            return True
        self.in_a_row += 1
        self.total += 1
        if dist_.is_main:
            values = ", ".join(f"{k}={float(v.detach()):.4g}" for k, v in losses.items())
            print(
                f"fastgen.train: step {step}: non-finite loss ({values}); step skipped",
                file=sys.stderr,
            )
        if self.limit and self.in_a_row >= self.limit:
            raise TrainingError(
                f"fastgen.train: stopped at step {step} after {self.in_a_row} non-finite losses in a "
                f"row (lower the learning rate, check the data, or try --amp bf16 instead of fp16); "
                f"the last checkpoint holds the last good weights"
            )
        return False


class TrainingError(RuntimeError):
    """Training cannot continue (e.g. the loss kept being non-finite)."""


class BufferSnapshot:
    """Copies of the modules' floating buffers (batch-norm statistics), taken before a step so
    a skipped (non-finite) step can undo the running-statistics update of its forward pass."""

    def __init__(self, modules) -> None:
        self.buffers = [b for m in modules for b in m.buffers() if b.is_floating_point()]
        self.saved: list[torch.Tensor] = []

    def take(self) -> None:
        self.saved = [b.detach().clone() for b in self.buffers]

    @torch.no_grad()
    def restore(self) -> None:
        for buffer, saved in zip(self.buffers, self.saved):
            buffer.copy_(saved)


def all_finite(modules) -> bool:
    return all(
        bool(torch.isfinite(t).all())
        for m in modules
        for t in m.state_dict().values()
        if t.is_floating_point()
    )


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


def open_run_folder(config, run: Distributed, resume=None, state=None) -> RunFolder:
    """The RunFolder of a run (see RunFolder), claimed by the main process; every rank raises
    when it refuses, so no rank is left waiting for the others."""
    folder, error = None, None
    if run.is_main:
        try:
            folder = RunFolder(config.out_dir, config, active=True, resume=resume, state=state)
        except (RunFolderError, WriteError) as err:
            error = err
    if not run.all_true(error is None):
        raise error or RunFolderError(
            f"fastgen.train: rank 0 refused the out folder {config.out_dir} (see its error)"
        )
    return folder or RunFolder(config.out_dir, config, active=False)


def eval_log_row(step: int, evaluator, results: dict) -> dict[str, Any]:
    """The log.jsonl row of one evaluation. It names the feature extractor when the evaluator
    says which (fastgen.metrics.make_evaluator does): a digits-classifier FID is not an
    Inception FID, and the row must not pass for one."""
    row: dict[str, Any] = {"step": step, "eval": {k: float(v) for k, v in results.items()}}
    extractor = getattr(evaluator, "extractor", None)
    if extractor:
        row["extractor"] = str(extractor)
    return row


def read_log(path) -> list[dict[str, Any]]:
    """The rows of a log.jsonl. A line that is not a JSON object (the torn last row of a run
    killed while logging) is skipped with a RunFileWarning naming the file and line."""
    rows = []
    with open(path) as handle:
        for number, line in enumerate(handle, 1):
            line = line.strip()
            if not line:
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError:
                row = None
            if not isinstance(row, dict):
                warnings.warn(
                    f"fastgen.train.read_log: {path}: line {number} is not a JSON object "
                    f"(torn by a run killed while logging?); skipped",
                    RunFileWarning,
                    stacklevel=2,
                )
                continue
            rows.append(row)
    return rows


def plot_losses(rows: list[dict[str, Any]], keys: list[str], path: Path) -> Path:
    """One panel per key (loss vs step), PNG tagged as machine-generated."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    import fastgen

    keys = [k for k in keys if any(isinstance(r.get(k), int | float) for r in rows)]
    fig, axes = plt.subplots(
        len(keys) or 1, 1, figsize=(6, 2.2 * max(1, len(keys))), sharex=True, squeeze=False
    )
    for ax, key in zip(axes[:, 0], keys):
        points = [
            (r["step"], r[key])
            for r in rows
            if isinstance(r.get(key), int | float) and math.isfinite(r[key])
        ]
        if points:
            steps, values = zip(*points)
            ax.plot(steps, values, lw=1)
        ax.set_ylabel(key)
        ax.grid(alpha=0.3)
    axes[-1, 0].set_xlabel("step")
    fig.tight_layout()
    metadata = {
        "Software": f"fastgen {fastgen.__version__}",
        "fastgen:generated": "true (machine-generated image)",
    }
    try:
        atomic_write(
            path,
            lambda handle: fig.savefig(handle, format="png", dpi=100, metadata=metadata),
            fn="fastgen.train.plot_losses",
        )
    finally:
        plt.close(fig)
    return path


class Progress:
    """A tqdm bar (it/s from tqdm; images/s and the latest losses as its postfix)."""

    def __init__(
        self, start: int, total: int, images_per_step: int, enabled: bool, desc: str
    ) -> None:
        self.bar = None
        self.images_per_step = images_per_step
        self.start_time, self.start_step = time.perf_counter(), start
        if enabled:
            from tqdm.auto import tqdm

            self.bar = tqdm(
                total=total, initial=start, desc=desc, unit="it", dynamic_ncols=True, leave=True
            )

    def images_per_second(self, step: int) -> float:
        elapsed = time.perf_counter() - self.start_time
        return (step - self.start_step) * self.images_per_step / elapsed if elapsed > 0 else 0.0

    def update(self, step: int, values: dict[str, float] | None = None) -> None:
        if self.bar is None:
            return
        self.bar.update(1)
        if values is not None:
            post = {k: f"{v:.3f}" for k, v in values.items()}
            post["img/s"] = f"{self.images_per_second(step):.0f}"
            self.bar.set_postfix(post, refresh=False)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


def rng_state(seed: int, step: int) -> dict[str, Any]:
    state: dict[str, Any] = {"seed": seed, "step": step, "torch": torch.get_rng_state()}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng(state: dict[str, Any]) -> None:
    if "torch" in state:
        torch.set_rng_state(state["torch"].cpu())
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all([s.cpu() for s in state["cuda"]])


def seed_step(seed: int, step: int, rank: int) -> None:
    """Re-seeds torch (all devices) for step `step` on rank `rank`."""
    torch.manual_seed(mix_seed(seed, step, rank))
