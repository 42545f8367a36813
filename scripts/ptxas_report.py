"""Registers, spills and shared memory of every CUDA kernel, from ptxas' own report.

    python scripts/ptxas_report.py [--split-ninja DIR] [--max-spill BYTES] LOG [LOG ...]

Reads the `ptxas info` lines that nvcc prints with -Xptxas -v (setup.py adds it when
FASTGEN_PTXAS_VERBOSE=1) and prints one row per kernel and architecture: registers per thread,
static shared memory, stack frame, spill stores and loads. Exits 1, naming the kernels, when
one spills more than --max-spill bytes (stores or loads) per thread: a kernel that starts
spilling (a new template instance, a bigger tile, a compiler upgrade) is then seen in CI.

--split-ninja DIR: LOG is a ninja build's output (setup.py build_ext); the ptxas lines of each
compiled object are saved to DIR/<object>.ptxas, replacing what an earlier build saved for it,
and the report covers every file in DIR. ninja recompiles only what changed, so the objects it
did not rebuild keep the figures of the build that last compiled them.

Used by scripts/ci_cuda_build.sh (make cuda-build).
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys

ENTRY = re.compile(r"ptxas info\s*: Compiling entry function '([^']+)' for '(\w+)'")
PROPERTIES = re.compile(r"ptxas info\s*: Function properties for (\S+)")
FRAME = re.compile(r"(\d+) bytes stack frame, (\d+) bytes spill stores, (\d+) bytes spill loads")
USED = re.compile(r"ptxas info\s*: Used (\d+) registers")
SMEM = re.compile(r"(\d+) bytes smem")
STEP = re.compile(r"^\[\d+/\d+\] ")
OBJECT = re.compile(r" -o (\S+\.o)\b")


def split_ninja(log: str, directory: str) -> int:
    """Saves each compiled object's ptxas lines to directory/<object>.ptxas; returns how many
    objects this build compiled with ptxas output."""
    os.makedirs(directory, exist_ok=True)
    saved = 0
    current, lines = None, []

    def flush():
        nonlocal saved
        if current is not None and any("ptxas info" in line for line in lines):
            with open(os.path.join(directory, os.path.basename(current) + ".ptxas"), "w") as f:
                f.writelines(lines)
            saved += 1

    with open(log, errors="replace") as f:
        for line in f:
            if STEP.match(line):
                flush()
                match = OBJECT.search(line)
                current, lines = (match.group(1) if match else None), []
            elif current is not None:
                lines.append(line)
    flush()
    return saved


def parse(text: str, source: str = "") -> list[dict]:
    """One record per entry function and architecture; `source` names where it came from."""
    records, entry, pending = [], None, None
    for line in text.splitlines():
        if match := ENTRY.search(line):
            entry = {"kernel": match.group(1), "arch": match.group(2), "registers": 0, "source": source,
                     "smem": 0, "stack": 0, "spill_stores": 0, "spill_loads": 0}  # fmt: skip
            records.append(entry)
            pending = None
        elif match := PROPERTIES.search(line):
            pending = match.group(1)
        elif (match := FRAME.search(line)) and entry is not None and pending == entry["kernel"]:
            entry["stack"], entry["spill_stores"], entry["spill_loads"] = map(int, match.groups())
        elif (match := USED.search(line)) and entry is not None:
            entry["registers"] = int(match.group(1))
            smem = SMEM.search(line)
            entry["smem"] = int(smem.group(1)) if smem else 0
    return records


def demangle(names: list[str]) -> dict[str, str]:
    tool = shutil.which("c++filt")
    if not tool or not names:
        return {n: n for n in names}
    out = subprocess.run([tool], input="\n".join(names), capture_output=True, text=True).stdout
    return dict(zip(names, out.splitlines())) if out else {n: n for n in names}


def short(name: str, width: int = 90) -> str:
    """The demangled name without namespaces, return type and argument list, cut to `width`:
    kernel<template arguments>."""
    name = re.sub(r"\(anonymous namespace\)::|\bfastgen::(\w+::)*|\bat::|\bc10::", "", name)
    name = re.sub(r"^void ", "", name)
    depth = 0
    for index, char in enumerate(name):
        depth += {"<": 1, ">": -1}.get(char, 0)
        if char == "(" and depth == 0:
            name = name[:index]
            break
    return name if len(name) <= width else name[: width - 3] + "..."


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("logs", nargs="+")
    parser.add_argument("--split-ninja", metavar="DIR")
    parser.add_argument("--max-spill", type=int, default=0, metavar="BYTES")
    args = parser.parse_args(argv)
    paths = list(args.logs)
    if args.split_ninja:
        for log in args.logs:
            count = split_ninja(log, args.split_ninja)
            print(f"{log}: ptxas output of {count} object(s) compiled in this build")
        paths = [os.path.join(args.split_ninja, n) for n in sorted(os.listdir(args.split_ninja))]
    records = []
    for path in paths:
        with open(path, errors="replace") as f:
            source = os.path.basename(path)
            for suffix in (".ptxas", ".log", ".o"):
                source = source.removesuffix(suffix)
            records += parse(f.read(), source)
    if not records:
        print("FAIL: no ptxas report found (was nvcc run with -Xptxas -v?)", file=sys.stderr)
        return 1
    names = demangle(sorted({r["kernel"] for r in records}))
    records.sort(key=lambda r: (r["arch"], r["source"], short(names[r["kernel"]], 10**6)))
    width = max(len(r["source"]) for r in records)
    print(f"{'arch':6s} {'regs':>4s} {'smem B':>7s} {'stack B':>7s} {'spill st/ld B':>13s}  "
          f"{'object':{width}s}  kernel")  # fmt: skip
    for r in records:
        spills = f"{r['spill_stores']}/{r['spill_loads']}"
        print(f"{r['arch']:6s} {r['registers']:4d} {r['smem']:7d} {r['stack']:7d} {spills:>13s}  "
              f"{r['source']:{width}s}  {short(names[r['kernel']])}")  # fmt: skip
    archs = sorted({r["arch"] for r in records})
    worst = max(records, key=lambda r: max(r["spill_stores"], r["spill_loads"]))
    print(f"{len(records)} kernels ({', '.join(archs)}); max registers "
          f"{max(r['registers'] for r in records)}, max smem {max(r['smem'] for r in records)} B, "
          f"max spill {max(worst['spill_stores'], worst['spill_loads'])} B")  # fmt: skip
    over = [r for r in records if max(r["spill_stores"], r["spill_loads"]) > args.max_spill]
    if over:
        for r in over:
            print(f"FAIL: {r['arch']} {r['source']}: {short(names[r['kernel']], 200)} spills "
                  f"{r['spill_stores']} B stores / {r['spill_loads']} B loads per thread "
                  f"(allowed {args.max_spill} B)", file=sys.stderr)  # fmt: skip
        return 1
    print(f"OK: no kernel spills more than {args.max_spill} B per thread")
    return 0


if __name__ == "__main__":
    sys.exit(main())
