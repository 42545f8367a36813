"""Small datasets and configs for the training tests (tiny models, a few steps, one thread)."""

from __future__ import annotations

import torch

from fastgen.train import GANConfig, VAEConfig


class TinyDataset(torch.utils.data.Dataset):
    """Blobby 16x16 images in [-1, 1] with labels: the ImageDataset interface, no files."""

    def __init__(self, n: int = 48, channels: int = 1, resolution: int = 16, num_classes: int = 3):
        gen = torch.Generator().manual_seed(1234)
        self.labels = torch.arange(n) % num_classes
        grid = torch.linspace(-1, 1, resolution)
        yy, xx = torch.meshgrid(grid, grid, indexing="ij")
        centres = torch.rand(n, 2, generator=gen) - 0.5
        blobs = torch.exp(
            -((xx - centres[:, :1, None]) ** 2 + (yy - centres[:, 1:, None]) ** 2) * 8
        )
        blobs = blobs * (1 + self.labels[:, None, None]) / num_classes
        self.images = (blobs[:, None].repeat(1, channels, 1, 1) * 2 - 1).float()
        self.num_classes = num_classes
        self.name = "tiny"

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, index: int):
        return self.images[index], int(self.labels[index])


# A tiny run of either trainer: 16x16, width 4, a few steps, stock layers on the CPU.
TINY = dict(
    resolution=16, steps=6, batch_size=8, width=4, fused=False, device="cpu", seed=3,
    sample_every=0, checkpoint_every=0, log_every=1, num_samples=8, num_threads=1,
)  # fmt: skip


def gan_config(tmp_path, **overrides) -> GANConfig:
    return GANConfig(**{**TINY, "latent_dim": 8, "out_dir": str(tmp_path / "gan"), **overrides})


def vae_config(tmp_path, **overrides) -> VAEConfig:
    return VAEConfig(**{**TINY, "latent_dim": 4, "out_dir": str(tmp_path / "vae"), **overrides})


def ops_ready() -> bool:
    """True once the fused ops are implemented (they are placeholders until they land)."""
    import fastgen.nn as fnn

    try:
        fnn.BatchNormLeakyReLU2d(2)(torch.randn(2, 2, 2, 2))
        fnn.ConvTranspose2d(2, 2, 4, 2, 1)(torch.randn(1, 2, 2, 2))
        fnn.Reparameterize()(torch.zeros(2, 2), torch.zeros(2, 2))
    except NotImplementedError:
        return False
    return True
