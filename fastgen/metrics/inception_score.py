"""Inception Score, accumulated from a stream of classifier logits.

    IS = exp( E_x KL(p(y|x) || p(y)) ),   p(y) = E_x p(y|x)

over ``num_splits`` disjoint splits of the samples, reported as the mean and (population)
standard deviation over splits. The splits are those of the reference code (the original TF
code, torch-fidelity, torchmetrics): the N samples, shuffled by a seeded permutation, cut into
contiguous parts [i N / S, (i + 1) N / S), so split sizes differ by at most one. The shuffle
matters: without it, samples that come in class order (a conditional generator cycling its
labels) would put whole classes into one split. Streaming needs N in advance (``total``), to
know which split each arriving sample belongs to; per split the expectation decomposes as

    E_x KL = E_x[ sum_y p log p ] - sum_y p(y) log p(y),

so only the running sum of sum_y p log p and of p(y|x) per split are kept, in float64.
The score ranges from 1 (every sample the same class distribution) to the number of classes.

The logits are the classifier's as given. For Inception-v3 they must be the bias-free
``pool3 @ W`` of the TF code (fastgen.metrics.inception returns those).
"""

from __future__ import annotations

import torch

from fastgen.utils.errors import ArgumentError

MIN_PER_SPLIT = 2  # a split of one sample has KL 0 whatever the classifier says


def check_sample_count(total: int, num_splits: int, fn: str, argument: str = "total") -> None:
    """Raises an ArgumentError unless `total` samples fill `num_splits` splits of at least
    MIN_PER_SPLIT each; fn names the caller, argument the parameter that sets total ("n")."""
    needed = MIN_PER_SPLIT * num_splits
    if total < needed:
        raise ArgumentError(
            fn,
            argument,
            f"must be at least {needed} samples for the Inception Score ({num_splits} splits "
            f"of >= {MIN_PER_SPLIT}), got {total}; raise it or drop 'is' from the metrics",
        )


class InceptionScore:
    """Accumulates ``update(logits [n, K])`` for ``total`` samples in all; ``compute()`` ->
    {"is": mean, "is_std": std over the splits}.

    Args:
        num_splits: splits of the samples, >= 1.
        seed: the permutation that assigns samples to splits.
        total: keyword; the number of samples to come, >= 2 * num_splits.
    Returns:
        An accumulator. ``update(logits)`` takes logits [n, K], K >= 2, any float dtype and
        device (kept in float64 on the CPU), in stream order, at most ``total`` rows in all.
        ``compute()``, after exactly ``total`` rows, returns {"is": float, "is_std": float}
        (population std; 0.0 with one split).
    """

    def __init__(self, num_splits: int = 10, seed: int = 0, *, total: int) -> None:
        if num_splits < 1:
            raise ValueError(
                f"fastgen.metrics.InceptionScore: num_splits expected >= 1, got {num_splits}"
            )
        check_sample_count(total, num_splits, "fastgen.metrics.InceptionScore")
        self.num_splits, self.total = num_splits, total
        self.seen = 0
        # Sample t of the stream sits at position[t] of the shuffled order, whose split is the
        # part [i N / S, (i + 1) N / S) holding that position.
        order = torch.randperm(total, generator=torch.Generator().manual_seed(seed))
        position = torch.empty(total, dtype=torch.int64)
        position[order] = torch.arange(total)
        bounds = torch.tensor([(i * total) // num_splits for i in range(1, num_splits + 1)])
        self._split_of = torch.bucketize(position, bounds, right=True)
        self._neg_entropy: torch.Tensor | None = None  # [splits]: sum over samples of sum p log p
        self._probability: torch.Tensor | None = None  # [splits, K]: sum over samples of p(y|x)
        self._count = torch.zeros(num_splits, dtype=torch.float64)

    def update(self, logits: torch.Tensor) -> None:
        if logits.dim() != 2 or logits.shape[1] < 2:
            raise ValueError(
                f"fastgen.metrics.InceptionScore.update: logits expected [N, K] with K >= 2, got {tuple(logits.shape)}"
            )
        if self.seen + logits.shape[0] > self.total:
            raise ValueError(
                f"fastgen.metrics.InceptionScore.update: expected {self.total} samples in all "
                f"(total), got {self.seen + logits.shape[0]}"
            )
        log_p = torch.log_softmax(logits.detach().to("cpu", torch.float64), dim=1)
        p = log_p.exp()
        if self._probability is None:
            self._probability = torch.zeros(self.num_splits, logits.shape[1], dtype=torch.float64)
            self._neg_entropy = torch.zeros(self.num_splits, dtype=torch.float64)
        split = self._split_of[self.seen : self.seen + logits.shape[0]]
        self._probability.index_add_(0, split, p)
        self._neg_entropy.index_add_(0, split, (p * log_p).sum(dim=1))
        self._count.index_add_(0, split, torch.ones(logits.shape[0], dtype=torch.float64))
        self.seen += logits.shape[0]

    def split_sizes(self) -> list[int]:
        return [int(c) for c in self._count]

    def compute(self) -> dict[str, float]:
        if self.seen != self.total:
            raise ValueError(
                f"fastgen.metrics.InceptionScore.compute: expected {self.total} samples "
                f"(total), got {self.seen}"
            )
        count = self._count[:, None]
        marginal = self._probability / count
        marginal_term = (marginal * marginal.clamp(min=1e-300).log()).sum(dim=1)
        scores = torch.exp(self._neg_entropy / self._count - marginal_term)
        std = float(scores.std(unbiased=False)) if self.num_splits > 1 else 0.0
        return {"is": float(scores.mean()), "is_std": std}


def inception_score(logits: torch.Tensor, num_splits: int = 10, seed: int = 0) -> dict[str, float]:
    """IS of logits [N, K] held in memory (a convenience around ``InceptionScore``).

    Args:
        logits: [N, K], K >= 2, N >= 2 * num_splits, any float dtype and device; the
            classifier's logits (bias-free pool3 @ W for Inception-v3, as the module says).
        num_splits: splits of the samples, >= 1.
        seed: the permutation that assigns samples to splits.
    Returns:
        {"is": mean over the splits, "is_std": their population std}, Python floats.
    """
    score = InceptionScore(num_splits, seed, total=logits.shape[0])
    score.update(logits)
    return score.compute()
