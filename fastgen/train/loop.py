"""The run around a training step, written once for every model (see fastgen.train.task).

run_training(config, dataset, make_task, ...) resumes (the checkpoint's state into the task),
claims the run folder, then for each step s = start + 1 .. config.steps: re-seeds torch from
(seed, s, rank), takes the batch of s, calls ``task.step`` with the NonFiniteGuard deciding
whether its updates apply, and on schedule logs a row (every log_every steps and the last),
evaluates (eval_every; checkpoints/best.pt when --best-metric improves, fastgen.train.best),
draws the sample grids (sample_every) and checkpoints
(checkpoint_every). At the end: the final checkpoint and samples (unless the last step had
them), losses.png and the summary dict that train_gan / train_vae return. SIGINT or SIGTERM
stops the run after the step it is in, every rank after the same one, with a checkpoint of
that step (fastgen.train.signals).
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from functools import partial
from typing import Any

import torch

from fastgen import ops
from fastgen.checkpoint_io import CheckpointError, checkpoint_hash, load_checkpoint
from fastgen.data.subset import limit_dataset
from fastgen.provenance.record import conv_cpu_policy, reproducible_convolutions
from fastgen.provenance.regenerate import train_grid_fields
from fastgen.train.best import BestSoFar
from fastgen.train.data_order import BatchSampler
from fastgen.train.distributed import Distributed
from fastgen.train.precision import NonFiniteGuard, all_finite, warn_if_slow_precision
from fastgen.train.progress import Progress
from fastgen.train.rng import rng_state, seed_step
from fastgen.train.run_folder import RunFolder, open_run_folder
from fastgen.train.run_log import eval_log_row
from fastgen.train.signals import RunInterrupted, StopSignals
from fastgen.train.task import TrainingTask
from fastgen.utils.devices import resolve_device
from fastgen.utils.run_info import cpu_capability


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


def run_training(
    config,
    dataset,
    make_task: Callable[[torch.device], TrainingTask],
    *,
    resume: str | None,
    evaluator,
    progress: bool,
    fn: str,
    overwrite: bool = False,
) -> dict[str, Any]:
    """Trains the task `make_task(device)` builds on `dataset` as `config` says; returns the
    summary dict. `fn` names the caller in errors (fastgen.train.train_gan, ...); `overwrite`:
    replace the run config.out_dir holds (see RunFolder). Whatever refuses the run does so
    before the run folder is written. A signal that stops it raises RunInterrupted."""
    if overwrite and resume is not None:
        raise ValueError(
            f"{fn}: overwrite=True would remove the run that resume={resume!r} continues: give one"
        )
    setup_torch(config)
    cpu_capability()  # a bad FASTGEN_CPU_CAPABILITY raises here, not in the first step
    dataset = limit_dataset(dataset, config.limit, config.seed, fn)  # --limit N
    processes = Distributed(resolve_device(config.device, "fastgen.train"))
    folder = None
    try:
        if processes.is_main:
            warn_if_slow_precision(config.amp, processes.device)
        torch.manual_seed(config.seed)  # the initial weights
        task = make_task(processes.device)
        start, state = 0, None
        if resume is not None:
            state = load_checkpoint(resume, map_location=processes.device)
            start = task.restore(resume, state, fn)
        task.prepare(processes)  # refuses e.g. stock sync BN on CPU
        folder = open_run_folder(config, processes, resume, state, overwrite)
        sampler = BatchSampler(
            dataset,
            config.batch_size,
            config.seed,
            processes.device,
            processes.rank,
            processes.world_size,
        )
        task.fix_samples(sampler)
        loop = RunLoop(
            task,
            config,
            processes,
            folder,
            sampler,
            start=start,
            evaluator=evaluator,
            progress=progress,
        )
        if state is not None:
            loop.restore_best(resume, state, fn)
        return loop.run()
    finally:
        if folder is not None:
            folder.close()
        processes.close()


class RunLoop:
    """Steps start + 1 .. config.steps of a task, their schedule, and the run's end."""

    def __init__(
        self,
        task: TrainingTask,
        config,
        processes: Distributed,
        folder: RunFolder,
        sampler: BatchSampler,
        *,
        start: int,
        evaluator=None,
        progress: bool = True,
    ) -> None:
        self.task, self.config, self.processes = task, config, processes
        self.folder, self.sampler, self.start, self.evaluator = folder, sampler, start, evaluator
        self.guard = NonFiniteGuard(config.max_nonfinite, processes)
        self.last: dict[str, float] = {}  # the losses of the latest logged step
        self.last_checkpoint = None
        # the run's best evaluation (checkpoints/best.pt; kept in every checkpoint, also of
        # a stretch resumed without --eval-every), and the seconds spent evaluating, which
        # the eval rows' train_time_s leaves out
        self.best = BestSoFar(config.best_metric)
        self.eval_seconds = 0.0
        images_per_step = config.batch_size * processes.world_size
        enabled = progress and processes.is_main
        self.bar = Progress(start, config.steps, images_per_step, enabled, task.kind)
        self.began = time.perf_counter()

    def run(self) -> dict[str, Any]:
        config = self.config
        step = self.start
        with StopSignals() as signals:
            try:
                for step in range(self.start + 1, config.steps + 1):
                    self.train_step(step)
                    self.on_schedule(step)
                    # A signal may reach one rank only (or each at another step): the ranks
                    # agree after every step, so all stop after the same one.
                    signum = self.processes.largest(signals.requested)
                    if signum and step < config.steps:
                        self.stop(step, signum)
            except RunInterrupted as stopped:
                if stopped.checkpoint is None:  # aborted: the last checkpoint is whole
                    stopped.checkpoint = self.last_checkpoint
                raise
            finally:
                self.bar.close()
            return self.finish(step, time.perf_counter() - self.began)

    def restore_best(self, path, state: dict[str, Any], fn: str) -> None:
        """Takes the resumed checkpoint's best evaluation so far (its "best" entry)."""
        try:
            self.best.load_state_dict(state.get("best"))
        except ValueError as exc:
            raise CheckpointError(f"{fn}: {path}: bad 'best' entry: {exc}") from exc

    def stop(self, step: int, signum: int) -> None:
        """Ends a run a signal stopped after `step`: its checkpoint (rank 0), then
        RunInterrupted on every rank."""
        if not _due(self.config.checkpoint_every, step):  # else on_schedule wrote it
            self.last_checkpoint = self.checkpoint(step) or self.last_checkpoint
        self.processes.barrier()
        raise RunInterrupted(signum, step, self.last_checkpoint)

    def train_step(self, step: int) -> None:
        config = self.config
        seed_step(config.seed, step, self.processes.rank)
        losses = self.task.step(self.sampler.batch(step), step, partial(self.guard.ok, step))
        log_now = step % max(config.log_every, 1) == 0 or step == config.steps
        if log_now:
            self.last = {key: float(value) for key, value in losses.items()}
            self.folder.log(
                {
                    "step": step,
                    **self.last,
                    **self.task.row_extras(step),
                    "images_per_s": round(self.bar.images_per_second(step), 2),
                    "time_s": round(time.perf_counter() - self.began, 3),
                }
            )
        keys = self.task.progress_keys
        self.bar.update(
            step, {k: self.last[k] for k in keys if k in self.last} if log_now else None
        )

    def on_schedule(self, step: int) -> None:
        config, main = self.config, self.processes.is_main
        if _due(config.eval_every, step) and self.evaluator is not None and main:
            self.evaluate(step)
        if _due(config.sample_every, step) and main:
            self.save_samples(step)
        if _due(config.checkpoint_every, step):
            self.last_checkpoint = self.checkpoint(step) or self.last_checkpoint
            self.processes.barrier()

    def evaluate(self, step: int) -> None:
        """Evaluates `step`, logs the row (with its time, and the training time so far without
        evaluations) and writes checkpoints/best.pt when the best metric improved."""
        began = time.perf_counter()
        results = self.task.evaluate(self.evaluator, step)
        seconds = time.perf_counter() - began
        self.eval_seconds += seconds
        train_time = began - self.began - (self.eval_seconds - seconds)
        timing = {"eval_time_s": round(seconds, 3), "train_time_s": round(train_time, 3)}
        self.folder.log({**eval_log_row(step, self.evaluator, results), **timing})
        if self.best.improves(results):
            if not all_finite(self.task.models.values()):
                return  # never a best.pt that cannot be sampled or resumed
            self.best.record(step, results)
            self.folder.write_best(step, self.checkpoint_state(step), self.last_checkpoint)

    def save_samples(self, step: int) -> None:
        config = self.config
        metadata = {
            "model": self.task.sample_label,
            "step": step,
            "seed": config.seed,
            "run": config.out_dir,
        }
        # under a fixed CPU convolution policy, so that `fastgen verify` can compute them again
        policy = conv_cpu_policy()
        with reproducible_convolutions(policy):
            grids = self.task.sample_grids(step)
        for grid in grids:
            marks = train_grid_fields(
                config, self.folder.run_id, step, grid.name, grid.nrow, len(grid.images),
                self.task.device, policy,
            )  # fmt: skip
            self.folder.save_grid(
                grid.images, grid.name, nrow=grid.nrow, metadata=metadata, marks=marks,
                provenance=config.provenance,
            )  # fmt: skip

    def checkpoint(self, step: int):
        """Writes the checkpoint of `step` (main process, finite weights only); its path."""
        if not self.processes.is_main:
            return None
        if not all_finite(self.task.models.values()):
            print(f"fastgen.train: step {step}: non-finite weights, checkpoint not written")
            return None
        return self.folder.write_checkpoint(
            step, self.checkpoint_state(step), self.config.keep_checkpoints, self.last_checkpoint
        )

    def checkpoint_state(self, step: int) -> dict[str, Any]:
        """What a checkpoint of `step` holds (fastgen.checkpoint_io describes the format)."""
        config = self.config
        state = {
            "step": step,
            "config": config.to_dict(),
            "meta": self.task.meta,
            **self.task.state_dict(),  # models, optimizers, scalers
            "rng": rng_state(config.seed, step),
            # which CPU convolution each layer ran (README, "Which CPU convolution runs"), so
            # that a resumed run runs the same ones and stays bit-for-bit identical
            "conv_cpu_choices": [
                {"key": r["key"], "choice": r["choice"]} for r in ops.conv_cpu_choices()
            ],
        }
        if self.best.state_dict() is not None:
            state["best"] = self.best.state_dict()
        return state

    def finish(self, step: int, wall: float) -> dict[str, Any]:
        config, processes, task, start = self.config, self.processes, self.task, self.start
        final_sample = None
        if processes.is_main:
            if not _due(config.checkpoint_every, step) and step > start:
                self.last_checkpoint = self.checkpoint(step) or self.last_checkpoint
            if not _due(config.sample_every, step):
                self.save_samples(step)
            final_sample = self.folder.samples / f"step_{step:06d}.png"
            self.folder.plot_losses(list(task.plot_keys))
        in_sync = processes.in_sync(task.models.values()) if processes.enabled else True
        processes.barrier()
        last = self.last_checkpoint
        images = (step - start) * config.batch_size * processes.world_size
        return {
            "kind": task.kind,
            "out_dir": str(self.folder.root),
            "step": step,
            "steps_run": step - start,
            "wall_time_s": wall,
            "images_per_s": images / wall if wall > 0 else 0.0,
            "checkpoint": str(last) if last else None,
            "checkpoint_hash": checkpoint_hash(last) if last else None,
            "samples": str(final_sample) if final_sample else None,
            "losses": self.last,
            "nonfinite_steps": self.guard.total,
            "world_size": processes.world_size,
            "ranks_in_sync": in_sync,
            "eval_time_s": self.eval_seconds,
            "best": self.best_summary(),
        }

    def best_summary(self) -> dict[str, Any] | None:
        """The summary's "best": metric, step, value and best.pt's path (None: no evaluation)."""
        entry = self.best.state_dict()
        if entry is None or not self.processes.is_main:
            return None
        return {**entry, "checkpoint": str(self.folder.best_path)}


def _due(every: int, step: int) -> bool:
    """True when a thing done every `every` steps (0: never on schedule) is due at `step`."""
    return bool(every) and step % every == 0
