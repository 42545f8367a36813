"""Inception Score, accumulated from a stream of classifier logits.

    IS = exp( E_x KL(p(y|x) || p(y)) ),   p(y) = E_x p(y|x)

over ``num_splits`` disjoint splits of the samples, reported as the mean and standard deviation
over splits. N is not known in advance, so each sample joins a split drawn at random (seeded):
assigning by index (i mod num_splits) would put all of one class into one split whenever the
samples come in a class order, e.g. from a conditional generator cycling its labels. Per split the expectation decomposes as

    E_x KL = E_x[ sum_y p log p ] - sum_y p(y) log p(y),

so only the running sum of sum_y p log p and of p(y|x) per split are kept, in float64.
The score ranges from 1 (every sample the same class distribution) to the number of classes.
"""

from __future__ import annotations

import torch


class InceptionScore:
    """Accumulates ``update(logits [N, K])``; ``compute()`` -> {"is": mean, "is_std": std}."""

    def __init__(self, num_splits: int = 10, seed: int = 0) -> None:
        if num_splits < 1:
            raise ValueError(
                f"fastgen.metrics.InceptionScore: num_splits expected >= 1, got {num_splits}"
            )
        self.num_splits = num_splits
        self.seen = 0
        self._neg_entropy: torch.Tensor | None = None  # [splits]: sum over samples of sum p log p
        self._probability: torch.Tensor | None = None  # [splits, K]: sum over samples of p(y|x)
        self._count = torch.zeros(num_splits, dtype=torch.float64)
        self._generator = torch.Generator().manual_seed(seed)

    def update(self, logits: torch.Tensor) -> None:
        if logits.dim() != 2 or logits.shape[1] < 2:
            raise ValueError(
                f"fastgen.metrics.InceptionScore.update: logits expected [N, K] with K >= 2, got {tuple(logits.shape)}"
            )
        log_p = torch.log_softmax(logits.detach().to("cpu", torch.float64), dim=1)
        p = log_p.exp()
        if self._probability is None:
            self._probability = torch.zeros(self.num_splits, logits.shape[1], dtype=torch.float64)
            self._neg_entropy = torch.zeros(self.num_splits, dtype=torch.float64)
        split = torch.randint(self.num_splits, (logits.shape[0],), generator=self._generator)
        self._probability.index_add_(0, split, p)
        self._neg_entropy.index_add_(0, split, (p * log_p).sum(dim=1))
        self._count.index_add_(0, split, torch.ones(logits.shape[0], dtype=torch.float64))
        self.seen += logits.shape[0]

    def compute(self) -> dict[str, float]:
        if (self._count < 2).any():
            raise ValueError(
                "fastgen.metrics.InceptionScore.compute: every split needs at least 2 samples; got "
                f"{self.seen} samples for num_splits={self.num_splits}"
            )
        count = self._count[:, None]
        marginal = self._probability / count
        marginal_term = (marginal * marginal.clamp(min=1e-300).log()).sum(dim=1)
        scores = torch.exp(self._neg_entropy / self._count - marginal_term)
        std = float(scores.std(unbiased=False)) if self.num_splits > 1 else 0.0
        return {"is": float(scores.mean()), "is_std": std}


def inception_score(logits: torch.Tensor, num_splits: int = 10, seed: int = 0) -> dict[str, float]:
    """IS of logits [N, K] held in memory (a convenience around ``InceptionScore``)."""
    score = InceptionScore(num_splits, seed)
    score.update(logits)
    return score.compute()
