"""Interleaved timing of training-step closures (the variants of ``fastgen bench train``).

A Variant is one step closure with its label; warm_up runs it untimed (torch.compile compiles
then), time_interleaved runs one step of every variant per round, so that drifts of the
machine hit all alike, recording wall and process CPU time per step (CUDA: synchronised
before and after); measure_peak_memory and profile_summary look at one variant.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field

import torch


@dataclass
class Variant:
    model: str
    layers: str  # "fused" | "stock"
    mode: str  # "eager" | "compile"
    step: Callable[[], None] | None
    batch: int
    times_ms: list[float] = field(default_factory=list)
    cpu_ms: list[float] = field(default_factory=list)  # process CPU time per step
    peak_mem_mb: float | None = None
    error: str = ""

    @property
    def name(self) -> str:
        return f"{self.model} {self.layers}/{self.mode}"


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
            variant.times_ms.append((time.perf_counter() - start) * 1e3)
            variant.cpu_ms.append((time.process_time() - cpu_start) * 1e3)


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
