"""A folder of images in any format Pillow opens, searched recursively.

Formats: every file suffix Pillow registers a decoder for (PNG, JPEG, WebP, BMP, GIF, TIFF,
PPM, ...; ``image_suffixes()``), in files and folders not starting with a dot. A file that
cannot be decoded is skipped with a warning (the first few by name, then a count), and one
line on stderr says how many images were loaded and how many skipped.

Each image is resized so its shorter side is the resolution and center-cropped to a square
(bicubic). Grayscale images stay one channel, everything else becomes RGB (alpha dropped);
with channels=None a folder mixing both is loaded as RGB.

Labels: when there are at least two first-level subfolders and every image is in one, the
subfolder names (sorted) become the class labels, as in torchvision's ImageFolder. Otherwise
the folder is unlabelled, and ``ImageDataset.unlabelled_reason`` says why; images lying next
to class folders (which would otherwise have given labels) are warned about by name. The
labelling is decided over the whole folder, before the train/test split, so both splits agree.

Memory: images are decoded in a thread pool (Pillow releases the GIL while it decodes and
resizes) straight into one uint8 array [N, C, R, R], a byte per value; the ImageDataset keeps
them as uint8 (a quarter of float32) and converts an image to floats when it is read. A
progress bar (tqdm, stderr) shows for folders of PROGRESS_MIN_IMAGES images or more.
"""

from __future__ import annotations

import os
import sys
import warnings
from concurrent.futures import ThreadPoolExecutor
from functools import lru_cache
from pathlib import Path

import numpy as np
import torch

from fastgen.data.dataset import DataError, split_indices

GRAY_MODES = ("1", "L", "LA", "I", "I;16", "I;16B", "I;16L", "F")
PROGRESS_MIN_IMAGES = 2000
WARN_UNREADABLE = 5  # unreadable files named one by one; the rest are counted
DECODE_THREADS = 8
FN = "fastgen.data.load_dataset"


@lru_cache(maxsize=1)
def image_suffixes() -> tuple[str, ...]:
    """Lower-case suffixes of the formats Pillow can decode here (its plugins, as installed)."""
    from PIL import Image, ImageFile

    Image.init()
    suffixes = []
    for suffix, name in Image.registered_extensions().items():
        opener = Image.OPEN.get(name)
        if opener is None:
            continue  # save-only formats (PDF, Palm)
        # Stub formats (HDF5, GRIB, BUFR) and MPEG are identified, never decoded: data or video
        # files beside the images would only be "unreadable images".
        factory = opener[0]
        if name == "MPEG" or (
            isinstance(factory, type) and issubclass(factory, ImageFile.StubImageFile)
        ):
            continue
        suffixes.append(suffix.lower())
    return tuple(sorted(set(suffixes)))


