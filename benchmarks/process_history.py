"""Does a training step's speed depend on what its process did before? (issue 23's target:
the fused step alone in a process and after the other variants ran there differ by <= 5%.)

    python -m benchmarks.process_history [--models dcgan,vae] [--threads 1] [--steps 100]

In a fresh process per (model, layers, dtype): the step (the main job's settings, float32 or
bf16 autocast, the layout `fastgen train --memory-format auto` picks; fused or stock layers) is
timed first, alone, then once more right away (how far two timings of the same step move with
nothing in between: the noise floor), then the other variants run in the same process (both
dtypes of both kinds of layers, the other model, and a torch.compile'd stock step unless
--no-compile), then the step is timed again. Each phase reports the median and p20-p80 of its
steps; after / alone is what the target bounds, next to again / alone. Rows go to
<out>/process-history-<day>.csv.
"""

from __future__ import annotations

import argparse
import datetime
import json
import statistics
import subprocess
import sys
import time

import torch

from benchmarks.results_csv import append_rows
from fastgen import _extension
from fastgen.bench import train_default, training_step
from fastgen.utils import heap
from fastgen.utils.run_info import device_name, git_commit


def make_step(model: str, fused: bool, amp: str, compiled: bool = False):
    return training_step(
        model, fused=fused, compiled=compiled, amp=amp, resolution=32, channels=1, batch=64,
        width=32, latent_dim=train_default("latent_dim", model), device=torch.device("cpu"),
        seed=0, memory_format="auto",
    )  # fmt: skip


def timed(step, steps: int, warmup: int = 10) -> list[float]:
    for _ in range(warmup):
        step()
    times = []
    for _ in range(steps):
        start = time.perf_counter()
        step()
        times.append((time.perf_counter() - start) * 1e3)
    return times


def summary(times: list[float]) -> tuple[float, float, float]:
    ordered = sorted(times)
    pick = lambda q: ordered[min(len(ordered) - 1, int(q * len(ordered)))]  # noqa: E731
    return statistics.median(times), pick(0.2), pick(0.8)


def measure(model: str, fused: bool, amp: str, models: list[str], args) -> dict:
    """The phases of one (model, layers, dtype) in this process (see the top of the file)."""
    torch.set_num_threads(args.threads)
    heap.keep_freed_memory()  # as fastgen train does
    step = make_step(model, fused, amp)
    alone = timed(step, args.steps)
    again = timed(step, args.steps, warmup=0)
    others = [
        make_step(m, f, a)
        for m in models
        for f in (True, False)
        for a in ("none", "bf16")
        if (m, f, a) != (model, fused, amp)
    ]
    if not args.no_compile:
        others.append(make_step(model, False, "none", compiled=True))
    for other in others:
        timed(other, args.steps // 2, warmup=3)
    after = timed(step, args.steps)
    result = {"others": len(others)}
    for name, times in (("alone", alone), ("again", again), ("after", after)):
        median, p20, p80 = summary(times)
        result.update({f"{name}_ms": round(median, 3), f"{name}_p20": round(p20, 3),
                       f"{name}_p80": round(p80, 3)})  # fmt: skip
    result["again_over_alone"] = round(result["again_ms"] / result["alone_ms"], 4)
    result["after_over_alone"] = round(result["after_ms"] / result["alone_ms"], 4)
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.process_history", description=__doc__.split("\n")[0]
    )
    parser.add_argument("--models", default="dcgan,vae")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--steps", type=int, default=100)
    parser.add_argument("--no-compile", action="store_true")
    parser.add_argument("--out", default="benchmarks/results")
    parser.add_argument("--case", help=argparse.SUPPRESS)  # model,layers,amp: one child process
    args = parser.parse_args(sys.argv[1:] if argv is None else argv)
    if not _extension.LOADED:
        print(f"process_history: the extension is not loaded ({_extension.LOAD_ERROR})")
        return 2
    models = args.models.split(",")
    if args.case:
        model, layers, amp = args.case.split(",")
        print(json.dumps(measure(model, layers == "fused", amp, models, args)))
        return 0
    rows = []
    for model in models:
        for layers in ("fused", "stock"):
            for amp in ("none", "bf16"):
                command = [sys.executable, "-m", "benchmarks.process_history", "--case",
                           f"{model},{layers},{amp}", "--models", args.models, "--threads",
                           str(args.threads), "--steps", str(args.steps)]  # fmt: skip
                if args.no_compile:
                    command.append("--no-compile")
                out = subprocess.run(command, capture_output=True, text=True, check=True).stdout
                result = json.loads(out.strip().splitlines()[-1])
                print(
                    f"{model} {layers} {amp}: alone {result['alone_ms']:.1f} ms, again "
                    f"{result['again_ms']:.1f} ms ({result['again_over_alone']:.3f}x), after "
                    f"{result['others']} other variants {result['after_ms']:.1f} ms "
                    f"({result['after_over_alone']:.3f}x)"
                )
                rows.append(
                    dict(
                        model=model, layers=layers, amp=amp, threads=args.threads,
                        steps=args.steps, **result, device=device_name(torch.device("cpu")),
                        torch=torch.__version__, commit=git_commit(),
                        date=datetime.date.today().isoformat(),
                    )
                )  # fmt: skip
    print("wrote", append_rows(args.out, "process-history", rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
