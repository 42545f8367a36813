r"""fastgen.ops.conv_transpose2d: a transposed convolution with bias and activation fused
(the math, shapes, dtypes and layouts are in the functions' docstrings; how it runs is here).

Native path (``torch.ops.fastgen.conv_transpose2d``): the transposed convolution without
bias, then ONE in-place pass for bias + activation. The convolution is, on CPU, fastgen's
Winograd, GEMM or image-layer kernels (to 1-4 channels) where they apply and measured faster
than aten's for the shape, aten's otherwise (csrc/conv_transpose2d/conv_transpose2d_cpu.cpp,
csrc/conv/conv_select_cpu.h; README, "Which CPU convolution runs"); on CUDA, cuDNN's through
aten or fastgen's implicit-GEMM engine, as FASTGEN_CONV_TRANSPOSE routes it
(csrc/conv/conv_engine.h; cuDNN by default). Backward
(``torch.ops.fastgen.conv_transpose2d_backward``) takes act' from the saved output
(``act'(y)``: relu/leaky_relu 1 or slope by the sign of y, tanh ``1 - y^2``, sigmoid
``y (1 - y)``), so no pre-activation tensor is kept, then the convolution's backward, with
the same choice of kernels.
Double backward runs the same formula through differentiable public ops. ``leaky_relu``
with a negative slope is not monotone, so its derivative cannot be read from the output:
those calls take the reference path (stock ops), which is exact.
"""

from __future__ import annotations

import torch

from fastgen import _extension
from fastgen._backend import registry
from fastgen.ops._checks import (
    FLOAT_DTYPES,
    check_activation,
    check_conv_args,
    check_like,
    pair,
)
from fastgen.ops._conv import (
    CONV_TRANSPOSE2D,
    Geometry,
    as_batch,
    check_output_size,
    conv_backward,
    conv_format,
    native_or_reference,
)
from fastgen.reference import conv_transpose2d as reference
from fastgen.reference.conv_transpose2d import ACTIVATIONS

FN = "fastgen.ops.conv_transpose2d"
OP = "conv_transpose2d"
WITH_STATS = "conv_transpose2d_with_stats"

registry.register(OP, FLOAT_DTYPES)
registry.register(WITH_STATS, FLOAT_DTYPES)


def _check(x, weight, bias, stride, padding, output_padding, groups, dilation, activation, slope,
           fn=FN):  # fmt: skip
    """Validates everything once; returns the normalised (stride, padding, output_padding,
    dilation) pairs."""
    check_conv_args(fn, x, weight, groups, "[C_in, C_out / groups, kH, kW]")
    if weight.shape[0] != x.shape[1]:
        raise ValueError(
            f"{fn}: weight has {weight.shape[0]} input channels but input has {x.shape[1]}"
        )
    out_channels = weight.shape[1] * groups
    if bias is not None:
        check_like(fn, "bias", bias, x, "input", shape=(out_channels,))
    stride = pair(fn, "stride", stride, minimum=1)
    padding = pair(fn, "padding", padding, minimum=0)
    output_padding = pair(fn, "output_padding", output_padding, minimum=0)
    dilation = pair(fn, "dilation", dilation, minimum=1)
    for dim in range(2):
        if output_padding[dim] >= max(stride[dim], dilation[dim]):
            raise ValueError(
                f"{fn}: output_padding must be smaller than stride or dilation, got "
                f"output_padding={output_padding}, stride={stride}, dilation={dilation}"
            )
    geometry = Geometry(stride, padding, output_padding, dilation, groups)
    check_output_size(fn, CONV_TRANSPOSE2D, x, weight, geometry)
    check_activation(fn, activation, slope, ACTIVATIONS)
    return stride, padding, output_padding, dilation


STATS_FN = "fastgen.ops.conv_transpose2d_with_stats"


