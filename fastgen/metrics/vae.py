"""Likelihood bounds of a ConvVAE on held-out images: ELBO, importance-weighted NLL, bits/dim.

For an image x with D values, encoder q(z|x) = N(mu, diag(exp(logvar))), prior p(z) = N(0, I)
and decoder likelihood p(x|z) (``ConvVAE.negative_log_likelihood``):

    log w_i   = log p(x|z_i) + log p(z_i) - log q(z_i|x),       z_i ~ q(z|x), i = 1..k
    ELBO(x)   = E_q[log w] ~ (1/k) sum_i log w_i
    IWAE_k(x) = log (1/k) sum_i exp(log w_i)

Both lower-bound log p(x) in expectation; IWAE_k tightens as k grows (Burda et al., 2016),
so -IWAE_k is an upper bound on the negative log-likelihood. Both estimates use the same k
samples, so IWAE_k >= ELBO holds for every image (Jensen), not only on average. Values are in nats per image,
averaged over the images; bits/dim = nats / (D ln 2), where for the Gaussian likelihood the
density is that of pixel values in [0, 255] (D log 127.5 added, as ConvVAE.loss does).
The model runs in eval mode (batch-norm running statistics) and no gradients are kept.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from fastgen.metrics.features import ImageSource, image_batches

LOG_2PI = math.log(2 * math.pi)


def _gaussian_log_density(z: torch.Tensor, mu: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
    """log N(z; mu, diag(exp(logvar))) summed over the last dimension."""
    return -0.5 * (((z - mu) ** 2) * torch.exp(-logvar) + logvar + LOG_2PI).sum(-1)


def _nats_offset(vae: nn.Module, dims: int) -> float:
    return dims * math.log(127.5) if getattr(vae, "likelihood", "bernoulli") == "gaussian" else 0.0


@torch.no_grad()
def importance_weighted_log_likelihood(
    vae: nn.Module, x: torch.Tensor, k: int, generator: torch.Generator | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """(ELBO [N], IWAE_k [N]) in nats for images x [N, C, H, W] in [-1, 1], from k samples."""
    mu, logvar = vae.encode(x)
    std = torch.exp(0.5 * logvar)
    log_weights = []
    for _ in range(k):
        eps = torch.randn(mu.shape, generator=generator, device="cpu").to(mu)
        z = mu + std * eps
        log_px_z = -vae.negative_log_likelihood(x, vae.decode(z.to(x.dtype)))
        log_pz = -0.5 * (z.square() + LOG_2PI).sum(-1)
        log_qz = _gaussian_log_density(z, mu, logvar)
        log_weights.append(log_px_z + log_pz - log_qz)
    log_weights = torch.stack(log_weights)
    return log_weights.mean(0), torch.logsumexp(log_weights, dim=0) - math.log(k)


@torch.no_grad()
def vae_metrics(
    vae: nn.Module,
    images: ImageSource,
    *,
    k: int = 64,
    n: int = 10_000,
    batch_size: int = 128,
    device: str | torch.device = "cpu",
    seed: int = 0,
) -> dict[str, float]:
    """ELBO, IWAE_k NLL bound and bits/dim of a ConvVAE on up to n held-out images.

    Returns: n, elbo (nats/image), nll_elbo = -elbo, nll_iw (= -IWAE_k, a tighter upper bound
    on the NLL), k, bits_per_dim_elbo, bits_per_dim_iw.
    """
    if k < 1:
        raise ValueError(f"fastgen.metrics.vae_metrics: k expected >= 1, got {k}")
    was_training = vae.training
    vae = vae.to(device).eval()
    generator = torch.Generator().manual_seed(seed)
    total_elbo = total_iwae = 0.0
    count, dims = 0, None
    try:
        for batch in image_batches(images, n, batch_size):
            x = batch.to(device, torch.float32)
            elbo, iwae = importance_weighted_log_likelihood(vae, x, k, generator)
            total_elbo += float(elbo.double().sum())
            total_iwae += float(iwae.double().sum())
            count += x.shape[0]
            dims = x[0].numel()
    finally:
        vae.train(was_training)
    if count == 0:
        raise ValueError("fastgen.metrics.vae_metrics: images gave no images")
    elbo, iwae = total_elbo / count, total_iwae / count
    offset = _nats_offset(vae, dims)
    per_dim = dims * math.log(2)
    return {
        "n": count,
        "k": k,
        "elbo": elbo,
        "nll_elbo": -elbo,
        "nll_iw": -iwae,
        "bits_per_dim_elbo": (-elbo + offset) / per_dim,
        "bits_per_dim_iw": (-iwae + offset) / per_dim,
    }
