"""GAN and VAE models built from fastgen.nn layers (``fused=True``) or stock layers.

DCGANGenerator      z [N, latent_dim] (+ labels) -> images [N, C, R, R] in [-1, 1]
DCGANDiscriminator  images (+ labels) -> logits [N]; optional spectral norm, projection head
ConvVAE             encode / decode / loss (ELBO, KL, bits per dim), Bernoulli or Gaussian
load_model          a checkpoint -> the model to sample (EMA generator or VAE) and its metadata

Models that make images share ``generate(z, labels=None) -> images in [-1, 1]``.

The fused and stock variants of a model have identical state dicts, so either loads the
other's weights (the convergence tests train both and compare).
"""

from fastgen.models.dcgan import DCGANDiscriminator, DCGANGenerator
from fastgen.models.loading import LoadedModel, load_model
from fastgen.models.vae import ConvVAE

__all__ = ["ConvVAE", "DCGANDiscriminator", "DCGANGenerator", "LoadedModel", "load_model"]
