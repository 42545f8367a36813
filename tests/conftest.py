"""Shared test fixtures: devices, dtypes and the one tolerance table."""

from __future__ import annotations

import pytest
import torch

DTYPES = [torch.float32, torch.float64, torch.float16, torch.bfloat16]

# One table for every op: (atol, rtol) of a kernel against the reference. Half types are
# compared with a float32 reference computed from the same (upcast) inputs.
TOLERANCES = {
    torch.float64: (1e-10, 1e-7),
    torch.float32: (1e-4, 1e-4),
    torch.float16: (2e-2, 2e-2),
    torch.bfloat16: (8e-2, 5e-2),
}

HAS_CUDA = torch.cuda.is_available()
DEVICES = ["cpu"] + (["cuda"] if HAS_CUDA else [])
cuda_only = pytest.mark.skipif(not HAS_CUDA, reason="needs a CUDA device")


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


@pytest.fixture(params=DEVICES)
def device(request):
    return request.param


def pytest_collection_modifyitems(config, items):
    for item in items:
        if "cuda" in item.keywords and not HAS_CUDA:
            item.add_marker(pytest.mark.skip(reason="needs a CUDA device"))
