"""Variants timed in processes of their own: the rounds, the child processes, and the timing
that `fastgen train` writes in its log.jsonl (for ``fastgen bench train --main-job``).

One fresh Python process per variant and round, so what one variant did before (compiled
with torch.compile, ran another model or a bf16 step, grew the allocator's caches) cannot
change another's time, as nothing a user runs shares its process with the alternatives. The
rounds visit the variants in alternating order (A B C D, then D C B A, ...): over two rounds
every variant's mean position is the same, so a steady drift of the machine (clock, heat,
other processes) hits all variants alike.
"""

from __future__ import annotations

import math
import os
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any, TypeVar

import fastgen

T = TypeVar("T")

TRAIN_LOG_EVERY = 10  # `fastgen train`'s default --log-every, what the main job logs


def round_order(items: Sequence[T], round_index: int) -> list[T]:
    """The order round `round_index` (from 0) visits `items` in: as given, then reversed."""
    return list(items) if round_index % 2 == 0 else list(reversed(items))


def child_env(**extra: str) -> dict[str, str]:
    """The environment of a child: this one (FASTGEN_*, OMP_*, ... are inherited), with the
    fastgen that this process imported first on PYTHONPATH, so `python -m fastgen` in the
    child runs the same code wherever it is started from."""
    root = str(Path(fastgen.__file__).resolve().parents[1])
    path = os.environ.get("PYTHONPATH", "")
    return {**os.environ, "PYTHONPATH": root + (os.pathsep + path if path else ""), **extra}


def run_child(arguments: list[str], env: dict[str, str]) -> tuple[int, str]:
    """Runs `python -m fastgen ARGUMENTS` to its end: (exit status, its last stderr line)."""
    done = subprocess.run(
        [sys.executable, "-m", "fastgen", *arguments], env=env, capture_output=True, text=True
    )
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    return done.returncode, (lines[-1].strip()[:200] if lines else "")


# --- `fastgen train` as the main job runs it --------------------------------------------------


def train_log_every(warmup: int) -> int:
    """The --log-every the timed `fastgen train` runs use: the main job's 10 when the
    warm-up is a multiple of it, else the largest divisor of both (a log row must fall on
    the warm-up's last step, where the timing starts)."""
    return math.gcd(warmup, TRAIN_LOG_EVERY)


def train_arguments(
    model: str, *, layers: str, mode: str, amp: str, steps: int, warmup: int, out_dir: str,
    settings: dict[str, Any],
) -> list[str]:  # fmt: skip
    """The `fastgen train` arguments of one variant: the main job's command (no sample grids
    or checkpoints before the end, no progress bar) for warmup + steps steps; `settings`
    holds the options passed through (data, resolution, batch_size, width, latent_dim,
    channels, threads, device, seed; None: train's default)."""
    arguments = [
        "train", model, "--steps", str(warmup + steps), "--log-every", str(train_log_every(warmup)),
        "--sample-every", "0", "--checkpoint-every", "0", "--quiet", "--out", out_dir,
        "--amp", amp,
    ]  # fmt: skip
    arguments += ["--no-fused"] if layers == "stock" else []
    arguments += ["--compile"] if mode == "compile" else []
    for name, value in settings.items():
        if value is not None:
            arguments += ["--" + name.replace("_", "-"), str(value)]
    return arguments


def log_step_times(rows: list[dict[str, Any]], warmup: int) -> tuple[list[float], float, int]:
    """From the rows of a run's log.jsonl: (ms per step of each logged interval after step
    `warmup`, the wall seconds and the steps from step `warmup` to the last row).

    A training row's time_s is the wall time since the loop began; differences between rows
    count everything a step of the run does (data, seeding, the step, EMA, logging) and
    nothing before step `warmup`'s row (imports, data loading, torch.compile's compilation
    at the first steps) or after the last row (the final checkpoint, samples, loss plot)."""
    points = sorted(
        (row["step"], row["time_s"])
        for row in rows
        if "time_s" in row and isinstance(row.get("step"), int) and row["step"] >= warmup
    )
    if len(points) < 2 or points[0][0] != warmup:
        raise ValueError(
            f"log.jsonl has no training rows at step {warmup} and after "
            f"(steps logged: {[step for step, _ in points]})"
        )
    per_step = [(t1 - t0) * 1e3 / (s1 - s0) for (s0, t0), (s1, t1) in zip(points, points[1:])]
    return per_step, points[-1][1] - points[0][1], points[-1][0] - points[0][0]
