r"""fastgen.ops.conv2d: a convolution with bias and activation fused.

    out = act(conv2d(x, weight) + bias[None, :, None, None])

For ``x`` of shape ``[N, C_in, H, W]`` (or unbatched ``[C_in, H, W]``) and ``weight`` of
shape ``[C_out, C_in / groups, kH, kW]``, ``out`` is ``[N, C_out, H_out, W_out]`` with

    H_out = (H + 2 * padding[0] - dilation[0] * (kH - 1) - 1) // stride[0] + 1

(``W_out`` likewise), exactly as ``torch.nn.functional.conv2d``. ``act`` is one of
``identity``, ``relu``, ``leaky_relu`` (``negative_slope``), ``tanh``, ``sigmoid``. Padding
is ints or pairs of ints (zeros); the strings ``"same"``/``"valid"`` are not accepted here
(``fastgen.nn.Conv2d`` takes them, padding the input itself).

Dtypes: float32, float64, float16, bfloat16 (the epilogue computes half types in float32);
``x``, ``weight`` and ``bias`` share dtype and device. Layout: any strides in; the output and
the gradients are channels_last when ``x`` or ``weight`` is channels_last (and not also
plainly contiguous), NCHW otherwise, as aten's convolution chooses.

Native path (``torch.ops.fastgen.conv2d``): the convolution without bias (aten's today; the
CPU backend's hook is csrc/conv2d/conv2d_cpu.cpp), then ONE in-place pass for bias +
activation. Backward (``torch.ops.fastgen.conv2d_backward``) takes act' from the saved
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
    """act(F.conv2d(x, weight, bias, stride, padding, dilation, groups)) in one fused op; see
    the module docstring for the math, shapes and layouts."""
    x, unbatched = as_batch(x)
    stride, padding, dilation = _check(
        x, weight, bias, stride, padding, dilation, groups, activation, negative_slope
    )
    args = (x, weight, bias, list(stride), list(padding), list(dilation), groups, activation,
            float(negative_slope))  # fmt: skip
    return native_or_reference(CONV2D, reference.conv2d, args, unbatched)