def conv_transpose2d_with_stats(
    x: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor | None = None,
    stride=1,
    padding=0,
    output_padding=0,
    groups: int = 1,
    dilation=1,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``(y, mean, var)``: ``y = F.conv_transpose2d(x, weight, bias, ...)`` and the
    per-channel batch mean and biased variance of ``y`` over (N, H, W), in float32 for half
    inputs (the input's dtype otherwise): what a training batch norm after the convolution
    needs (fastgen.ops.batch_norm_leaky_relu's ``batch_stats``). No activation.

    On CUDA with fastgen's implicit-GEMM engine (FASTGEN_CONV_TRANSPOSE=fastgen) the
    statistics come from the convolution's epilogue (per-tile two-pass partials merged in a
    fixed order); every other path computes them from ``y`` with torch.var_mean. Gradients
    flow into x, weight and bias through all three outputs.

    Args:
        x: input, [N, C_in, H, W] with N >= 1 (4-D only),
            float32/float64/float16/bfloat16, any strides.
        weight: [C_in, C_out / groups, kH, kW], x's dtype and device, no zero-size dim.
        bias: [C_out], x's dtype and device; None for no bias.
        stride: int or pair of ints, >= 1.
        padding: int or pair of ints, >= 0.
        output_padding: int or pair of ints, >= 0 and smaller than stride or dilation.
        groups: int >= 1 dividing C_in.
        dilation: int or pair of ints, >= 1.
    Returns:
        (y, mean, var): y [N, C_out, H_out, W_out] of x's dtype, laid out as
        fastgen.ops.conv_transpose2d's output; mean and var [C_out], float32 for half x, x's
        dtype otherwise.
    """
    stride, padding, output_padding, dilation = _check(
        x, weight, bias, stride, padding, output_padding, groups, dilation, "identity", 0.0,
        fn=STATS_FN,
    )  # fmt: skip
    if x.shape[0] == 0:
        raise ValueError(
            f"{STATS_FN}: batch statistics need at least one value per channel, got input of "
            f"shape {tuple(x.shape)}"
        )
    args = (x, weight, bias, list(stride), list(padding), list(output_padding), groups,
            list(dilation))  # fmt: skip
    if registry.use_native(WITH_STATS, x):
        return torch.ops.fastgen.conv_transpose2d_with_stats(*args)
    out = reference.conv_transpose2d(x, *args[1:])
    return (out, *_batch_statistics(out))


def _batch_statistics(out: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    acc = torch.promote_types(out.dtype, torch.float32)
    var, mean = torch.var_mean(out.to(acc), dim=(0, 2, 3), correction=0)
    return mean, var


def conv_transpose2d(
    x: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor | None = None,
    stride=1,
    padding=0,
    output_padding=0,
    groups: int = 1,
    dilation=1,
    activation: str = "identity",
    negative_slope: float = 0.01,
) -> torch.Tensor:
    r"""``act(F.conv_transpose2d(x, weight, bias, stride, padding, output_padding, groups,
    dilation))`` in one fused op::

        out = act(conv_transpose2d(x, weight) + bias[None, :, None, None])
        H_out = (H - 1) * stride[0] - 2 * padding[0] + dilation[0] * (kH - 1)
                + output_padding[0] + 1

    (``W_out`` likewise), exactly as ``torch.nn.functional.conv_transpose2d``. Half types
    compute the bias and activation in float32. The output and the gradients are
    channels_last when ``x`` or ``weight`` is channels_last (and not also plainly
    contiguous), NCHW otherwise, as aten's convolution chooses. Gradients flow to x, weight
    and bias, double backward included. Training and eval compute the same thing.
    ``leaky_relu`` with a negative slope runs the stock ops (its derivative cannot be read
    from the output, which the fused backward does).

    Args:
        x: input, [N, C_in, H, W] or unbatched [C_in, H, W],
            float32/float64/float16/bfloat16, any strides.
        weight: [C_in, C_out / groups, kH, kW], x's dtype and device, no zero-size dim.
        bias: [C_out], x's dtype and device; None for no bias.
        stride: int or pair of ints, >= 1.
        padding: int or pair of ints, >= 0 (taken off each side of the output).
        output_padding: int or pair of ints, >= 0 and smaller than stride or dilation
            (added to one side of the output).
        groups: int >= 1 dividing C_in.
        dilation: int or pair of ints, >= 1.
        activation: "identity", "relu", "leaky_relu", "tanh" or "sigmoid".
        negative_slope: slope of "leaky_relu" for negative values (ignored by the others).
    Returns:
        Tensor [N, C_out, H_out, W_out] (or [C_out, H_out, W_out] for unbatched x) of x's
        dtype and device, laid out as above.
    """
    x, unbatched = as_batch(x)
    stride, padding, output_padding, dilation = _check(
        x, weight, bias, stride, padding, output_padding, groups, dilation, activation,
        negative_slope,
    )  # fmt: skip
    args = (x, weight, bias, list(stride), list(padding), list(output_padding), groups,
            list(dilation), activation, float(negative_slope))  # fmt: skip
    return native_or_reference(CONV_TRANSPOSE2D, reference.conv_transpose2d, args, unbatched)


# --- conv_transpose2d_with_stats: fake kernel and autograd ------------------------------


def _fake_with_stats(x, weight, bias, stride, padding, output_padding, groups, dilation):
    g = CONV_TRANSPOSE2D.geometry((stride, padding, output_padding, groups, dilation))
    shape = CONV_TRANSPOSE2D.output_shape(x, weight, g)
    out = torch.empty(shape, dtype=x.dtype, device=x.device, memory_format=conv_format(x, weight))
    acc = torch.promote_types(x.dtype, torch.float32)
    channels = out.shape[1]
    return out, x.new_empty((channels,), dtype=acc), x.new_empty((channels,), dtype=acc)


def _setup_with_stats(ctx, inputs, output):
    x, weight, bias, stride, padding, output_padding, groups, dilation = inputs
    out, mean, _ = output
    ctx.args = (stride, padding, output_padding, groups, dilation)
    ctx.has_bias = bias is not None
    ctx.save_for_backward(x, weight, out, mean)


def _backward_with_stats(ctx, grad_out, grad_mean, grad_var):
    """mean = sum(y) / M and var = sum((y - mean)^2) / M over (N, H, W), so their gradients
    reach y as grad_mean / M + grad_var * 2 (y - mean) / M; then the convolution's backward."""
    x, weight, out, mean = ctx.saved_tensors
    stride, padding, output_padding, groups, dilation = ctx.args
    count = out.numel() // out.shape[1]
    grad = grad_out if grad_out is not None else torch.zeros_like(out)
    if grad_mean is not None or grad_var is not None:
        extra = torch.zeros_like(mean).view(1, -1, 1, 1)
        if grad_mean is not None:
            extra = extra + (grad_mean / count).view(1, -1, 1, 1)
        total = grad.to(mean.dtype) + extra
        if grad_var is not None:
            centred = out.to(mean.dtype) - mean.view(1, -1, 1, 1)
            total = total + centred * (2 * grad_var / count).view(1, -1, 1, 1)
        grad = total.to(out.dtype)
    mask = [
        ctx.needs_input_grad[0],
        ctx.needs_input_grad[1],
        ctx.has_bias and ctx.needs_input_grad[2],
    ]
    if torch.is_grad_enabled():
        g = CONV_TRANSPOSE2D.geometry((stride, padding, output_padding, groups, dilation))
        grads = conv_backward(CONV_TRANSPOSE2D, grad, x, weight, g, mask)
    else:
        grads = torch.ops.fastgen.conv_transpose2d_backward(
            grad, x, weight, out, stride, padding, output_padding, groups, dilation, "identity",
            0.0, mask,
        )  # fmt: skip
    grad_input, grad_weight, grad_bias = (g if m else None for g, m in zip(grads, mask))
    return grad_input, grad_weight, grad_bias, None, None, None, None, None


if _extension.LOADED:
    torch.library.register_fake(f"fastgen::{WITH_STATS}")(_fake_with_stats)
    torch.library.register_autograd(
        f"fastgen::{WITH_STATS}", _backward_with_stats, setup_context=_setup_with_stats
    )
