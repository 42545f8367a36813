"""Argument checks shared by the ops: run once at the Python boundary, so the kernels
can assume valid input. Messages name the function, the argument, what was expected
and what came."""

from __future__ import annotations

import operator

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


def check_number(fn: str, name: str, value) -> float:
    """A real number (int, float, numpy scalar; bool too, as torch's Number arguments take
    it), returned as a float; anything else (strings, None, tensors) is a TypeError."""
    if isinstance(value, (str, bytes)) or value is None or isinstance(value, torch.Tensor):
        raise TypeError(f"{fn}: {name} must be a float, got {type(value).__name__} {value!r}")
    try:
        return float(value)
    except (TypeError, ValueError):
        raise TypeError(f"{fn}: {name} must be a float, got {type(value).__name__}") from None


def check_batch_norm_eps(fn: str, eps: float, training: bool) -> None:
    """F.batch_norm's rule: eps > 0 when the batch statistics are used (training, or no
    running statistics), eps >= 0 otherwise (running_var + eps may be 0 only where the
    variance is). ValueError, as stock raises."""
    if training and eps <= 0.0:
        raise ValueError(f"{fn}: eps must be positive during training, got {eps}")
    if eps < 0.0:
        raise ValueError(f"{fn}: eps must be non-negative, got {eps}")


def check_bool(fn: str, name: str, value) -> bool:
    """A bool, as torch's bool arguments take it ('False' or None would be truthy/falsy)."""
    if not isinstance(value, bool):
        raise TypeError(f"{fn}: {name} must be a bool, got {type(value).__name__} {value!r}")
    return value


def _as_int(fn: str, name: str, value, whole) -> int:
    # ints, numpy integers and 0-d integer tensors (what aten's int[] arguments take); not
    # bools, floats or strings, which int() would quietly coerce.
    if isinstance(value, torch.Tensor):
        if (
            value.dim() == 0
            and not value.is_floating_point()
            and not value.is_complex()
            and value.dtype != torch.bool
        ):
            return int(value)
    elif not isinstance(value, bool):
        try:
            return operator.index(value)
        except TypeError:
            pass
    raise TypeError(f"{fn}: {name} must be an int or a pair of ints, got {whole!r}")


def pair(fn: str, name: str, value, *, minimum: int) -> tuple[int, int]:
    """An int, or a tuple/list of one or two ints (one is used for both sides)."""
    if isinstance(value, (tuple, list)):
        values = tuple(_as_int(fn, name, v, value) for v in value)
        if len(values) == 1:
            values = values * 2
    elif isinstance(value, (str, bytes)):
        raise TypeError(f"{fn}: {name} must be an int or a pair of ints, got {value!r}")
    else:
        values = (_as_int(fn, name, value, value),) * 2
    if len(values) != 2:
        raise ValueError(f"{fn}: {name} must be an int or a pair of ints, got {value!r}")
    if any(v < minimum for v in values):
        raise ValueError(f"{fn}: {name} must be >= {minimum}, got {values}")
    return values


def check_conv_args(fn: str, x, weight, groups, weight_layout: str) -> None:
    """What every convolution op checks first: a 4-D float input with height and width >= 1,
    a 4-D weight (laid out as `weight_layout`, e.g. "[C_out, C_in / groups, kH, kW]") of the
    input's dtype and device with no zero-size dim, and groups an int >= 1."""
    check_tensor(fn, "input", x)
    if x.dim() != 4:
        raise ValueError(
            f"{fn}: input must be 4-D [N, C, H, W] (or 3-D unbatched), got shape {tuple(x.shape)}"
        )
    check_like(fn, "weight", weight, x, "input")
    if weight.dim() != 4:
        raise ValueError(
            f"{fn}: weight must be 4-D {weight_layout}, got shape {tuple(weight.shape)}"
        )
    if isinstance(groups, bool) or not isinstance(groups, int) or groups < 1:
        raise ValueError(f"{fn}: groups must be an int >= 1, got {groups!r}")
    if any(size < 1 for size in weight.shape):
        raise ValueError(
            f"{fn}: weight must have no zero-size dim, got shape {tuple(weight.shape)}"
        )
    if x.shape[1] % groups:
        raise ValueError(
            f"{fn}: input channels ({x.shape[1]}) must be divisible by groups ({groups})"
        )
    if x.shape[2] < 1 or x.shape[3] < 1:
        raise ValueError(f"{fn}: input height and width must be >= 1, got shape {tuple(x.shape)}")


def check_activation(fn: str, activation, slope, allowed) -> None:
    if activation not in allowed:
        raise ValueError(
            f"{fn}: activation must be one of {', '.join(allowed)}, got {activation!r}"
        )
    check_number(fn, "negative_slope", slope)
