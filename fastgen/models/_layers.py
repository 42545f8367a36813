"""Layer factories shared by the models: one switch between fused and stock layers.

Every factory returns modules whose parameters and buffers have the same names whether
``fused`` is True (fastgen.nn layers) or False (stock torch.nn layers), so the two variants of
a model load each other's state dicts. Activations fused into a layer leave no module behind;
stock activations have no parameters, so they do not change the state dict.
"""

from __future__ import annotations

from collections import OrderedDict

import torch
from torch import nn

import fastgen.nn as fnn
from fastgen.utils.checks import check_channels, check_int, check_resolution


def check_image_model(fn: str, resolution: int, channels: int, **sizes: int) -> int:
    """Checks what every image model is built from: the resolution, the image channels and
    `sizes` (name: value, each an int >= 1). Returns the number of 2x levels from 4x4 to
    resolution / 2, ``log2(resolution) - 2``."""
    levels = check_resolution(fn, resolution) - 2
    check_channels(fn, channels)
    for name, value in sizes.items():
        check_int(fn, name, value)
    return levels


def check_images(fn: str, x: torch.Tensor, channels: int, resolution: int) -> None:
    """ValueError unless x is a batch of images [N, channels, resolution, resolution]."""
    expected = (channels, resolution, resolution)
    if x.dim() != 4 or tuple(x.shape[1:]) != expected:
        raise ValueError(
            f"{fn}: x must have shape [N, {', '.join(map(str, expected))}], got {tuple(x.shape)}"
        )


def check_latents(fn: str, z: torch.Tensor, latent_dim: int) -> None:
    """ValueError unless z is a batch of latent vectors [N, latent_dim]."""
    if z.dim() != 2 or z.shape[1] != latent_dim:
        raise ValueError(f"{fn}: z must have shape [N, {latent_dim}], got {tuple(z.shape)}")


def widths(width: int, levels: int, cap: int = 8) -> list[int]:
    """Channel counts from the coarsest (4x4) level to the finest: width * 2^k, k capped."""
    return [width * min(2 ** (levels - 1 - level), cap) for level in range(levels)]


def up_block(in_ch: int, out_ch: int, *, first: bool, fused: bool) -> nn.Sequential:
    """ConvTranspose2d (4x4; from 1x1 to 4x4 if `first`, else x2) + BatchNorm + ReLU."""
    stride, padding = (1, 0) if first else (2, 1)
    layers = OrderedDict()
    if fused:
        layers["conv"] = fnn.ConvTranspose2d(in_ch, out_ch, 4, stride, padding, bias=False)
        layers["bn"] = fnn.BatchNormLeakyReLU2d(out_ch, negative_slope=0.0)
    else:
        layers["conv"] = nn.ConvTranspose2d(in_ch, out_ch, 4, stride, padding, bias=False)
        layers["bn"] = nn.BatchNorm2d(out_ch)
        layers["act"] = nn.ReLU()
    return nn.Sequential(layers)


def output_block(in_ch: int, out_ch: int, *, activation: str, fused: bool) -> nn.Sequential:
    """The last x2 ConvTranspose2d (with bias) and its output activation ("tanh"|"identity")."""
    layers = OrderedDict()
    if fused:
        layers["conv"] = fnn.ConvTranspose2d(in_ch, out_ch, 4, 2, 1, activation=activation)
    else:
        layers["conv"] = nn.ConvTranspose2d(in_ch, out_ch, 4, 2, 1)
        if activation == "tanh":
            layers["act"] = nn.Tanh()
    return nn.Sequential(layers)


def bn_act(channels: int, negative_slope: float, *, fused: bool) -> nn.Sequential:
    """BatchNorm2d + ReLU (slope 0) or LeakyReLU, as one fused layer or two stock ones."""
    if fused:
        return nn.Sequential(
            OrderedDict(bn=fnn.BatchNormLeakyReLU2d(channels, negative_slope=negative_slope))
        )
    act = nn.ReLU() if negative_slope == 0 else nn.LeakyReLU(negative_slope)
    return nn.Sequential(OrderedDict(bn=nn.BatchNorm2d(channels), act=act))


