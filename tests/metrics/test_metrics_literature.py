"""Metrics computed as the literature's reference code computes them (issue 14, items 3-5, 7):
bias-free Inception logits for IS, 8-bit quantised inputs, checked value ranges, equal IS
splits and the KID subset size actually used."""

from __future__ import annotations

import hashlib
import math

import pytest
import torch
import torch.nn.functional as F

from fastgen.metrics import (
    FlattenExtractor,
    InceptionScore,
    evaluate,
    inception_score,
    kernel_inception_distance,
    stream_features,
)
from fastgen.metrics.digits_classifier import DigitsExtractor
from fastgen.metrics.inception import ENV_SHA256, InceptionExtractor, InceptionV3


def is_formula(logits: torch.Tensor) -> float:
    """IS = exp(E_x KL(p(y|x) || p(y))) over one split, straight from the definition."""
    p = logits.double().softmax(1)
    marginal = p.mean(0, keepdim=True)
    return float((p * (p.log() - marginal.log())).sum(1).mean().exp())


# --- item 3: the Inception Score uses pool3 @ W, without the fc bias ---------------------------


IMAGES = torch.rand(4, 3, 32, 32, generator=torch.Generator().manual_seed(1)) * 2 - 1


@pytest.fixture(scope="module")
def random_inception(tmp_path_factory):
    """A randomly initialised "fid" Inception-v3 whose fc bias is large, saved as a weights file
    (it is trusted by its sha256, as a user's own file would be)."""
    torch.manual_seed(0)
    network = InceptionV3("fid").eval()
    with torch.no_grad():
        x = F.interpolate(IMAGES, size=(299, 299), mode="bilinear", align_corners=False)
        pool3, _ = network(x)
        # Random pool3 features are tiny and mostly a component common to every image. W is
        # drawn orthogonal to that component and scaled so the logits of IMAGES vary by a few
        # units (an IS clearly above 1); the bias is large enough to change the score.
        common = pool3.mean(0) / pool3.mean(0).norm()
        spread = float((pool3 - pool3.mean(0)).norm(dim=1).mean())
        weight = torch.randn(network.fc.weight.shape) * (3.0 / spread)
        network.fc.weight.copy_(weight - (weight @ common)[:, None] * common)
        network.fc.bias.normal_(0, 5)
    path = tmp_path_factory.mktemp("inception") / "random.pth"
    torch.save(network.state_dict(), path)
    return path, hashlib.sha256(path.read_bytes()).hexdigest()


def test_inception_score_uses_bias_free_logits(random_inception, monkeypatch):
    path, digest = random_inception
    monkeypatch.setenv(ENV_SHA256, digest)
    extractor = InceptionExtractor(path).eval()
    with torch.no_grad():
        out = extractor(IMAGES)
        x = F.interpolate(IMAGES, size=(299, 299), mode="bilinear", align_corners=False)
        pool3, _ = extractor.network(x)
    weight, bias = extractor.network.fc.weight.detach(), extractor.network.fc.bias.detach()
    torch.testing.assert_close(out.features, pool3)
    torch.testing.assert_close(out.logits, pool3 @ weight.T)  # the TF code's matmul(pool3, W)
    score = inception_score(out.logits, num_splits=1)["is"]
    assert score == pytest.approx(is_formula(pool3 @ weight.T), rel=1e-9)
    assert score > 1.5
    assert score != pytest.approx(is_formula(pool3 @ weight.T + bias), rel=1e-2)


# --- item 4: images are quantised to 8-bit levels before feature extraction ---------------------


def test_features_are_of_8_bit_images_by_default():
    images = torch.rand(50, 1, 4, 4, generator=torch.Generator().manual_seed(2)) * 2 - 1
    quantised = ((images + 1) * 127.5).round() / 127.5 - 1
    options = dict(n=50, batch_size=16, sample_size=50)
    default = stream_features(FlattenExtractor(16), images, **options)
    torch.testing.assert_close(default.sample.features, quantised.flatten(1))
    levels = (default.sample.features + 1) * 127.5
    torch.testing.assert_close(levels, levels.round(), rtol=0, atol=1e-4)
    raw = stream_features(FlattenExtractor(16), images, quantize=False, **options)
    torch.testing.assert_close(raw.sample.features, images.flatten(1))


