"""fastgen.ops.batch_norm_leaky_relu: BatchNorm2d + LeakyReLU as one op.

The native op (torch.ops.fastgen.batch_norm_leaky_relu, schema in csrc/fastgen.cpp) is
functional: it returns (out, mean, var), and this wrapper updates the running statistics
from them, so the op itself mutates nothing (which keeps fake tensors, opcheck and
torch.compile simple). Its backward is an op of its own (batch_norm_leaky_relu_backward).
"""

from __future__ import annotations

import os

import torch

from fastgen import _extension
from fastgen._backend import registry
from fastgen.ops._batch_norm_leaky_relu_autograd import (
    FN,
    HALF_DTYPES,
    MEMORY_SAVING,
    NAME,
    _acc_dtype,
    _EagerMemorySaving,
    _EagerWithBatchStats,
    _memory_format,
)
from fastgen.ops._checks import (
    check_batch_norm_eps,
    check_bool,
    check_like,
    check_number,
    check_tensor,
)
from fastgen.reference import batch_norm_leaky_relu as reference

# memory_saving: |weight| is clamped to at least this (sign kept, 0 counts as positive), so
# that xhat = (v - bias) / weight can be recovered from the output.
MIN_ABS_WEIGHT = 1e-3


def stock_is_faster(x: torch.Tensor) -> bool:
    """Whether this call runs stock's F.batch_norm + F.leaky_relu (the reference) instead of
    fastgen's kernel because stock is faster there: bfloat16/float16 NCHW on CPU, where aten's
    vectorized mixed-precision batch norm beats fastgen's kernel (forward + backward on the
    DCGAN's shapes in bf16, 1 thread: 0.21 vs 0.26 ms, 0.32 vs 0.35 ms, 0.58 vs 0.58 ms).
    channels_last inputs take the kernel: there it reads and writes each value once while
    stock's batch norm and activation each go over the tensor, 1.17-1.41x faster at 1 thread
    and 1.03-1.19x at 2 on those shapes (0.16 vs 0.19 ms, 0.27 vs 0.34 ms, 0.48 vs 0.67 ms),
    which is what a model in channels_last under autocast runs (`fastgen train`'s
    --memory-format auto). FASTGEN_BN_CPU=fastgen takes the kernel anyway, as
    FASTGEN_AUTOTUNE=0 (the fixed rules of earlier versions) does; memory_saving=True always
    takes it (stock has no such mode)."""
    if x.device.type != "cpu" or x.dtype not in HALF_DTYPES:
        return False
    forced = os.environ.get("FASTGEN_BN_CPU", "")
    if forced not in ("", "auto", "fastgen"):
        raise ValueError(f"{FN}: FASTGEN_BN_CPU must be fastgen or auto, got {forced!r}")
    if _memory_format(x) == torch.channels_last:
        return False  # NHWC, as the kernel reads it (choose_layout in the C++ header)
    return forced != "fastgen" and os.environ.get("FASTGEN_AUTOTUNE", "1") != "0"


