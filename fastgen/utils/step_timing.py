"""Timing of training-step closures in one process (the variants of ``fastgen bench train``).

A Variant is one step closure with its label and the timings gathered for it; warm_up runs it
untimed (torch.compile compiles then), time_interleaved runs one step of every variant per
round, so that drifts of the machine hit all alike, recording wall and process CPU time per
step (CUDA: synchronised before and after); measure_peak_memory and profile_summary look at
one variant. The bench's child processes (fastgen.utils.process_timing) time their single
variant with the same functions; `--in-process` interleaves all variants in one process.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field

import torch

from fastgen.utils.run_info import percentile


@dataclass
class Variant:
    model: str
    layers: str  # "fused" | "stock"
    mode: str  # "eager" | "compile"
    step: Callable[[], None] | None
    batch: int
    amp: str = "none"  # "none" | "bf16" | "fp16": the trainer's --amp
    times_ms: list[float] = field(default_factory=list)  # per step (or per step of a log row)
    cpu_ms: list[float] = field(default_factory=list)  # process CPU time per step
    run_s: float = 0.0  # wall time of all timed steps, every round
    run_steps: int = 0  # how many steps that is
    peak_mem_mb: float | None = None
    error: str = ""

    @property
    def config(self) -> str:
        """layers/mode/amp, e.g. "stock/compile/bf16" (the name without the model)."""
        return f"{self.layers}/{self.mode}/{self.amp}"

    @property
    def name(self) -> str:
        return f"{self.model} {self.config}"

    @property
    def median_ms(self) -> float | None:
        return percentile(self.times_ms, 50) if self.times_ms else None

    @property
    def run_images_per_s(self) -> float | None:
        """Images over all timed steps / their wall time: the rate a run sees."""
        return self.batch * self.run_steps / self.run_s if self.run_s > 0 else None


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def short_error(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0] if text else ''}"[:200]


def warm_up(variant: Variant, steps: int, device: torch.device, log) -> None:
    start = time.perf_counter()
    try:
        for _ in range(steps):
            variant.step()
        _sync(device)
    except Exception as exc:  # a variant that cannot run here is reported, not fatal
        variant.error, variant.step = short_error(exc), None
        log(f"  {variant.name}: skipped ({variant.error})")
        return
    log(f"  {variant.name}: warm-up {time.perf_counter() - start:.1f} s")


def time_interleaved(variants: list[Variant], rounds: int, device: torch.device) -> None:
    """Each round runs one step of every runnable variant, in turn."""
    runnable = [v for v in variants if v.step is not None]
    for _ in range(rounds):
        for variant in runnable:
            _sync(device)
            start, cpu_start = time.perf_counter(), time.process_time()
            variant.step()
            _sync(device)
            wall = time.perf_counter() - start
            variant.cpu_ms.append((time.process_time() - cpu_start) * 1e3)
            variant.times_ms.append(wall * 1e3)
            variant.run_s += wall
            variant.run_steps += 1


def measure_peak_memory(variant: Variant, device: torch.device) -> None:
    if device.type != "cuda" or variant.step is None:
        return
    torch.cuda.synchronize(device)
    before = torch.cuda.memory_allocated(device)
    torch.cuda.reset_peak_memory_stats(device)
    variant.step()
    torch.cuda.synchronize(device)
    variant.peak_mem_mb = (torch.cuda.max_memory_allocated(device) - before) / 2**20


def profile_summary(variant: Variant, device: torch.device, steps: int = 3, rows: int = 25) -> str:
    """torch.profiler table (top ops by self time) over a few steps of one variant."""
    from torch.profiler import ProfilerActivity, profile

    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda" else [])
    with profile(activities=activities) as prof:
        for _ in range(steps):
            variant.step()
        _sync(device)
    key = "self_cuda_time_total" if device.type == "cuda" else "self_cpu_time_total"
    return prof.key_averages().table(sort_by=key, row_limit=rows)
