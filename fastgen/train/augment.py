"""DiffAugment (Zhao et al. 2020): differentiable augmentations applied to every image D sees,
real and fake alike, so D cannot memorise a small dataset and G still gets gradients.

color        per image: brightness + U(-0.5, 0.5), saturation * U(0, 2), contrast * U(0.5, 1.5)
translation  per image: shift by up to 1/8 of the size in x and y, zero fill
cutout       per image: zero a square of half the size at a random place
Images are [N, C, H, W] in [-1, 1]; randomness comes from torch's default generator.
"""

from __future__ import annotations

import torch


def augment(images: torch.Tensor, names: list[str]) -> torch.Tensor:
    for name in names:
        images = AUGMENTATIONS[name](images)
    return images


def _uniform(images: torch.Tensor, low: float, high: float) -> torch.Tensor:
    shape = (images.shape[0], 1, 1, 1)
    return torch.rand(shape, device=images.device, dtype=images.dtype) * (high - low) + low


def color(images: torch.Tensor) -> torch.Tensor:
    images = images + _uniform(images, -0.5, 0.5)
    mean = images.mean(dim=1, keepdim=True)
    images = (images - mean) * _uniform(images, 0.0, 2.0) + mean
    mean = images.mean(dim=(1, 2, 3), keepdim=True)
    return (images - mean) * _uniform(images, 0.5, 1.5) + mean


def translation(images: torch.Tensor, ratio: float = 0.125) -> torch.Tensor:
    n, _, h, w = images.shape
    max_y, max_x = int(h * ratio + 0.5), int(w * ratio + 0.5)
    shift_y = torch.randint(-max_y, max_y + 1, (n, 1, 1), device=images.device)
    shift_x = torch.randint(-max_x, max_x + 1, (n, 1, 1), device=images.device)
    rows = torch.arange(h, device=images.device)[None, :, None] + shift_y  # source row per output
    cols = torch.arange(w, device=images.device)[None, None, :] + shift_x
    inside = ((rows >= 0) & (rows < h) & (cols >= 0) & (cols < w)).unsqueeze(1)
    index = (rows.clamp(0, h - 1) * w + cols.clamp(0, w - 1)).flatten(1)  # [N, H*W]
    flat = images.flatten(2)
    gathered = flat.gather(2, index.unsqueeze(1).expand(-1, flat.shape[1], -1)).view_as(images)
    return gathered * inside.to(images.dtype)


def cutout(images: torch.Tensor, ratio: float = 0.5) -> torch.Tensor:
    n, _, h, w = images.shape
    size_y, size_x = int(h * ratio + 0.5), int(w * ratio + 0.5)
    centre_y = torch.randint(0, h + (1 - size_y % 2), (n, 1, 1), device=images.device)
    centre_x = torch.randint(0, w + (1 - size_x % 2), (n, 1, 1), device=images.device)
    rows = torch.arange(h, device=images.device)[None, :, None]
    cols = torch.arange(w, device=images.device)[None, None, :]
    cut = (
        (rows >= centre_y - size_y // 2)
        & (rows < centre_y - size_y // 2 + size_y)
        & (cols >= centre_x - size_x // 2)
        & (cols < centre_x - size_x // 2 + size_x)
    )
    return images * (~cut).unsqueeze(1).to(images.dtype)


AUGMENTATIONS = {"color": color, "translation": translation, "cutout": cutout}