def batch_norm_leaky_relu(
    x: torch.Tensor,
    running_mean: torch.Tensor | None,
    running_var: torch.Tensor | None,
    weight: torch.Tensor | None,
    bias: torch.Tensor | None,
    training: bool,
    momentum: float = 0.1,
    eps: float = 1e-5,
    negative_slope: float = 0.01,
    *,
    memory_saving: bool = False,
    batch_stats: tuple[torch.Tensor, torch.Tensor] | None = None,
) -> torch.Tensor:
    r"""``F.leaky_relu(F.batch_norm(x, running_mean, running_var, weight, bias, training,
    momentum, eps), negative_slope)`` in one fused op.

    Per channel ``c`` of ``x`` ``[N, C, H, W]``::

        out = leaky_relu((x - mean[c]) / sqrt(var[c] + eps) * weight[c] + bias[c])
        leaky_relu(v) = v if v > 0 else negative_slope * v      (negative_slope=0: ReLU)

    training=True: ``mean``/``var`` are the batch statistics over (N, H, W) (biased var),
    computed stably (per-block two-pass sums merged with Chan's update, so an input with mean
    1000 and std 0.01 in float32 still gets its variance right). If running statistics are
    given they are updated in place exactly as F.batch_norm does:
    ``running = (1 - momentum) * running + momentum * batch``, with the unbiased batch
    variance ``var * M / (M - 1)``, ``M = N * H * W``.
    training=False: ``mean``/``var`` are ``running_mean``/``running_var`` (required).
    eps follows F.batch_norm: it must be > 0 in training and >= 0 in eval (a ValueError
    otherwise, as stock raises).

    weight and bias are optional (``None`` means 1 and 0). ``x`` may have any strides:
    channels_last in gives channels_last out, other non-contiguous inputs are copied once.
    Dtypes: float32, float64, float16, bfloat16; half inputs accumulate in float32 and may
    come with float32 weight, bias and running statistics (as under autocast). Gradients
    flow to x, weight and bias; double backward runs through a differentiable closed form.

    memory_saving=True (In-Place Activated BatchNorm style): autograd keeps only the output
    (plus weight, bias and the per-channel var), not x, and the backward recovers
    ``xhat = (leaky_relu^-1(out) - bias) / weight``. This needs ``negative_slope > 0`` (else
    negative values cannot be inverted; a ValueError says so) and a weight without zeros:
    the layer uses ``sign(weight) * max(|weight|, 1e-3)`` in place of ``weight`` (a zero
    weight counts as positive), forward and backward alike, and passes the gradient straight
    through the clamp to ``weight``. Results equal the normal mode whenever every
    ``|weight| >= 1e-3``. Double backward is not supported in this mode (a clear error).

    batch_stats=(mean, var) (training only): the batch mean and biased variance of ``x``,
    already computed, e.g. in the epilogue of the convolution that produced ``x``
    (fastgen.ops.conv_transpose2d_with_stats). The native op then only normalises (one pass
    over ``x`` instead of two) and the backward is the training one, with the gradient
    through the statistics. They must be ``x``'s own statistics (nothing recomputes them to
    check); the running statistics are updated from them. Under torch.compile and on the
    reference path they are recomputed from ``x`` instead.

    Args:
        x: input, [N, C, H, W], float32/float64/float16/bfloat16, any strides (NCHW and
            channels_last run as they are, others are copied to NCHW once).
        running_mean: per-channel running mean, [C], on x's device, x's dtype (float32 also
            accepted for half x), not requiring grad; updated in place when training. None
            (with running_var) to track nothing; required when training=False.
        running_var: per-channel running variance, [C], as running_mean (updated with the
            unbiased batch variance).
        weight: per-channel scale (gamma), [C], dtype and device as running_mean; None for 1.
        bias: per-channel shift (beta), [C], dtype and device as running_mean; None for 0.
        training: a bool. True normalises with the batch statistics (and updates the running
            ones), False with running_mean/running_var.
        momentum: weight of the batch statistics in the running-statistics update.
        eps: added to the variance; > 0 in training, >= 0 in eval.
        negative_slope: LeakyReLU slope for negative values (0 gives ReLU; > 0 with
            memory_saving=True).
        memory_saving: keyword; autograd keeps the output instead of x (see above); no double
            backward.
        batch_stats: keyword, training only, not with memory_saving; (mean, var) of x over
            (N, H, W), each [C], float32 for half x, x's dtype otherwise, on x's device.
    Returns:
        Tensor of x's shape and dtype: channels_last when x is channels_last (and not also
        contiguous), contiguous NCHW otherwise.
    """
    # Everything is validated before anything changes: a call that raises updates nothing.
    training, momentum, eps, negative_slope = _check_args(
        x, running_mean, running_var, weight, bias, training, momentum, eps, negative_slope
    )
    if batch_stats is not None:
        mean, var = _check_batch_stats(x, batch_stats, training, memory_saving)
        if registry.use_native(NAME, x) and not torch.compiler.is_compiling():
            out = _EagerWithBatchStats.apply(x, weight, bias, mean, var, eps, negative_slope)
            if running_mean is not None:
                _update_running_stats(running_mean, running_var, mean, var, x, momentum)
            return out
    if training and x.numel() == 0:
        return _empty_batch(x, weight, bias, negative_slope)
    if memory_saving:
        if not negative_slope > 0:
            raise ValueError(
                f"{FN}: memory_saving=True needs negative_slope > 0 to invert the activation, "
                f"got {negative_slope}"
            )
        if weight is not None:
            weight = nonzero_weight(weight)
    name = MEMORY_SAVING if memory_saving else NAME
    if not registry.use_native(name, x) or (not memory_saving and stock_is_faster(x)):
        return reference.batch_norm_leaky_relu(
            x, running_mean, running_var, weight, bias, training, momentum, eps, negative_slope
        )
    args = (
        x,
        weight,
        bias,
        None if training else running_mean,
        None if training else running_var,
        training,
        float(eps),
        float(negative_slope),
    )
    needs_grad = x.requires_grad or any(t is not None and t.requires_grad for t in (weight, bias))
    if not memory_saving:  # its autograd is a C++ kernel (batch_norm_leaky_relu_autograd.cpp)
        out, mean, var = torch.ops.fastgen.batch_norm_leaky_relu.default(*args)
    elif needs_grad and torch.is_grad_enabled() and not torch.compiler.is_compiling():
        out, mean, var = _EagerMemorySaving.apply(*args)
    else:
        out, mean, var = torch.ops.fastgen.batch_norm_leaky_relu_memory_saving.default(*args)
    if training and running_mean is not None:
        _update_running_stats(running_mean, running_var, mean, var, x, momentum)
    return out


