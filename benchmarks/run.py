"""Runs the benchmarks: python -m benchmarks.run --device cpu|cuda --out DIR [options].

Discovers benchmarks/bench_*.py, calls each module's cases(device), times every case with
benchmarks.harness (providers fastgen, eager and compile, interleaved), prints a table and
appends one CSV row per (op, case, mode, provider) to DIR/<device>-<YYYYMMDD>.csv: one file
per device kind and UTC day, so repeated runs of a day accumulate in one file and CPU and
GPU numbers never mix; each row carries the device name, torch version and commit.
"""

from __future__ import annotations

import argparse
import csv
import datetime
import importlib
import os
import pkgutil
import sys

import torch

from benchmarks import harness

BENCH_DIR = os.path.dirname(os.path.abspath(__file__))


def discover() -> dict[str, object]:
    """bench module suffix (e.g. 'conv_transpose2d') -> imported module."""
    modules = {}
    for info in sorted(pkgutil.iter_modules([BENCH_DIR]), key=lambda m: m.name):
        if info.name.startswith("bench_"):
            module = importlib.import_module(f"benchmarks.{info.name}")
            if hasattr(module, "cases"):  # e.g. bench_cpu_kernels is a script of its own
                modules[info.name[len("bench_") :]] = module
    return modules


def _header(path: str) -> list[str]:
    with open(path, newline="") as f:
        return next(csv.reader(f), [])


def parse_args(argv):
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.run", description=__doc__.split("\n")[0]
    )
    parser.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    parser.add_argument("--out", default="benchmarks/results", help="directory for the CSV file")
    parser.add_argument(
        "--ops", default="", help="comma-separated ops (bench module suffixes or Case.op)"
    )
    parser.add_argument(
        "--reps", type=int, default=None, help="timed repetitions (default: cuda 50, cpu 15)"
    )
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--no-compile", action="store_true", help="skip the torch.compile provider")
    parser.add_argument("--threads", type=int, default=None, help="torch.set_num_threads on CPU")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    if args.device == "cuda":
        if not torch.cuda.is_available():
            print("benchmarks.run: --device cuda but no CUDA device is available", file=sys.stderr)
            return 2
        torch.backends.cudnn.benchmark = True  # let eager pick its fastest conv algorithms too
    if args.threads:
        torch.set_num_threads(args.threads)
    reps = args.reps or (50 if args.device == "cuda" else 15)
    wanted = {name.strip() for name in args.ops.split(",") if name.strip()}

    modules = discover()
    unknown = wanted - set(modules)
    cases = []
    for name, module in modules.items():
        for case in module.cases(args.device):
            if not wanted or name in wanted or case.op in wanted:
                cases.append(case)
    if not cases:
        print(
            f"benchmarks.run: no cases (modules: {', '.join(modules) or 'none'}; asked for: {args.ops})"
        )
        return 1 if wanted else 0
    if unknown - {case.op for case in cases}:
        print(f"benchmarks.run: no benchmark for: {', '.join(sorted(unknown))}", file=sys.stderr)

    results = []
    for case in cases:
        print(f"{case.op} / {case.case} ...", flush=True)
        results += harness.run_case(
            case, args.device, reps=reps, warmup=args.warmup, compile=not args.no_compile
        )

    harness.add_matmul_fractions(results)
    rows = harness.csv_rows(results, args.device, reps)
    os.makedirs(args.out, exist_ok=True)
    day = datetime.datetime.now(datetime.timezone.utc).strftime("%Y%m%d")
    path = os.path.join(args.out, f"{args.device}-{day}.csv")
    if os.path.exists(path) and _header(path) != list(harness.CSV_FIELDS):
        path = os.path.join(args.out, f"{args.device}-{day}-v2.csv")  # columns changed today
    new_file = not os.path.exists(path)
    with open(path, "a", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=harness.CSV_FIELDS)
        if new_file:
            writer.writeheader()
        writer.writerows(rows)
    print()
    print(
        f"device: {rows[0]['device']}  torch: {rows[0]['torch']}  commit: {rows[0]['commit']}  reps: {reps}"
    )
    print(harness.format_table(results))
    print(f"\nappended {len(rows)} rows to {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
