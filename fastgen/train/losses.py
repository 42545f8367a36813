"""GAN losses from discriminator logits, and the gradient penalties.

bce      D: softplus(-D(x)) * (1 - s) + softplus(D(x)) * s + softplus(D(G(z)))   (BCE with
         logits against targets 1 - s for real, 0 for fake; s = one-sided label smoothing)
         G: softplus(-D(G(z)))                                   (the non-saturating loss)
hinge    D: relu(1 - D(x)) + relu(1 + D(G(z)));  G: -D(G(z))
wgan-gp  D: D(G(z)) - D(x) + gp_weight * (||grad D(x_hat)|| - 1)^2, x_hat on the segment
         between a real and a fake image;        G: -D(G(z))
R1       gamma / 2 * ||grad_x D(x)||^2 on real images (any loss)
All are batch means.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def discriminator_loss(
    kind: str, real_logits: torch.Tensor, fake_logits: torch.Tensor, label_smoothing: float = 0.0
) -> torch.Tensor:
    real_logits, fake_logits = real_logits.float(), fake_logits.float()
    if kind == "bce":
        target = torch.full_like(real_logits, 1.0 - label_smoothing)
        return (
            F.binary_cross_entropy_with_logits(real_logits, target) + F.softplus(fake_logits).mean()
        )
    if kind == "hinge":
        return F.relu(1 - real_logits).mean() + F.relu(1 + fake_logits).mean()
    if kind == "wgan-gp":
        return fake_logits.mean() - real_logits.mean()
    raise ValueError(f"fastgen.train.losses.discriminator_loss: unknown loss {kind!r}")


def generator_loss(kind: str, fake_logits: torch.Tensor) -> torch.Tensor:
    fake_logits = fake_logits.float()
    if kind == "bce":
        return F.softplus(-fake_logits).mean()
    if kind in ("hinge", "wgan-gp"):
        return -fake_logits.mean()
    raise ValueError(f"fastgen.train.losses.generator_loss: unknown loss {kind!r}")


def _input_gradient(discriminator, images: torch.Tensor, labels) -> torch.Tensor:
    images = images.detach().requires_grad_(True)
    logits = discriminator(images, labels) if labels is not None else discriminator(images)
    (grad,) = torch.autograd.grad(logits.float().sum(), images, create_graph=True)
    return grad.flatten(1).float()


def r1_penalty(discriminator, real: torch.Tensor, labels=None) -> torch.Tensor:
    """E ||grad_x D(x)||^2 over real images (multiply by gamma / 2)."""
    return _input_gradient(discriminator, real, labels).pow(2).sum(1).mean()


def gradient_penalty(
    discriminator, real: torch.Tensor, fake: torch.Tensor, labels=None
) -> torch.Tensor:
    """E (||grad D(x_hat)|| - 1)^2 with x_hat = a * real + (1 - a) * fake, a ~ U(0, 1) per image."""
    alpha = torch.rand(real.shape[0], 1, 1, 1, device=real.device, dtype=real.dtype)
    mixed = alpha * real.detach() + (1 - alpha) * fake.detach()
    grad = _input_gradient(discriminator, mixed, labels)
    return (grad.norm(dim=1) - 1).pow(2).mean()
