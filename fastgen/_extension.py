"""Loads the compiled extension (fastgen._C), and the emulated CUDA kernels
(fastgen._emulated_cuda, csrc/simt), remembering why, if either could not be loaded."""

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

# The CUDA kernels built against the SIMT emulator: once its table is installed in _C, the
# CPU kernels of ops with a CUDA kernel run that kernel while the emulated-cuda backend is on.
EMULATED_LOADED = False
EMULATED_ERROR: str | None = "fastgen._C is not loaded"
_emulated_cuda = None
if LOADED:
    try:
        _emulated_cuda = importlib.import_module("fastgen._emulated_cuda")
        _C._install_emulated_cuda(_emulated_cuda.kernels())
        EMULATED_LOADED, EMULATED_ERROR = True, None
    except (ImportError, RuntimeError) as exc:
        _emulated_cuda = None
        EMULATED_ERROR = f"{type(exc).__name__}: {exc}"


def emulated_ops() -> frozenset:
    """Ops whose CUDA kernel runs under the emulated-cuda backend."""
    return frozenset(_C._emulated_cuda_ops()) if EMULATED_LOADED else frozenset()


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
