r"""fastgen.ops.conv2d: a convolution with bias and activation fused (the math, shapes,
dtypes and layouts are in the function's docstring; how it runs is here).

Native path (``torch.ops.fastgen.conv2d``): the convolution without bias, then ONE in-place
pass for bias + activation. The convolution is, on CPU, fastgen's Winograd, GEMM or
image-layer kernels (from 1-4 channels) where they apply and measured faster than aten's for
the shape, aten's otherwise
(csrc/conv2d/conv2d_cpu.cpp, csrc/conv/conv_select_cpu.h; README, "Which CPU convolution
runs"); on CUDA, cuDNN's through aten or fastgen's implicit-GEMM engine, as FASTGEN_CONV2D
routes it (csrc/conv/conv_engine.h; cuDNN by default). Backward (``torch.ops.fastgen.conv2d_backward``) takes act' from the saved
output (relu/leaky_relu 1 or slope by the sign of y, tanh ``1 - y^2``, sigmoid ``y (1 - y)``),
so no pre-activation tensor is kept, then the convolution's backward. Double backward (R1,
WGAN-GP) runs the same formula through differentiable public ops. ``leaky_relu`` with a
negative slope is not monotone, so its derivative cannot be read from the output: those
calls take the reference path (stock ops), which is exact.
"""

from __future__ import annotations

import torch

from fastgen._backend import registry
from fastgen.ops._checks import (
    FLOAT_DTYPES,
    check_activation,
    check_conv_args,
    check_like,
    pair,
)
from fastgen.ops._conv import CONV2D, Geometry, as_batch, check_output_size, native_or_reference
from fastgen.reference import conv2d as reference
from fastgen.reference.conv2d import ACTIVATIONS

FN = "fastgen.ops.conv2d"
OP = "conv2d"

registry.register(OP, FLOAT_DTYPES)


def _check(x, weight, bias, stride, padding, dilation, groups, activation, slope):
    """Validates everything once; returns the normalised (stride, padding, dilation) pairs."""
    check_conv_args(FN, x, weight, groups, "[C_out, C_in / groups, kH, kW]")
    if weight.shape[1] * groups != x.shape[1]:
        raise ValueError(
            f"{FN}: weight has {weight.shape[1]} input channels per group but input has "
            f"{x.shape[1]} channels (groups={groups})"
        )
    if weight.shape[0] % groups:
        raise ValueError(
            f"{FN}: weight's output channels ({weight.shape[0]}) must be divisible by groups "
            f"({groups})"
        )
    if bias is not None:
        check_like(FN, "bias", bias, x, "input", shape=(weight.shape[0],))
    if isinstance(padding, str):
        raise ValueError(
            f"{FN}: padding must be an int or a pair of ints, got {padding!r} (fastgen.nn.Conv2d "
            "accepts 'same' and 'valid')"
        )
    stride = pair(FN, "stride", stride, minimum=1)
    padding = pair(FN, "padding", padding, minimum=0)
    dilation = pair(FN, "dilation", dilation, minimum=1)
    geometry = Geometry(stride, padding, (0, 0), dilation, groups)
    hint = " (the padded input is smaller than the dilated kernel)"
    check_output_size(FN, CONV2D, x, weight, geometry, hint)
    check_activation(FN, activation, slope, ACTIVATIONS)
    return stride, padding, dilation


def conv2d(
    x: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor | None = None,
    stride=1,
    padding=0,
    dilation=1,
    groups: int = 1,
    activation: str = "identity",
    negative_slope: float = 0.01,
) -> torch.Tensor:
    r"""``act(F.conv2d(x, weight, bias, stride, padding, dilation, groups))`` in one fused op::

        out = act(conv2d(x, weight) + bias[None, :, None, None])
        H_out = (H + 2 * padding[0] - dilation[0] * (kH - 1) - 1) // stride[0] + 1

    (``W_out`` likewise), exactly as ``torch.nn.functional.conv2d``. Padding is zeros; the
    strings ``"same"``/``"valid"`` are not accepted here (``fastgen.nn.Conv2d`` takes them,
    padding the input itself). Half types compute the bias and activation in float32. The
    output and the gradients are channels_last when ``x`` or ``weight`` is channels_last (and
    not also plainly contiguous), NCHW otherwise, as aten's convolution chooses. Gradients
    flow to x, weight and bias, double backward (R1, WGAN-GP) included. Training and eval
    compute the same thing. ``leaky_relu`` with a negative slope runs the stock ops (its
    derivative cannot be read from the output, which the fused backward does).

    Args:
        x: input, [N, C_in, H, W] or unbatched [C_in, H, W],
            float32/float64/float16/bfloat16, any strides.
        weight: [C_out, C_in / groups, kH, kW], x's dtype and device, no zero-size dim.
        bias: [C_out], x's dtype and device; None for no bias.
        stride: int or pair of ints, >= 1.
        padding: int or pair of ints, >= 0 (zeros on both sides of each dim).
        dilation: int or pair of ints, >= 1.
        groups: int >= 1 dividing C_in and C_out.
        activation: "identity", "relu", "leaky_relu", "tanh" or "sigmoid".
        negative_slope: slope of "leaky_relu" for negative values (ignored by the others).
    Returns:
        Tensor [N, C_out, H_out, W_out] (or [C_out, H_out, W_out] for unbatched x) of x's
        dtype and device, laid out as above.
    """
    x, unbatched = as_batch(x)
    stride, padding, dilation = _check(
        x, weight, bias, stride, padding, dilation, groups, activation, negative_slope
    )
    args = (x, weight, bias, list(stride), list(padding), list(dilation), groups, activation,
            float(negative_slope))  # fmt: skip
    return native_or_reference(CONV2D, reference.conv2d, args, unbatched)
