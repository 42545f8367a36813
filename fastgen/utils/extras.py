"""The optional dependencies of the ``[train]`` extra, checked before the work that needs them.

Training, sample grids, loss plots and image folders need packages that a plain
``pip install fastgen`` does not bring. Without this check a missing one is a traceback, and
for the loss plot (matplotlib) only after the whole training ran. ``require`` finds the
modules without importing them (cheap) and raises one ``MissingExtraError`` naming every
missing package and the install command.
"""

from __future__ import annotations

import importlib.util

# import name -> package name on PyPI: the modules of the [train] extra (pyproject.toml)
TRAIN_PACKAGES = {"tqdm": "tqdm", "matplotlib": "matplotlib", "PIL": "pillow",
                  "sklearn": "scikit-learn"}  # fmt: skip


class MissingExtraError(ImportError):
    """An optional dependency is not installed; the message says what to install."""


def missing(*modules: str) -> list[str]:
    """The modules of `modules` that cannot be imported (found without importing them)."""
    absent = []
    for name in modules:
        try:
            found = importlib.util.find_spec(name) is not None
        except (ImportError, ValueError):  # a broken install or a module set to None
            found = False
        if not found:
            absent.append(name)
    return absent


def require(*modules: str, fn: str | None = None) -> None:
    """Raises MissingExtraError unless every module (import names, e.g. "PIL") is installed."""
    absent = missing(*modules)
    if not absent:
        return
    packages = [TRAIN_PACKAGES.get(name, name) for name in absent]
    verb = "is" if len(packages) == 1 else "are"
    prefix = f"{fn}: " if fn else ""
    raise MissingExtraError(
        f"{prefix}{', '.join(packages)} {verb} not installed (fastgen's [train] extra): "
        f'pip install ".[train]" in fastgen\'s source folder, or pip install {" ".join(packages)}'
    )
