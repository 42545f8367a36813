"""fastgen.metrics: matrix square root, Fréchet distance, KID, IS, precision/recall, coverage."""

from __future__ import annotations

import math

import numpy as np
import pytest
import scipy.linalg
import torch

from fastgen.metrics import (
    FeatureReservoir,
    FlattenExtractor,
    InceptionScore,
    ModeCoverage,
    RunningStatistics,
    evaluate,
    frechet_distance,
    inception_score,
    kernel_inception_distance,
    polynomial_mmd2,
    precision_recall,
    sqrtm_psd,
    stream_features,
    trace_sqrt_product,
)


def random_spd(dim: int, generator: torch.Generator, jitter: float = 1e-3) -> torch.Tensor:
    a = torch.randn(dim, dim, generator=generator, dtype=torch.float64)
    return a @ a.T / dim + jitter * torch.eye(dim, dtype=torch.float64)


# --- streaming statistics -------------------------------------------------------------------


def test_running_statistics_match_full_batch_even_with_large_mean():
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(1000, 6, generator=generator, dtype=torch.float64) * 0.01 + 1e4
    stats = RunningStatistics()
    for chunk in x.float().split(97):  # uneven float32 batches, as from a device
        stats.update(chunk)
    expected = x.float().double()
    torch.testing.assert_close(stats.mean, expected.mean(0), rtol=1e-12, atol=1e-9)
    torch.testing.assert_close(stats.covariance, torch.cov(expected.T), rtol=1e-6, atol=1e-12)
    assert stats.count == 1000
    restored = RunningStatistics.from_state_dict(stats.state_dict())
    torch.testing.assert_close(restored.covariance, stats.covariance)


def test_running_statistics_errors():
    stats = RunningStatistics()
    with pytest.raises(ValueError, match="RunningStatistics.mean: no features"):
        stats.mean  # noqa: B018
    stats.update(torch.zeros(3, 4))
    with pytest.raises(ValueError, match="expected 4 columns"):
        stats.update(torch.zeros(3, 5))
    with pytest.raises(ValueError, match="2-D tensor"):
        stats.update(torch.zeros(3))


def test_reservoir_is_bounded_and_uniform():
    counts = torch.zeros(200)
    for seed in range(200):
        reservoir = FeatureReservoir(capacity=20, seed=seed)
        for chunk in torch.arange(200.0)[:, None].split(33):
            reservoir.update(chunk)
        held = reservoir.features
        assert held.shape == (20, 1) and reservoir.seen == 200
        assert len(set(held[:, 0].tolist())) == 20
        counts[held[:, 0].long()] += 1
    # Every row is held with probability 20/200: 20 of 200 draws on average; early and late
    # rows alike (a bias toward the first-filled rows would show in the first half's share).
    assert abs(counts[:100].sum() / counts.sum() - 0.5) < 0.05


# --- matrix square root and Fréchet distance ------------------------------------------------


@pytest.mark.parametrize("dim", [1, 5, 32])
def test_sqrtm_psd_matches_scipy(dim):
    generator = torch.Generator().manual_seed(dim)
    a = random_spd(dim, generator)
    expected = scipy.linalg.sqrtm(a.numpy())
    np.testing.assert_allclose(sqrtm_psd(a).numpy(), np.real(expected), rtol=1e-8, atol=1e-10)
    torch.testing.assert_close(sqrtm_psd(a) @ sqrtm_psd(a), a)


@pytest.mark.parametrize("dim", [2, 16, 64])
def test_trace_sqrt_product_matches_scipy(dim):
    generator = torch.Generator().manual_seed(100 + dim)
    s1, s2 = random_spd(dim, generator), random_spd(dim, generator)
    expected = np.trace(scipy.linalg.sqrtm(s1.numpy() @ s2.numpy())).real
    assert float(trace_sqrt_product(s1, s2)) == pytest.approx(expected, rel=1e-8)


def test_trace_sqrt_product_rank_deficient():
    # Singular covariances (fewer samples than dimensions), as with small sample counts.
    generator = torch.Generator().manual_seed(1)
    a = torch.randn(8, 3, generator=generator, dtype=torch.float64)
    b = torch.randn(8, 3, generator=generator, dtype=torch.float64)
    s1, s2 = a @ a.T, b @ b.T
    expected = np.trace(scipy.linalg.sqrtm(s1.numpy() @ s2.numpy())).real
    assert float(trace_sqrt_product(s1, s2)) == pytest.approx(expected, rel=1e-6, abs=1e-8)


