"""fastgen: fused C++/CUDA kernels and drop-in layers for GANs and VAEs."""

__version__ = "0.1.0"

import os as _os
import sys as _sys


def _cli() -> bool:
    """Whether this import is the `fastgen` command's (python -m fastgen, or the script)."""
    argv = getattr(_sys, "orig_argv", _sys.argv)
    return argv[1:3] == ["-m", "fastgen"] or _os.path.basename(_sys.argv[0]) == "fastgen"


try:
    # _extension is imported first (the list is in that order): it loads the native library
    # before the ops register their fake kernels and autograd against it.
    from fastgen import (  # noqa: E402
        _extension,  # noqa: F401
        nn,
        ops,
    )
    from fastgen._backend import registry, set_backend  # noqa: E402
except ValueError as _err:  # a bad FASTGEN_BACKEND / FASTGEN_STRICT value
    if not _cli():
        raise
    _sys.stderr.write(f"fastgen: error: {_err}\n")  # one line for the command, no traceback
    raise SystemExit(2) from None
from fastgen._info import info  # noqa: E402

__all__ = ["info", "nn", "ops", "registry", "set_backend", "__version__"]
