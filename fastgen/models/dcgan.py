"""DCGAN generator and discriminator (Radford et al. 2016) for 16..256 pixel images."""

from __future__ import annotations

import torch
from torch import nn

from fastgen.models._layers import (
    check_image_model,
    check_images,
    check_latents,
    dcgan_init,
    down_block,
    output_block,
    plain_conv2d,
    up_block,
    widths,
)
from fastgen.utils.checks import check_int

# Size of the class embedding the conditional generator appends to its noise vector.
CLASS_EMBEDDING_DIM = 32

GENERATOR_FN = "fastgen.models.DCGANGenerator"
DISCRIMINATOR_FN = "fastgen.models.DCGANDiscriminator"


def _check_labels(fn: str, labels, batch: int, num_classes: int, device) -> torch.Tensor | None:
    if num_classes == 0:
        if labels is not None:
            raise ValueError(f"{fn}: labels given, but the model is unconditional (num_classes=0)")
        return None
    if labels is None:
        raise ValueError(
            f"{fn}: labels [N] are required for a conditional model (num_classes={num_classes})"
        )
    if not isinstance(labels, torch.Tensor) or labels.dtype not in (torch.int64, torch.int32):
        raise TypeError(f"{fn}: labels must be an int64 tensor [N], got {labels!r:.60}")
    if labels.shape != (batch,):
        raise ValueError(f"{fn}: labels must have shape ({batch},), got {tuple(labels.shape)}")
    return labels.to(device=device, dtype=torch.int64)


class DCGANGenerator(nn.Module):
    r"""z [N, latent_dim] (+ labels [N]) -> images [N, channels, resolution, resolution] in [-1, 1].

    Architecture: z (with a learned class embedding appended when ``num_classes > 0``) as a
    1x1 map -> ConvTranspose2d 4x4 to 4x4 -> BN+ReLU -> (ConvTranspose2d x2 -> BN+ReLU) ...
    -> ConvTranspose2d x2 -> tanh. Channels halve at each doubling, from ``width * 2^k``
    (k capped at 3) at 4x4 down to ``width`` before the output layer.

    ``fused=True`` builds it from fastgen.nn layers (ConvTranspose2d with tanh fused in,
    BatchNormLeakyReLU2d with slope 0); ``fused=False`` from stock torch.nn layers. Both have
    identical state dicts. Weights are initialised as in DCGAN: N(0, 0.02) convs, N(1, 0.02)
    BN scales, zero biases.
    """

    def __init__(
        self,
        resolution: int = 32,
        channels: int = 1,
        latent_dim: int = 100,
        width: int = 64,
        num_classes: int = 0,
        fused: bool = True,
    ) -> None:
        super().__init__()
        # 4x4, 8x8, ..., resolution / 2
        levels = check_image_model(
            GENERATOR_FN, resolution, channels, latent_dim=latent_dim, width=width
        )
        check_int(GENERATOR_FN, "num_classes", num_classes, minimum=0)
        self.resolution, self.channels = resolution, channels
        self.latent_dim, self.width = latent_dim, width
        self.num_classes, self.fused = num_classes, fused
        if num_classes:
            self.embed = nn.Embedding(num_classes, CLASS_EMBEDDING_DIM)
        in_ch = latent_dim + (CLASS_EMBEDDING_DIM if num_classes else 0)
        chans = widths(width, levels)
        blocks = [up_block(in_ch, chans[0], first=True, fused=fused)]
        blocks += [up_block(a, b, first=False, fused=fused) for a, b in zip(chans, chans[1:])]
        blocks.append(output_block(chans[-1], channels, activation="tanh", fused=fused))
        self.blocks = nn.Sequential(*blocks)
        dcgan_init(self)

    def forward(self, z: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        check_latents(GENERATOR_FN, z, self.latent_dim)
        labels = _check_labels(GENERATOR_FN, labels, z.shape[0], self.num_classes, z.device)
        if labels is not None:
            z = torch.cat([z, self.embed(labels).to(z.dtype)], dim=1)
        return self.blocks(z[:, :, None, None])

    def generate(self, z: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        """Images [N, channels, resolution, resolution] in [-1, 1] from z [N, latent_dim]
        (+ labels [N] when conditional): the forward pass, under the name every fastgen model
        that makes images shares (ConvVAE.generate decodes). Gradients flow as in forward;
        callers that only sample wrap it in torch.no_grad()."""
        return self(z, labels)


class DCGANDiscriminator(nn.Module):
    r"""images [N, channels, resolution, resolution] (+ labels [N]) -> logits [N].

    Architecture: Conv2d 4x4 stride 2 + LeakyReLU(0.2) -> (Conv2d /2 -> BN+LeakyReLU(0.2)) ...
    down to 4x4 -> Conv2d 4x4 to one logit. With ``num_classes > 0`` it is a projection
    discriminator (Miyato & Koyama 2018): the logit gains ``<embed(label), sum_hw(features)>``.
    ``spectral_norm=True`` puts spectral normalisation on every conv (state-dict names then
    carry ``parametrizations.weight.original``, in both variants alike).

    ``fused=True`` uses fastgen.nn.Conv2d for every conv (LeakyReLU fused into the first) and
    fastgen.nn.BatchNormLeakyReLU2d for BN+LeakyReLU; ``fused=False`` stock layers; identical
    state dicts. N(0, 0.02) initialisation.
    """

    def __init__(
        self,
        resolution: int = 32,
        channels: int = 1,
        width: int = 64,
        num_classes: int = 0,
        fused: bool = True,
        spectral_norm: bool = False,
    ) -> None:
        super().__init__()
        levels = check_image_model(DISCRIMINATOR_FN, resolution, channels, width=width)
        check_int(DISCRIMINATOR_FN, "num_classes", num_classes, minimum=0)
        self.resolution, self.channels, self.width = resolution, channels, width
        self.num_classes, self.fused, self.spectral_norm = num_classes, fused, spectral_norm
        chans = widths(width, levels)[::-1]  # finest (resolution / 2) to coarsest (4x4)
        blocks = [
            down_block(
                channels, chans[0], batch_norm=False, fused=fused, spectral_norm=spectral_norm
            )
        ]
        blocks += [
            down_block(a, b, batch_norm=True, fused=fused, spectral_norm=spectral_norm)
            for a, b in zip(chans, chans[1:])
        ]
        self.blocks = nn.Sequential(*blocks)
        head = plain_conv2d(chans[-1], 1, 4, 1, 0, fused=fused)
        self.head = nn.utils.parametrizations.spectral_norm(head) if spectral_norm else head
        if num_classes:
            self.embed = nn.Embedding(num_classes, chans[-1])
        dcgan_init(self)
        if num_classes:
            nn.init.normal_(self.embed.weight, 0.0, 0.02)

    def forward(self, x: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        check_images(DISCRIMINATOR_FN, x, self.channels, self.resolution)
        labels = _check_labels(DISCRIMINATOR_FN, labels, x.shape[0], self.num_classes, x.device)
        features = self.blocks(x)
        logits = self.head(features).flatten()
        if labels is not None:
            projection = (self.embed(labels).to(features.dtype) * features.sum((2, 3))).sum(1)
            logits = logits + projection
        return logits
