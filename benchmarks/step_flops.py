"""The main job's training step against the machine's peak: stock FLOPs / measured step time.

    python -m benchmarks.step_flops benchmarks/results/bench_main_job_cpu_<stamp>.csv [...]

Counts the floating-point work of one training step (`GANTask.step` / `VAETask.step` at the
main job's settings: 32x32, width 32, batch 64) with torch.utils.flop_counter on the stock
layers (convolutions, matmuls: what the step would cost done directly, forward and
backward), then, for every row of the given `fastgen bench train --main-job` CSVs, divides
it by the row's median step time and by the one-core peak of the row's dtype measured here
(float32 FMAs for --amp none, `vdpbf16ps` for bf16, per core times the row's threads).
fastgen's Winograd layers do fewer multiplications than counted, so their "effective" rate
can pass what they execute. Rows go to <out>/step-flops-<day>.csv.
"""

from __future__ import annotations

import argparse
import csv
import datetime
import os
import sys

import torch
from torch.utils.flop_counter import FlopCounterMode

from benchmarks.results_csv import append_rows, peak_gflops
from fastgen import _extension
from fastgen.bench import train_default, training_step
from fastgen.utils.run_info import device_name, git_commit


def step_flops(model: str, batch: int, width: int, resolution: int) -> int:
    step = training_step(
        model, fused=False, compiled=False, resolution=resolution, channels=1, batch=batch,
        width=width, latent_dim=train_default("latent_dim", model), device=torch.device("cpu"),
        seed=0,
    )  # fmt: skip
    step()  # warm-up outside the count
    with FlopCounterMode(display=False) as counter:
        step()
    return counter.get_total_flops()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.step_flops", description=__doc__.split("\n")[0]
    )
    parser.add_argument("csv", nargs="+", help="bench_main_job_*.csv files")
    parser.add_argument("--out", default="benchmarks/results")
    args = parser.parse_args(sys.argv[1:] if argv is None else argv)
    if not _extension.LOADED:
        print(f"step_flops: the extension is not loaded ({_extension.LOAD_ERROR})", file=sys.stderr)
        return 2
    C = _extension._C
    active, _, features = C._cpu_capability()
    peaks = {"none": peak_gflops(C._cpu_fma_loop)}
    if active == "avx512" and "avx512bf16" in features:
        peaks["bf16"] = peak_gflops(C._cpu_bf16_dot_loop)
    print("one-core peaks (GFLOP/s): " + ", ".join(f"{k} {v:.0f}" for k, v in peaks.items()))
    counted: dict[tuple, int] = {}
    rows = []
    for path in args.csv:
        with open(path, newline="") as f:
            for row in csv.DictReader(f):
                if row.get("error") or not row.get("median_ms"):
                    continue
                key = (row["model"], int(row["batch"]), int(row["width"]), int(row["resolution"]))
                if key not in counted:
                    counted[key] = step_flops(*key)
                flops, threads, amp = counted[key], int(row["threads"]), row["amp"]
                rate = flops / (float(row["median_ms"]) / 1e3) / 1e9
                peak = peaks.get(amp)
                fraction = rate / (peak * threads) if peak else None
                rows.append({"source": os.path.basename(path), "model": row["model"],
                             "layers": row["layers"], "mode": row["mode"], "amp": amp,
                             "threads": threads, "median_ms": row["median_ms"],
                             "step_gflop": round(flops / 1e9, 3),
                             "effective_gflops": round(rate, 1),
                             "peak_gflops": round(peak * threads, 1) if peak else "",
                             "fraction_of_peak": round(fraction, 3) if fraction else "",
                             "row_commit": row.get("commit", ""), "row_cpu": row.get("cpu_model", ""),
                             "device": device_name("cpu"), "torch": torch.__version__,
                             "commit": git_commit(),
                             "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")})  # fmt: skip
                frac = f"{fraction:.0%}" if fraction else "-"
                print(f"{row['model']:6s} {row['layers']:6s} amp={amp:5s} threads={threads} "
                      f"{float(row['median_ms']):6.1f} ms  {flops / 1e9:.2f} GFLOP/step  "
                      f"{rate:6.1f} GFLOP/s  {frac} of peak")  # fmt: skip
    if not rows:
        print("step_flops: no rows", file=sys.stderr)
        return 1
    print(f"wrote {append_rows(args.out, 'step-flops', rows)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
