"""Checks of plain arguments shared by the configs (fastgen.config, no torch) and the models:
one rule each, raising fastgen.utils.errors.ArgumentError, which a command reports under the
flag the user typed."""

from __future__ import annotations

import math

from fastgen.utils.errors import ArgumentError


def check_int(fn: str, name: str, value, *, minimum: int = 1) -> int:
    """An int >= minimum (not a bool, which int() would take as 0 or 1)."""
    if not isinstance(value, int) or isinstance(value, bool) or value < minimum:
        raise ArgumentError(fn, name, f"must be an int >= {minimum}, got {value!r}")
    return value


def check_resolution(fn: str, resolution) -> int:
    """The image models' sizes: a power of two from 16 to 256; returns log2(resolution)."""
    if (
        not isinstance(resolution, int)
        or isinstance(resolution, bool)
        or not 16 <= resolution <= 256
        or resolution & (resolution - 1)
    ):
        raise ArgumentError(
            fn, "resolution", f"must be a power of two from 16 to 256, got {resolution!r}"
        )
    return int(math.log2(resolution))


def check_channels(fn: str, channels) -> None:
    if channels not in (1, 3):
        raise ArgumentError(fn, "channels", f"must be 1 (grayscale) or 3 (RGB), got {channels!r}")
