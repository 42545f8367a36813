"""A convolutional VAE (Kingma & Welling 2014) with a Bernoulli or Gaussian decoder."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from fastgen.config import LIKELIHOODS
from fastgen.models._layers import (
    SeededReparameterize,
    StockReparameterize,
    bn_act,
    check_image_model,
    check_images,
    check_latents,
    dcgan_init,
    down_block,
    output_block,
    up_block,
    widths,
)

FN = "fastgen.models.ConvVAE"


class ConvVAE(nn.Module):
    r"""Images [N, C, R, R] in [-1, 1] <-> latents [N, latent_dim].

    Encoder: (Conv2d 4x4 /2 -> BN+LeakyReLU(0.2)) down to 4x4 -> Linear -> (mu, logvar).
    Decoder: Linear -> 4x4 map -> BN+ReLU -> (ConvTranspose2d x2 -> BN+ReLU) ... ->
    ConvTranspose2d x2 -> output (fused activation: identity for logits, tanh for a mean).
    Sampling: ``z = mu + exp(logvar / 2) * eps`` with ``eps ~ N(0, I)`` drawn from torch's
    default generator, and ``kl = KL(N(mu, exp(logvar)) || N(0, I))`` per sample, computed
    by fastgen.nn.Reparameterize when ``fused`` (stock PyTorch otherwise).

    Likelihood of an image ``x`` (D = C * R * R values):
      * ``"bernoulli"``: the decoder gives logits; targets are ``(x + 1) / 2`` in [0, 1] and
        ``-log p(x|z) = sum BCE-with-logits`` (the usual continuous-Bernoulli shortcut).
      * ``"gaussian"``: the decoder gives the mean in [-1, 1] (tanh); the scale ``sigma`` is
        one learned scalar (``log_scale``), ``-log p(x|z) = sum (x - mean)^2 / (2 sigma^2)
        + log sigma + log(2 pi) / 2``.

    ``loss(x)`` returns the negative ELBO ``recon + beta * kl`` averaged over the batch and the
    parts: ``elbo = -(recon + kl)`` (per image, nats), ``bits_per_dim = -elbo / (D ln 2)``; for
    the Gaussian that is the density of pixel values in [0, 255], i.e. with ``D log 127.5``
    added for the change of scale from [-1, 1] (a continuous bound, not a discretised one).
    """

    def __init__(
        self,
        resolution: int = 32,
        channels: int = 1,
        latent_dim: int = 32,
        width: int = 32,
        likelihood: str = "bernoulli",
        beta: float = 1.0,
        fused: bool = True,
    ) -> None:
        super().__init__()
        levels = check_image_model(FN, resolution, channels, latent_dim=latent_dim, width=width)
        if likelihood not in LIKELIHOODS:
            raise ValueError(
                f"{FN}: likelihood must be one of {', '.join(LIKELIHOODS)}, got {likelihood!r}"
            )
        if not (isinstance(beta, int | float) and beta >= 0):
            raise ValueError(f"{FN}: beta must be a number >= 0, got {beta!r}")
        self.resolution, self.channels = resolution, channels
        self.latent_dim, self.width = latent_dim, width
        self.likelihood, self.beta, self.fused = likelihood, float(beta), fused
        chans = widths(width, levels)  # 4x4 (widest) ... resolution / 2
        enc = chans[::-1]
        blocks = [down_block(channels, enc[0], batch_norm=True, fused=fused)]
        blocks += [down_block(a, b, batch_norm=True, fused=fused) for a, b in zip(enc, enc[1:])]
        self.encoder = nn.Sequential(*blocks)
        self.to_stats = nn.Linear(chans[0] * 16, 2 * latent_dim)
        self.from_latent = nn.Linear(latent_dim, chans[0] * 16, bias=False)
        self.decoder_input = bn_act(chans[0], 0.0, fused=fused)
        blocks = [up_block(a, b, first=False, fused=fused) for a, b in zip(chans, chans[1:])]
        activation = "identity" if likelihood == "bernoulli" else "tanh"
        blocks.append(output_block(chans[-1], channels, activation=activation, fused=fused))
        self.decoder = nn.Sequential(*blocks)
        if likelihood == "gaussian":
            self.log_scale = nn.Parameter(torch.zeros(()))
        self.reparameterize = SeededReparameterize() if fused else StockReparameterize()
        dcgan_init(self)

    def encode(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        check_images(f"{FN}.encode", x, self.channels, self.resolution)
        stats = self.to_stats(self.encoder(x).flatten(1))
        mu, logvar = stats.float().chunk(2, dim=1)  # the KL is summed: keep it in float32
        return mu, logvar

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """Logits (bernoulli) or the mean in [-1, 1] (gaussian), [N, C, R, R]."""
        check_latents(f"{FN}.decode", z, self.latent_dim)
        h = self.from_latent(z).view(z.shape[0], -1, 4, 4)
        return self.decoder(self.decoder_input(h))

    def to_image(self, decoded: torch.Tensor) -> torch.Tensor:
        """The decoder output as an image in [-1, 1] (the mean of p(x|z))."""
        return torch.sigmoid(decoded) * 2 - 1 if self.likelihood == "bernoulli" else decoded

    def generate(self, z: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        """Images [N, C, R, R] in [-1, 1] from latents z [N, latent_dim]: ``to_image(decode(z))``,
        the mean of p(x|z) (DCGANGenerator.generate's interface; the VAE is unconditional, so
        `labels` must be None). Gradients flow; callers that only sample use torch.no_grad()."""
        if labels is not None:
            raise ValueError(f"{FN}.generate: labels given, but the VAE is unconditional")
        return self.to_image(self.decode(z))

    def forward(self, x: torch.Tensor, eps: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        """dict(recon [N,C,R,R] image in [-1,1], decoded (raw decoder output), mu, logvar, z, kl [N]).

        ``eps`` [N, latent_dim]: the standard-normal noise, or None to draw it: the fused op
        makes it in-kernel (Philox keyed by torch's default generator, regenerated in the
        backward instead of stored), the stock variant with torch.randn_like. Either way
        torch.manual_seed makes it repeat; pass ``eps`` to give both variants the same noise.
        """
        mu, logvar = self.encode(x)
        z, kl = self.reparameterize(mu, logvar, eps=eps)
        decoded = self.decode(z)
        return {
            "recon": self.to_image(decoded),
            "decoded": decoded,
            "mu": mu,
            "logvar": logvar,
            "z": z,
            "kl": kl,
        }

    def negative_log_likelihood(self, x: torch.Tensor, decoded: torch.Tensor) -> torch.Tensor:
        """-log p(x|z) per image [N], in nats."""
        decoded = decoded.float()
        x = x.float()
        if self.likelihood == "bernoulli":
            nll = F.binary_cross_entropy_with_logits(decoded, (x + 1) / 2, reduction="none")
        else:
            log_scale = self.log_scale.float()
            nll = (
                (x - decoded).pow(2) * torch.exp(-2 * log_scale) / 2
                + log_scale
                + 0.5 * math.log(2 * math.pi)
            )
        return nll.flatten(1).sum(1)

    def loss(
        self, x: torch.Tensor, beta: float | None = None, eps: torch.Tensor | None = None
    ) -> dict[str, torch.Tensor]:
        """dict(loss, recon, kl, elbo, bits_per_dim), batch means; ``loss = recon + beta * kl``.
        ``eps`` as for forward."""
        beta = self.beta if beta is None else beta
        out = self(x, eps=eps)
        recon = self.negative_log_likelihood(x, out["decoded"]).mean()
        kl = out["kl"].float().mean()
        elbo = -(recon + kl)
        dims = x[0].numel()
        nats = -elbo + (dims * math.log(127.5) if self.likelihood == "gaussian" else 0.0)
        bits_per_dim = nats / (dims * math.log(2))
        return {
            "loss": recon + beta * kl,
            "recon": recon,
            "kl": kl,
            "elbo": elbo,
            "bits_per_dim": bits_per_dim,
        }

    @torch.no_grad()
    def sample(self, num: int, generator: torch.Generator | None = None) -> torch.Tensor:
        """`num` images in [-1, 1] decoded from z ~ N(0, I)."""
        device = next(self.parameters()).device
        z = torch.randn(num, self.latent_dim, generator=generator, device=device)
        return self.generate(z)
