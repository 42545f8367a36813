"""Datasets for fastgen: embedded digits and photo patches, image folders, MNIST IDX files.

Nothing here downloads: "digits" and "photos" come from files inside scikit-learn's wheel,
everything else from a local path.

    >>> data = load_dataset("digits", resolution=32)          # 1,617 train images, labels 0-9
    >>> image, label = data[0]                                 # [1, 32, 32] in [-1, 1], int
"""

from __future__ import annotations

from pathlib import Path

import torch

from fastgen.data.dataset import SPLITS, DataError, ImageDataset, match_channels, resize_square

__all__ = ["DataError", "ImageDataset", "load_dataset", "SOURCES"]

SOURCES = ("digits", "photos")


def load_dataset(
    source: str, *, resolution: int = 32, channels: int | None = None, split: str = "train"
) -> ImageDataset:
    """Loads a whole dataset into memory as an ImageDataset.

    source:
      "digits"  scikit-learn's 1,797 8x8 handwritten digits upscaled (bilinear) to the
                resolution, 1 channel, labels 0-9;
      "photos"  456 overlapping 64x64 RGB patches of scikit-learn's two sample photographs,
                resized to the resolution, unlabelled;
      a folder  of images in any format Pillow reads (PNG, JPEG, WebP, BMP, ...; recursive;
                resized and center-cropped; held as uint8; labels from first-level
                subfolders when every image is in one; prints how many were loaded and
                skipped, warns when stray images drop the labels), or of MNIST IDX files;
      a file    an MNIST-format IDX images file (gzip or plain; labels read from the
                matching *-labels-idx1-* file beside it when present).
    resolution: output height and width in pixels.
    channels: 1 or 3 to convert (grayscale <-> RGB); None keeps the source's own.
    split: "train" (90%), "test" (10%) or "all". The split is a permutation from a fixed
      seed, so it is the same on every machine; an IDX folder with train and t10k files
      uses those instead.

    Raises DataError (a ValueError) naming what was expected where.
    """
    if not isinstance(source, str | Path) or not str(source):
        raise DataError(
            f"fastgen.data.load_dataset: source must be a non-empty string, got {source!r}"
        )
    if isinstance(resolution, bool) or not isinstance(resolution, int) or resolution < 1:
        raise DataError(
            f"fastgen.data.load_dataset: resolution must be a positive int, got {resolution!r}"
        )
    if channels not in (None, 1, 3):
        raise DataError(
            f"fastgen.data.load_dataset: channels must be None, 1 or 3, got {channels!r}"
        )
    if split not in SPLITS:
        raise DataError(
            f"fastgen.data.load_dataset: split must be one of {', '.join(SPLITS)}, got {split!r}"
        )
    source = str(source)
    labels, class_names, unlabelled_reason = None, None, None
    num_classes = None
    if source == "digits":
        from fastgen.data.builtin import load_digits

        images, labels = load_digits(split)
        num_classes = 10
        class_names = [str(d) for d in range(10)]
    elif source == "photos":
        from fastgen.data.builtin import load_photo_patches

        images = load_photo_patches(split)
        unlabelled_reason = "'photos' has no labels (patches of two photographs)"
    else:
        images, labels, class_names, unlabelled_reason = _load_path(
            Path(source).expanduser(), resolution, channels, split
        )
    if images.shape[0] == 0:
        raise DataError(f"fastgen.data.load_dataset: split {split!r} of {source!r} is empty")
    if images.dtype != torch.uint8:  # uint8 folder images come decoded at size and channels
        images = match_channels(resize_square(images, resolution), channels)
    if class_names is not None:
        num_classes = len(class_names)
    name = source if source in SOURCES else str(Path(source).expanduser().resolve())
    return ImageDataset(
        images, labels, name=name, num_classes=num_classes, class_names=class_names,
        unlabelled_reason=unlabelled_reason,
    )  # fmt: skip


def _load_path(path: Path, resolution: int, channels: int | None, split: str):
    from fastgen.data.folder import image_suffixes, load_folder
    from fastgen.data.idx import is_idx_name, load_idx

    expected = "expected 'digits', 'photos', a folder of images, or an MNIST IDX file/folder"
    if not path.exists():
        raise DataError(f"fastgen.data.load_dataset: no such file or folder: {path} ({expected})")
    if path.is_dir():
        try:
            has_idx = any(p.is_file() and is_idx_name(p) for p in path.iterdir())
        except OSError as err:
            raise DataError(f"fastgen.data.load_dataset: cannot list folder {path}: {err}") from err
        if has_idx:
            images, labels = load_idx(path, split)
            return images, labels, None, None
        return load_folder(path, resolution, channels, split)
    if _looks_like_image(path, image_suffixes):
        raise DataError(
            f"fastgen.data.load_dataset: {path} is a single image; {expected} (put images "
            f"in a folder)"
        )
    images, labels = load_idx(path, split)
    return images, labels, None, None


def _looks_like_image(path: Path, image_suffixes) -> bool:
    if path.suffix.lower() in (".png", ".jpg", ".jpeg"):  # known without Pillow
        return True
    try:
        return path.suffix.lower() in image_suffixes()
    except ImportError:
        return False
