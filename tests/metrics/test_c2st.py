"""The confidence risk (classifier two-sample test): 0.5 when the sets cannot be told apart,
near 1.0 when they clearly differ; its interval; through evaluate() on features and pixels."""

from __future__ import annotations

import pytest
import torch

from fastgen.metrics import FlattenExtractor, evaluate
from fastgen.metrics.c2st import classifier_two_sample_test, wilson_interval


def rows(n, dim, seed, shift=0.0):
    return torch.randn(n, dim, generator=torch.Generator().manual_seed(seed)) + shift


def test_one_distribution_is_near_one_half_and_different_ones_near_one():
    same = classifier_two_sample_test(rows(800, 16, 1), rows(800, 16, 2), seed=0)
    assert 0.42 < same["c2st"] < 0.58, same
    assert same["c2st_low"] < 0.5 < same["c2st_high"] and same["c2st_n"] == 800
    apart = classifier_two_sample_test(rows(800, 16, 1), rows(800, 16, 2, shift=2.0), seed=0)
    assert apart["c2st"] > 0.99 and apart["c2st_low"] > 0.98, apart
    again = classifier_two_sample_test(rows(800, 16, 1), rows(800, 16, 2, shift=2.0), seed=0)
    assert again == apart  # seeded: the same rows, split and fit


def test_unequal_sets_are_balanced_and_bad_input_is_one_line():
    result = classifier_two_sample_test(rows(300, 4, 1), rows(100, 4, 2), seed=0)
    assert result["c2st_n"] == 100  # 100 of each, half held out
    with pytest.raises(ValueError, match="real has 4 features per row but fake has 5"):
        classifier_two_sample_test(rows(10, 4, 1), rows(10, 5, 2))
    with pytest.raises(ValueError, match=r"fake expected feature rows \[N, D\]"):
        classifier_two_sample_test(rows(10, 4, 1), torch.zeros(10))


def test_wilson_interval():
    low, high = wilson_interval(50, 100)
    assert low == pytest.approx(0.4038, abs=1e-4) and high == pytest.approx(0.5962, abs=1e-4)
    assert wilson_interval(10, 10)[1] == pytest.approx(1.0) and wilson_interval(0, 10)[
        0
    ] == pytest.approx(0.0, abs=1e-12)


@pytest.mark.parametrize("c2st_input", ["features", "pixels"])
def test_c2st_through_evaluate(c2st_input):
    gen = torch.Generator().manual_seed(0)
    real = torch.rand(200, 1, 8, 8, generator=gen) * 2 - 1
    noise = torch.rand(200, 1, 8, 8, generator=gen) * 0.2 - 0.9  # dark: easy to tell
    extractor = FlattenExtractor(feature_dim=16, pool_to=4)
    result = evaluate(
        noise, real, extractor, metrics="c2st", n=200, c2st_input=c2st_input, quantize=False
    )
    assert result["c2st"] > 0.95 and result["c2st_n"] == 200
    with pytest.raises(ValueError, match="c2st_input expected one of features, pixels"):
        evaluate(noise, real, extractor, metrics="c2st", n=200, c2st_input="logits")
