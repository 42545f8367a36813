"""Metrics of a generated set against a real one, from two streamed ``FeatureAccumulator``s.

Metric names (the ``--metrics`` of ``fastgen eval``):
    fid       Fréchet distance of the feature Gaussians (running float64 mean/covariance)
    kid       unbiased polynomial-kernel MMD^2 over subsets of the feature samples (+ std error
              and the subset size used), unscaled (papers often print it x 10^3)
    is        Inception Score of the generated set (needs an extractor with logits), over
              num_splits (10) equal splits, so it needs n >= 20
    pr        k-NN precision and recall of the feature samples
    coverage  classes covered by the generated set and how evenly (needs logits)
    c2st      confidence risk: held-out accuracy of a logistic regression telling generated
              from real feature rows (or pixels, c2st_input="pixels"), with its 95% interval;
              0.5 cannot tell, 1.0 always can (fastgen.metrics.c2st)
"""

from __future__ import annotations

from fastgen.metrics.features import (
    FeatureAccumulator,
    FeatureExtractor,
    ImageSource,
    stream_features,
)
from fastgen.metrics.frechet import frechet_distance
from fastgen.metrics.inception_score import check_sample_count
from fastgen.metrics.kid import kernel_inception_distance
from fastgen.metrics.precision_recall import precision_recall

METRICS = ("fid", "kid", "is", "pr", "coverage", "c2st")
C2ST_INPUTS = ("features", "pixels")
# At most this many flattened images per set are kept for the C2ST on pixels (memory: a
# 3x64x64 image is 12,288 floats); half of them train the classifier.
PIXEL_SAMPLE_SIZE = 5000
NEEDS_LOGITS = ("is", "coverage")
IS_SPLITS = 10  # as the references (and stream_features' default)


def check_metrics(
    metrics, extractor: FeatureExtractor | None = None, fn: str = "evaluate"
) -> tuple:
    metrics = tuple(
        m.strip().lower() for m in (metrics.split(",") if isinstance(metrics, str) else metrics)
    )
    unknown = [m for m in metrics if m not in METRICS]
    if unknown or not metrics:
        raise ValueError(
            f"fastgen.metrics.{fn}: metrics expected a non-empty subset of {','.join(METRICS)}, got {unknown or 'nothing'}"
        )
    if extractor is not None and not extractor.num_classes:
        needing = [m for m in metrics if m in NEEDS_LOGITS]
        if needing:
            raise ValueError(
                f"fastgen.metrics.{fn}: metrics {','.join(needing)} need class logits, but the "
                f"extractor {extractor.name!r} has no classifier head"
            )
    return metrics


def compute_metrics(
    real: FeatureAccumulator | None,
    fake: FeatureAccumulator,
    metrics=METRICS,
    *,
    kid_subsets: int = 100,
    kid_subset_size: int = 1000,
    pr_k: int = 3,
    seed: int = 0,
    c2st_input: str = "features",
) -> dict:
    """The requested metrics as a flat dict (floats, plus coverage's class counts).
    c2st_input: "features" (the accumulators' feature samples) or "pixels" (their pixel
    samples, which stream_features keeps when given pixel_sample_size).

    Args:
        real: the real set's FeatureAccumulator (stream_features); None when only "is" and
            "coverage" are asked for.
        fake: the generated set's FeatureAccumulator; "is" and "coverage" need it streamed
            through an extractor with class logits.
        metrics: names from METRICS ("fid", "kid", "is", "pr", "coverage", "c2st"), as a
            comma-separated string or a sequence; all by default.
        kid_subsets: keyword; KID's number of random subsets.
        kid_subset_size: keyword; KID's rows per subset (fewer if a set has fewer, with a
            warning).
        pr_k: keyword; the k of precision/recall's k-NN radii.
        seed: keyword; chooses KID's subsets and the C2ST's rows and split.
        c2st_input: keyword; "features" or "pixels", as above.
    Returns:
        A dict holding, per metric asked for: fid: "fid"; kid: "kid", "kid_std",
        "kid_std_error" and "kid_subset_size" (an int); pr: "precision", "recall"; is: "is",
        "is_std"; coverage: "modes_covered", "num_classes" (ints), "normalized_entropy",
        "kl_to_uniform" and "class_counts" (a list of ints); c2st: "c2st", "c2st_low",
        "c2st_high" and "c2st_n" (an int). The rest are Python floats.
    """
    metrics = check_metrics(metrics, fn="compute_metrics")
    results: dict = {}
    if real is None and any(m in ("fid", "kid", "pr", "c2st") for m in metrics):
        raise ValueError(
            "fastgen.metrics.compute_metrics: fid, kid, pr and c2st need the real set's features"
        )
    if "fid" in metrics:
        results["fid"] = frechet_distance(
            real.stats.mean, real.stats.covariance, fake.stats.mean, fake.stats.covariance
        )
    if "kid" in metrics:
        results.update(
            kernel_inception_distance(
                real.sample.features,
                fake.sample.features,
                num_subsets=kid_subsets,
                subset_size=kid_subset_size,
                seed=seed,
            )
        )
    if "pr" in metrics:
        results.update(precision_recall(real.sample.features, fake.sample.features, k=pr_k))
    fn = "fastgen.metrics.compute_metrics"
    if "is" in metrics:
        if fake.inception_score is None:  # say which of its conditions is missing
            if not fake.num_classes:
                raise ValueError(
                    f"{fn}: 'is' needs fake streamed through an extractor with class logits "
                    f"(FeatureAccumulator(num_classes > 0)), got num_classes={fake.num_classes}"
                )
            check_sample_count(fake.count, fake.num_splits, fn, "n")
            raise ValueError(
                f"{fn}: 'is' needs fake's FeatureAccumulator built with total (the number of "
                f"images it will see, >= {fake.num_splits} splits' worth), got total={fake.total}"
            )
        results.update(fake.inception_score.compute())
    if "coverage" in metrics:
        if fake.coverage is None:
            raise ValueError(
                f"{fn}: 'coverage' needs fake streamed through an extractor with logits of at "
                f"least 2 classes (FeatureAccumulator(num_classes >= 2)), "
                f"got num_classes={fake.num_classes}"
            )
        results.update(fake.coverage.compute())
    if "c2st" in metrics:
        results.update(_c2st(real, fake, c2st_input, seed))
    return results


