"""Mode coverage: which classes a generator produces, and how evenly, judged by a classifier.

From the histogram of the classifier's predicted classes (argmax of the logits) over N samples
and K classes, with shares q_c = count_c / N:

    modes_covered    = #{c : count_c >= max(1, min_share * N / K)}   (out of K)
    normalized_entropy = H(q) / log K                 (1 = perfectly even, 0 = one class)
    kl_to_uniform    = sum_c q_c log(q_c K) = log K - H(q)   (nats; 0 = perfectly even)

``min_share`` (default 0.1) ignores classes that appear only by the classifier's occasional
mistake: a class counts as covered when it gets at least a tenth of its uniform share.
"""

from __future__ import annotations

import math

import torch


class ModeCoverage:
    """Accumulates ``update(logits [N, K])``; ``compute()`` -> the metrics above and the counts.

    Args:
        num_classes: K, the classes of the classifier, >= 2.
        min_share: the fraction of its uniform share (N / K) a class needs to count as
            covered, in [0, 1].
    Returns:
        An accumulator. ``update(logits)`` takes logits [N, K] of any float dtype and device
        (their argmax is counted). ``compute()`` returns {"modes_covered": int,
        "num_classes": K, "normalized_entropy": float, "kl_to_uniform": float (nats),
        "class_counts": list of K ints}; it raises before any update.
    """

    def __init__(self, num_classes: int, min_share: float = 0.1) -> None:
        if num_classes < 2:
            raise ValueError(
                f"fastgen.metrics.ModeCoverage: num_classes expected >= 2, got {num_classes}"
            )
        if not 0 <= min_share <= 1:
            raise ValueError(
                f"fastgen.metrics.ModeCoverage: min_share expected in [0, 1], got {min_share}"
            )
        self.num_classes = num_classes
        self.min_share = min_share
        self.counts = torch.zeros(num_classes, dtype=torch.int64)

    def update(self, logits: torch.Tensor) -> None:
        if logits.dim() != 2 or logits.shape[1] != self.num_classes:
            raise ValueError(
                f"fastgen.metrics.ModeCoverage.update: logits expected [N, {self.num_classes}], "
                f"got {tuple(logits.shape)}"
            )
        predicted = logits.detach().argmax(dim=1).cpu()
        self.counts += torch.bincount(predicted, minlength=self.num_classes)

    def compute(self) -> dict:
        total = int(self.counts.sum())
        if total == 0:
            raise ValueError("fastgen.metrics.ModeCoverage.compute: no samples were added")
        shares = self.counts.to(torch.float64) / total
        threshold = max(1.0, self.min_share * total / self.num_classes)
        nonzero = shares[shares > 0]
        entropy = max(0.0, float(-(nonzero * nonzero.log()).sum()))
        log_k = math.log(self.num_classes)
        return {
            "modes_covered": int((self.counts >= threshold).sum()),
            "num_classes": self.num_classes,
            "normalized_entropy": entropy / log_k,
            "kl_to_uniform": log_k - entropy,
            "class_counts": self.counts.tolist(),
        }
