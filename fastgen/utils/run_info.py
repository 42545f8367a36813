"""What a timing result is recorded with: percentiles, the device's name, the commit.

Shared by the op benchmarks (benchmarks/harness.py) and `fastgen bench train`, so the two
CSVs describe their runs the same way.
"""

from __future__ import annotations

import os
import platform
import subprocess
from collections.abc import Sequence
from pathlib import Path

import torch

REPO_ROOT = Path(__file__).resolve().parents[2]


def percentile(values: Sequence[float], q: float) -> float:
    """The q-th percentile with linear interpolation between order statistics."""
    ordered = sorted(values)
    position = (len(ordered) - 1) * q / 100
    low = int(position)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (position - low)


def device_name(device: str | torch.device) -> str:
    """The GPU's name, or the CPU's model name and core count with the instruction set
    fastgen's CPU kernels run (e.g. "AMD EPYC x2 [avx512]"), so a CPU figure always says it."""
    device = torch.device(device)
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"{_cpu_model()} [{cpu_capability()}]"


def _cpu_model() -> str:
    return f"{cpu_model_name()} x{os.cpu_count()}"


def _cpuinfo(key: str) -> str | None:
    """The first /proc/cpuinfo line's value for `key` ("model name", "flags"), or None."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                name, _, value = line.partition(":")
                if name.strip() == key:
                    return value.strip()
    except OSError:
        pass
    return None


def cpu_model_name() -> str:
    """The CPU's model name as /proc/cpuinfo gives it (elsewhere, what platform knows)."""
    return _cpuinfo("model name") or platform.processor() or platform.machine()


def cpu_flags() -> set[str]:
    """The CPU's feature flags from /proc/cpuinfo (avx2, avx512f, avx512_bf16, ...); empty
    where there is no /proc/cpuinfo."""
    return set((_cpuinfo("flags") or "").split())


def cpu_capability() -> str:
    """The capability (baseline, avx2, avx512) fastgen's CPU kernels run at, as chosen at run
    time (FASTGEN_CPU_CAPABILITY may force it); "no extension" when it is not loaded."""
    from fastgen import _extension

    if not _extension.LOADED:
        return "no extension"
    return _extension._C._cpu_capability()[0]


def git_commit() -> str:
    """Short HEAD of the source tree, "+dirty" if tracked files outside benchmarks/results
    (where the results themselves are written) differ from it; "unknown" outside git."""

    def git(*args: str) -> str:
        return subprocess.run(
            ["git", *args], cwd=REPO_ROOT, capture_output=True, text=True, check=True
        ).stdout.strip()

    try:
        dirty = git(
            "status", "--porcelain", "--untracked-files=no", "--", ".",
            ":(exclude)benchmarks/results",
        )  # fmt: skip
        return git("rev-parse", "--short", "HEAD") + ("+dirty" if dirty else "")
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
