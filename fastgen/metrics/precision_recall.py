"""Improved precision and recall with k-nearest-neighbour manifolds (Kynkäänniemi et al., 2019).

The manifold of a set of feature vectors is the union of balls centred on each vector with
radius its distance to its k-th nearest neighbour within the set (k = 3 by default).

    precision = fraction of fake vectors inside the real manifold   (fidelity)
    recall    = fraction of real vectors inside the fake manifold   (diversity)

Distances are Euclidean, computed in float64 in row blocks of ``block_size`` so the memory is
O(block_size * N) rather than O(N^2).
"""

from __future__ import annotations

import torch


def _check(fn: str, real: torch.Tensor, fake: torch.Tensor, k: int) -> None:
    if real.dim() != 2 or fake.dim() != 2 or real.shape[1] != fake.shape[1]:
        raise ValueError(
            f"fastgen.metrics.{fn}: real and fake expected 2-D feature tensors with the same "
            f"width, got {tuple(real.shape)} and {tuple(fake.shape)}"
        )
    if k < 1 or k >= min(real.shape[0], fake.shape[0]):
        raise ValueError(
            f"fastgen.metrics.{fn}: k expected in [1, {min(real.shape[0], fake.shape[0]) - 1}] "
            f"(fewer than the rows of each set), got {k}"
        )


def knn_radii(features: torch.Tensor, k: int = 3, block_size: int = 1024) -> torch.Tensor:
    """Distance [N] of each row of features [N, D] to its k-th nearest other row.

    Args:
        features: [N, D], any float dtype and device, N > k.
        k: which neighbour, >= 1.
        block_size: rows whose distances are computed at a time (memory ~ block_size * N).
    Returns:
        Tensor [N], float64, on features' device.
    """
    features = features.to(torch.float64)
    radii = []
    for start in range(0, features.shape[0], block_size):
        distances = torch.cdist(features[start : start + block_size], features)
        # The k+1 smallest include the row itself at distance 0.
        radii.append(distances.topk(k + 1, dim=1, largest=False).values[:, k])
    return torch.cat(radii)


def manifold_coverage(
    points: torch.Tensor, centres: torch.Tensor, radii: torch.Tensor, block_size: int = 1024
) -> float:
    """Fraction of points [M, D] within radii[i] of some centres[i] ([N, D], [N])."""
    points, centres = points.to(torch.float64), centres.to(torch.float64)
    radii = radii.to(centres)
    inside = 0
    for start in range(0, points.shape[0], block_size):
        distances = torch.cdist(points[start : start + block_size], centres)
        inside += int((distances <= radii[None, :]).any(dim=1).sum())
    return inside / points.shape[0]


def precision_recall(
    real: torch.Tensor, fake: torch.Tensor, k: int = 3, block_size: int = 1024
) -> dict[str, float]:
    """{"precision", "recall"} of fake [M, D] against real [N, D] features.

    Args:
        real: real features [N, D], any float dtype and device (computed in float64).
        fake: generated features [M, D], the same D.
        k: the k of the k-NN radii, in [1, min(N, M) - 1].
        block_size: rows whose distances to a whole set are computed at a time (memory
            ~ block_size * max(N, M)).
    Returns:
        {"precision": share of fake rows inside the real manifold, "recall": share of real
        rows inside the fake manifold}, Python floats in [0, 1].
    """
    _check("precision_recall", real, fake, k)
    precision = manifold_coverage(fake, real, knn_radii(real, k, block_size), block_size)
    recall = manifold_coverage(real, fake, knn_radii(fake, k, block_size), block_size)
    return {"precision": precision, "recall": recall}
