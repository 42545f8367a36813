"""Argument checks shared by the ops: run once at the Python boundary, so the kernels
can assume valid input. Messages name the function, the argument, what was expected
and what came."""

from __future__ import annotations

import torch

FLOAT_DTYPES = (torch.float32, torch.float64, torch.float16, torch.bfloat16)


def check_tensor(
    fn: str, name: str, t, *, dim: int | None = None, min_dim: int | None = None
) -> None:
    if not isinstance(t, torch.Tensor):
        raise TypeError(f"{fn}: {name} must be a Tensor, got {type(t).__name__}")
    if t.dtype not in FLOAT_DTYPES:
        raise TypeError(
            f"{fn}: {name} must be float32, float64, float16 or bfloat16, got {t.dtype}"
        )
    if dim is not None and t.dim() != dim:
        raise ValueError(
            f"{fn}: {name} must be {dim}-D, got {t.dim()}-D with shape {tuple(t.shape)}"
        )
    if min_dim is not None and t.dim() < min_dim:
        raise ValueError(
            f"{fn}: {name} must have at least {min_dim} dims, got shape {tuple(t.shape)}"
        )


def check_like(
    fn: str, name: str, t, ref: torch.Tensor, ref_name: str, *, shape=None, dtype: bool = True
) -> None:
    """t must be a float tensor on ref's device (and of ref's dtype, and of `shape`)."""
    check_tensor(fn, name, t)
    if t.device != ref.device:
        raise ValueError(f"{fn}: {name} is on {t.device} but {ref_name} is on {ref.device}")
    if dtype and t.dtype != ref.dtype:
        raise TypeError(f"{fn}: {name} has dtype {t.dtype} but {ref_name} has dtype {ref.dtype}")
    if shape is not None and tuple(t.shape) != tuple(shape):
        raise ValueError(f"{fn}: {name} must have shape {tuple(shape)}, got {tuple(t.shape)}")


def check_positive(fn: str, name: str, value: float) -> None:
    if not (value > 0):
        raise ValueError(f"{fn}: {name} must be > 0, got {value}")


def pair(fn: str, name: str, value, *, minimum: int) -> tuple[int, int]:
    if isinstance(value, int):
        value = (value, value)
    value = tuple(int(v) for v in value)
    if len(value) != 2:
        raise ValueError(f"{fn}: {name} must be an int or a pair of ints, got {value}")
    if any(v < minimum for v in value):
        raise ValueError(f"{fn}: {name} must be >= {minimum}, got {value}")
    return value