def find_images(folder: Path) -> list[Path]:
    suffixes = set(image_suffixes())
    return sorted(
        p
        for p in folder.rglob("*")
        if p.suffix.lower() in suffixes
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


def folder_labels(
    folder: Path, paths: list[Path]
) -> tuple[torch.Tensor | None, list[str] | None, str | None]:
    """(labels of `paths`, class names, None) or (None, None, why the folder is unlabelled)."""
    parts = [p.relative_to(folder).parts for p in paths]
    class_names = sorted({part[0] for part in parts if len(part) >= 2})
    stray = [p.name for p, part in zip(paths, parts) if len(part) == 1]
    if len(class_names) >= 2 and not stray:
        index = {name: i for i, name in enumerate(class_names)}
        return (
            torch.tensor([index[part[0]] for part in parts], dtype=torch.int64),
            class_names,
            None,
        )
    if len(class_names) >= 2:
        shown = ", ".join(stray[:3]) + (", ..." if len(stray) > 3 else "")
        count = f"1 image at its top level ({shown}) is" if len(stray) == 1 else (
            f"{len(stray)} images at its top level ({shown}) are"
        )  # fmt: skip
        reason = (
            f"{folder} has no labels: {count} not in a class folder, next to the "
            f"{len(class_names)} class folders; move {'it' if len(stray) == 1 else 'them'} "
            "into a class folder (or away) to label the folder"
        )
        warnings.warn(f"{FN}: {reason}", stacklevel=3)
        return None, None, reason
    if len(class_names) == 1 and not stray:
        return None, None, (
            f"{folder} has no labels: every image is in one subfolder ({class_names[0]}); "
            "labels need two or more class folders"
        )  # fmt: skip
    return None, None, f"{folder} has no labels: its images are not in class subfolders"


def _progress(total: int, folder: Path):
    """A tqdm bar on stderr for large folders (main process only), else None."""
    if total < PROGRESS_MIN_IMAGES or os.environ.get("RANK", "0") != "0":
        return None
    try:
        from tqdm.auto import tqdm
    except ImportError:  # the bar is a convenience; loading works without it
        return None
    return tqdm(total=total, desc=f"decoding {folder.name or folder}", unit="img", file=sys.stderr)


def decode_images(
    folder: Path, paths: list[Path], resolution: int, channels: int | None
) -> tuple[np.ndarray, np.ndarray]:
    """(uint8 [N_kept, C, R, R], bool mask [N] of the paths that decoded)."""
    from PIL import Image

    def read(path: Path):
        try:
            return _read(path, resolution, channels)
        except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as err:
            return err

    # One channel until the first colour image (then RGB for all, as the module doc says).
    pixels = np.empty((len(paths), 3 if channels == 3 else 1, resolution, resolution), np.uint8)
    kept = np.zeros(len(paths), dtype=bool)
    unreadable = 0
    bar = _progress(len(paths), folder)
    workers = max(1, min(DECODE_THREADS, os.cpu_count() or 1, len(paths)))
    try:
        with ThreadPoolExecutor(max_workers=workers) as pool:
            for i, (path, result) in enumerate(zip(paths, pool.map(read, paths))):
                if bar is not None:
                    bar.update(1)
                if isinstance(result, Exception):
                    unreadable += 1
                    if unreadable <= WARN_UNREADABLE:
                        warnings.warn(
                            f"{FN}: skipping unreadable image {path}: {result}", stacklevel=3
                        )
                    continue
                if result.ndim == 3 and pixels.shape[1] == 1:
                    pixels = np.repeat(pixels, 3, axis=1)
                pixels[i] = result.transpose(2, 0, 1) if result.ndim == 3 else result
                kept[i] = True
    finally:
        if bar is not None:
            bar.close()
    if unreadable > WARN_UNREADABLE:
        warnings.warn(
            f"{FN}: skipped {unreadable - WARN_UNREADABLE} more unreadable images under {folder}",
            stacklevel=3,
        )
    return (pixels if kept.all() else pixels[kept]), kept


def load_folder(
    folder: Path, resolution: int, channels: int | None, split: str
) -> tuple[torch.Tensor, torch.Tensor | None, list[str] | None, str | None]:
    """Folder images as (uint8 [N, C, R, R], labels or None, class names or None, why there
    are no labels or None)."""
    from fastgen.utils.extras import require

    require("PIL", fn=FN)
    paths = find_images(folder)
    if not paths:
        raise DataError(
            f"{FN}: no images (PNG, JPEG, WebP, BMP, ...: any format Pillow reads) found "
            f"under {folder}"
        )
    labels, class_names, reason = folder_labels(folder, paths)
    found = len(paths)
    chosen = split_indices(found, split)
    if len(chosen) == 0:
        raise DataError(f"{FN}: split {split!r} of {folder} is empty")
    paths = [paths[i] for i in chosen]
    pixels, kept = decode_images(folder, paths, resolution, channels)
    skipped = len(paths) - int(kept.sum())
    if os.environ.get("RANK", "0") == "0":  # under torchrun, one line, not one per rank
        part = "" if split == "all" else f" of the {split} split ({len(chosen)} of {found} files)"
        print(
            f"{FN}: {folder}: loaded {pixels.shape[0]} images ({skipped} skipped){part}",
            file=sys.stderr,
        )
    if pixels.shape[0] == 0:
        raise DataError(f"{FN}: none of the images under {folder} could be read")
    if labels is not None:
        labels = labels[torch.from_numpy(chosen)][torch.from_numpy(kept)]
    return torch.from_numpy(pixels), labels, class_names, reason
