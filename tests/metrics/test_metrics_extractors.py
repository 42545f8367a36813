"""The shipped digits classifier and the local-only Inception-v3 loader."""

from __future__ import annotations

import hashlib

import pytest
import torch

from fastgen.metrics import evaluate, stream_features
from fastgen.metrics.digits_classifier import (
    TEST_ACCURACY,
    WEIGHTS,
    DigitsExtractor,
    load_digits_classifier,
)
from fastgen.metrics.inception import (
    ENV_SHA256,
    ENV_WEIGHTS,
    InceptionExtractor,
    InceptionV3,
    load_inception,
)


def test_shipped_digits_weights_are_small_and_safe_to_load():
    assert WEIGHTS.is_file() and WEIGHTS.stat().st_size < 1_000_000
    state = torch.load(WEIGHTS, weights_only=True)
    assert all(isinstance(v, torch.Tensor) for v in state.values())
    load_digits_classifier()


def test_digits_classifier_held_out_accuracy():
    from fastgen import data

    test = data.load_dataset("digits", split="test")
    extractor = DigitsExtractor().eval()
    with torch.no_grad():
        out = extractor(test.images)
    accuracy = float((out.logits.argmax(1) == test.labels).float().mean())
    assert accuracy == pytest.approx(TEST_ACCURACY, abs=1e-6)
    assert accuracy >= 0.97
    assert out.features.shape == (len(test), extractor.feature_dim)
    # Resolution and channels are adapted: 64x64 RGB gives the same classes.
    rgb = torch.nn.functional.interpolate(test.images, size=64, mode="bilinear").expand(
        -1, 3, -1, -1
    )
    with torch.no_grad():
        agree = (extractor(rgb).logits.argmax(1) == out.logits.argmax(1)).float().mean()
    assert agree > 0.9


def test_digits_metrics_separate_real_from_broken():
    from fastgen import data

    train = data.load_dataset("digits", split="train").images
    test = data.load_dataset("digits", split="test").images
    options = dict(n=2000, kid_subsets=10, kid_subset_size=100)
    extractor = DigitsExtractor()
    reference = stream_features(extractor, train, n=len(train))  # streamed once, used twice
    real = evaluate(test, reference, extractor, **options)
    with pytest.warns(UserWarning, match="subsets of 40 rows"):  # 40 images, subsets of 100
        only_ones = evaluate(test[:40] * 0 + test[1:2], reference, extractor, **options)
    assert real["fid"] < 5 and real["modes_covered"] == 10 and real["is"] > 4
    assert only_ones["fid"] > 10 * real["fid"] and only_ones["modes_covered"] == 1
    assert only_ones["is"] < 1.1 and only_ones["recall"] < 0.2


def test_inception_matches_torchvision_layout():
    network = InceptionV3("torchvision")
    # torchvision's inception_v3 has 27,161,264 parameters, 3,326,696 of them in AuxLogits.
    assert sum(p.numel() for p in network.parameters()) == 27_161_264 - 3_326_696
    keys = set(network.state_dict())
    assert {
        "Conv2d_1a_3x3.conv.weight",
        "Mixed_7c.branch3x3dbl_3b.bn.running_var",
        "fc.bias",
    } <= keys
    fid = InceptionV3("fid").eval()
    assert fid.fc.out_features == 1008
    with torch.no_grad():  # small input keeps the test fast; the extractor feeds 299x299
        features, logits = fid(torch.randn(2, 3, 75, 75))
    assert features.shape == (2, 2048) and logits.shape == (2, 1008)


def test_inception_without_weights_says_where_to_put_them(monkeypatch, tmp_path):
    monkeypatch.delenv(ENV_WEIGHTS, raising=False)
    monkeypatch.setattr("fastgen.metrics.inception.DEFAULT_PATH", tmp_path / "missing.pth")
    with pytest.raises(FileNotFoundError, match="never downloads.*pt_inception-2015-12-05"):
        InceptionExtractor()
    monkeypatch.setenv(ENV_WEIGHTS, str(tmp_path / "nope.pth"))
    with pytest.raises(FileNotFoundError, match="nope.pth"):
        load_inception()


def test_inception_checksum_is_verified(monkeypatch, tmp_path):
    monkeypatch.delenv(ENV_SHA256, raising=False)
    path = tmp_path / "inception.pth"
    torch.manual_seed(0)
    torch.save(InceptionV3("fid").state_dict(), path)
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    with pytest.raises(ValueError, match="neither"):
        load_inception(path)  # an unknown file is refused without an explicit checksum
    with pytest.raises(ValueError, match="expected 00000000"):
        load_inception(path, sha256="00000000")
    monkeypatch.setenv(ENV_SHA256, digest)
    monkeypatch.setenv(ENV_WEIGHTS, str(path))
    extractor = InceptionExtractor()
    assert extractor.num_classes == 1008 and extractor.network.variant == "fid"
    assert not extractor.network.training
