"""The one benchmark harness: cases, interleaved timing, CSV rows.

A benchmark module (benchmarks/bench_<op>.py) defines ``cases(device) -> list[Case]``. Each
case gives its inputs and two providers, "fastgen" (the fused op) and "eager" (the stock
PyTorch code it replaces, imported from fastgen.reference so tests and benchmarks share it);
the harness adds "compile" = torch.compile(eager provider) unless disabled. On CUDA the
convolution cases split "fastgen" in two (engine_providers): "fastgen" is the op on fastgen's
own implicit-GEMM kernel (FASTGEN_CONV_TRANSPOSE / FASTGEN_CONV2D=fastgen) and
"fastgen-cudnn" the op on cuDNN with fastgen's epilogues (=cudnn, what `auto` runs today):
the measurement that decides whether `auto` may ever choose the kernel. Rows with FLOPs also
get the fraction of the dense-matmul rate of their dtype measured in the same run
(bench_matmul.py; CUDA only).

Modes:
  forward   provider(*inputs) under torch.no_grad()
  backward  forward untimed, then the backward pass timed: gradients of every input that
            requires grad, for a fixed random output gradient (torch.autograd.grad, so no
            accumulation into .grad is timed)
  full      forward + backward, timed together

Timing: every provider is warmed up first (this is where torch.compile compiles, so
compilation is never timed); then each repetition runs each provider once, round-robin, so
slow drifts (clocks, thermal, other processes) hit all providers alike. Reported: median and
20th/80th percentiles in milliseconds. On CUDA one call is timed with CUDA events after a
synchronize (device time of the call); on CPU with time.perf_counter (wall time).

Memory (peak_mem_mb): on CUDA, the peak of torch.cuda.max_memory_allocated during one call
minus what was allocated before it, i.e. the extra memory the call needed (outputs,
workspace, saved tensors). On CPU it is left EMPTY: torch's CPU allocator exposes no peak
counter, and process RSS is too coarse and too polluted by caching to mean anything here.
"""

from __future__ import annotations

import datetime
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import torch

from fastgen.utils.environment import environment
from fastgen.utils.run_info import device_name, git_commit, percentile

MODES = ("forward", "backward", "full")


def with_env(fn: Callable, **variables: str) -> Callable:
    """fn with the environment variables set during each call (and restored after), e.g. a
    per-call route switch read by the C++ ops."""

    def call(*args):
        with environment(variables):
            return fn(*args)

    return call


def engine_providers(device: str, variable: str, fastgen: Callable, eager: Callable) -> dict:
    """A convolution case's providers: fastgen and eager; on CUDA "fastgen" forces fastgen's
    own kernel (`variable`=fastgen) and "fastgen-cudnn" the cuDNN route (`variable`=cudnn)."""
    if device != "cuda":
        return {"fastgen": fastgen, "eager": eager}
    return {
        "fastgen": with_env(fastgen, **{variable: "fastgen"}),
        "fastgen-cudnn": with_env(fastgen, **{variable: "cudnn"}),
        "eager": eager,
    }


CSV_FIELDS = (
    "op",
    "case",
    "mode",
    "provider",
    "median_ms",
    "p20_ms",
    "p80_ms",
    "speedup_vs_eager",
    "peak_mem_mb",
    "achieved_gbps",
    "achieved_tflops",
    "fraction_of_matmul",
    "native",
    "reps",
    "threads",
    "device",
    "torch",
    "commit",
    "date",
)


@dataclass
class Case:
    """One benchmarked configuration of one op.

    make_inputs() returns the positional arguments of every provider (tensors that need
    gradients already have requires_grad set); a provider returns a tensor or a tuple of
    tensors. Providers must compute the same thing.

    Optional floors, per mode: min_bytes (the fewest bytes the mode must read plus write)
    and flops; when given, the CSV reports achieved GB/s and TFLOP/s at the median time.
    """

    op: str
    case: str
    make_inputs: Callable[[], tuple]
    providers: dict[str, Callable[..., torch.Tensor]]
    modes: tuple[str, ...] = ("forward", "full")
    min_bytes: dict[str, int] = field(default_factory=dict)
    flops: dict[str, int] = field(default_factory=dict)
    dtype: str = ""  # "fp32", "bf16", ...: whose matmul rate the TFLOP/s are compared with


