"""Shared test fixtures: devices, dtypes and the one tolerance table."""

from __future__ import annotations

import contextlib
import os

import pytest
import torch

from fastgen import _extension
from fastgen._backend import registry

DTYPES = [torch.float32, torch.float64, torch.float16, torch.bfloat16]

# One table for every op: (atol, rtol) of a kernel against the reference. Half types are
# compared with a float32 reference computed from the same (upcast) inputs.
TOLERANCES = {
    torch.float64: (1e-10, 1e-7),
    torch.float32: (1e-4, 1e-4),
    torch.float16: (2e-2, 2e-2),
    torch.bfloat16: (8e-2, 5e-2),
}

# The suite runs the fixed choice of CPU convolution (fastgen's kernel wherever it has one for
# float32/float64, aten's otherwise) so that every test takes the same path on every run and
# in every subprocess it starts; tests/ops/test_conv_select.py tests the measured choice itself.
os.environ.setdefault("FASTGEN_AUTOTUNE", "0")

# The CUDA kernels' first-call self-check (fastgen/ops/_selfcheck.py) is off in the suite, and
# in the processes it starts: the tests compare every kernel with its reference themselves,
# and a check that rerouted a wrong kernel to the reference would hide what they look for.
# tests/gpu/test_cuda_selfcheck.py turns it on.
os.environ.setdefault("FASTGEN_CUDA_SELFCHECK", "0")
registry.selfcheck = os.environ["FASTGEN_CUDA_SELFCHECK"] not in ("0", "false", "False")

HAS_CUDA = torch.cuda.is_available()
# "emulated-cuda": the CUDA kernels and launchers run by fastgen's SIMT emulator on CPU
# tensors (FASTGEN_BACKEND=emulated-cuda), so every CUDA test runs in every CI run.
EMULATED = "emulated-cuda"
HAS_EMULATED = _extension.EMULATED_LOADED
DEVICES = ["cpu", EMULATED] + (["cuda"] if HAS_CUDA else [])
CUDA_DEVICES = [EMULATED] + (["cuda"] if HAS_CUDA else [])
cuda_only = pytest.mark.skipif(not HAS_CUDA, reason="needs a CUDA device")

# cuDNN and cuBLAS use TF32 for float32 by default on Ampere and later, which would fail the
# float32 comparisons against float64 oracles; fastgen's convolutions follow these switches
# exactly as the stock layers do (README, "TF32").
torch.backends.cuda.matmul.allow_tf32 = False
torch.backends.cudnn.allow_tf32 = False


@contextlib.contextmanager
def on_device(name: str):
    """The torch device to make tensors on for a test device name: emulated-cuda is the CPU
    with the emulated-cuda backend switched on for the duration."""
    if name != EMULATED:
        yield name
        return
    if not HAS_EMULATED:
        pytest.skip(f"the emulated CUDA kernels are not loaded ({_extension.EMULATED_ERROR})")
    with using_backend(EMULATED):
        yield "cpu"


def examples(n: int) -> int:
    """A hypothesis example budget, capped by FASTGEN_MAX_EXAMPLES (the quick GPU check)."""
    return min(n, int(os.environ.get("FASTGEN_MAX_EXAMPLES", n)))


def tolerance(dtype: torch.dtype, scale: float = 1.0) -> dict:
    atol, rtol = TOLERANCES[dtype]
    return {"atol": atol * scale, "rtol": rtol * scale}


def reference_dtype(dtype: torch.dtype) -> torch.dtype:
    """The dtype the oracle runs in for inputs of `dtype`."""
    return torch.float64 if dtype in (torch.float32, torch.float64) else torch.float32


def assert_close(actual, expected, dtype=None, scale: float = 1.0, msg: str = "") -> None:
    """torch.testing.assert_close with the table's tolerance; it reports where and by how much."""
    dtype = dtype or actual.dtype
    torch.testing.assert_close(
        actual.to(expected.dtype),
        expected,
        **tolerance(dtype, scale),
        msg=(lambda m: f"{msg}\n{m}") if msg else None,
    )


@contextlib.contextmanager
def using_backend(mode: str):
    """fastgen's backend `mode` for the duration."""
    previous = registry.mode
    registry.set_backend(mode)
    try:
        yield
    finally:
        registry.set_backend(previous)


def cpu_kernels():
    """The CPU kernels (backend auto) for the duration, e.g. inside an emulated-cuda test that
    compares the emulated CUDA kernel with the CPU one."""
    return using_backend("auto")


@pytest.fixture(params=DEVICES)
def device(request):
    with on_device(request.param) as torch_device:
        yield torch_device


@pytest.fixture(params=CUDA_DEVICES)
def cuda_device(request):
    """The CUDA kernels: emulated on CPU tensors, and on a GPU when there is one."""
    with on_device(request.param) as torch_device:
        yield torch_device


def pytest_collection_modifyitems(config, items):
    # item.keywords (like -k) holds the names of the item's folders too, so no tests/ folder
    # may be named cuda: every test in it would be skipped here (hence tests/gpu/).
    for item in items:
        if "cuda" in item.keywords and not HAS_CUDA:
            item.add_marker(pytest.mark.skip(reason="needs a CUDA device"))


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_call(item):
    """Hypothesis seeds a parametrized test's derandomized examples (and keys its example
    database) with the test's node id, which names the test's folder. It gets the id the test
    had when tests/ was flat (tests/<file>::<test>; file names are unique across tests/), so
    the examples a test draws stay the ones it drew before the folders, and stay put when a
    file moves. Runs after Hypothesis's own hook wrapper has set the id, before the test."""
    inner = getattr(getattr(item.obj, "hypothesis", None), "inner_test", None)
    if inner is not None and hasattr(inner, "_hypothesis_internal_add_digest"):
        test = item.nodeid.split("::", 1)[1]
        inner._hypothesis_internal_add_digest = f"tests/{item.path.name}::{test}".encode()
