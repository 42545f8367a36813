"""The real set's features, cached in the run folder: reused by a later evaluator (a resumed
run), recomputed when the data or the extractor change, and never trusted when damaged."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from fastgen.checkpoint_io import RunFileWarning
from fastgen.data import ImageDataset
from fastgen.metrics import FlattenExtractor
from fastgen.metrics.cache import CACHE_NAME
from fastgen.metrics.evaluator import make_evaluator


class Counting(FlattenExtractor):
    def __init__(self, pool_to: int = 4) -> None:
        super().__init__(feature_dim=pool_to * pool_to, pool_to=pool_to)
        self.images = 0

    def forward(self, images):
        self.images += images.shape[0]
        return super().forward(images)


class Generator(nn.Module):
    latent_dim = 4

    def __init__(self) -> None:
        super().__init__()
        self.net = nn.Linear(4, 64)

    def generate(self, z, labels=None):
        return torch.tanh(self.net(z)).view(-1, 1, 8, 8)


def dataset(seed: int) -> ImageDataset:
    images = torch.rand(40, 1, 8, 8, generator=torch.Generator().manual_seed(seed)) * 2 - 1
    return ImageDataset(images, torch.arange(40) % 2, name="blobs")


def evaluate_once(data, extractor, folder):
    evaluator = make_evaluator(
        dataset=data, metrics="fid,kid,c2st", n=30, extractor=extractor, device="cpu",
        cache_dir=folder, kid_subset_size=10,
    )  # fmt: skip
    torch.manual_seed(0)
    return evaluator(1, {"ema": Generator()})


def test_real_features_are_cached_reused_and_invalidated(tmp_path):
    first = Counting()
    results = evaluate_once(dataset(0), first, tmp_path)
    assert first.images == 40 + 30 and (tmp_path / CACHE_NAME).is_file()
    again = Counting()  # a resumed run's evaluator: reads the real features from the file
    assert evaluate_once(dataset(0), again, tmp_path) == results and again.images == 30
    other_data = Counting()
    evaluate_once(dataset(1), other_data, tmp_path)
    assert other_data.images == 40 + 30
    other_extractor = Counting(pool_to=2)
    evaluate_once(dataset(1), other_extractor, tmp_path)
    assert other_extractor.images == 40 + 30
    (tmp_path / CACHE_NAME).write_bytes(b"torn")
    damaged = Counting(pool_to=2)
    with pytest.warns(RunFileWarning, match="damaged"):
        evaluate_once(dataset(1), damaged, tmp_path)
    assert damaged.images == 40 + 30


def test_kid_from_the_shared_kernel_equals_the_per_subset_estimates():
    from fastgen.metrics.kid import kernel_inception_distance, polynomial_mmd2

    gen = torch.Generator().manual_seed(0)
    real, fake = torch.randn(1100, 8, generator=gen), torch.randn(700, 8, generator=gen) + 0.3
    result = kernel_inception_distance(real, fake, num_subsets=7, subset_size=300, seed=4)
    draws = torch.Generator().manual_seed(4)
    estimates = []
    for _ in range(7):  # the subsets as drawn one by one, each with its own kernel matrices
        rows_real = torch.randperm(1100, generator=draws)[:300]
        rows_fake = torch.randperm(700, generator=draws)[:300]
        estimates.append(polynomial_mmd2(real[rows_real], fake[rows_fake]))
    expected = torch.stack(estimates)
    assert result["kid"] == pytest.approx(float(expected.mean()), rel=1e-10)
    assert result["kid_std"] == pytest.approx(float(expected.std()), rel=1e-8)
