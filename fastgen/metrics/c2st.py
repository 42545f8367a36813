"""The confidence risk of generated images: a classifier two-sample test (C2ST).

Can a fresh classifier tell the generated images from real ones? Equal numbers of real and
generated feature rows (the extractor's features, or the pixels) are split 50/50, stratified;
a logistic regression (scikit-learn's, on standardised inputs) is fitted on one half and its
accuracy measured on the other, with a 95% Wilson score interval:

    c2st = (correct held-out predictions) / n_test
    0.5: the classifier cannot tell generated from real (the best a generator can do);
    1.0: it always can.

It complements FID: FID ranks models by a distance between feature Gaussians, which has no
scale of its own; the C2ST accuracy says how detectable the images are, on an absolute scale
(Lopez-Paz & Oquab, 2017). With few rows the interval is wide: it is reported so that two
values are compared with their uncertainty.
"""

from __future__ import annotations

import math
import warnings

import torch

Z_95 = 1.959963984540054  # the standard normal's 97.5% quantile


def wilson_interval(correct: int, total: int, z: float = Z_95) -> tuple[float, float]:
    """The Wilson score interval of a binomial proportion correct / total (95% by default):
    unlike the normal approximation it stays inside [0, 1] and is sound near 0 and 1."""
    if total < 1:
        raise ValueError(f"fastgen.metrics.wilson_interval: total expected >= 1, got {total}")
    p = correct / total
    denominator = 1 + z * z / total
    centre = (p + z * z / (2 * total)) / denominator
    half = z * math.sqrt(p * (1 - p) / total + z * z / (4 * total * total)) / denominator
    return max(0.0, centre - half), min(1.0, centre + half)


def classifier_two_sample_test(
    real: torch.Tensor, fake: torch.Tensor, *, seed: int = 0, max_iter: int = 1000
) -> dict[str, float]:
    """C2ST accuracy of a logistic regression telling `fake` rows from `real` ones.

    Args:
        real: real feature rows [N, D] (any float dtype; flattened pixels work too).
        fake: generated feature rows [M, D].
        seed: which rows are used (min(N, M) of each, so chance is exactly 0.5) and how they
            are split; the fit itself (lbfgs) is deterministic.
        max_iter: lbfgs iterations of the logistic regression.
    Returns:
        {"c2st": held-out accuracy, "c2st_low", "c2st_high": its 95% Wilson interval,
         "c2st_n": held-out rows}.
    """
    fn = "fastgen.metrics.classifier_two_sample_test"
    for name, rows in (("real", real), ("fake", fake)):
        if not isinstance(rows, torch.Tensor) or rows.dim() != 2:
            got = tuple(rows.shape) if isinstance(rows, torch.Tensor) else type(rows).__name__
            raise ValueError(f"{fn}: {name} expected feature rows [N, D], got {got}")
    if real.shape[1] != fake.shape[1]:
        raise ValueError(
            f"{fn}: real has {real.shape[1]} features per row but fake has {fake.shape[1]}"
        )
    n = min(real.shape[0], fake.shape[0])
    if n < 4:
        raise ValueError(f"{fn}: needs at least 4 rows of each set, got {n}")
    from fastgen.utils.extras import require

    require("sklearn", fn=fn)
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    generator = torch.Generator().manual_seed(seed)
    half = n // 2
    train_x, train_y, test_x, test_y = [], [], [], []
    for label, rows in ((1, real), (0, fake)):
        chosen = (
            rows.detach().cpu().double()[torch.randperm(rows.shape[0], generator=generator)[:n]]
        )
        train_x.append(chosen[:half])
        test_x.append(chosen[half:])
        train_y += [label] * half
        test_y += [label] * (n - half)
    # A linear classifier on standardised inputs: the small, well-understood detector the
    # C2ST literature uses as its default; L2-regularised (C=1), so it does not merely
    # memorise when there are more features than rows (pixels).
    classifier = make_pipeline(StandardScaler(), LogisticRegression(max_iter=max_iter))
    with warnings.catch_warnings():
        # lbfgs stopping at max_iter on separable data: the accuracy is what is measured
        warnings.filterwarnings("ignore", message=".*(converge|iterations).*")
        classifier.fit(torch.cat(train_x).numpy(), train_y)
    predicted = classifier.predict(torch.cat(test_x).numpy())
    correct = int(sum(int(p == t) for p, t in zip(predicted.tolist(), test_y)))
    total = len(test_y)
    low, high = wilson_interval(correct, total)
    return {"c2st": correct / total, "c2st_low": low, "c2st_high": high, "c2st_n": total}
