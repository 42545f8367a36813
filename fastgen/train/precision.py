"""Numerics of a training step: autocast and loss scaling (config.amp), the warning when the
chosen precision has no hardware support, and what a step does when a loss is not finite (it
is skipped, leaving no trace; too many in a row stop the run)."""

from __future__ import annotations

import os
import platform
import sys
import warnings
from contextlib import nullcontext
from typing import Any

import torch

from fastgen.utils.errors import OneLineWarning


class TrainingError(RuntimeError):
    """Training cannot continue (e.g. the loss kept being non-finite)."""


def memory_format(config, device: torch.device) -> torch.memory_format:
    """The layout the trainers run their models in (config.memory_format).

    auto: channels_last on a CPU with bf16 instructions (cpu_has_bf16) under bf16 autocast,
    NCHW otherwise. oneDNN's bf16 convolutions compute in channels_last and reorder NCHW
    operands on every call (forward and backward); a model already in it skips those
    copies, the stock layers and fastgen's alike (the main job's DCGAN bf16 step: 10-15%
    faster for both, README "The main job, as users run it"). Without bf16 instructions
    (or with the AVX2 copy forced) bf16 is slower than float32 anyway and fastgen's kernels,
    converting on load, are faster in NCHW (DCGAN step, 1 thread: 95 vs 144 ms); in float32
    fastgen's own kernels are fastest in NCHW, so auto keeps NCHW there.
    ``channels_last`` / ``nchw`` force either."""
    if config.memory_format == "channels_last":
        return torch.channels_last
    if (
        config.memory_format == "auto"
        and device.type == "cpu"
        and config.amp == "bf16"
        and cpu_has_bf16()
    ):
        return torch.channels_last
    return torch.contiguous_format


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
        """Backward of `loss` (scaled under fp16) and one step of `optimizer`."""
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


class SlowPrecisionWarning(OneLineWarning):
    """The run's mixed precision has no hardware support on its device: it runs slower than
    float32 would."""


# What emulated half precision costs, measured on fastgen's main job (fastgen train dcgan,
# 32x32 digits) on a 2-core AVX-512 CPU (issue 28); stock PyTorch is just as slow.
SLOW_PRECISION = {
    "fp16": "the main job ran at 65 images/s in fp16 against 1,330 in float32",
    "bf16": "the main job ran at 68 images/s in bf16 against 1,202 in float32 with fastgen's "
    "fused layers (the AVX2 paths forced, as on an AVX2-only CPU)",
}


def cpu_has_bf16() -> bool:
    """Whether the CPU's bfloat16 instructions (AVX512_BF16 or AMX-BF16) will run: False
    where the CPU lacks them or FASTGEN_CPU_CAPABILITY forces the avx2 or baseline copy
    (what an AVX2-only machine runs); True off x86, where it is not known."""
    if platform.machine().lower() not in ("x86_64", "amd64", "i386", "i686"):
        return True
    if os.environ.get("FASTGEN_CPU_CAPABILITY") in ("avx2", "baseline"):
        return False
    capabilities = torch.cpu.get_capabilities()
    return bool(capabilities.get("avx512_bf16") or capabilities.get("amx_bf16"))


def slow_precision(amp: str, device: torch.device) -> str | None:
    """Why `amp` ("", "bf16", "fp16") is slower than float32 on `device`, with the numbers
    and the faster choice; None when it has hardware support (or is float32)."""
    if torch.device(device).type != "cpu" or amp not in SLOW_PRECISION:
        return None
    if amp == "fp16":
        why = "PyTorch emulates float16 arithmetic on CPUs"
    elif cpu_has_bf16():
        return None
    elif os.environ.get("FASTGEN_CPU_CAPABILITY") in ("avx2", "baseline"):
        why = f"FASTGEN_CPU_CAPABILITY={os.environ['FASTGEN_CPU_CAPABILITY']} rules out its bf16 instructions"
    else:
        why = "this CPU has no avx512_bf16 or AMX instructions"
    return (
        f"mixed precision {amp} (--amp {amp}) has no hardware support here ({why}), so it is "
        f"slower than none: {SLOW_PRECISION[amp]}; float32 (--amp none, the default) is the "
        f"faster choice on this CPU"
    )


def warn_if_slow_precision(amp: str, device: torch.device) -> None:
    """A SlowPrecisionWarning at the start of a run whose precision slows it down."""
    message = slow_precision(amp, device)
    if message is not None:
        warnings.warn(message, SlowPrecisionWarning, stacklevel=3)


def losses_finite(losses: dict[str, torch.Tensor]) -> bool:
    """True when every loss is finite: whether a training step may apply its update."""
    return all(bool(torch.isfinite(v).all()) for v in losses.values())


class NonFiniteGuard:
    """Counts non-finite losses in a row; the step is skipped, after `limit` training stops.
    Every rank takes the same decision (a step is skipped on all when one rank's loss is
    not finite), so the ranks' weights stay equal."""

    def __init__(self, limit: int, processes) -> None:
        self.limit, self.in_a_row, self.total = limit, 0, 0
        self.processes = processes

    def ok(self, step: int, losses: dict[str, torch.Tensor]) -> bool:
        """True when the losses of `step` are finite on every rank; else notes the skip and
        raises TrainingError when it is the `limit`-th in a row."""
        if self.processes.all_true(losses_finite(losses)):
            self.in_a_row = 0
            return True
        self.in_a_row += 1
        self.total += 1
        if self.processes.is_main:
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
    """True when every floating tensor of the modules' state dicts is finite."""
    return all(
        bool(torch.isfinite(t).all())
        for m in modules
        for t in m.state_dict().values()
        if t.is_floating_point()
    )
