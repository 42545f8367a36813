"""fastgen: fused C++/CUDA kernels and drop-in layers for GANs and VAEs."""

__version__ = "0.1.0"

from fastgen import _extension  # noqa: F401  (loads the native library first)
from fastgen import nn, ops  # noqa: E402
from fastgen._backend import registry, set_backend  # noqa: E402
from fastgen._info import info  # noqa: E402

__all__ = ["info", "nn", "ops", "registry", "set_backend", "__version__"]
