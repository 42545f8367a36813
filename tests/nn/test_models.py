"""fastgen.models: shapes, initialisation, fused vs stock variants, argument errors."""

from __future__ import annotations

import math

import pytest
import torch
from conftest import assert_close

from fastgen.models import ConvVAE, DCGANDiscriminator, DCGANGenerator


def ops_ready() -> bool:
    """True once the fused ops are implemented (they are placeholders until they land)."""
    from fastgen.nn import BatchNormLeakyReLU2d

    try:
        BatchNormLeakyReLU2d(2)(torch.randn(2, 2, 2, 2))
    except NotImplementedError:
        return False
    return True


needs_ops = pytest.mark.skipif(not ops_ready(), reason="fastgen.ops are still placeholders")


def randn(*shape, seed=0):
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed))


def pair(model_cls, **kwargs):
    """(fused, stock) models with the same weights."""
    torch.manual_seed(0)
    stock = model_cls(fused=False, **kwargs)
    fused = model_cls(fused=True, **kwargs)
    fused.load_state_dict(stock.state_dict())
    return fused, stock


@pytest.mark.parametrize("resolution", [16, 32, 64, 256])
@pytest.mark.parametrize("channels", [1, 3])
def test_dcgan_shapes(resolution, channels):
    width = 4 if resolution == 256 else 8
    g = DCGANGenerator(resolution, channels, latent_dim=16, width=width, fused=False)
    d = DCGANDiscriminator(resolution, channels, width=width, fused=False)
    images = g(randn(3, 16))
    assert images.shape == (3, channels, resolution, resolution)
    assert images.abs().max() <= 1
    assert d(images).shape == (3,)
    assert g.latent_dim == 16


@pytest.mark.parametrize("cls", [DCGANGenerator, DCGANDiscriminator, ConvVAE])
@pytest.mark.parametrize("extra", [{}, {"num_classes": 10}, {"spectral_norm": True}])
def test_fused_and_stock_have_identical_state_dicts(cls, extra):
    if cls is ConvVAE and extra:
        pytest.skip("ConvVAE takes neither")
    if cls is DCGANGenerator and "spectral_norm" in extra:
        pytest.skip("only the discriminator has spectral norm")
    fused, stock = pair(cls, **extra)
    fused_state, stock_state = fused.state_dict(), stock.state_dict()
    assert list(fused_state) == list(stock_state)
    for key, value in stock_state.items():
        assert fused_state[key].shape == value.shape, key
        assert torch.equal(fused_state[key], value), key
    assert sum(p.numel() for p in fused.parameters()) == sum(p.numel() for p in stock.parameters())


def test_fused_models_use_fastgen_layers():
    import fastgen.nn as fnn

    g = DCGANGenerator(fused=True)
    kinds = {type(m) for m in g.modules()}
    assert fnn.ConvTranspose2d in kinds and fnn.BatchNormLeakyReLU2d in kinds
    assert (
        torch.nn.BatchNorm2d not in kinds
        and torch.nn.ReLU not in kinds
        and torch.nn.Tanh not in kinds
    )
    assert g.blocks[-1].conv.activation == "tanh"
    d = DCGANDiscriminator(fused=True)
    kinds = {type(m) for m in d.modules()}
    assert fnn.BatchNormLeakyReLU2d in kinds and fnn.Conv2d in kinds
    assert torch.nn.Conv2d not in kinds and torch.nn.LeakyReLU not in kinds
    assert d.blocks[0].conv.activation == "leaky_relu" and d.blocks[0].conv.negative_slope == 0.2
    assert d.blocks[1].conv.activation == "identity" and type(d.head) is fnn.Conv2d
    vae = ConvVAE(fused=True)
    assert isinstance(vae.reparameterize, fnn.Reparameterize)
    stock = DCGANGenerator(fused=False)
    assert not {fnn.ConvTranspose2d, fnn.BatchNormLeakyReLU2d} & {type(m) for m in stock.modules()}


def test_dcgan_initialisation():
    torch.manual_seed(0)
    g = DCGANGenerator(64, 3, width=64, fused=False)
    conv = g.blocks[1].conv.weight
    assert abs(conv.mean().item()) < 2e-3 and abs(conv.std().item() - 0.02) < 2e-3
    bn = g.blocks[1].bn
    assert abs(bn.weight.mean().item() - 1) < 1e-2 and torch.all(bn.bias == 0)
    assert torch.all(g.blocks[-1].conv.bias == 0)


