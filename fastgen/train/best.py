"""The run's best evaluation so far, and when it earns checkpoints/best.pt.

A DCGAN's FID often drifts back up after its best point, so the last checkpoint is not the
best model a run made. With --eval-every, the run loop hands every evaluation to ``BestSoFar``;
when the chosen metric (config.best_metric) improves on every earlier evaluation of the run,
the loop writes checkpoints/best.pt, a full checkpoint of that step (atomic, checksummed,
never pruned). Every checkpoint records the best so far ("best" entry), so a resumed run goes
on comparing with the same value and rewrites best.pt only when it does better. (A run
resumed from an older checkpoint than its newest may find a best.pt of a later step, from
the stretch it replays; that file stays until the resumed run beats the value its
checkpoint recorded.)
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

from fastgen.config import BEST_METRICS

BEST_NAME = "best.pt"


class BestSoFar:
    """The best value of `metric` over a run's evaluations: lower is better, except for the
    metrics BEST_METRICS marks "max". A NaN or inf value never counts as better."""

    def __init__(self, metric: str) -> None:
        if metric not in BEST_METRICS:
            raise ValueError(
                f"fastgen.train.BestSoFar: metric expected one of {', '.join(BEST_METRICS)}, "
                f"got {metric!r}"
            )
        self.metric = metric
        self.higher_is_better = BEST_METRICS[metric] == "max"
        self.step: int | None = None
        self.value: float | None = None

    def improves(self, results: Mapping[str, Any]) -> bool:
        """Whether `results` (one evaluation) beat every earlier one; False when the metric is
        not among them."""
        value = results.get(self.metric)
        if not isinstance(value, int | float) or not math.isfinite(value):
            return False
        if self.value is None:
            return True
        return value > self.value if self.higher_is_better else value < self.value

    def record(self, step: int, results: Mapping[str, Any]) -> None:
        self.step, self.value = step, float(results[self.metric])

    def state_dict(self) -> dict[str, Any] | None:
        """The checkpoint's "best" entry (None before the first evaluation)."""
        if self.step is None:
            return None
        return {"metric": self.metric, "step": self.step, "value": self.value}

    def load_state_dict(self, entry) -> None:
        """Takes a checkpoint's "best" entry (None: no evaluation yet). An entry of another
        metric is a ValueError (the config fixes the metric, so this is a damaged file)."""
        if entry is None:
            self.step = self.value = None
            return
        if (
            not isinstance(entry, Mapping)
            or entry.get("metric") != self.metric
            or not isinstance(entry.get("step"), int)
            or not isinstance(entry.get("value"), float)
        ):
            raise ValueError(
                f"expected {{'metric': {self.metric!r}, 'step': int, 'value': float}}, got "
                f"{entry!r}"
            )
        self.step, self.value = entry["step"], entry["value"]

    def summary(self) -> str:
        """ "fid 12.3 at step 1500", for the run's summary line ("" before any evaluation)."""
        if self.step is None:
            return ""
        return f"{self.metric} {self.value:.4g} at step {self.step}"
