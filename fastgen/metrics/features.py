"""The pluggable feature-extractor interface and the streaming pass that feeds the metrics.

A feature extractor is an ``nn.Module`` subclassing ``FeatureExtractor``:

    forward(images [N, C, H, W] float in [-1, 1]) -> Features(features [N, D], logits [N, K] | None)

with attributes ``feature_dim`` (D), ``num_classes`` (K, 0 when it has no classifier head) and
``name``. It resizes and converts channels itself, so any generator's output can be fed as is.
FID/KID/precision-recall use ``features``; Inception Score and mode coverage use ``logits``.

``stream_features`` runs images through the extractor batch by batch on one device (eval
mode, no autograd) and updates a ``FeatureAccumulator``: running mean/covariance in float64,
a bounded random sample of feature rows for KID and precision/recall, and the IS and
mode-coverage counters. No step ever holds all N feature vectors unless N <= the sample
capacity.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import NamedTuple

import torch
from torch import nn

from fastgen.metrics.coverage import ModeCoverage
from fastgen.metrics.inception_score import InceptionScore
from fastgen.metrics.statistics import FeatureReservoir, RunningStatistics


class Features(NamedTuple):
    features: torch.Tensor
    logits: torch.Tensor | None = None


class FeatureExtractor(nn.Module):
    """Base class of feature extractors (see the module docstring for the contract)."""

    name: str = "extractor"
    feature_dim: int = 0
    num_classes: int = 0

    def forward(self, images: torch.Tensor) -> Features:  # pragma: no cover - interface
        raise NotImplementedError


class FlattenExtractor(FeatureExtractor):
    """Features = the flattened pixels (optionally average-pooled); no logits.

    A model-free extractor for tests and for quick pixel-space distances.
    """

    name = "pixels"

    def __init__(self, feature_dim: int, pool_to: int | None = None) -> None:
        super().__init__()
        self.feature_dim = feature_dim
        self.pool_to = pool_to

    def forward(self, images: torch.Tensor) -> Features:
        if self.pool_to is not None:
            images = nn.functional.adaptive_avg_pool2d(images, self.pool_to)
        features = images.flatten(1)
        if features.shape[1] != self.feature_dim:
            raise ValueError(
                f"fastgen.metrics.FlattenExtractor: images give {features.shape[1]} features, "
                f"expected feature_dim={self.feature_dim}"
            )
        return Features(features)


class FeatureAccumulator:
    """What the metrics need from one set of images, accumulated batch by batch.

    stats: RunningStatistics of the features (FID); sample: FeatureReservoir of at most
    ``sample_size`` rows (KID, precision/recall; None when sample_size=0); inception_score
    and coverage: accumulators over the logits (None without a classifier head).
    """

    def __init__(
        self,
        *,
        num_classes: int = 0,
        sample_size: int = 10_000,
        num_splits: int = 10,
        seed: int = 0,
    ) -> None:
        self.stats = RunningStatistics()
        self.sample = FeatureReservoir(sample_size, seed=seed) if sample_size > 0 else None
        self.inception_score = InceptionScore(num_splits) if num_classes else None
        self.coverage = ModeCoverage(num_classes) if num_classes >= 2 else None
        self.count = 0

    def update(self, out: Features) -> None:
        self.stats.update(out.features)
        if self.sample is not None:
            self.sample.update(out.features)
        if out.logits is not None:
            if self.inception_score is not None:
                self.inception_score.update(out.logits)
            if self.coverage is not None:
                self.coverage.update(out.logits)
        self.count += out.features.shape[0]


ImageSource = torch.Tensor | torch.utils.data.Dataset | Callable[[int], torch.Tensor]


def image_batches(source: ImageSource, n: int, batch_size: int) -> Iterator[torch.Tensor]:
    """Batches of images from a tensor [N, C, H, W], a dataset (item -> image or (image, label))
    or a callable ``sample(batch_size) -> images``, until n images (fewer if a tensor or dataset
    runs out)."""
    if n < 1 or batch_size < 1:
        raise ValueError(
            f"fastgen.metrics.image_batches: n and batch_size expected >= 1, got {n} and {batch_size}"
        )
    if isinstance(source, torch.Tensor):
        if source.dim() != 4:
            raise ValueError(
                f"fastgen.metrics.image_batches: source expected images [N, C, H, W], got {tuple(source.shape)}"
            )
        for start in range(0, min(n, source.shape[0]), batch_size):
            yield source[start : min(start + batch_size, n)]
    elif isinstance(source, torch.utils.data.Dataset):
        total = min(n, len(source))
        for start in range(0, total, batch_size):
            items = [source[i] for i in range(start, min(start + batch_size, total))]
            yield torch.stack(
                [item[0] if isinstance(item, (tuple, list)) else item for item in items]
            )
    elif callable(source):
        done = 0
        while done < n:
            images = source(min(batch_size, n - done))
            done += images.shape[0]
            yield images
    else:
        raise ValueError(
            "fastgen.metrics.image_batches: source expected an image tensor, a Dataset or a "
            f"callable sample(batch_size), got {type(source).__name__}"
        )


@torch.no_grad()
def stream_features(
    extractor: FeatureExtractor,
    source: ImageSource,
    *,
    n: int,
    batch_size: int = 250,
    device: str | torch.device = "cpu",
    sample_size: int = 10_000,
    num_splits: int = 10,
    seed: int = 0,
) -> FeatureAccumulator:
    """Runs up to n images of ``source`` through ``extractor`` on ``device``; see the module doc."""
    extractor = extractor.to(device).eval()
    accumulator = FeatureAccumulator(
        num_classes=extractor.num_classes, sample_size=sample_size, num_splits=num_splits, seed=seed
    )
    for images in image_batches(source, n, batch_size):
        accumulator.update(extractor(images.to(device, torch.float32)))
    if accumulator.count == 0:
        raise ValueError("fastgen.metrics.stream_features: the source gave no images")
    return accumulator