def test_width_is_capped_for_large_resolutions():
    g = DCGANGenerator(256, 1, latent_dim=8, width=2, fused=False)
    assert g.blocks[0].conv.out_channels == 2 * 8  # width * 2^k with k <= 3
    assert g.blocks[-1].conv.in_channels == 2


def test_conditional_models():
    g = DCGANGenerator(16, 1, latent_dim=8, width=4, num_classes=10, fused=False)
    d = DCGANDiscriminator(16, 1, width=4, num_classes=10, fused=False)
    z, labels = randn(4, 8), torch.tensor([0, 1, 2, 9])
    out = g(z, labels)
    assert out.shape == (4, 1, 16, 16)
    # The label changes the image and the logit.
    assert not torch.allclose(g.eval()(z, labels), g(z, labels.flip(0)))
    assert d(out, labels).shape == (4,)
    with pytest.raises(ValueError, match="labels .* required"):
        g(z)
    with pytest.raises(ValueError, match="unconditional"):
        DCGANGenerator(16, 1, latent_dim=8, width=4, fused=False)(z, labels)


def test_generate_is_the_shared_image_interface():
    # DCGAN: generate(z, labels) is the forward pass, images in [-1, 1].
    g = DCGANGenerator(16, 3, latent_dim=8, width=4, num_classes=10, fused=False).eval()
    z, labels = randn(4, 8), torch.tensor([0, 1, 2, 9])
    with torch.no_grad():
        images = g.generate(z, labels)
        torch.testing.assert_close(images, g(z, labels), rtol=0, atol=0)
    assert images.shape == (4, 3, 16, 16) and images.abs().max() <= 1
    with pytest.raises(ValueError, match="labels .* required"):
        g.generate(z)
    unconditional = DCGANGenerator(16, 1, latent_dim=8, width=4, fused=False)
    assert unconditional.generate(z).shape == (4, 1, 16, 16)
    # VAE: generate(z) decodes and maps the decoder output to [-1, 1] (sigmoid for logits).
    for likelihood in ("bernoulli", "gaussian"):
        torch.manual_seed(0)
        vae = ConvVAE(16, 1, latent_dim=8, width=4, likelihood=likelihood, fused=False).eval()
        with torch.no_grad():
            images = vae.generate(z)
            torch.testing.assert_close(images, vae.to_image(vae.decode(z)), rtol=0, atol=0)
        assert images.shape == (4, 1, 16, 16) and images.abs().max() <= 1
        if likelihood == "bernoulli":
            with torch.no_grad():
                expected = torch.sigmoid(vae.decode(z)) * 2 - 1
            torch.testing.assert_close(images, expected, rtol=0, atol=0)
        with pytest.raises(ValueError, match="unconditional"):
            vae.generate(z, labels)
    assert vae.generate(z).requires_grad  # callers that only sample use torch.no_grad()


def test_spectral_norm_discriminator():
    d = DCGANDiscriminator(16, 1, width=4, spectral_norm=True, fused=False)
    assert any("parametrizations.weight.original" in k for k in d.state_dict())
    assert d(randn(2, 1, 16, 16)).shape == (2,)


@pytest.mark.parametrize(
    "call, match",
    [
        (lambda: DCGANGenerator(resolution=48), "power of two"),
        (lambda: DCGANGenerator(resolution=8), "power of two"),
        (lambda: DCGANGenerator(channels=2), "channels must be 1"),
        (lambda: DCGANGenerator(latent_dim=0), "latent_dim must be"),
        (lambda: DCGANDiscriminator(width=-1), "width must be"),
        (lambda: ConvVAE(likelihood="poisson"), "likelihood must be one of"),
        (lambda: ConvVAE(beta=-1.0), "beta must be"),
        (lambda: DCGANGenerator(fused=False)(randn(2, 7)), r"z must have shape \[N, 100\]"),
        (
            lambda: DCGANDiscriminator(fused=False)(randn(2, 3, 32, 32)),
            r"x must have shape \[N, 1, 32, 32\]",
        ),
    ],
)
def test_bad_arguments(call, match):
    with pytest.raises(ValueError, match=match):
        call()