@dataclass
class Result:
    op: str
    case: str
    mode: str
    provider: str
    times_ms: list[float]
    peak_mem_mb: float | None = None
    native: str = ""
    speedup_vs_eager: float | None = None
    min_bytes: int | None = None
    flops: int | None = None
    dtype: str = ""
    fraction_of_matmul: float | None = None

    @property
    def median_ms(self) -> float:
        return percentile(self.times_ms, 50)


# --- one call per mode ---------------------------------------------------------------------


def _as_tuple(out) -> tuple:
    return tuple(out) if isinstance(out, (tuple, list)) else (out,)


def _grad_inputs(inputs: tuple) -> list[torch.Tensor]:
    return [t for t in inputs if isinstance(t, torch.Tensor) and t.requires_grad]


def _differentiable(outputs: tuple) -> list[torch.Tensor]:
    return [t for t in outputs if isinstance(t, torch.Tensor) and t.requires_grad]


def make_output_grads(fn: Callable, inputs: tuple) -> list[torch.Tensor]:
    """Fixed random gradients for the differentiable outputs of fn(*inputs), laid out like
    the outputs (a channels_last output gets a channels_last gradient, as the next layer of a
    training step hands it back)."""
    generator = torch.Generator().manual_seed(1234)
    outputs = _differentiable(_as_tuple(fn(*inputs)))
    return [
        torch.empty_like(t).copy_(torch.randn(t.shape, generator=generator, dtype=torch.float32))
        for t in outputs
    ]


def _forward_call(fn, inputs):
    with torch.no_grad():
        return fn(*inputs)


def _backward_call(outputs, inputs, grads):
    return torch.autograd.grad(_differentiable(_as_tuple(outputs)), _grad_inputs(inputs), grads)


def _full_call(fn, inputs, grads):
    return _backward_call(fn(*inputs), inputs, grads)


class Timer:
    """Times one call: CUDA events on GPU (after a synchronize), perf_counter on CPU."""

    def __init__(self, device: str) -> None:
        self.cuda = device == "cuda"

    def time_ms(self, call: Callable[[], object]) -> float:
        if self.cuda:
            torch.cuda.synchronize()
            start = torch.cuda.Event(enable_timing=True)
            end = torch.cuda.Event(enable_timing=True)
            start.record()
            call()
            end.record()
            end.synchronize()
            return start.elapsed_time(end)
        start = time.perf_counter()
        call()
        return (time.perf_counter() - start) * 1e3

    def peak_mem_mb(self, call: Callable[[], object]) -> float | None:
        if not self.cuda:
            return None
        torch.cuda.synchronize()
        before = torch.cuda.memory_allocated()
        torch.cuda.reset_peak_memory_stats()
        result = call()
        torch.cuda.synchronize()
        peak = torch.cuda.max_memory_allocated() - before
        del result
        return peak / 2**20


def _prepare(mode: str, fn: Callable, inputs: tuple, grads) -> Callable[[], object]:
    """The timed call of `mode`; the backward mode's forward runs here, untimed."""
    if mode == "forward":
        return lambda: _forward_call(fn, inputs)
    if mode == "full":
        return lambda: _full_call(fn, inputs, grads)
    outputs = fn(*inputs)
    return lambda: _backward_call(outputs, inputs, grads)


# --- running cases -------------------------------------------------------------------------


def with_compile(case: Case) -> dict[str, Callable]:
    providers = dict(case.providers)
    if "eager" in providers and "compile" not in providers:
        providers["compile"] = torch.compile(providers["eager"])
    return providers


def native_note(op: str, inputs: tuple) -> str:
    """'yes'/'no (...reason...)' for whether fastgen's native kernel serves this case."""
    try:
        from fastgen import registry
    except ImportError:
        return ""
    tensor = next((t for t in inputs if isinstance(t, torch.Tensor)), None)
    if tensor is None or op not in registry.dtypes:
        return ""
    if registry.mode == "reference":
        return "no (FASTGEN_BACKEND=reference)"
    reason = registry.why_not_native(op, tensor)
    return "yes" if reason is None else f"no ({reason})"


