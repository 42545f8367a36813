"""Image grids written as PNG files that say they are machine-generated.

Every PNG fastgen writes carries tEXt chunks:
  Software            "fastgen <version>"
  fastgen:generated   "true (machine-generated image)"
plus whatever the caller adds (by convention: "model" = checkpoint hash, "step", "seed"),
so a generated image can be told apart from a real one by anything that reads PNG metadata.
"""

from __future__ import annotations

import math
import os
from pathlib import Path

import numpy as np
import torch

from fastgen.utils.atomic import atomic_write

GENERATED_KEY = "fastgen:generated"
GENERATED_VALUE = "true (machine-generated image)"


def make_grid(
    images: torch.Tensor, nrow: int | None = None, padding: int = 2, pad_value: float = 0.0
) -> torch.Tensor:
    """Tiles [N, C, H, W] into one [C, rows*(H+p)+p, nrow*(W+p)+p] image.

    nrow: images per row (default ceil(sqrt(N)), a near-square grid). The padding is
    mid-grey (0 in [-1, 1]) so it separates both dark and bright images.
    """
    n, c, h, w = images.shape
    nrow = max(1, min(nrow or math.ceil(math.sqrt(n)), n))
    rows = math.ceil(n / nrow)
    grid = images.new_full(
        (c, rows * (h + padding) + padding, nrow * (w + padding) + padding), pad_value
    )
    for i in range(n):
        top = (i // nrow) * (h + padding) + padding
        left = (i % nrow) * (w + padding) + padding
        grid[:, top : top + h, left : left + w] = images[i]
    return grid


def uint8_levels(images: torch.Tensor) -> torch.Tensor:
    """Float images in [-1, 1] -> the uint8 tensor (same shape and device) a PNG of them holds:
    round((x + 1) * 127.5), clamped to [0, 255]; NaN -> 128 (grey), +-inf -> 255 / 0."""
    x = torch.nan_to_num(images.detach().float(), nan=0.0, posinf=1.0, neginf=-1.0)
    return ((x.clamp(-1.0, 1.0) + 1.0) * 127.5).round().to(torch.uint8)


def to_uint8(images: torch.Tensor) -> np.ndarray:
    """[..., C, H, W] float in [-1, 1] -> uint8 numpy [..., H, W, C], as ``uint8_levels``."""
    return uint8_levels(images.detach().to("cpu", torch.float32)).movedim(-3, -1).numpy()


def save_image_grid(
    images: torch.Tensor,
    path: str | os.PathLike,
    *,
    nrow: int | None = None,
    metadata: dict[str, str] | None = None,
) -> Path:
    """Writes images [N, C, H, W] (C = 1 or 3, values in [-1, 1]) as one PNG grid.

    The write is atomic (fastgen.utils.atomic.atomic_write: a temporary file in the same
    folder, fsync, then rename), so a reader never sees half a PNG; a failed write is a
    WriteError naming the file. Returns the path written. Raises ValueError for a bad
    argument.
    """
    from fastgen.utils.extras import require

    require("PIL", fn="fastgen.utils.images.save_image_grid")
    from PIL import Image, PngImagePlugin

    import fastgen

    images = torch.as_tensor(images)
    if images.dim() == 3:
        images = images.unsqueeze(0)
    if images.dim() != 4 or images.shape[1] not in (1, 3) or images.shape[0] == 0:
        raise ValueError(
            f"fastgen.utils.images.save_image_grid: images must be [N, C, H, W] with N >= 1 and "
            f"C = 1 or 3, got shape {tuple(images.shape)}"
        )
    path = Path(path)
    if path.suffix.lower() != ".png":
        raise ValueError(f"fastgen.utils.images.save_image_grid: path must end in .png, got {path}")
    pixels = to_uint8(make_grid(images.detach().float().cpu(), nrow=nrow))
    image = Image.fromarray(pixels[..., 0] if pixels.shape[-1] == 1 else pixels)

    info = PngImagePlugin.PngInfo()
    info.add_text("Software", f"fastgen {fastgen.__version__}")
    info.add_text(GENERATED_KEY, GENERATED_VALUE)
    for key, value in (metadata or {}).items():
        if key in ("Software", GENERATED_KEY):
            continue  # the provenance marks cannot be overridden
        info.add_text(str(key), str(value))

    return atomic_write(
        path,
        lambda handle: image.save(handle, format="PNG", pnginfo=info),
        fn="fastgen.utils.images.save_image_grid",
    )


def read_png_metadata(path: str | os.PathLike) -> dict[str, str]:
    """The PNG text chunks of a file (e.g. to check an image's fastgen provenance)."""
    from fastgen.utils.extras import require

    require("PIL", fn="fastgen.utils.images.read_png_metadata")
    from PIL import Image

    with Image.open(path) as image:
        image.load()
        return dict(getattr(image, "text", {}))
