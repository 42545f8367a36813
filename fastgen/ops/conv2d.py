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

from fastgen import _extension
from fastgen._backend import registry
from fastgen.ops._checks import (
    FLOAT_DTYPES,
    check_activation,
    check_conv_args,
    check_like,
    pair,
)
from fastgen.ops.conv_transpose2d import _activation_grad, _conv_format
from fastgen.reference import conv2d as reference
from fastgen.reference.conv2d import ACTIVATIONS

FN = "fastgen.ops.conv2d"
OP = "conv2d"

registry.register(OP, FLOAT_DTYPES)


def output_size(in_size, kernel, stride, padding, dilation):
    return (in_size + 2 * padding - dilation * (kernel - 1) - 1) // stride + 1


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
    size = [
        output_size(x.shape[2 + d], weight.shape[2 + d], stride[d], padding[d], dilation[d])
        for d in range(2)
    ]
    if min(size) < 1:
        raise ValueError(
            f"{FN}: output size {tuple(size)} is below 1 for input {tuple(x.shape)}, weight "
            f"{tuple(weight.shape)}, stride={stride}, padding={padding}, dilation={dilation} "
            "(the padded input is smaller than the dilated kernel)"
        )
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
    unbatched = isinstance(x, torch.Tensor) and x.dim() == 3
    if unbatched:
        x = x.unsqueeze(0)
    stride, padding, dilation = _check(
        x, weight, bias, stride, padding, dilation, groups, activation, negative_slope
    )
    negative_slope = float(negative_slope)
    monotone = activation != "leaky_relu" or negative_slope >= 0
    if monotone and registry.use_native(OP, x):
        args = (x, weight, bias, list(stride), list(padding), list(dilation), groups, activation,
                negative_slope)  # fmt: skip
        needs_grad = (
            x.requires_grad or weight.requires_grad or (bias is not None and bias.requires_grad)
        )
        if needs_grad and torch.is_grad_enabled() and not torch.compiler.is_compiling():
            out = _EagerAutograd.apply(*args)
        else:
            out = torch.ops.fastgen.conv2d.default(*args)
    else:
        out = reference.conv2d(
            x, weight, bias, stride, padding, dilation, groups, activation, negative_slope
        )
    return out.squeeze(0) if unbatched else out


# --- fake kernels and autograd ---------------------------------------------------------------


def _fake_forward(x, weight, bias, stride, padding, dilation, groups, activation, negative_slope):
    size = [
        output_size(x.shape[2 + d], weight.shape[2 + d], stride[d], padding[d], dilation[d])
        for d in range(2)
    ]
    shape = (x.shape[0], weight.shape[0], *size)
    return torch.empty(shape, dtype=x.dtype, device=x.device, memory_format=_conv_format(x, weight))


def _fake_backward(grad_out, x, weight, output, stride, padding, dilation, groups, activation,
                   negative_slope, output_mask):  # fmt: skip
    def empty():
        return grad_out.new_empty((0,))

    layout = _conv_format(x, weight)
    grad_input = torch.empty_like(x, memory_format=layout) if output_mask[0] else empty()
    grad_weight = torch.empty_like(weight, memory_format=layout) if output_mask[1] else empty()
    grad_bias = grad_out.new_empty((weight.shape[0],)) if output_mask[2] else empty()
    return grad_input, grad_weight, grad_bias


def _setup_context(ctx, inputs, output):
    x, weight, bias, stride, padding, dilation, groups, activation, slope = inputs
    ctx.args = (stride, padding, dilation, groups, activation, slope)
    ctx.has_bias = bias is not None
    # identity needs no output in backward; an empty stand-in keeps it from being held alive.
    saved_output = output if activation != "identity" else output.new_empty((0,))
    ctx.save_for_backward(x, weight, saved_output)


def _backward(ctx, grad):
    x, weight, output = ctx.saved_tensors
    stride, padding, dilation, groups, activation, slope = ctx.args
    mask = [
        ctx.needs_input_grad[0],
        ctx.needs_input_grad[1],
        ctx.has_bias and ctx.needs_input_grad[2],
    ]
    if torch.is_grad_enabled() and any(t.requires_grad for t in (grad, x, weight, output)):
        # create_graph=True (R1, WGAN-GP): the same math through differentiable public ops,
        # so the second derivative is exact, including the path through the saved output.
        derivative = _activation_grad(output, activation, slope)
        grad_pre = grad if derivative is None else grad * derivative
        grads = torch.ops.aten.convolution_backward(
            grad_pre, x, weight, [weight.shape[0]], stride, padding, dilation, False, [0, 0],
            groups, mask,
        )  # fmt: skip
    else:
        grads = torch.ops.fastgen.conv2d_backward(
            grad, x, weight, output, stride, padding, dilation, groups, activation, slope, mask
        )
    grad_input, grad_weight, grad_bias = (g if m else None for g, m in zip(grads, mask))
    return grad_input, grad_weight, grad_bias, None, None, None, None, None, None


class _EagerAutograd(torch.autograd.Function):
    """The registered autograd below as a plain autograd.Function, for eager calls.

    Same setup_context and backward; it skips torch.library's generic Python wrapper (a
    pytree walk over the arguments per call), as fastgen.ops.conv_transpose2d does.
    torch.compile traces the registered op instead."""

    @staticmethod
    def forward(ctx, *inputs):
        output = torch.ops.fastgen.conv2d.default(*inputs)
        _setup_context(ctx, inputs, output)
        return output

    @staticmethod
    def backward(ctx, grad):
        return _backward(ctx, grad)


if _extension.LOADED:
    torch.library.register_fake(f"fastgen::{OP}")(_fake_forward)
    torch.library.register_fake(f"fastgen::{OP}_backward")(_fake_backward)
    torch.library.register_autograd(f"fastgen::{OP}", _backward, setup_context=_setup_context)