def run_case(
    case: Case,
    device: str,
    reps: int = 30,
    warmup: int = 3,
    compile: bool = True,
    log: Callable[[str], None] = print,
) -> list[Result]:
    """Times every provider of `case` in each of its modes; returns one Result per pair."""
    providers = with_compile(case) if compile else dict(case.providers)
    timer = Timer(device)
    inputs = case.make_inputs()
    results = []
    for mode in case.modes:
        if mode not in MODES:
            raise ValueError(f"benchmarks: case {case.op}/{case.case}: unknown mode {mode!r}")
        reference = providers.get("eager", next(iter(providers.values())))
        grads = make_output_grads(reference, inputs) if mode != "forward" else None
        calls = {}
        for name, fn in list(providers.items()):
            try:
                for _ in range(warmup):  # compiles here for the compile provider
                    _prepare(mode, fn, inputs, grads)()
            except Exception as exc:  # a provider that cannot run this case is reported, not fatal
                log(f"  skipped {case.op}/{case.case}/{mode}/{name}: {type(exc).__name__}: {exc}")
                continue
            calls[name] = fn
        times = {name: [] for name in calls}
        for _ in range(reps):
            for name, fn in calls.items():  # round-robin: each repetition visits every provider
                call = _prepare(mode, fn, inputs, grads)
                times[name].append(timer.time_ms(call))
        native = native_note(case.op, inputs)
        for name, fn in calls.items():
            peak = timer.peak_mem_mb(_prepare(mode, fn, inputs, grads))
            results.append(
                Result(
                    case.op,
                    case.case,
                    mode,
                    name,
                    times[name],
                    peak,
                    native if name.startswith("fastgen") else "",
                    min_bytes=case.min_bytes.get(mode),
                    flops=case.flops.get(mode),
                    dtype=case.dtype,
                )
            )
        eager = next((r for r in results[-len(calls) :] if r.provider == "eager"), None)
        for result in results[-len(calls) :]:
            if eager is not None:
                result.speedup_vs_eager = eager.median_ms / result.median_ms
    return results


MATMUL_OP = "matmul"  # bench_matmul.py's cases: the dense-matmul rate per dtype


def add_matmul_fractions(results: list[Result]) -> None:
    """Sets fraction_of_matmul = achieved TFLOP/s / the matmul rate of the same dtype measured
    in the same run, on every result with FLOPs (nothing when no matmul case ran)."""
    rates = {
        r.dtype: r.flops / r.median_ms / 1e9
        for r in results
        if r.op == MATMUL_OP and r.flops and r.dtype
    }
    for r in results:
        if r.flops and r.dtype in rates and r.op != MATMUL_OP:
            r.fraction_of_matmul = r.flops / r.median_ms / 1e9 / rates[r.dtype]


def csv_rows(results: list[Result], device: str, reps: int) -> list[dict]:
    env = {
        "device": device_name(device),
        "threads": torch.get_num_threads() if device == "cpu" else "",
        "torch": torch.__version__,
        "commit": git_commit(),
        "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
    }
    rows = []
    for r in results:
        rows.append(
            {
                "op": r.op,
                "case": r.case,
                "mode": r.mode,
                "provider": r.provider,
                "median_ms": f"{r.median_ms:.4f}",
                "p20_ms": f"{percentile(r.times_ms, 20):.4f}",
                "p80_ms": f"{percentile(r.times_ms, 80):.4f}",
                "speedup_vs_eager": ""
                if r.speedup_vs_eager is None
                else f"{r.speedup_vs_eager:.3f}",
                "peak_mem_mb": "" if r.peak_mem_mb is None else f"{r.peak_mem_mb:.2f}",
                "achieved_gbps": ""
                if r.min_bytes is None
                else f"{r.min_bytes / r.median_ms / 1e6:.4g}",
                "achieved_tflops": "" if r.flops is None else f"{r.flops / r.median_ms / 1e9:.4g}",
                "fraction_of_matmul": ""
                if r.fraction_of_matmul is None
                else f"{r.fraction_of_matmul:.3f}",
                "native": r.native,
                "reps": reps,
                **env,
            }
        )
    return rows


def format_table(results: list[Result]) -> str:
    """A readable table: one line per (op, case, mode, provider)."""
    header = f"{'op':24s} {'case':28s} {'mode':8s} {'provider':8s} {'median ms':>10s} {'p20-p80 ms':>17s} {'vs eager':>8s} {'peak MB':>8s}"
    lines = [header, "-" * len(header)]
    for r in results:
        spread = f"{percentile(r.times_ms, 20):.3f}-{percentile(r.times_ms, 80):.3f}"
        speedup = "" if r.speedup_vs_eager is None else f"{r.speedup_vs_eager:.2f}x"
        peak = "" if r.peak_mem_mb is None else f"{r.peak_mem_mb:.1f}"
        lines.append(
            f"{r.op:24s} {r.case:28s} {r.mode:8s} {r.provider:8s} {r.median_ms:10.3f} {spread:>17s} {speedup:>8s} {peak:>8s}"
        )
    return "\n".join(lines)
