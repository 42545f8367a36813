"""Streaming feature statistics: running mean and covariance in float64, and a bounded sample.

Features arrive batch by batch (each batch went through the device); nothing here ever holds
all of them. ``RunningStatistics`` merges per-batch moments with Chan et al.'s parallel update

    n = n_a + n_b,   delta = mean_b - mean_a,
    mean = mean_a + delta * n_b / n,
    M2 = M2_a + M2_b + outer(delta, delta) * n_a * n_b / n,

so the covariance ``M2 / (n - 1)`` stays accurate when the mean is large compared with the
spread (the naive sum-of-squares form loses every digit there). ``FeatureReservoir`` keeps a
uniform random sample of at most ``capacity`` rows (Vitter's algorithm R, batched) for the
metrics that need individual feature vectors (KID, precision/recall).
"""

from __future__ import annotations

import torch


def _check_features(fn: str, features: torch.Tensor, dim: int | None) -> torch.Tensor:
    if not isinstance(features, torch.Tensor) or features.dim() != 2:
        shape = tuple(features.shape) if isinstance(features, torch.Tensor) else type(features)
        raise ValueError(
            f"fastgen.metrics.{fn}: features expected a 2-D tensor [N, D], got {shape}"
        )
    if dim is not None and features.shape[1] != dim:
        raise ValueError(
            f"fastgen.metrics.{fn}: features expected {dim} columns (the first batch's), "
            f"got {features.shape[1]}"
        )
    return features


class RunningStatistics:
    """Mean [D] and covariance [D, D] of a stream of feature batches, accumulated in float64.

    ``update(features [N, D])`` accepts any floating dtype and device; the moments live on the
    device of the first batch in float64. ``mean`` and ``covariance`` (unbiased, divisor
    n - 1) are float64 tensors; ``state_dict()``/``from_state_dict`` save and restore them
    (e.g. to cache the statistics of a real data set).

    Args:
        dim: D, the feature width every batch must have; None to take the first batch's.
    Returns:
        An accumulator: ``update(features [N, D])``; ``count`` rows so far; ``mean`` [D] and
        ``covariance`` [D, D], float64 on the first batch's device (``mean`` needs one row,
        ``covariance`` two).
    """

    def __init__(self, dim: int | None = None) -> None:
        self.dim = dim
        self.count = 0
        self._mean: torch.Tensor | None = None
        self._m2: torch.Tensor | None = None

    def update(self, features: torch.Tensor) -> None:
        features = _check_features("RunningStatistics.update", features, self.dim).detach()
        n_b = features.shape[0]
        if n_b == 0:
            return
        x = features.to(torch.float64)
        mean_b = x.mean(dim=0)
        centered = x - mean_b
        m2_b = centered.T @ centered
        if self._mean is None:
            self.dim = x.shape[1]
            self.count, self._mean, self._m2 = n_b, mean_b, m2_b
            return
        mean_b, m2_b = mean_b.to(self._mean.device), m2_b.to(self._mean.device)
        n_a = self.count
        n = n_a + n_b
        delta = mean_b - self._mean
        self._mean = self._mean + delta * (n_b / n)
        self._m2 = self._m2 + m2_b + torch.outer(delta, delta) * (n_a * n_b / n)
        self.count = n

    @property
    def mean(self) -> torch.Tensor:
        if self._mean is None:
            raise ValueError("fastgen.metrics.RunningStatistics.mean: no features were added")
        return self._mean

    @property
    def covariance(self) -> torch.Tensor:
        if self._m2 is None or self.count < 2:
            raise ValueError(
                "fastgen.metrics.RunningStatistics.covariance: needs at least 2 feature "
                f"vectors, got {self.count}"
            )
        return self._m2 / (self.count - 1)

    def state_dict(self) -> dict:
        """count, mean and covariance, and the co-moment M2 itself ("m2"), from which
        from_state_dict restores the statistics bit for bit."""
        return {
            "count": self.count,
            "mean": self.mean.cpu(),
            "covariance": self.covariance.cpu(),
            "m2": self._m2.cpu(),
        }

    @classmethod
    def from_state_dict(cls, state: dict) -> RunningStatistics:
        stats = cls()
        stats.count = int(state["count"])
        stats._mean = state["mean"].to(torch.float64)
        if "m2" in state:
            stats._m2 = state["m2"].to(torch.float64)
        else:  # a state without M2: rebuilt from the covariance (to rounding)
            stats._m2 = state["covariance"].to(torch.float64) * (stats.count - 1)
        stats.dim = stats._mean.shape[0]
        return stats


class FeatureReservoir:
    """A uniform random sample of at most ``capacity`` rows of a stream (algorithm R).

    Every row seen so far has the same probability capacity / seen of being held. Rows are
    stored in float32 on the CPU; ``features`` returns the held rows [min(seen, capacity), D].
    A fixed ``seed`` makes the sample reproducible.

    Args:
        capacity: the most rows held, >= 1.
        seed: the sampling's random stream.
    Returns:
        An accumulator: ``update(features [N, D])`` (any float dtype and device, the same D
        throughout); ``seen`` rows so far; ``features``, the held rows
        [min(seen, capacity), D], float32 on the CPU.
    """

    def __init__(self, capacity: int = 10_000, seed: int = 0) -> None:
        if capacity < 1:
            raise ValueError(
                f"fastgen.metrics.FeatureReservoir: capacity expected >= 1, got {capacity}"
            )
        self.capacity = capacity
        self.seen = 0
        self._rows: torch.Tensor | None = None
        self._filled = 0
        self._generator = torch.Generator().manual_seed(seed)

    def update(self, features: torch.Tensor) -> None:
        dim = None if self._rows is None else self._rows.shape[1]
        features = _check_features("FeatureReservoir.update", features, dim)
        features = features.detach().to("cpu", torch.float32)
        if self._rows is None:
            self._rows = torch.empty(self.capacity, features.shape[1])
        take = min(self.capacity - self._filled, features.shape[0])
        if take:
            self._rows[self._filled : self._filled + take] = features[:take]
            self._filled += take
        rest = features[take:]
        if rest.shape[0]:
            # Row with global (0-based) index t replaces a random slot with probability capacity/(t+1).
            index = torch.arange(
                self.seen + take, self.seen + features.shape[0], dtype=torch.float64
            )
            slots = (
                torch.rand(rest.shape[0], generator=self._generator, dtype=torch.float64)
                * (index + 1)
            ).long()
            keep = slots < self.capacity
            # Later rows overwrite earlier ones in the same slot, as the sequential algorithm does.
            for row, slot in zip(rest[keep], slots[keep].tolist()):
                self._rows[slot] = row
        self.seen += features.shape[0]

    @property
    def features(self) -> torch.Tensor:
        if self._rows is None:
            raise ValueError("fastgen.metrics.FeatureReservoir.features: no features were added")
        return self._rows[: self._filled]

    @classmethod
    def from_rows(cls, rows: torch.Tensor, seen: int, capacity: int) -> FeatureReservoir:
        """A reservoir holding `rows` (what ``features`` returned) after `seen` rows went by:
        a saved sample, read back (a cache of the real set's features)."""
        reservoir = cls(capacity)
        reservoir._rows = torch.empty(capacity, rows.shape[1])
        reservoir._rows[: rows.shape[0]] = rows.to(torch.float32)
        reservoir._filled, reservoir.seen = rows.shape[0], int(seen)
        return reservoir
