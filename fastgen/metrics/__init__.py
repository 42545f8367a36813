"""Evaluation of generative models: FID, KID, Inception Score, precision/recall, mode coverage.

Features are streamed through the device in batches (``stream_features``): running mean and
covariance in float64 for FID, a bounded random sample of feature rows for KID and
precision/recall, counters over class logits for IS and mode coverage. The feature extractor is
pluggable (``FeatureExtractor``). Nothing here downloads.

    from fastgen.metrics import evaluate, FlattenExtractor
    evaluate(fake_images, real_images, extractor, metrics="fid,kid,pr", n=10_000)
"""

from fastgen.metrics.coverage import ModeCoverage
from fastgen.metrics.evaluate import METRICS, compute_metrics, evaluate
from fastgen.metrics.features import (
    FeatureAccumulator,
    FeatureExtractor,
    Features,
    FlattenExtractor,
    image_batches,
    stream_features,
)
from fastgen.metrics.frechet import frechet_distance, sqrtm_psd, trace_sqrt_product
from fastgen.metrics.inception_score import InceptionScore, inception_score
from fastgen.metrics.kid import kernel_inception_distance, polynomial_mmd2
from fastgen.metrics.precision_recall import knn_radii, precision_recall
from fastgen.metrics.statistics import FeatureReservoir, RunningStatistics

__all__ = [
    "METRICS",
    "FeatureAccumulator",
    "FeatureExtractor",
    "FeatureReservoir",
    "Features",
    "FlattenExtractor",
    "InceptionScore",
    "ModeCoverage",
    "RunningStatistics",
    "compute_metrics",
    "evaluate",
    "frechet_distance",
    "image_batches",
    "inception_score",
    "kernel_inception_distance",
    "knn_radii",
    "polynomial_mmd2",
    "precision_recall",
    "sqrtm_psd",
    "stream_features",
    "trace_sqrt_product",
]
