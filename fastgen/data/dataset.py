"""ImageDataset (in-memory images in [-1, 1]), DataError and the shared pixel helpers."""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

# Every source without a split of its own is split the same way: a permutation drawn from a
# fixed seed, the first 10% of it held out as "test". numpy's RandomState is used (not torch's
# generator) because its stream is frozen across versions, so the split never moves.
SPLIT_SEED = 20240601
TEST_FRACTION = 0.1
SPLITS = ("train", "test", "all")


class DataError(ValueError):
    """A data source is missing, unreadable or not what it was expected to be."""


class ImageDataset(torch.utils.data.Dataset):
    """Images held in memory, ready for a GAN or VAE.

    images: float32 [N, C, H, W] with values in [-1, 1] (C is 1 or 3), or uint8 [N, C, H, W]
      pixels in [0, 255], kept as uint8 (a quarter of the memory; image folders load so) and
      converted, ``x * 2 / 255 - 1``, when read: by item, by ``batch(index)``, or all at once
      through ``images`` (which then makes a float32 copy on each access).
    labels: int64 [N] with values in [0, num_classes), or None for unlabelled data.
    unlabelled_reason: why a source that could have had labels has none (e.g. images next to
      the class folders), for the error of a conditional model.
    An item is (image [C, H, W] float32, label), the label being -1 for unlabelled data, so
    the default DataLoader collation works in both cases.
    """

    def __init__(
        self,
        images: torch.Tensor,
        labels: torch.Tensor | None = None,
        *,
        name: str = "",
        num_classes: int | None = None,
        class_names: list[str] | None = None,
        unlabelled_reason: str | None = None,
    ) -> None:
        if not isinstance(images, torch.Tensor) or images.dim() != 4:
            got = tuple(images.shape) if isinstance(images, torch.Tensor) else type(images).__name__
            raise DataError(f"ImageDataset: images must be a tensor [N, C, H, W], got {got}")
        if images.shape[1] not in (1, 3):
            raise DataError(
                f"ImageDataset: images must have 1 or 3 channels, got {images.shape[1]}"
            )
        self.images = images
        if labels is not None:
            labels = torch.as_tensor(labels, dtype=torch.int64)
            if labels.shape != (images.shape[0],):
                raise DataError(
                    f"ImageDataset: labels must have shape [{images.shape[0]}], "
                    f"got {tuple(labels.shape)}"
                )
            if num_classes is None:
                num_classes = int(labels.max()) + 1 if labels.numel() else 0
        self.labels = labels
        self.num_classes = 0 if labels is None else int(num_classes)
        self.class_names = class_names
        self.name = name
        self.unlabelled_reason = None if labels is not None else unlabelled_reason

    @property
    def images(self) -> torch.Tensor:
        """All images, float32 [N, C, H, W] in [-1, 1] (a converted copy for uint8 storage)."""
        if self.pixels is not None:
            return pixels_to_unit_range(self.pixels)
        return self._images

    @images.setter
    def images(self, images: torch.Tensor) -> None:
        if images.dtype == torch.uint8:
            self.pixels, self._images = images.contiguous(), None
        else:
            self.pixels, self._images = None, images.to(torch.float32).contiguous()

    def batch(self, index) -> torch.Tensor:
        """Images ``index`` (an int, slice or index tensor) as float32 in [-1, 1]."""
        if self.pixels is not None:
            return pixels_to_unit_range(self.pixels[index])
        return self._images[index]

    def __len__(self) -> int:
        return (self.pixels if self.pixels is not None else self._images).shape[0]

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        label = -1 if self.labels is None else int(self.labels[index])
        return self.batch(index), label

    @property
    def shape(self) -> torch.Size:
        """[N, C, H, W] of the images (without converting them)."""
        return (self.pixels if self.pixels is not None else self._images).shape

    @property
    def channels(self) -> int:
        return self.shape[1]

    @property
    def resolution(self) -> int:
        return self.shape[-1]

    def __repr__(self) -> str:
        n, c, h, w = self.shape
        return (
            f"ImageDataset(name={self.name!r}, n={n}, channels={c}, size={h}x{w}, "
            f"num_classes={self.num_classes})"
        )


def split_indices(n: int, split: str) -> np.ndarray:
    """Indices of `split` ("train", "test" or "all") in the fixed 90/10 split of n items."""
    if split == "all":
        return np.arange(n)
    order = np.random.RandomState(SPLIT_SEED).permutation(n)
    n_test = max(1, int(round(n * TEST_FRACTION))) if n >= 2 else 0
    chosen = order[:n_test] if split == "test" else order[n_test:]
    return np.sort(chosen)


def to_unit_range(pixels: np.ndarray, max_value: float) -> torch.Tensor:
    """[N, C, H, W] values in [0, max_value] -> float32 tensor in [-1, 1]."""
    x = torch.from_numpy(np.ascontiguousarray(pixels, dtype=np.float32))
    return (x * (2.0 / max_value) - 1.0).clamp_(-1.0, 1.0)


def pixels_to_unit_range(pixels: torch.Tensor) -> torch.Tensor:
    """uint8 pixels (any shape, any device) -> float32 in [-1, 1], as ``to_unit_range(., 255)``."""
    return (pixels.to(torch.float32) * (2.0 / 255.0) - 1.0).clamp_(-1.0, 1.0)


def resize_square(images: torch.Tensor, resolution: int) -> torch.Tensor:
    """Resizes square [N, C, S, S] images in [-1, 1] to resolution x resolution.

    Upscaling uses bilinear interpolation; downscaling is antialiased, so small patches of
    a photograph are not aliased.
    """
    if images.shape[-1] == resolution and images.shape[-2] == resolution:
        return images
    downscale = images.shape[-1] > resolution
    out = F.interpolate(
        images, size=(resolution, resolution), mode="bilinear", align_corners=False,
        antialias=downscale,
    )  # fmt: skip
    return out.clamp_(-1.0, 1.0)


def match_channels(images: torch.Tensor, channels: int | None) -> torch.Tensor:
    """Converts [N, C, H, W] to the requested channel count (None keeps it).

    Colour to grayscale uses the ITU-R 601 luma weights (as PIL's convert("L") does).
    """
    if channels is None or images.shape[1] == channels:
        return images
    if channels == 3:
        return images.expand(-1, 3, -1, -1).contiguous()
    weights = torch.tensor([0.299, 0.587, 0.114], dtype=images.dtype).view(1, 3, 1, 1)
    return (images * weights).sum(dim=1, keepdim=True)