def test_frechet_closed_form_for_known_gaussians():
    generator = torch.Generator().manual_seed(2)
    dim = 10
    mu_1 = torch.randn(dim, generator=generator, dtype=torch.float64)
    mu_2 = torch.randn(dim, generator=generator, dtype=torch.float64)
    var_1 = torch.rand(dim, generator=generator, dtype=torch.float64) + 0.1
    var_2 = torch.rand(dim, generator=generator, dtype=torch.float64) + 0.1
    # Commuting (here: both diagonal in one rotated basis) covariances have the closed form
    # ||mu_1 - mu_2||^2 + sum (sqrt(a_i) - sqrt(b_i))^2.
    rotation, _ = torch.linalg.qr(torch.randn(dim, dim, generator=generator, dtype=torch.float64))
    s1 = rotation @ torch.diag(var_1) @ rotation.T
    s2 = rotation @ torch.diag(var_2) @ rotation.T
    expected = float((mu_1 - mu_2).square().sum() + (var_1.sqrt() - var_2.sqrt()).square().sum())
    assert frechet_distance(mu_1, s1, mu_2, s2) == pytest.approx(expected, rel=1e-9)
    # Isotropic vs isotropic, a textbook case: d * (sigma_1 - sigma_2)^2.
    eye = torch.eye(dim, dtype=torch.float64)
    assert frechet_distance(mu_1, 4 * eye, mu_1, 9 * eye) == pytest.approx(dim * 1.0)


def test_frechet_from_samples_approaches_closed_form():
    generator = torch.Generator().manual_seed(3)
    dim, n = 4, 40_000
    x = torch.randn(n, dim, generator=generator, dtype=torch.float64)
    y = torch.randn(n, dim, generator=generator, dtype=torch.float64) * 2 + 1
    sx, sy = RunningStatistics(), RunningStatistics()
    for chunk in x.split(4096):
        sx.update(chunk)
    for chunk in y.split(4096):
        sy.update(chunk)
    expected = dim * 1.0 + dim * (1.0 - 2.0) ** 2  # ||1||^2 + d (1 - 2)^2 = 8
    got = frechet_distance(sx.mean, sx.covariance, sy.mean, sy.covariance)
    assert got == pytest.approx(expected, rel=0.03)


def test_fid_of_a_set_with_itself_is_zero_and_grows_with_noise():
    generator = torch.Generator().manual_seed(4)
    images = torch.rand(600, 1, 8, 8, generator=generator) * 2 - 1
    extractor = FlattenExtractor(16, pool_to=4)
    real = stream_features(extractor, images, n=600, batch_size=128)
    fids = []
    for sigma in (0.0, 0.1, 0.3, 0.6):
        noisy = (images + sigma * torch.randn(images.shape, generator=generator)).clamp(-1, 1)
        fake = stream_features(extractor, noisy, n=600, batch_size=100)
        fids.append(
            frechet_distance(
                real.stats.mean, real.stats.covariance, fake.stats.mean, fake.stats.covariance
            )
        )
    assert fids[0] < 1e-8
    assert all(a < b for a, b in zip(fids, fids[1:])), fids


def test_frechet_bad_input():
    with pytest.raises(ValueError, match="frechet_distance: mu_1 and mu_2"):
        frechet_distance(torch.zeros(3), torch.eye(3), torch.zeros(4), torch.eye(4))
    with pytest.raises(ValueError, match="sqrtm_psd: matrix expected a square"):
        sqrtm_psd(torch.zeros(2, 3))


# --- KID -------------------------------------------------------------------------------------


def test_kid_is_unbiased_for_one_distribution_and_positive_for_two():
    generator = torch.Generator().manual_seed(5)
    dim = 8
    estimates = []
    for _ in range(200):
        x = torch.randn(50, dim, generator=generator, dtype=torch.float64)
        y = torch.randn(50, dim, generator=generator, dtype=torch.float64)
        estimates.append(float(polynomial_mmd2(x, y)))
    estimates = torch.tensor(estimates)
    standard_error = estimates.std() / math.sqrt(len(estimates))
    assert abs(estimates.mean()) < 4 * standard_error  # mean 0 within noise
    assert (estimates < 0).any()  # unbiased: single estimates straddle 0
    x = torch.randn(400, dim, generator=generator)
    same = kernel_inception_distance(
        x, torch.randn(400, dim, generator=generator), num_subsets=20, subset_size=200
    )
    shifted = kernel_inception_distance(
        x, torch.randn(400, dim, generator=generator) + 0.5, num_subsets=20, subset_size=200
    )
    assert abs(same["kid"]) < 3 * same["kid_std"]
    assert shifted["kid"] > 10 * shifted["kid_std_error"] > 0
    assert same["kid_std_error"] == pytest.approx(same["kid_std"] / math.sqrt(20))


def test_kid_bad_input():
    with pytest.raises(ValueError, match="kernel_inception_distance: real and fake"):
        kernel_inception_distance(torch.zeros(5, 3), torch.zeros(5, 4))
    with pytest.raises(ValueError, match="at least 2 feature vectors"):
        kernel_inception_distance(torch.zeros(1, 3), torch.zeros(5, 3))


