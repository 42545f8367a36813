"""fastgen: fused C++/CUDA kernels and drop-in layers for GANs and VAEs."""

__version__ = "0.1.0"

import os as _os
import sys as _sys


def _cli() -> bool:
    """Whether this import is the `fastgen` command's (python -m fastgen, or the script)."""
    argv = list(getattr(_sys, "orig_argv", _sys.argv))
    module = argv[argv.index("-m") + 1 : argv.index("-m") + 2] if "-m" in argv else []
    return module == ["fastgen"] or _os.path.basename(_sys.argv[0]) == "fastgen"


_LAZY = {"nn", "ops", "registry", "set_backend", "info"}


def _load():
    """Imports the library (the native extension first: it loads the native library before
    the ops register their fake kernels and autograd against it)."""
    import importlib

    try:
        for name in ("_extension", "nn", "ops", "_backend"):
            importlib.import_module(f"fastgen.{name}")
    except ValueError as err:  # a bad FASTGEN_BACKEND / FASTGEN_STRICT value
        if not _cli():
            raise
        _sys.stderr.write(f"fastgen: error: {err}\n")  # one line for the command, no traceback
        raise SystemExit(2) from None
    backend = _sys.modules["fastgen._backend"]
    info = importlib.import_module("fastgen._info").info
    globals().update(registry=backend.registry, set_backend=backend.set_backend, info=info)


def __getattr__(name: str):
    # The `fastgen` command imports only what its subcommand needs, so `fastgen --help` and
    # `fastgen train --help` never import torch; every other import loads everything at once.
    if name in _LAZY:
        _load()
        if name in globals():
            return globals()[name]
    raise AttributeError(f"module 'fastgen' has no attribute {name!r}")


if not _cli():
    _load()

__all__ = ["info", "nn", "ops", "registry", "set_backend", "__version__"]
