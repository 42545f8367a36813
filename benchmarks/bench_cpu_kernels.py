"""The CPU kernels per capability against the machine's own FMA peak.

    python -m benchmarks.bench_cpu_kernels [--out benchmarks/results] [--reps 21]

For every capability this CPU runs (baseline, avx2, avx512; FASTGEN_CPU_CAPABILITY picks
each in turn), one thread:
  fma_peak   GFLOP/s of independent FMA chains at that capability's vector width (the peak
             the GEMM is measured against; the baseline has no FMA, so a multiply and an add)
  gemm       GFLOP/s of the Winograd GEMM panels on the DCGAN layers' product shapes
             ([tiles x C_in] @ [C_in x 4 C_out] of `fastgen bench train`'s 32x32, batch 64
             models), and at::mm on the same shapes (torch's BLAS, its own dispatch)
Rows go to <out>/cpu-kernels-<day>.csv with the CPU model, capability, torch and commit.
"""

from __future__ import annotations

import argparse
import datetime
import os
import sys
import time

import torch

from benchmarks.results_csv import append_rows
from fastgen import _extension
from fastgen.utils.run_info import device_name, git_commit

# (name, m, k, n): the Winograd products of the DCGAN discriminator and generator layers
# (m = tiles of the output, k = input channels, n = 4 output channels per phase set).
SHAPES = [
    ("D 64->128 (16x16)", 64 * 4 * 4 // 4, 64 * 4, 128),
    ("D 128->256 (8x8)", 64 * 2 * 2 // 4 * 4, 128 * 4, 256),
    ("G 256->128 (4x4)", 64, 256, 4 * 128),
    ("G 128->64 (8x8)", 64 * 4, 128, 4 * 64),
]
ORDER = ["baseline", "avx2", "avx512"]
FMA_ITERATIONS = 2_000_000


def best_seconds(fn, reps: int) -> float:
    fn()
    times = []
    for _ in range(reps):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    times.sort()
    return times[len(times) // 2]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.bench_cpu_kernels", description=__doc__.split("\n")[0]
    )
    parser.add_argument("--out", default="benchmarks/results")
    parser.add_argument("--reps", type=int, default=21)
    args = parser.parse_args(sys.argv[1:] if argv is None else argv)
    if not _extension.LOADED:
        print(
            f"bench_cpu_kernels: the extension is not loaded ({_extension.LOAD_ERROR})",
            file=sys.stderr,
        )
        return 2
    torch.set_num_threads(1)
    C = _extension._C
    supported = C._cpu_capability()[1]
    capabilities = ORDER[: ORDER.index(supported) + 1]
    rows = []
    common = {"device": device_name("cpu"), "features": " ".join(C._cpu_capability()[2]),
              "torch": torch.__version__, "commit": git_commit(),
              "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")}  # fmt: skip
    for capability in capabilities:
        os.environ["FASTGEN_CPU_CAPABILITY"] = capability
        seconds = best_seconds(lambda: C._cpu_fma_loop(FMA_ITERATIONS), 5)
        peak = C._cpu_fma_loop(FMA_ITERATIONS) / seconds / 1e9
        rows.append({"capability": capability, "kernel": "fma_peak", "shape": "", "gflops": round(peak, 1),
                     "fraction_of_peak": 1.0, **common})  # fmt: skip
        print(f"{capability:9s} FMA peak {peak:7.1f} GFLOP/s")
        for name, m, k, n in SHAPES:
            a, b = torch.randn(m, k), torch.randn(k, n)
            flops = 2.0 * m * k * n
            ours = (
                flops
                / best_seconds(
                    lambda a=a, b=b: torch.ops.fastgen.winograd_gemm(a, b, False), args.reps
                )
                / 1e9
            )
            blas = flops / best_seconds(lambda a=a, b=b: torch.mm(a, b), args.reps) / 1e9
            # The baseline copy has no micro-kernel: its panels are at::mm calls.
            label = "winograd_gemm (at::mm panels)" if capability == "baseline" else "winograd_gemm"
            for kernel, rate in ((label, ours), ("at::mm", blas)):
                rows.append({"capability": capability, "kernel": kernel, "shape": f"{name} [{m}x{k}]@[{k}x{n}]",
                             "gflops": round(rate, 1), "fraction_of_peak": round(rate / peak, 2), **common})  # fmt: skip
            print(
                f"{capability:9s} {name:20s} winograd_gemm {ours:7.1f} GFLOP/s ({ours / peak:4.0%} of peak), at::mm {blas:7.1f}"
            )
    os.environ.pop("FASTGEN_CPU_CAPABILITY", None)
    print(f"wrote {append_rows(args.out, 'cpu-kernels', rows)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