# --- item 5: the value range is checked -----------------------------------------------------


def test_extractors_refuse_images_outside_minus_one_one(random_inception, monkeypatch):
    images = torch.rand(6, 1, 8, 8, generator=torch.Generator().manual_seed(3)) * 2 - 1
    in_255 = (images + 1) * 127.5
    with pytest.raises(ValueError, match=r"DigitsExtractor: images expected values in \[-1, 1\]"):
        DigitsExtractor()(in_255)
    path, digest = random_inception
    monkeypatch.setenv(ENV_SHA256, digest)
    with pytest.raises(
        ValueError, match=r"InceptionExtractor: images expected values in \[-1, 1\]"
    ):
        InceptionExtractor(path)(in_255.expand(-1, 3, -1, -1))
    with pytest.raises(ValueError, match=r"stream_features: images expected values in \[-1, 1\]"):
        stream_features(FlattenExtractor(64), in_255, n=6)


def test_a_set_in_zero_one_is_refused_but_a_generator_is_not():
    images = torch.rand(40, 1, 4, 4, generator=torch.Generator().manual_seed(4))  # in [0, 1]
    with pytest.raises(ValueError, match=r"in \[0, 1\].*expected \[-1, 1\].*x \* 2 - 1"):
        stream_features(FlattenExtractor(16), images, n=40)
    # A callable is a generator, whose output may legitimately be bright everywhere.
    stream_features(FlattenExtractor(16), lambda k: images[:k], n=40)
    stream_features(FlattenExtractor(16), images * 2 - 1, n=40)


# --- item 7: equal IS splits, KID's subset size as used, a clear too-small n ------------------


def test_inception_score_splits_are_equal_like_the_references():
    n, splits, seed = 5000, 10, 0
    logits = torch.randn(n, 10, generator=torch.Generator().manual_seed(5)) * 3
    score = InceptionScore(num_splits=splits, total=n, seed=seed)
    for chunk in logits.split(333):
        score.update(chunk)
    assert score.split_sizes() == [n // splits] * splits
    # torch-fidelity's scheme: a seeded shuffle, then contiguous parts [i N / S, (i+1) N / S).
    order = torch.randperm(n, generator=torch.Generator().manual_seed(seed))
    shuffled = logits[order]
    parts = [shuffled[i * n // splits : (i + 1) * n // splits] for i in range(splits)]
    scores = torch.tensor([is_formula(part) for part in parts], dtype=torch.float64)
    result = score.compute()
    assert result["is"] == pytest.approx(float(scores.mean()), rel=1e-9)
    assert result["is_std"] == pytest.approx(float(scores.std(unbiased=False)), rel=1e-9)
    uneven = InceptionScore(num_splits=3, total=10)
    uneven.update(logits[:10])
    assert sorted(uneven.split_sizes()) == [3, 3, 4]


def test_inception_score_too_few_samples_names_the_metric_to_drop():
    with pytest.raises(ValueError, match="at least 20 samples.*drop 'is'"):
        InceptionScore(num_splits=10, total=15)
    score = InceptionScore(num_splits=2, total=10)
    score.update(torch.randn(4, 10))
    with pytest.raises(ValueError, match=r"expected 10 samples \(total\), got 4"):
        score.compute()
    extractor = DigitsExtractor()
    images = torch.rand(15, 1, 8, 8) * 2 - 1
    with pytest.raises(ValueError, match="n must be at least 20 samples.*got 15.*drop 'is'"):
        evaluate(images, images, extractor, metrics="fid,is", n=15)


def test_kid_records_the_subset_size_it_used():
    generator = torch.Generator().manual_seed(6)
    real, fake = torch.randn(300, 8, generator=generator), torch.randn(200, 8, generator=generator)
    with pytest.warns(UserWarning, match="200 rows.*fewer than the requested subset_size=1000"):
        result = kernel_inception_distance(real, fake, num_subsets=3, subset_size=1000)
    assert result["kid_subset_size"] == 200
    assert (
        kernel_inception_distance(real, fake, num_subsets=3, subset_size=50)["kid_subset_size"]
        == 50
    )
    assert math.isfinite(result["kid"])
