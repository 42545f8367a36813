"""What `fastgen bench train` reports: each variant against stock/eager and against the
fastest stock variant, the table, one verdict per model, the caveats and the CSV.

A speed-up is a base's median step time over the variant's (> 1: the variant is faster).
The fastest stock variant of a model is the stock one (torch.nn layers) with the least median
of those that ran, over eager/compile and every amp: the configuration a user could pick
instead of fastgen's layers, so a fused variant is only faster when it beats that.
"""

from __future__ import annotations

import csv
import datetime
import os
from dataclasses import dataclass
from pathlib import Path

import torch

from fastgen.utils import heap
from fastgen.utils.run_info import (
    cpu_capability,
    cpu_flags,
    cpu_model_name,
    device_name,
    git_commit,
    percentile,
)
from fastgen.utils.step_timing import Variant

MIN_STEPS = 10  # fewer timed steps than this: the medians are rough
CSV_FIELDS = (
    "model", "layers", "mode", "amp", "memory_format", "timing", "resolution", "batch", "width",
    "median_ms", "p20_ms", "p80_ms", "images_per_s", "run_images_per_s",
    "speedup_vs_stock_eager", "speedup_vs_fastest_stock", "fastest_stock",
    "cpu_median_ms", "cpu_speedup_vs_stock_eager", "peak_mem_mb", "steps", "warmup", "rounds",
    "threads", "device", "cpu_model", "cpu_capability", "avx512_bf16",
    "fastgen_cpu_capability", "heap", "torch", "commit", "date", "error",
)  # fmt: skip


@dataclass
class Comparison:
    """One variant's speed-ups (base median / its median; > 1: faster than the base)."""

    vs_stock_eager: float | None  # stock/eager with the same amp
    vs_fastest_stock: float | None
    fastest_stock: str  # e.g. "stock/eager/bf16"; "" when no stock variant ran
    cpu_vs_stock_eager: float | None


def fastest_stock(variants: list[Variant], model: str) -> Variant | None:
    """The stock variant of `model` with the least median time of those that ran (eager or
    compile, any amp): what a user could run instead of the fused layers."""
    ran = [v for v in variants if v.model == model and v.layers == "stock" and v.times_ms]
    return min(ran, key=lambda v: v.median_ms, default=None)


def _ratio(base: list[float], times: list[float]) -> float | None:
    return percentile(base, 50) / percentile(times, 50) if base and times else None


def compare(variants: list[Variant]) -> dict[str, Comparison]:
    """Each variant's Comparison (by name), against the variants of its own model only."""
    comparisons = {}
    for v in variants:
        key = (v.model, "stock", "eager", v.amp)
        stock_eager = next((b for b in variants if (b.model, b.layers, b.mode, b.amp) == key), None)
        fastest = fastest_stock(variants, v.model)
        comparisons[v.name] = Comparison(
            vs_stock_eager=_ratio(stock_eager.times_ms, v.times_ms) if stock_eager else None,
            vs_fastest_stock=_ratio(fastest.times_ms, v.times_ms) if fastest else None,
            fastest_stock=fastest.config if fastest else "",
            cpu_vs_stock_eager=_ratio(stock_eager.cpu_ms, v.cpu_ms) if stock_eager else None,
        )
    return comparisons


def verdicts(variants: list[Variant]) -> list[str]:
    """Per model, one line: its best fused variant against its fastest stock variant."""
    lines = []
    for model in dict.fromkeys(v.model for v in variants):
        fused = [v for v in variants if v.model == model and v.layers == "fused" and v.times_ms]
        best = min(fused, key=lambda v: v.median_ms, default=None)
        stock = fastest_stock(variants, model)
        if best is None or stock is None:
            missing = "fused" if best is None else "stock"
            lines.append(f"{model}: no verdict (no {missing} variant ran)")
            continue
        ratio = stock.median_ms / best.median_ms
        lines.append(
            f"{model}: best fused ({best.config}, {best.median_ms:.1f} ms/step) is {ratio:.2f}x as "
            f"fast as the fastest stock ({stock.config}, {stock.median_ms:.1f} ms/step): "
            + ("fused is faster" if ratio > 1 else "fused is not faster")
        )
    return lines


def _x(value: float | None) -> str:
    return "" if value is None else f"{value:.2f}x"