def down_block(
    in_ch: int, out_ch: int, *, batch_norm: bool, fused: bool, spectral_norm: bool = False
) -> nn.Sequential:
    """Conv2d 4x4 stride 2 (/2), then BatchNorm (optional) and LeakyReLU(0.2).

    Fused: without BatchNorm the LeakyReLU is fused into the fastgen Conv2d; with it, into
    BatchNormLeakyReLU2d."""
    if fused:
        activation = "identity" if batch_norm else "leaky_relu"
        conv = fnn.Conv2d(
            in_ch, out_ch, 4, 2, 1, bias=not batch_norm, activation=activation, negative_slope=0.2
        )
    else:
        conv = nn.Conv2d(in_ch, out_ch, 4, 2, 1, bias=not batch_norm)
    if spectral_norm:
        conv = nn.utils.parametrizations.spectral_norm(conv)
    layers = OrderedDict(conv=conv)
    if batch_norm and fused:
        layers["bn"] = fnn.BatchNormLeakyReLU2d(out_ch, negative_slope=0.2)
    elif not fused:
        if batch_norm:
            layers["bn"] = nn.BatchNorm2d(out_ch)
        layers["act"] = nn.LeakyReLU(0.2)
    return nn.Sequential(layers)


def plain_conv2d(
    in_ch: int, out_ch: int, kernel_size: int, stride: int, padding: int, *, fused: bool
) -> nn.Conv2d:
    """A plain Conv2d (with bias, no activation): fastgen's when fused, else stock."""
    layer = fnn.Conv2d if fused else nn.Conv2d
    return layer(in_ch, out_ch, kernel_size, stride, padding)


def dcgan_init(module: nn.Module) -> None:
    """The DCGAN initialisation: conv weights ~ N(0, 0.02), BN weights ~ N(1, 0.02), biases 0."""
    for m in module.modules():
        if isinstance(m, nn.Conv2d | nn.ConvTranspose2d | nn.Linear):
            weight = m.parametrizations.weight.original if _parametrized(m) else m.weight
            nn.init.normal_(weight, 0.0, 0.02)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.BatchNorm2d | fnn.BatchNormLeakyReLU2d) and m.weight is not None:
            nn.init.normal_(m.weight, 1.0, 0.02)
            nn.init.zeros_(m.bias)


def _parametrized(module: nn.Module) -> bool:
    return hasattr(module, "parametrizations") and "weight" in module.parametrizations


def default_generator(device: torch.device) -> torch.Generator:
    if device.type == "cuda":
        return torch.cuda.default_generators[
            device.index if device.index is not None else torch.cuda.current_device()
        ]
    return torch.default_generator


class SeededReparameterize(fnn.Reparameterize):
    """fastgen.nn.Reparameterize that names torch's default generator explicitly.

    Why: given a generator, the fused op draws its Philox (seed, offset) key the same way on
    the native and the reference backend, so FASTGEN_BACKEND=reference reproduces a fused
    run step for step (without one, the native kernel draws its key in C++ and the two
    backends use different noise for the same torch.manual_seed).
    """

    def forward(
        self, mu: torch.Tensor, logvar: torch.Tensor, eps: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        from fastgen import ops

        generator = None if eps is not None else default_generator(mu.device)
        return ops.reparameterize_kl(mu, logvar, eps=eps, generator=generator)


class StockReparameterize(nn.Module):
    """The stock-PyTorch twin of fastgen.nn.Reparameterize (same math, same signature)."""

    def forward(
        self, mu: torch.Tensor, logvar: torch.Tensor, eps: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        if eps is None:
            eps = torch.randn_like(mu)
        z = mu + torch.exp(0.5 * logvar) * eps
        kl = -0.5 * (1 + logvar - mu.pow(2) - logvar.exp()).flatten(1).sum(1)
        return z, kl
