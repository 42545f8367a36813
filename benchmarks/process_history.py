"""Does a training step's speed depend on what its process did before? (issue 23's target:
the fused step alone in a process and after the other variants ran there differ by <= 5%.)

    python -m benchmarks.process_history [--models dcgan,vae] [--threads 1] [--steps 100]

In one process, for each model: the fused step (the main job's settings, float32 and bf16
autocast, the layout `fastgen train --memory-format auto` picks) is timed first, alone; then
the other variants run in the same process (stock float32, stock bf16, the other dtype's fused
step, the other model, and a torch.compile'd stock step unless --no-compile); then the fused
step is timed again, steps in the same order. Each phase reports the median and p20-p80 of
its steps; the ratio after / alone is what the target bounds. Rows go to
<out>/process-history-<day>.csv.
"""

from __future__ import annotations

import argparse
import datetime
import statistics
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


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.process_history", description=__doc__.split("\n")[0]
    )
    parser.add_argument("--models", default="dcgan,vae")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--steps", type=int, default=100)
    parser.add_argument("--no-compile", action="store_true")
    parser.add_argument("--out", default="benchmarks/results")
    args = parser.parse_args(sys.argv[1:] if argv is None else argv)
    if not _extension.LOADED:
        print(f"process_history: the extension is not loaded ({_extension.LOAD_ERROR})")
        return 2
    torch.set_num_threads(args.threads)
    heap.keep_freed_memory()  # as fastgen train does
    models = args.models.split(",")
    rows = []
    for model in models:
        for amp in ("none", "bf16"):
            fused = make_step(model, True, amp)
            alone = timed(fused, args.steps)
            others = [make_step(model, False, "none"), make_step(model, False, "bf16")]
            others.append(make_step(model, True, "bf16" if amp == "none" else "none"))
            others += [make_step(m, f, "none") for m in models if m != model for f in (True, False)]
            if not args.no_compile:
                others.append(make_step(model, False, "none", compiled=True))
            for other in others:
                timed(other, args.steps // 2, warmup=3)
            after = timed(fused, args.steps)
            (a, a20, a80), (b, b20, b80) = summary(alone), summary(after)
            print(
                f"{model} fused {amp}: alone {a:.1f} ms ({a20:.1f}-{a80:.1f}), after "
                f"{len(others)} other variants {b:.1f} ms ({b20:.1f}-{b80:.1f}): {b / a:.3f}x"
            )
            rows.append(
                dict(
                    model=model, amp=amp, threads=args.threads, steps=args.steps,
                    others=len(others), alone_ms=round(a, 3), alone_p20=round(a20, 3),
                    alone_p80=round(a80, 3), after_ms=round(b, 3), after_p20=round(b20, 3),
                    after_p80=round(b80, 3), after_over_alone=round(b / a, 4),
                    device=device_name(torch.device("cpu")), torch=torch.__version__,
                    commit=git_commit(), date=datetime.date.today().isoformat(),
                )
            )  # fmt: skip
    print("wrote", append_rows(args.out, "process-history", rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
