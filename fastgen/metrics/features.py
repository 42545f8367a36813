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

Inputs are checked and, by default, quantised, so the numbers are those of the reference
implementations (pytorch-fid, clean-fid, torch-fidelity), which measure image files:
  - values must lie in [-1, 1] (``check_image_range``; every extractor checks too): [0, 1] or
    [0, 255] images would give wrong features silently. A tensor or dataset whose every pixel
    is in [0, 1] is refused as a [0, 1] set (a generator, a callable source, is not: its
    output may be bright everywhere);
  - each image is rounded to the 256 levels of an 8-bit PNG (``uint8_levels``), as if it had
    been saved and read back, before the extractor sees it; ``quantize=False`` feeds the
    floats as they are (numbers then differ from the references' by a small amount).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import NamedTuple

import torch
from torch import nn

from fastgen.metrics.coverage import ModeCoverage
from fastgen.metrics.inception_score import MIN_PER_SPLIT, InceptionScore
from fastgen.metrics.statistics import FeatureReservoir, RunningStatistics

# Values this far outside [-1, 1] are float rounding, not a wrong scale.
RANGE_TOLERANCE = 1e-3
RANGE_HINT = "convert [0, 255] images with x / 127.5 - 1 and [0, 1] images with x * 2 - 1"


def check_image_range(images: torch.Tensor, fn: str) -> tuple[float, float]:
    """Raises unless the images' values lie in [-1, 1]; returns (min, max). NaN passes (a
    diverged generator's NaN shows in the metrics, it is not a scaling mistake)."""
    if images.numel() == 0:
        return 0.0, 0.0
    low, high = (float(v) for v in torch.aminmax(images.detach()))
    if low < -1 - RANGE_TOLERANCE or high > 1 + RANGE_TOLERANCE:
        raise ValueError(
            f"fastgen.metrics.{fn}: images expected values in [-1, 1], got values in "
            f"[{low:.4g}, {high:.4g}]; {RANGE_HINT}"
        )
    return low, high


def quantize_8_bit(images: torch.Tensor) -> torch.Tensor:
    """Float images in [-1, 1] rounded to the 256 levels of an 8-bit PNG, back in [-1, 1]."""
    from fastgen.utils.images import uint8_levels

    return uint8_levels(images).to(torch.float32) / 127.5 - 1.0


class Features(NamedTuple):
    """What a FeatureExtractor's forward returns.

    Args:
        features: [N, D] float feature vectors, one row per image (FID, KID, precision/recall,
            C2ST).
        logits: [N, K] class logits (Inception Score, mode coverage), or None without a
            classifier head.
    Returns:
        The named tuple (features, logits).
    """

    features: torch.Tensor
    logits: torch.Tensor | None = None


class FeatureExtractor(nn.Module):
    """Base class of feature extractors (see the module docstring for the contract).

    Subclasses set ``name``, ``feature_dim`` (D) and ``num_classes`` (K, 0 without a
    classifier head), define their own constructor, and resize and convert channels
    themselves.

    Shape:
        forward(images): images [N, C, H, W], float, values in [-1, 1] (check them with
        check_image_range). Returns Features(features [N, D], logits [N, K] or None).
    """

    name: str = "extractor"
    feature_dim: int = 0
    num_classes: int = 0

    def forward(self, images: torch.Tensor) -> Features:  # pragma: no cover - interface
        raise NotImplementedError


class FlattenExtractor(FeatureExtractor):
    """Features = the flattened pixels (optionally average-pooled); no logits.

    A model-free extractor for tests and for quick pixel-space distances.

    Args:
        feature_dim: D, the features per image: C * H * W, or C * pool_to^2 when pooling
            (checked on every batch).
        pool_to: the side (or (H, W)) to adaptive-average-pool the images to first; None to
            keep them as they are.
    Shape:
        forward(images): images [N, C, H, W], float, values in [-1, 1]. Returns
        Features(features [N, feature_dim] of images' dtype, logits None).
    """

    name = "pixels"

    def __init__(self, feature_dim: int, pool_to: int | None = None) -> None:
        super().__init__()
        self.feature_dim = feature_dim
        self.pool_to = pool_to

    def forward(self, images: torch.Tensor) -> Features:
        check_image_range(images, "FlattenExtractor")
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
    and coverage: accumulators over the logits (None without a classifier head; the
    Inception Score also None unless ``total``, the number of images to come, fills
    ``num_splits`` splits of at least 2); pixels: a FeatureReservoir of at most
    ``pixel_sample_size`` flattened images, as the extractor saw them (the C2ST on pixels;
    None when 0).

    Args:
        num_classes: keyword; K of the extractor's logits (0: none; coverage needs >= 2).
        sample_size: keyword; feature rows kept in ``sample`` (0: no sample).
        num_splits: keyword; the Inception Score's splits.
        seed: keyword; the sample's and the Inception Score's shuffle.
        total: keyword; the number of images to come (the Inception Score needs it).
        pixel_sample_size: keyword; flattened images kept in ``pixels`` (0: none).
    Returns:
        An accumulator: ``update(Features)`` adds a batch; ``count`` images so far; ``stats``,
        ``sample``, ``inception_score``, ``coverage`` and ``pixels`` as above, for
        compute_metrics.
    """

    def __init__(
        self,
        *,
        num_classes: int = 0,
        sample_size: int = 10_000,
        num_splits: int = 10,
        seed: int = 0,
        total: int | None = None,
        pixel_sample_size: int = 0,
    ) -> None:
        self.stats = RunningStatistics()
        self.sample = FeatureReservoir(sample_size, seed=seed) if sample_size > 0 else None
        self.pixels = (
            FeatureReservoir(pixel_sample_size, seed=seed) if pixel_sample_size > 0 else None
        )
        scored = num_classes and total is not None and total >= MIN_PER_SPLIT * num_splits
        self.inception_score = InceptionScore(num_splits, seed, total=total) if scored else None
        self.coverage = ModeCoverage(num_classes) if num_classes >= 2 else None
        self.num_splits = num_splits
        self.num_classes = num_classes
        self.total = total
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
    runs out).

    Args:
        source: the images: a 4-D tensor, a Dataset or a callable, as above.
        n: how many images in all, >= 1.
        batch_size: images per batch, >= 1.
    Returns:
        An iterator of tensors [B, C, H, W], B <= batch_size (the last may be smaller), as
        the source gives them (dtype and device unchanged). A callable that returns an empty
        batch ends it early.
    """
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
            images = source(min(batch_size, n - done))[: n - done]
            if images.shape[0] == 0:
                return
            done += images.shape[0]
            yield images
    else:
        raise ValueError(
            "fastgen.metrics.image_batches: source expected an image tensor, a Dataset or a "
            f"callable sample(batch_size), got {type(source).__name__}"
        )


def source_length(source: ImageSource, n: int) -> int:
    """How many images ``image_batches(source, n, ...)`` yields (a callable: n)."""
    if isinstance(source, torch.Tensor):
        return min(n, source.shape[0])
    if isinstance(source, torch.utils.data.Dataset):
        return min(n, len(source))
    return n


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
    quantize: bool = True,
    pixel_sample_size: int = 0,
) -> FeatureAccumulator:
    """Runs up to n images of ``source`` through ``extractor`` on ``device``, each checked to
    lie in [-1, 1] and, with ``quantize`` (default), rounded to 8-bit levels first; see the
    module doc. ``pixel_sample_size``: also keep a sample of that many flattened images
    (FeatureAccumulator.pixels). Runs without autograd, the extractor in eval mode (and moved
    to ``device``).

    Args:
        extractor: the FeatureExtractor.
        source: the images: a tensor [N, C, H, W] in [-1, 1], a Dataset (items an image or
            (image, label)) or a callable ``sample(batch_size) -> images``. A tensor or
            dataset whose every pixel is in [0, 1] is refused as a [0, 1] set.
        n: keyword; how many images (fewer if a tensor or dataset runs out).
        batch_size: keyword; images per extractor call.
        device: keyword; where the extractor runs (images are moved there as float32).
        sample_size: keyword; feature rows kept for KID and precision/recall (0: none).
        num_splits: keyword; the Inception Score's splits.
        seed: keyword; the samples' and the Inception Score's shuffle.
        quantize: keyword; round to 8-bit levels first.
        pixel_sample_size: keyword; flattened images to keep (0: none).
    Returns:
        The FeatureAccumulator of the images streamed.
    """
    extractor = extractor.to(device).eval()
    accumulator = FeatureAccumulator(
        num_classes=extractor.num_classes, sample_size=sample_size, num_splits=num_splits,
        seed=seed, total=source_length(source, n), pixel_sample_size=pixel_sample_size,
    )  # fmt: skip
    low = high = None
    for images in image_batches(source, n, batch_size):
        images = images.to(device, torch.float32)
        batch_low, batch_high = check_image_range(images, "stream_features")
        low = batch_low if low is None else min(low, batch_low)
        high = batch_high if high is None else max(high, batch_high)
        images = quantize_8_bit(images) if quantize else images
        if accumulator.pixels is not None:
            accumulator.pixels.update(images.flatten(1))
        accumulator.update(extractor(images))
    if accumulator.count == 0:
        raise ValueError("fastgen.metrics.stream_features: the source gave no images")
    if isinstance(source, torch.Tensor | torch.utils.data.Dataset) and low >= 0:
        raise ValueError(
            f"fastgen.metrics.stream_features: every pixel of the {accumulator.count} images "
            f"is in [0, 1] (values in [{low:.4g}, {high:.4g}]), so they look like [0, 1] "
            "images; expected [-1, 1] (convert [0, 1] images with x * 2 - 1)"
        )
    return accumulator