def format_table(variants: list[Variant], comparisons: dict[str, Comparison]) -> str:
    header = (f"{'model':6s} {'layers':6s} {'mode':8s} {'amp':5s} {'median ms':>10s} "
              f"{'p20-p80 ms':>17s} {'images/s':>9s} {'vs stock eager':>14s} "
              f"{'vs fastest stock':>16s} {'cpu ms':>8s} {'cpu vs stock':>12s} {'peak MB':>8s}")  # fmt: skip
    lines = [header, "-" * len(header)]
    for v in variants:
        if not v.times_ms:
            lines.append(f"{v.model:6s} {v.layers:6s} {v.mode:8s} {v.amp:5s} skipped: {v.error}")
            continue
        spread = f"{percentile(v.times_ms, 20):.1f}-{percentile(v.times_ms, 80):.1f}"
        c = comparisons[v.name]
        cpu = f"{percentile(v.cpu_ms, 50):.1f}" if v.cpu_ms else ""
        peak = "" if v.peak_mem_mb is None else f"{v.peak_mem_mb:.0f}"
        lines.append(
            f"{v.model:6s} {v.layers:6s} {v.mode:8s} {v.amp:5s} {v.median_ms:10.1f} "
            f"{spread:>17s} {v.batch * 1e3 / v.median_ms:9.0f} {_x(c.vs_stock_eager):>14s} "
            f"{_x(c.vs_fastest_stock):>16s} {cpu:>8s} {_x(c.cpu_vs_stock_eager):>12s} {peak:>8s}"
        )
    return "\n".join(lines)


def caveat(steps: int, threads: int, load: float | None) -> str | None:
    """The one-line warning of a run whose figures mean little, or None: fewer than MIN_STEPS
    timed steps, or a 1-minute load average above the threads the bench used (other
    processes held the cores; the bench itself accounts for at most `threads` of it)."""
    reasons = []
    if steps < MIN_STEPS:
        reasons.append(f"only {steps} timed steps (fewer than {MIN_STEPS})")
    if load is not None and load > threads:
        reasons.append(
            f"the machine was busy (load average {load:.1f} above the {threads} threads used)"
        )
    if not reasons:
        return None
    return f"fastgen bench train: warning: {' and '.join(reasons)}; these figures are rough"


def load_average() -> float | None:
    try:
        return os.getloadavg()[0]
    except (AttributeError, OSError):  # not on every platform
        return None


# --- the CSV ------------------------------------------------------------------------------------


def machine_fields(device: torch.device, threads: int, now: datetime.datetime) -> dict:
    """The CSV columns that say where and with what a run was timed."""
    flags = cpu_flags()
    return {
        "device": device_name(device),
        "cpu_model": cpu_model_name(),
        "cpu_capability": cpu_capability(),  # the copy of fastgen's CPU kernels that ran
        "avx512_bf16": ("yes" if "avx512_bf16" in flags else "no") if flags else "unknown",
        "fastgen_cpu_capability": os.environ.get("FASTGEN_CPU_CAPABILITY", ""),
        # fastgen/utils/heap.py: what the timed processes' malloc did with freed memory
        "heap": heap.setting("fastgen bench train"),
        "threads": threads,
        "torch": torch.__version__,
        "commit": git_commit(),
        "date": now.strftime("%Y-%m-%dT%H:%M:%SZ"),
    }


def _f(value: float | None, digits: int = 3) -> str:
    return "" if value is None else f"{value:.{digits}f}"


def write_csv(
    path: Path, variants: list[Variant], comparisons: dict[str, Comparison], fields: dict
) -> None:
    """One row per variant; `fields` (the run's settings and machine_fields) go in every row."""
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=CSV_FIELDS)
        writer.writeheader()
        for v in variants:
            c, median = comparisons[v.name], v.median_ms
            writer.writerow({
                "model": v.model, "layers": v.layers, "mode": v.mode, "amp": v.amp,
                "median_ms": _f(median),
                "p20_ms": _f(percentile(v.times_ms, 20) if v.times_ms else None),
                "p80_ms": _f(percentile(v.times_ms, 80) if v.times_ms else None),
                "images_per_s": _f(v.batch * 1e3 / median if median else None, 1),
                "run_images_per_s": _f(v.run_images_per_s, 1),
                "speedup_vs_stock_eager": _f(c.vs_stock_eager),
                "speedup_vs_fastest_stock": _f(c.vs_fastest_stock),
                "fastest_stock": c.fastest_stock,
                "cpu_median_ms": _f(percentile(v.cpu_ms, 50) if v.cpu_ms else None),
                "cpu_speedup_vs_stock_eager": _f(c.cpu_vs_stock_eager),
                "peak_mem_mb": _f(v.peak_mem_mb, 1), "error": v.error, **fields,
            })  # fmt: skip
