"""fastgen: fused C++/CUDA kernels and drop-in layers for GANs and VAEs."""

__version__ = "0.1.0"

# _extension is imported first (the list is in that order): it loads the native library
# before the ops register their fake kernels and autograd against it.
from fastgen import (  # noqa: E402
    _extension,  # noqa: F401
    nn,
    ops,
)
from fastgen._backend import registry, set_backend  # noqa: E402
from fastgen._info import info  # noqa: E402

__all__ = ["info", "nn", "ops", "registry", "set_backend", "__version__"]
