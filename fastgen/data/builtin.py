"""The two sources that ship inside scikit-learn's wheel, so nothing is ever downloaded.

digits: 1,797 scanned handwritten digits, 8x8, 17 grey levels (0 = background, 16 = ink),
        labels 0-9 (sklearn.datasets.load_digits reads a CSV inside the wheel).
photos: two 427x640 RGB photographs (sklearn.datasets.load_sample_images), cut into 64x64
        patches on a 32-pixel stride: 2 x 12 x 19 = 456 overlapping patches. The 90/10 split
        is over patches, so a test patch can share pixels with its train neighbours: the
        split is for monitoring, not for a leak-free held-out likelihood.
"""

from __future__ import annotations

import numpy as np
import torch

from fastgen.data.dataset import split_indices, to_unit_range

PATCH = 64
PATCH_STRIDE = 32


def _sklearn_datasets():
    from fastgen.utils.extras import require

    # the 'digits' and 'photos' sources are files inside scikit-learn's wheel
    require("sklearn", fn="fastgen.data.load_dataset")
    import sklearn.datasets

    return sklearn.datasets


def load_digits(split: str) -> tuple[torch.Tensor, torch.Tensor]:
    """Digits as ([N, 1, 8, 8] in [-1, 1], int64 labels [N]) for the given split."""
    bunch = _sklearn_datasets().load_digits()
    keep = split_indices(len(bunch.target), split)
    images = to_unit_range(bunch.images[keep][:, None], max_value=16.0)
    return images, torch.from_numpy(bunch.target[keep].astype(np.int64))


def load_photo_patches(split: str) -> torch.Tensor:
    """Sample-photograph patches as [N, 3, 64, 64] in [-1, 1] for the given split."""
    patches = []
    for photo in _sklearn_datasets().load_sample_images().images:
        height, width, _ = photo.shape
        for top in range(0, height - PATCH + 1, PATCH_STRIDE):
            for left in range(0, width - PATCH + 1, PATCH_STRIDE):
                patches.append(photo[top : top + PATCH, left : left + PATCH])
    pixels = np.stack(patches).transpose(0, 3, 1, 2)  # [N, 3, 64, 64] uint8
    return to_unit_range(pixels[split_indices(len(pixels), split)], max_value=255.0)