# --- precision / recall ---------------------------------------------------------------------


def test_precision_recall_on_toy_distributions_with_known_overlap():
    generator = torch.Generator().manual_seed(6)
    n = 2000
    real = torch.rand(n, 2, generator=generator, dtype=torch.float64)
    # Fake covers the right half of real's square and as much outside it: half of each lies
    # in the other's support, so precision ~ recall ~ 0.5 (k-NN balls add a thin margin).
    fake = torch.rand(n, 2, generator=generator, dtype=torch.float64) + torch.tensor([0.5, 0.0])
    half = precision_recall(real, fake, k=3)
    assert half["precision"] == pytest.approx(0.5, abs=0.05)
    assert half["recall"] == pytest.approx(0.5, abs=0.05)
    # Fake collapsed to a quarter of real's square: high precision, recall ~ 0.25.
    collapsed = torch.rand(n, 2, generator=generator, dtype=torch.float64) * 0.5
    quarter = precision_recall(real, collapsed, k=3)
    assert quarter["precision"] > 0.95
    assert quarter["recall"] == pytest.approx(0.25, abs=0.05)
    same = precision_recall(real, torch.rand(n, 2, generator=generator, dtype=torch.float64))
    assert same["precision"] > 0.9 and same["recall"] > 0.9
    disjoint = precision_recall(real, fake + 5)
    assert disjoint == {"precision": 0.0, "recall": 0.0}


def test_precision_recall_bad_k():
    with pytest.raises(ValueError, match="precision_recall: k expected"):
        precision_recall(torch.zeros(3, 2), torch.zeros(3, 2), k=3)


# --- Inception Score and mode coverage ------------------------------------------------------


def test_inception_score_extremes_and_streaming():
    k = 10
    confident_even = torch.eye(k).repeat(20, 1) * 50  # each class equally often, confidently
    assert inception_score(confident_even, num_splits=1)["is"] == pytest.approx(k, rel=1e-6)
    # In class order too (a conditional generator cycling labels): splits stay mixed.
    ordered = torch.eye(k).repeat(1000, 1) * 50
    assert inception_score(ordered, num_splits=10)["is"] == pytest.approx(k, rel=0.02)
    collapsed = torch.zeros(200, k)
    collapsed[:, 3] = 50
    assert inception_score(collapsed)["is"] == pytest.approx(1.0, abs=1e-6)
    uniform = torch.zeros(200, k)
    assert inception_score(uniform)["is"] == pytest.approx(1.0)
    logits = torch.randn(300, k, generator=torch.Generator().manual_seed(7)) * 3
    streamed = InceptionScore(num_splits=5, total=300)
    for chunk in logits.split(37):
        streamed.update(chunk)
    whole = inception_score(logits, num_splits=5)
    assert streamed.compute() == pytest.approx(whole)
    # Against a direct per-split computation: a seeded shuffle cut into 5 equal parts (the
    # references' splits; tests/metrics/test_metrics_literature.py checks them in detail).
    p = logits.double().softmax(1)[torch.randperm(300, generator=torch.Generator().manual_seed(0))]
    direct = []
    for s in range(5):
        ps = p[s * 60 : (s + 1) * 60]
        kl = (ps * (ps.log() - ps.mean(0, keepdim=True).log())).sum(1).mean()
        direct.append(float(kl.exp()))
    assert whole["is"] == pytest.approx(float(np.mean(direct)), rel=1e-9)


def test_mode_coverage():
    coverage = ModeCoverage(10)
    logits = torch.eye(10).repeat(10, 1)
    coverage.update(logits)
    even = coverage.compute()
    assert even["modes_covered"] == 10
    assert even["normalized_entropy"] == pytest.approx(1.0)
    assert even["kl_to_uniform"] == pytest.approx(0.0, abs=1e-12)
    skewed = ModeCoverage(10)
    labels = torch.tensor([0] * 500 + [1] * 480 + [2] * 3)  # class 2 is below a tenth of its share
    skewed.update(torch.nn.functional.one_hot(labels, 10).float())
    result = skewed.compute()
    assert result["modes_covered"] == 2
    assert 0 < result["normalized_entropy"] < 0.35
    assert result["kl_to_uniform"] == pytest.approx(
        math.log(10) * (1 - result["normalized_entropy"])
    )
    assert result["class_counts"][:3] == [500, 480, 3]


# --- the streaming evaluate() ---------------------------------------------------------------


