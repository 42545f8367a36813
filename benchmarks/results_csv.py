"""What the small CPU benchmark scripts share: appending rows to a dated CSV, and the
one-core peak of a measurement loop of the extension."""

from __future__ import annotations

import csv
import datetime
import os
import time
from collections.abc import Callable


def append_rows(out_dir: str, stem: str, rows: list[dict]) -> str:
    """Appends `rows` to <out_dir>/<stem>-<day>.csv (a header first when the file is new);
    returns its path."""
    os.makedirs(out_dir, exist_ok=True)
    path = os.path.join(out_dir, f"{stem}-{datetime.date.today():%Y%m%d}.csv")
    new = not os.path.exists(path)
    with open(path, "a", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        if new:
            writer.writeheader()
        writer.writerows(rows)
    return path


def peak_gflops(loop: Callable[[int], float], iterations: int = 2_000_000, reps: int = 5) -> float:
    """GFLOP/s of `loop(iterations)` (an extension loop that returns the flops it ran, e.g.
    _C._cpu_fma_loop), the best of `reps` runs after one untimed."""
    loop(iterations)
    best, flops = float("inf"), 0.0
    for _ in range(reps):
        start = time.perf_counter()
        flops = loop(iterations)
        best = min(best, time.perf_counter() - start)
    return flops / best / 1e9
