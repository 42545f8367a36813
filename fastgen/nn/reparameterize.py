"""Reparameterize: the VAE sampling step and its KL term as a module."""

from __future__ import annotations

import torch
from torch import nn

from fastgen import ops
from fastgen.nn._torchscript import NoTorchScript, refuse_tracing


class Reparameterize(NoTorchScript, nn.Module):
    r"""Draws ``z ~ N(mu, exp(logvar))`` differentiably and returns the per-sample KL term.

    For ``mu`` and ``logvar`` of the same shape ``[N, ...]`` (float32, float64, float16,
    bfloat16)::

        z     = mu + exp(0.5 * logvar) * eps,          eps ~ N(0, 1) (or the given ``eps``)
        kl[n] = -0.5 * sum_{i} (1 + logvar[n, i] - mu[n, i]^2 - exp(logvar[n, i]))

    ``z`` has ``mu``'s shape; ``kl`` has shape ``[N]`` (KL(q(z|x) || N(0, I)) per sample;
    average it over the batch for the usual loss). Noise comes from torch's default
    generator for the device unless ``eps`` is given. Training and eval behave the same:
    use ``mu`` directly in eval if you want the posterior mean. No parameters, no constructor
    arguments; fastgen.ops.reparameterize_kl is the function it calls.

    Shape:
        forward(mu, logvar, eps=None): mu [N, ...] (at least 1-D),
        float32/float64/float16/bfloat16, any strides; logvar and eps (standard-normal noise,
        None to draw it) of mu's shape, dtype and device. Returns (z, kl): z of mu's shape and
        dtype, kl [N] of mu's dtype.
    """

    def forward(
        self, mu: torch.Tensor, logvar: torch.Tensor, eps: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        refuse_tracing(self)
        return ops.reparameterize_kl(mu, logvar, eps=eps)
