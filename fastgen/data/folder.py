"""A folder of PNG/JPEG images, searched recursively.

Each image is resized so its shorter side is the resolution and center-cropped to a square
(bicubic). Grayscale images stay one channel, everything else becomes RGB (alpha dropped);
with channels=None a folder mixing both is loaded as RGB. When every image sits in a
first-level subfolder and there are at least two of them, the subfolder names (sorted)
become the class labels, as in torchvision's ImageFolder. An image that cannot be decoded
is skipped with a warning.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import torch

from fastgen.data.dataset import DataError, split_indices, to_unit_range

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")
GRAY_MODES = ("1", "L", "LA", "I", "I;16", "I;16B", "I;16L", "F")


def find_images(folder: Path) -> list[Path]:
    return sorted(
        p
        for p in folder.rglob("*")
        if p.suffix.lower() in IMAGE_SUFFIXES
        and p.is_file()
        and not any(part.startswith(".") for part in p.relative_to(folder).parts)
    )


def _read(path: Path, resolution: int, channels: int | None) -> np.ndarray:
    """One image as uint8 [H, W] (grayscale) or [H, W, 3] at resolution x resolution."""
    from PIL import Image, ImageOps

    with Image.open(path) as image:
        image.load()
        gray = image.mode in GRAY_MODES if channels is None else channels == 1
        if image.mode in ("I", "I;16", "I;16B", "I;16L", "F"):
            # 16-bit / float grayscale: scale to 8 bits before the L conversion clips it.
            array = np.asarray(image, dtype=np.float32)
            top = max(float(array.max()), 1.0)
            image = Image.fromarray((array * (255.0 / top)).astype(np.uint8))
        image = image.convert("L" if gray else "RGB")
        image = ImageOps.fit(image, (resolution, resolution), method=Image.Resampling.BICUBIC)
        return np.asarray(image, dtype=np.uint8)


def load_folder(
    folder: Path, resolution: int, channels: int | None, split: str
) -> tuple[torch.Tensor, torch.Tensor | None, list[str] | None]:
    """Folder images as ([N, C, R, R] in [-1, 1], labels or None, class names or None)."""
    from PIL import Image

    paths = find_images(folder)
    if not paths:
        raise DataError(
            f"fastgen.data.load_dataset: no PNG/JPEG images ({', '.join(IMAGE_SUFFIXES)}) "
            f"found under {folder}"
        )
    paths = [paths[i] for i in split_indices(len(paths), split)]
    if not paths:
        raise DataError(f"fastgen.data.load_dataset: split {split!r} of {folder} is empty")
    arrays, kept = [], []
    for path in paths:
        try:
            arrays.append(_read(path, resolution, channels))
            kept.append(path)
        except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as err:
            warnings.warn(
                f"fastgen.data.load_dataset: skipping unreadable image {path}: {err}",
                stacklevel=3,
            )
    if not arrays:
        raise DataError(
            f"fastgen.data.load_dataset: none of the images under {folder} could be read"
        )
    any_color = any(a.ndim == 3 for a in arrays)
    pixels = np.stack(
        [(np.repeat(a[..., None], 3, axis=2) if any_color and a.ndim == 2 else a) for a in arrays]
    )
    pixels = pixels.transpose(0, 3, 1, 2) if any_color else pixels[:, None]
    images = to_unit_range(pixels, max_value=255.0)

    tops = [p.relative_to(folder).parts for p in kept]
    class_names = sorted({parts[0] for parts in tops})
    if all(len(parts) >= 2 for parts in tops) and len(class_names) >= 2:
        index = {name: i for i, name in enumerate(class_names)}
        labels = torch.tensor([index[parts[0]] for parts in tops], dtype=torch.int64)
        return images, labels, class_names
    return images, None, None
