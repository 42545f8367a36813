"""GAN and VAE models built from fastgen.nn layers (``fused=True``) or stock layers.

DCGANGenerator      z [N, latent_dim] (+ labels) -> images [N, C, R, R] in [-1, 1]
DCGANDiscriminator  images (+ labels) -> logits [N]; optional spectral norm, projection head
ConvVAE             encode / decode / loss (ELBO, KL, bits per dim), Bernoulli or Gaussian

The fused and stock variants of a model have identical state dicts, so either loads the
other's weights (the convergence tests train both and compare).
"""

from fastgen.models.dcgan import DCGANDiscriminator, DCGANGenerator
from fastgen.models.vae import ConvVAE

__all__ = ["ConvVAE", "DCGANDiscriminator", "DCGANGenerator"]