def check_c2st_input(c2st_input: str, fn: str) -> str:
    if c2st_input not in C2ST_INPUTS:
        raise ValueError(
            f"{fn}: c2st_input expected one of {', '.join(C2ST_INPUTS)}, got {c2st_input!r}"
        )
    return c2st_input


def _c2st(real: FeatureAccumulator, fake: FeatureAccumulator, c2st_input: str, seed: int):
    from fastgen.metrics.c2st import classifier_two_sample_test

    fn = "fastgen.metrics.compute_metrics"
    check_c2st_input(c2st_input, fn)
    if c2st_input == "pixels":
        if real.pixels is None or fake.pixels is None:
            raise ValueError(
                f"{fn}: c2st on pixels needs both sets streamed with pixel_sample_size > 0"
            )
        return classifier_two_sample_test(real.pixels.features, fake.pixels.features, seed=seed)
    if real.sample is None or fake.sample is None:
        raise ValueError(f"{fn}: c2st needs feature samples (sample_size > 0)")
    return classifier_two_sample_test(real.sample.features, fake.sample.features, seed=seed)


def evaluate(
    fake: ImageSource,
    real: ImageSource | FeatureAccumulator | None,
    extractor: FeatureExtractor,
    *,
    metrics=METRICS,
    n: int = 10_000,
    n_real: int | None = None,
    batch_size: int = 250,
    device: str = "cpu",
    sample_size: int = 10_000,
    seed: int = 0,
    quantize: bool = True,
    c2st_input: str = "features",
    **metric_options,
) -> dict:
    """Streams ``fake`` (and ``real``, unless it is already an accumulator) through ``extractor``
    and returns ``compute_metrics`` (``c2st_input`` as there). Sources: image tensors
    [N, C, H, W] in [-1, 1], datasets, or callables ``sample(batch_size) -> images``.
    ``quantize``: round images to 8-bit levels first, as the reference implementations
    measure saved PNGs (see fastgen.metrics.features). The metrics are checked (names, the
    extractor's logits, n for the Inception Score) before any image is streamed.

    Args:
        fake: the generated images: a tensor [N, C, H, W] in [-1, 1], a Dataset (items an
            image or (image, label)) or a callable ``sample(batch_size) -> images``.
        real: the real images, as fake, or a FeatureAccumulator already streamed (e.g. from a
            cache) through the same extractor; None when only "is" and "coverage" are asked
            for.
        extractor: the FeatureExtractor (its logits for "is" and "coverage").
        metrics: keyword; names from METRICS, a comma-separated string or a sequence.
        n: keyword; generated images to use (fewer if fake runs out); >= 20 with "is".
        n_real: keyword; real images to use; None for n.
        batch_size: keyword; images per extractor call.
        device: keyword; where the extractor runs.
        sample_size: keyword; feature rows kept per set for KID, precision/recall and C2ST.
        seed: keyword; the feature samples, the Inception Score splits, KID's subsets and the
            C2ST's split.
        quantize: keyword; round to 8-bit levels first (True) or feed the floats as they are.
        c2st_input: keyword; "features" or "pixels".
        metric_options: more keywords for compute_metrics (kid_subsets, kid_subset_size,
            pr_k).
    Returns:
        compute_metrics' dict of the requested metrics.
    """
    metrics = check_metrics(metrics, extractor)
    if "is" in metrics:  # before any image is streamed
        check_sample_count(n, IS_SPLITS, "fastgen.metrics.evaluate", "n")
    check_c2st_input(c2st_input, "fastgen.metrics.evaluate")
    stream = dict(
        batch_size=batch_size, device=device, sample_size=sample_size, seed=seed,
        quantize=quantize, pixel_sample_size=pixel_sample_size(metrics, c2st_input),
    )  # fmt: skip
    if real is not None and not isinstance(real, FeatureAccumulator):
        real = stream_features(extractor, real, n=n_real or n, **stream)
    fake_features = stream_features(extractor, fake, n=n, **stream)
    return compute_metrics(
        real, fake_features, metrics, seed=seed, c2st_input=c2st_input, **metric_options
    )


def pixel_sample_size(metrics, c2st_input: str) -> int:
    """The flattened images each set keeps: PIXEL_SAMPLE_SIZE for the C2ST on pixels, else 0."""
    return PIXEL_SAMPLE_SIZE if "c2st" in metrics and c2st_input == "pixels" else 0
