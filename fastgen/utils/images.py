"""Image grids written as image files that say they are machine-generated.

Every image fastgen writes carries the XMP marks of fastgen.provenance.marks (the IPTC digital
source type trainedAlgorithmicMedia, fastgen as the software agent, and the caller's `marks`:
the generator's identity and the sampling that reproduces the image); ``provenance=False``
(the commands' --no-provenance) leaves them out. A PNG also carries tEXt chunks:
  Software            "fastgen <version>"
  fastgen:generated   "true (machine-generated image)"
plus whatever the caller adds (by convention: "model" = checkpoint hash, "step", "seed").
With a `signer` (fastgen.provenance.signing) the file also gets a signed C2PA manifest.
"""

from __future__ import annotations

import io
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


def grid_pixels(images: torch.Tensor, nrow: int | None = None, padding: int = 2) -> np.ndarray:
    """The uint8 pixels [H, W, C] that save_image_grid writes for images [N, C, H, W] (make_grid,
    then to_uint8): what regeneration compares a file against."""
    return to_uint8(make_grid(images.detach().float().cpu(), nrow=nrow, padding=padding))


def save_image_grid(
    images: torch.Tensor,
    path: str | os.PathLike,
    *,
    nrow: int | None = None,
    padding: int = 2,
    metadata: dict[str, str] | None = None,
    marks: dict | None = None,
    provenance: bool = True,
    signer=None,
) -> Path:
    """Writes images [N, C, H, W] (C = 1 or 3, values in [-1, 1]) as one image grid (`padding`
    mid-grey pixels around each image; 0 for one image alone): PNG, or JPEG (quality 95) /
    lossless WebP by the path's suffix.

    The file carries the XMP provenance marks (fastgen.provenance.marks) with `marks` (field
    -> value, fastgen.provenance.record.FIELDS) unless `provenance` is False; `metadata` adds
    PNG text chunks; `signer` (a fastgen.provenance.signing.Signer) embeds a signed C2PA
    manifest. The write is atomic (fastgen.utils.atomic.atomic_write: a temporary file in the
    same folder, fsync, then rename), so a reader never sees half an image; a failed write is
    a WriteError naming the file. Returns the path written. Raises ValueError for a bad
    argument.
    """
    from fastgen.utils.extras import require

    fn = "fastgen.utils.images.save_image_grid"
    require("PIL", fn=fn)
    from PIL import Image

    from fastgen.provenance import marks as xmp

    images = torch.as_tensor(images)
    if images.dim() == 3:
        images = images.unsqueeze(0)
    if images.dim() != 4 or images.shape[1] not in (1, 3) or images.shape[0] == 0:
        raise ValueError(
            f"{fn}: images must be [N, C, H, W] with N >= 1 and "
            f"C = 1 or 3, got shape {tuple(images.shape)}"
        )
    path = Path(path)
    image_format = xmp.FORMATS.get(path.suffix.lower())
    if image_format is None:
        raise ValueError(f"{fn}: path must end in .png, .jpg, .jpeg or .webp, got {path}")
    if signer is not None and not provenance:
        raise ValueError(f"{fn}: signer given with provenance=False: sign a marked image or none")
    pixels = grid_pixels(images, nrow, padding)
    image = Image.fromarray(pixels[..., 0] if pixels.shape[-1] == 1 else pixels)
    fields = {} if marks is None else dict(marks)
    packet = xmp.xmp_packet(fields) if provenance else None
    options = {**xmp.save_options(image_format, packet), **ENCODER_OPTIONS[image_format]}
    if image_format == "PNG":
        _png_text(options["pnginfo"], metadata)
    buffer = io.BytesIO()
    image.save(buffer, format=image_format, **options)
    data = buffer.getvalue()
    if signer is not None:
        data = signer.sign(data, image_format, fields, title=path.name)
    return atomic_write(path, lambda handle: handle.write(data), fn=fn)


# How each format is encoded: lossless where the format allows, so the file holds the levels
# regeneration computes; JPEG at a fixed quality, so regeneration can encode the same way.
ENCODER_OPTIONS = {"PNG": {}, "JPEG": {"quality": 95}, "WEBP": {"lossless": True}}


def _png_text(info, metadata: dict[str, str] | None) -> None:
    import fastgen

    info.add_text("Software", f"fastgen {fastgen.__version__}")
    info.add_text(GENERATED_KEY, GENERATED_VALUE)
    for key, value in (metadata or {}).items():
        if key in ("Software", GENERATED_KEY):
            continue  # the provenance marks cannot be overridden
        info.add_text(str(key), str(value))


def read_png_metadata(path: str | os.PathLike) -> dict[str, str]:
    """The PNG text chunks of a file (e.g. to check an image's fastgen provenance)."""
    from fastgen.utils.extras import require

    require("PIL", fn="fastgen.utils.images.read_png_metadata")
    from PIL import Image

    with Image.open(path) as image:
        image.load()
        return dict(getattr(image, "text", {}))
