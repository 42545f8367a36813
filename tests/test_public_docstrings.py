"""Every public op, layer and metric ends its docstring with a scannable block (issue 27, item
5; /work/shared/STYLE.md): ``Args:`` naming each parameter of its signature (a class's
constructor), then ``Returns:`` (for an accumulator class: what it gives), or for a layer
``Returns:``/``Shape:`` with what forward takes and returns, so that ``help()`` answers a
user's first question."""

from __future__ import annotations

import inspect
import re

import pytest
from torch import nn

import fastgen.metrics
import fastgen.nn
import fastgen.ops

PACKAGES = (fastgen.ops, fastgen.nn, fastgen.metrics)


def _public():
    """(qualified name, object) for each public callable, from each package's __all__.
    Exceptions and warnings are raised, not called: they have no arguments or results to
    document. Constants (fastgen.metrics.METRICS) are not callables."""
    for package in PACKAGES:
        for name in package.__all__:
            obj = getattr(package, name)
            if not callable(obj):
                continue
            if inspect.isclass(obj) and issubclass(obj, BaseException):
                continue
            yield f"{package.__name__}.{name}", obj


PUBLIC = dict(_public())


def _parameters(function) -> list[str]:
    """The names a caller passes: no self, *args or **kwargs. For a class, inspect.signature
    reads the constructor (the generated one of fastgen.nn.Conv2d included) without self."""
    skip = (inspect.Parameter.VAR_POSITIONAL, inspect.Parameter.VAR_KEYWORD)
    return [
        p.name
        for p in inspect.signature(function).parameters.values()
        if p.kind not in skip and p.name != "self"
    ]


def _section(doc: str, title: str) -> str | None:
    """The indented lines under a ``title:`` line of its own (None when there is none)."""
    match = re.search(rf"^( *){title}:[ \t]*\n((?:\1[ \t]+\S.*\n|[ \t]*\n)*)", doc + "\n", re.M)
    return None if match is None else match.group(2)


def _named(section: str) -> set[str]:
    """The entry names of a section: ``name: ...`` or ``name (...): ...`` at its first indent,
    several names allowed as ``a, b: ...``."""
    lines = [line for line in section.splitlines() if line.strip()]
    if not lines:
        return set()
    indent = min(len(line) - len(line.lstrip()) for line in lines)
    names = set()
    for line in lines:
        if len(line) - len(line.lstrip()) != indent:
            continue
        match = re.match(r"\s*(\w+(?:\s*,\s*\w+)*)\s*(?:\([^)]*\))?\s*:", line)
        if match:
            names.update(n.strip() for n in match.group(1).split(","))
    return names


def test_the_public_names_are_found():
    assert {"fastgen.ops.conv2d", "fastgen.nn.Conv2d", "fastgen.metrics.evaluate"} <= set(PUBLIC)


@pytest.mark.parametrize("name", sorted(PUBLIC))
def test_docstring_has_args_and_returns(name):
    obj = PUBLIC[name]
    assert obj.__doc__, f"{name}: no docstring"
    doc = inspect.cleandoc(obj.__doc__)
    parameters = _parameters(obj)
    if parameters:
        args = _section(doc, "Args")
        assert args is not None, f"{name}: no 'Args:' section (parameters: {parameters})"
        missing = [p for p in parameters if p not in _named(args)]
        assert not missing, f"{name}: 'Args:' does not name {missing}"
    if inspect.isclass(obj) and issubclass(obj, nn.Module):
        assert _section(doc, "Returns") is not None or _section(doc, "Shape") is not None, (
            f"{name}: no 'Returns:' or 'Shape:' section (what forward takes and returns)"
        )
    else:
        assert _section(doc, "Returns") is not None, f"{name}: no 'Returns:' section"
    if inspect.isclass(obj) and issubclass(obj, nn.Module) and "forward" in vars(obj):
        # A layer's forward arguments are part of what a reader asks first.
        unnamed = [p for p in _parameters(obj.forward) if not re.search(rf"\b{p}\b", doc)]
        assert not unnamed, f"{name}: the docstring does not mention forward's {unnamed}"
