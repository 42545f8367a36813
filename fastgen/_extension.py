"""Loads the compiled extension (fastgen._C) and remembers why, if it could not."""

from __future__ import annotations

import importlib

import torch  # noqa: F401  (loads libc10/libtorch before the extension)

LOADED = False
LOAD_ERROR: str | None = None

try:
    _C = importlib.import_module("fastgen._C")
    LOADED = True
except ImportError as exc:  # not built, or built against another torch
    _C = None
    LOAD_ERROR = f"{type(exc).__name__}: {exc}"


def build_config() -> dict:
    """What setup.py recorded when the extension was built (empty if never built)."""
    try:
        from fastgen import _build_config as cfg
    except ImportError:
        return {}
    return {
        "with_cuda": cfg.WITH_CUDA,
        "cuda_archs": list(cfg.CUDA_ARCHS),
        "build_torch_version": cfg.BUILD_TORCH_VERSION,
        "build_cuda_version": cfg.BUILD_CUDA_VERSION,
    }