@pytest.mark.parametrize("likelihood", ["bernoulli", "gaussian"])
def test_vae_shapes_and_loss(likelihood):
    torch.manual_seed(0)
    vae = ConvVAE(32, 1, latent_dim=8, width=8, likelihood=likelihood, beta=0.5, fused=False)
    x = randn(4, 1, 32, 32).clamp(-1, 1)
    mu, logvar = vae.encode(x)
    assert mu.shape == logvar.shape == (4, 8)
    assert vae.decode(mu).shape == (4, 1, 32, 32)
    out = vae(x)
    assert out["recon"].shape == x.shape and out["kl"].shape == (4,)
    assert out["recon"].abs().max() <= 1
    torch.manual_seed(1)
    parts = vae.loss(x)
    assert set(parts) == {"loss", "recon", "kl", "elbo", "bits_per_dim"}
    assert_close(parts["loss"], parts["recon"] + 0.5 * parts["kl"])
    assert_close(parts["elbo"], -(parts["recon"] + parts["kl"]))
    extra = 1024 * math.log(127.5) if likelihood == "gaussian" else 0.0
    assert_close(parts["bits_per_dim"], (-parts["elbo"] + extra) / (1024 * math.log(2)))
    assert parts["kl"] >= 0
    parts["loss"].backward()
    assert all(p.grad is not None for p in vae.parameters())
    assert vae.sample(3).shape == (3, 1, 32, 32)


def test_stock_reparameterize_math():
    from fastgen.models._layers import StockReparameterize

    mu, logvar, eps = randn(3, 4), randn(3, 4, seed=1), randn(3, 4, seed=2)
    z, kl = StockReparameterize()(mu, logvar, eps=eps)
    assert_close(z, mu + torch.exp(0.5 * logvar) * eps)
    expected = torch.distributions.kl_divergence(
        torch.distributions.Normal(mu, torch.exp(0.5 * logvar)),
        torch.distributions.Normal(0.0, 1.0),
    ).sum(1)
    assert_close(kl, expected)


@needs_ops
@pytest.mark.parametrize("train", [True, False])
def test_fused_dcgan_matches_stock(train):
    g_fused, g_stock = pair(DCGANGenerator, resolution=32, channels=1, latent_dim=16, width=8)
    d_fused, d_stock = pair(DCGANDiscriminator, resolution=32, channels=1, width=8)
    for m in (g_fused, g_stock, d_fused, d_stock):
        m.train(train)
    z = randn(6, 16)
    img_fused, img_stock = g_fused(z), g_stock(z)
    assert_close(img_fused, img_stock, scale=2)
    out_fused, out_stock = d_fused(img_fused), d_stock(img_stock)
    assert_close(out_fused, out_stock, scale=2)
    out_fused.sum().backward()
    out_stock.sum().backward()
    for (name, p_fused), p_stock in zip(g_fused.named_parameters(), g_stock.parameters()):
        assert_close(p_fused.grad, p_stock.grad, scale=10, msg=name)
    for (name, p_fused), p_stock in zip(d_fused.named_parameters(), d_stock.parameters()):
        assert_close(p_fused.grad, p_stock.grad, scale=10, msg=f"discriminator {name}")


@needs_ops
def test_fused_spectral_norm_discriminator_matches_stock():
    """spectral_norm wraps the fused Conv2d layers too; R1 (double backward) agrees."""
    d_fused, d_stock = pair(
        DCGANDiscriminator, resolution=16, channels=1, width=4, spectral_norm=True
    )
    x = randn(3, 1, 16, 16)
    penalties = []
    for d in (d_fused, d_stock):
        real = x.clone().requires_grad_()
        (grad,) = torch.autograd.grad(d(real).sum(), real, create_graph=True)
        grad.square().sum().backward()
        penalties.append(grad)
    assert_close(penalties[0], penalties[1], scale=2)
    for (name, p_fused), p_stock in zip(d_fused.named_parameters(), d_stock.parameters()):
        if p_stock.grad is None:  # biases that the penalty does not depend on (the head's)
            assert p_fused.grad is None, name
        else:
            assert_close(p_fused.grad, p_stock.grad, scale=10, msg=name)


@needs_ops
@pytest.mark.parametrize("likelihood", ["bernoulli", "gaussian"])
def test_fused_vae_matches_stock(likelihood):
    fused, stock = pair(
        ConvVAE, resolution=16, channels=1, latent_dim=4, width=8, likelihood=likelihood
    )
    x, eps = randn(5, 1, 16, 16).clamp(-1, 1), randn(5, 4, seed=1)
    parts_fused = fused.loss(x, eps=eps)
    parts_stock = stock.loss(x, eps=eps)
    for key in parts_stock:
        assert_close(parts_fused[key], parts_stock[key], scale=10, msg=key)
    parts_fused["loss"].backward()
    parts_stock["loss"].backward()
    for (name, p_fused), p_stock in zip(fused.named_parameters(), stock.parameters()):
        assert_close(p_fused.grad, p_stock.grad, scale=10, msg=name)
