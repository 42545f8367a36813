"""Environment variables set for the length of a block, then restored."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator, Mapping


def _put(values: Mapping[str, str | None]) -> None:
    """Sets each variable of `values`; None unsets it."""
    for name, value in values.items():
        if value is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = value


@contextlib.contextmanager
def environment(values: Mapping[str, str | None]) -> Iterator[None]:
    """Sets each variable of `values` (None: unset) for the block, then puts every one back as
    it was, set or unset. fastgen's native ops read some of them on every call (the CPU
    convolution's policy), so this switches them per call or per block."""
    saved = {name: os.environ.get(name) for name in values}
    try:
        _put(values)
        yield
    finally:
        _put(saved)
