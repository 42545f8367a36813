"""log.jsonl (one JSON object a line: a training row every log_every steps, an evaluation
row every eval_every) and the loss plot drawn from it."""

from __future__ import annotations

import json
import math
import warnings
from pathlib import Path
from typing import Any

from fastgen.checkpoint_io import RunFileWarning
from fastgen.utils.atomic import atomic_write


def eval_log_row(step: int, evaluator, results: dict) -> dict[str, Any]:
    """The log.jsonl row of one evaluation. It names the feature extractor when the evaluator
    says which (fastgen.metrics.make_evaluator does): a digits-classifier FID is not an
    Inception FID, and the row must not pass for one."""
    row: dict[str, Any] = {"step": step, "eval": {k: float(v) for k, v in results.items()}}
    extractor = getattr(evaluator, "extractor", None)
    if extractor:
        row["extractor"] = str(extractor)
    return row


def read_log(path) -> list[dict[str, Any]]:
    """The rows of a log.jsonl. A line that is not a JSON object (the torn last row of a run
    killed while logging) is skipped with a RunFileWarning naming the file and line."""
    rows = []
    with open(path) as handle:
        for number, line in enumerate(handle, 1):
            line = line.strip()
            if not line:
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError:
                row = None
            if not isinstance(row, dict):
                warnings.warn(
                    f"fastgen.train.read_log: {path}: line {number} is not a JSON object "
                    f"(torn by a run killed while logging?); skipped",
                    RunFileWarning,
                    stacklevel=2,
                )
                continue
            rows.append(row)
    return rows


def plot_losses(rows: list[dict[str, Any]], keys: list[str], path: Path) -> Path:
    """One panel per key (loss vs step), PNG tagged as machine-generated."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    import fastgen

    keys = [k for k in keys if any(isinstance(r.get(k), int | float) for r in rows)]
    fig, axes = plt.subplots(
        len(keys) or 1, 1, figsize=(6, 2.2 * max(1, len(keys))), sharex=True, squeeze=False
    )
    for ax, key in zip(axes[:, 0], keys):
        points = [
            (r["step"], r[key])
            for r in rows
            if isinstance(r.get(key), int | float) and math.isfinite(r[key])
        ]
        if points:
            steps, values = zip(*points)
            ax.plot(steps, values, lw=1)
        ax.set_ylabel(key)
        ax.grid(alpha=0.3)
    axes[-1, 0].set_xlabel("step")
    fig.tight_layout()
    metadata = {
        "Software": f"fastgen {fastgen.__version__}",
        "fastgen:generated": "true (machine-generated image)",
    }
    try:
        atomic_write(
            path,
            lambda handle: fig.savefig(handle, format="png", dpi=100, metadata=metadata),
            fn="fastgen.train.plot_losses",
        )
    finally:
        plt.close(fig)
    return path
