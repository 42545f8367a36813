"""MNIST-format IDX files (plain or gzip) from a local file or folder.

IDX layout: two zero bytes, a type byte (0x08 uint8, 0x09 int8, 0x0B int16, 0x0C int32,
0x0D float32, 0x0E float64), a byte with the number of dimensions, then one big-endian
uint32 per dimension and the data, big-endian, row-major. Images are [N, H, W] (or
[N, H, W, C] with C = 1 or 3); labels are [N].

A folder is searched for the usual names: train-images-idx3-ubyte[.gz] with
train-labels-idx1-ubyte[.gz], and t10k-images-idx3-ubyte[.gz] (or test-...) with its labels.
"""

from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np
import torch

from fastgen.data.dataset import DataError, split_indices, to_unit_range

IDX_TYPES = {0x08: ">u1", 0x09: ">i1", 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}
GZIP_MAGIC = b"\x1f\x8b"
SPLIT_PREFIXES = {"train": ("train",), "test": ("t10k", "test")}


def is_idx_name(path: Path) -> bool:
    name = path.name.lower()
    return "idx1" in name or "idx3" in name or name.endswith((".idx", ".idx.gz"))


def read_idx(path: Path) -> np.ndarray:
    """Reads one IDX file into a numpy array; DataError naming the file if it is not one."""
    try:
        raw = path.read_bytes()
        if raw[:2] == GZIP_MAGIC:
            raw = gzip.decompress(raw)
    except (OSError, EOFError) as err:
        raise DataError(f"fastgen.data.load_dataset: cannot read IDX file {path}: {err}") from err
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] not in IDX_TYPES or raw[3] == 0:
        raise DataError(
            f"fastgen.data.load_dataset: {path} is not an IDX file (expected the MNIST "
            f"format: bytes 00 00 <type> <ndim> header)"
        )
    ndim = raw[3]
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise DataError(f"fastgen.data.load_dataset: IDX file {path} is truncated (header)")
    shape = tuple(int(d) for d in np.frombuffer(raw, dtype=">u4", count=ndim, offset=4))
    dtype = np.dtype(IDX_TYPES[raw[2]])
    expected = int(np.prod(shape)) * dtype.itemsize
    if len(raw) - header != expected:
        raise DataError(
            f"fastgen.data.load_dataset: IDX file {path} holds {len(raw) - header} data bytes "
            f"but its header {shape} says {expected} (truncated or corrupt)"
        )
    return np.frombuffer(raw, dtype=dtype, offset=header).reshape(shape)


def _labels_path(images_path: Path) -> Path | None:
    """The labels file beside an images file (same name with idx3/images -> idx1/labels)."""
    name = images_path.name.replace("idx3", "idx1").replace("images", "labels")
    if name == images_path.name:
        return None
    for candidate in (name, name[:-3] if name.endswith(".gz") else name + ".gz"):
        if (images_path.parent / candidate).is_file():
            return images_path.parent / candidate
    return None


def _load_pair(images_path: Path) -> tuple[np.ndarray, np.ndarray | None]:
    images = read_idx(images_path)
    if images.ndim == 4 and images.shape[-1] in (1, 3):
        images = images.transpose(0, 3, 1, 2)
    elif images.ndim == 3:
        images = images[:, None]
    else:
        raise DataError(
            f"fastgen.data.load_dataset: IDX file {images_path} has shape {images.shape}; "
            f"expected images [N, H, W] or [N, H, W, C] (a labels file was given?)"
        )
    labels_path = _labels_path(images_path)
    labels = None
    if labels_path is not None:
        labels = read_idx(labels_path)
        if labels.shape != (images.shape[0],):
            raise DataError(
                f"fastgen.data.load_dataset: labels {labels_path} have shape {labels.shape} "
                f"but {images_path} holds {images.shape[0]} images"
            )
    return images, labels


def _find_split_files(folder: Path) -> dict[str, Path]:
    found = {}
    for path in sorted(folder.iterdir()):
        name = path.name.lower()
        if not path.is_file() or "idx3" not in name:
            continue
        for split, prefixes in SPLIT_PREFIXES.items():
            if name.startswith(prefixes) and split not in found:
                found[split] = path
    return found


def load_idx(path: Path, split: str) -> tuple[torch.Tensor, torch.Tensor | None]:
    """IDX images as ([N, C, H, W] in [-1, 1], labels or None) for the given split.

    A folder with train and t10k/test files uses them as the splits ("all" joins them). A
    single file, or a folder with one images file, is split 90/10 like every other source.
    """
    if path.is_dir():
        files = _find_split_files(path)
        if not files:
            raise DataError(
                f"fastgen.data.load_dataset: no IDX images file (name containing 'idx3', e.g. "
                f"train-images-idx3-ubyte.gz) in {path}"
            )
        if len(files) == 1:
            return load_idx(next(iter(files.values())), split)
        wanted = ["train", "test"] if split == "all" else [split]
        pairs = [_load_pair(files[s]) for s in wanted]
        if any(labels is None for _, labels in pairs):
            labels = None
        else:
            labels = np.concatenate([labels for _, labels in pairs])
        images = np.concatenate([images for images, _ in pairs])
    else:
        images, labels = _load_pair(path)
        keep = split_indices(images.shape[0], split)
        images = images[keep]
        labels = None if labels is None else labels[keep]
    max_value = 255.0 if images.dtype == np.uint8 else max(float(images.max()), 1e-12)
    if images.dtype.kind == "f" and float(images.max()) <= 1.0:
        max_value = 1.0
    tensor = to_unit_range(images.astype(np.float32), max_value=max_value)
    return tensor, None if labels is None else torch.from_numpy(labels.astype(np.int64))