def test_evaluate_streams_sources_and_checks_metric_names():
    generator = torch.Generator().manual_seed(8)
    real = torch.rand(300, 1, 4, 4, generator=generator) * 2 - 1
    extractor = FlattenExtractor(16)

    def sample(batch_size):
        return torch.rand(batch_size, 1, 4, 4, generator=generator) * 2 - 1

    out = evaluate(
        sample,
        real,
        extractor,
        metrics="fid,kid,pr",
        n=300,
        batch_size=64,
        sample_size=200,
        kid_subsets=5,
        kid_subset_size=100,
    )
    assert set(out) == {
        "fid", "kid", "kid_std", "kid_std_error", "kid_subset_size", "precision", "recall"
    }  # fmt: skip
    assert out["kid_subset_size"] == 100
    assert out["fid"] < 0.5 and abs(out["kid"]) < 0.05
    with pytest.raises(ValueError, match="need class logits"):
        evaluate(sample, real, extractor, metrics="is", n=10)
    with pytest.raises(ValueError, match="metrics expected a non-empty subset"):
        evaluate(sample, real, extractor, metrics="fid,bogus", n=10)


# --- VAE likelihood bounds --------------------------------------------------------------------


class LinearGaussianVAE(torch.nn.Module):
    """z ~ N(0, 1), x | z ~ N(a z, s^2): log p(x) = log N(x; 0, a^2 + s^2) is known exactly.

    The encoder is deliberately wrong (q(z|x) = N(0.5 x, 1)), so the ELBO is loose and the
    importance-weighted bound must close the gap as k grows.
    """

    a, s = 2.0, 0.5

    def encode(self, x):
        x = x.flatten(1)
        return 0.5 * x, torch.zeros_like(x)

    def decode(self, z):
        return (self.a * z).view(-1, 1, 1, 1)

    def negative_log_likelihood(self, x, decoded):
        return (
            (0.5 * ((x - decoded) / self.s) ** 2 + math.log(self.s) + 0.5 * math.log(2 * math.pi))
            .flatten(1)
            .sum(1)
        )


def test_vae_bounds_on_a_model_with_known_likelihood():
    from fastgen.metrics.vae import vae_metrics

    model = LinearGaussianVAE()
    x = torch.randn(400, 1, 1, 1, generator=torch.Generator().manual_seed(9)) * math.sqrt(
        model.a**2 + model.s**2
    )
    variance = model.a**2 + model.s**2
    true_nll = float((0.5 * x.square() / variance + 0.5 * math.log(2 * math.pi * variance)).mean())
    loose = vae_metrics(model, x, k=1, n=400, batch_size=100)
    tight = vae_metrics(model, x, k=512, n=400, batch_size=100)
    assert loose["nll_elbo"] > true_nll + 0.2  # the wrong encoder makes the ELBO loose
    assert tight["nll_iw"] == pytest.approx(true_nll, abs=0.05)
    assert tight["nll_elbo"] >= tight["nll_iw"]
    assert tight["bits_per_dim_iw"] == pytest.approx(tight["nll_iw"] / math.log(2))
    assert tight["k"] == 512 and tight["n"] == 400


def test_vae_metrics_on_conv_vae_agree_with_its_loss():
    from fastgen import models
    from fastgen.metrics.vae import vae_metrics

    torch.manual_seed(0)
    vae = models.ConvVAE(resolution=16, latent_dim=4, width=8, fused=False).eval()
    x = torch.rand(32, 1, 16, 16, generator=torch.Generator().manual_seed(10)) * 2 - 1
    got = vae_metrics(vae, x, k=4, n=32, batch_size=16)
    with torch.no_grad():
        expected = vae.loss(x)
    # One-sample ELBOs of an untrained VAE: the KL is ~0, the reconstruction dominates.
    assert got["elbo"] == pytest.approx(float(expected["elbo"]), rel=1e-3)
    assert got["nll_iw"] <= got["nll_elbo"] + 1e-6
    assert got["bits_per_dim_elbo"] == pytest.approx(float(expected["bits_per_dim"]), rel=1e-3)
    assert vae.training is False


@pytest.mark.parametrize(
    "metric, accumulator, message",
    [
        ("is", dict(num_classes=0), r"'is' needs fake streamed .* class logits .* num_classes=0"),
        ("is", dict(num_classes=10), r"'is' needs fake's FeatureAccumulator built with total"),
        ("coverage", dict(num_classes=1), r"'coverage' needs .* at least 2 classes .*=1"),
    ],
)
def test_compute_metrics_names_what_a_logit_metric_is_missing(metric, accumulator, message):
    # Without usable logits these were AttributeErrors on None; now one line naming the
    # function and what the accumulator lacks.
    from fastgen.metrics.evaluate import compute_metrics
    from fastgen.metrics.features import FeatureAccumulator, Features

    fake = FeatureAccumulator(sample_size=0, num_splits=2, **accumulator)
    classes = max(accumulator["num_classes"], 1)
    fake.update(Features(torch.randn(500, 4), torch.randn(500, classes)))
    with pytest.raises(ValueError, match=r"fastgen.metrics.compute_metrics: " + message):
        compute_metrics(None, fake, [metric])