def nonzero_weight(weight: torch.Tensor) -> torch.Tensor:
    """sign(weight) * max(|weight|, MIN_ABS_WEIGHT), with the gradient passed straight through."""
    magnitude = weight.detach().abs().clamp_min(MIN_ABS_WEIGHT)
    clamped = torch.where(weight.detach() < 0, -magnitude, magnitude)
    return weight + (clamped - weight.detach())


def _check_batch_stats(x, batch_stats, training, memory_saving):
    if not training:
        raise ValueError(f"{FN}: batch_stats are for training=True only")
    if memory_saving:
        raise ValueError(f"{FN}: batch_stats cannot be combined with memory_saving=True")
    if not isinstance(batch_stats, (tuple, list)) or len(batch_stats) != 2:
        raise TypeError(f"{FN}: batch_stats must be a (mean, var) pair of tensors")
    if x.numel() == 0:
        raise ValueError(f"{FN}: batch_stats need a non-empty x, got shape {tuple(x.shape)}")
    acc = _acc_dtype(x.dtype)
    for name, t in zip(("batch_stats mean", "batch_stats var"), batch_stats):
        check_like(FN, name, t, x, "x", shape=(x.shape[1],), dtype=False)
        if t.dtype != acc:
            raise TypeError(
                f"{FN}: {name} has dtype {t.dtype}, expected {acc} for x of dtype {x.dtype}"
            )
    return batch_stats


def _update_running_stats(running_mean, running_var, mean, var, x, momentum) -> None:
    count = x.numel() // x.shape[1]
    if _extension.LOADED and not torch.compiler.is_compiling():
        # The same five tensor ops in one C++ call (csrc/fastgen.cpp); traced code keeps
        # them in Python, where torch.compile sees them.
        _extension._C._batch_norm_update_running_stats(
            running_mean, running_var, mean, var, count, float(momentum)
        )
        return
    with torch.no_grad():
        running_mean.mul_(1 - momentum).add_(mean.to(running_mean.dtype), alpha=momentum)
        unbiased = var * (count / (count - 1))
        running_var.mul_(1 - momentum).add_(unbiased.to(running_var.dtype), alpha=momentum)


def _empty_batch(x, weight, bias, negative_slope):
    """An empty batch in training, as F.batch_norm: an empty output still connected to the
    graph (x * weight[0] + bias[0]), running statistics untouched."""
    out = x.clone()
    if weight is not None and weight.numel():
        out = out * weight[0]
    if bias is not None and bias.numel():
        out = out + bias[0]
    return torch.nn.functional.leaky_relu(out, negative_slope)


def _check_args(x, running_mean, running_var, weight, bias, training, momentum, eps, slope):
    """Checks every argument as F.batch_norm + F.leaky_relu accept them; returns (training,
    momentum, eps, negative_slope) as bool and floats."""
    check_tensor(FN, "x", x, dim=4)
    channels = x.shape[1]
    allowed = (x.dtype, torch.float32) if x.dtype in HALF_DTYPES else (x.dtype,)
    for name, t in (
        ("running_mean", running_mean),
        ("running_var", running_var),
        ("weight", weight),
        ("bias", bias),
    ):
        if t is None:
            continue
        check_like(FN, name, t, x, "x", shape=(channels,), dtype=False)
        if t.dtype not in allowed:
            expected = " or ".join(str(d) for d in allowed)
            raise TypeError(
                f"{FN}: {name} has dtype {t.dtype}, expected {expected} for x of dtype {x.dtype}"
            )
        if name.startswith("running") and t.requires_grad:
            raise ValueError(f"{FN}: {name} must not require grad (it is a buffer, as in stock)")
        if name.startswith("running") and t.numel() > 1 and t.stride(0) == 0:
            raise ValueError(
                f"{FN}: {name} has elements sharing memory (e.g. an expanded view, stride "
                f"{t.stride()}); it is updated in place"
            )
    if (running_mean is None) != (running_var is None):
        raise ValueError(f"{FN}: running_mean and running_var must both be given or both be None")
    if not training and running_mean is None:
        raise ValueError(f"{FN}: running_mean and running_var are required when training=False")
    training = check_bool(FN, "training", training)
    eps = check_number(FN, "eps", eps)
    momentum = check_number(FN, "momentum", momentum)
    slope = check_number(FN, "negative_slope", slope)
    # Exactly one value per channel is stock's one error; an empty batch is fine.
    if training and x.numel() > 0 and x.numel() // max(channels, 1) == 1:
        raise ValueError(
            f"{FN}: x must have more than 1 value per channel when training, got shape {tuple(x.shape)}"
        )
    check_batch_norm_eps(FN, eps, training)  # after the batch-size check, in stock's order
    return training, momentum, eps, slope
