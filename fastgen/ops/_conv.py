"""What fastgen.ops.conv2d and fastgen.ops.conv_transpose2d share, written once: the layout
rule, the output-size check, the native call (and the reference fallback) and the fake
kernels; the ops' autograd is C++ (csrc/conv/conv_autograd.cpp: act' from the saved output,
and a differentiable backward for create_graph). Each op keeps only its own checks and
docstring.

The two schemas (csrc/fastgen.cpp) order their geometry as aten's ops do:
    conv2d:            (x, weight, bias, stride, padding, dilation, groups, activation, slope)
    conv_transpose2d:  (x, weight, bias, stride, padding, output_padding, groups, dilation,
                        activation, slope)
and Family.geometry names them, so nothing below depends on the order.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import NamedTuple

import torch

from fastgen import _extension
from fastgen._backend import registry


class Geometry(NamedTuple):
    stride: list
    padding: list
    output_padding: list
    dilation: list
    groups: int


@dataclass(frozen=True)
class Family:
    op: str  # the schema name, "conv2d" or "conv_transpose2d"
    transposed: bool

    @property
    def geometry_args(self) -> int:
        """How many schema arguments sit between bias and activation."""
        return 5 if self.transposed else 4

    def geometry(self, args: tuple) -> Geometry:
        if self.transposed:
            stride, padding, output_padding, groups, dilation = args
            return Geometry(stride, padding, output_padding, dilation, groups)
        stride, padding, dilation, groups = args
        return Geometry(stride, padding, [0, 0], dilation, groups)

    def out_channels(self, weight: torch.Tensor, groups: int) -> int:
        return weight.shape[1] * groups if self.transposed else weight.shape[0]

    def output_shape(self, x: torch.Tensor, weight: torch.Tensor, g: Geometry) -> tuple:
        size = []
        for d in range(2):
            kernel = g.dilation[d] * (weight.shape[2 + d] - 1)
            if self.transposed:
                size.append(
                    (x.shape[2 + d] - 1) * g.stride[d] - 2 * g.padding[d] + kernel
                    + g.output_padding[d] + 1
                )  # fmt: skip
            else:
                size.append((x.shape[2 + d] + 2 * g.padding[d] - kernel - 1) // g.stride[d] + 1)
        return (x.shape[0], self.out_channels(weight, g.groups), *size)


CONV2D = Family("conv2d", transposed=False)
CONV_TRANSPOSE2D = Family("conv_transpose2d", transposed=True)


def conv_format(x: torch.Tensor, weight: torch.Tensor) -> torch.memory_format:
    """The layout of a convolution's output and gradients, aten's rule (conv_format in
    csrc/conv/conv_common.h): channels_last if the input or the weight is, as memory_format
    reads them."""
    if memory_format(x) == torch.channels_last:
        return torch.channels_last
    return memory_format(weight)


def memory_format(t: torch.Tensor) -> torch.memory_format:
    """channels_last when `t`'s strides say so the way aten's convolutions read them
    (``Tensor.suggest_memory_format`` in C++), else NCHW.

    The strides decide, not ``is_contiguous``: a weight with one input channel after
    ``Module.to(memory_format=torch.channels_last)`` (strides [16, 1, 4, 1] for [32, 1, 4, 4])
    is contiguous both ways, and stock convolutions still run it channels_last. Walking the
    dims from the fastest (C, W, H, N), each stride must be at least the span of the dims
    before it; a tie between N's stride and C's (an N111-like tensor) counts as NCHW.
    """
    if t.dim() != 4:
        return torch.contiguous_format
    sizes, strides = t.shape, t.stride()
    if strides[1] == 0:
        return torch.contiguous_format
    span = 0
    for d in (1, 3, 2, 0):
        if sizes[d] == 0 or strides[d] < span or (d == 0 and span == strides[1]):
            return torch.contiguous_format
        span = strides[d] * sizes[d] if sizes[d] > 1 else strides[d]
    return torch.channels_last


def native_call(family: Family, args: tuple) -> torch.Tensor | None:
    """torch.ops.fastgen.<op>(*args) when the native kernel serves the call (its autograd is
    a C++ kernel: csrc/conv/conv_autograd.cpp), else None: the caller runs the reference.
    args: the schema's arguments, already checked."""
    x, weight, bias = args[:3]
    activation, slope = args[-2:]
    monotone = activation != "leaky_relu" or slope >= 0
    if not (monotone and registry.use_native(family.op, x)):
        return None
    mask = [x.requires_grad, weight.requires_grad, bias is not None and bias.requires_grad]
    needs_grad = any(mask) and torch.is_grad_enabled()
    if torch.compiler.is_compiling():
        return getattr(torch.ops.fastgen, family.op).default(*args)
    if activation == "identity" and _aten_won(family, args, mask if needs_grad else None):
        return None
    return getattr(torch.ops.fastgen, family.op).default(*args)


def _aten_won(family: Family, args: tuple, backward_mask: list | None) -> bool:
    """Whether this CPU call has nothing left for fastgen to do: no activation to fuse (the
    caller checks), and the measured choice (csrc/conv/conv_select_cpu.h) took aten's
    convolution for its forward and, when gradients are wanted, its backward. The op would
    then only add its dispatch (its autograd node and a second trip through aten's
    dispatcher: 0.1-0.5 ms a layer on the main job's bf16 blocks when that node was Python), so
    the caller runs the stock functional op instead, which is the same convolution. The first
    calls of a shape go through the op, which measures it."""
    x, weight = args[:2]
    if x.device.type != "cpu":
        return False
    return _measured_aten(family, x, weight, args[3 : 3 + family.geometry_args], backward_mask)


def _measured_aten(family: Family, x, weight, geometry: tuple, backward_mask, dtype=None) -> bool:
    """The measured choice's answer (measured_aten in csrc/conv/conv_select_cpu.h) for x and
    weight with operands of `dtype` (default: x's); `geometry`: the op's arguments between
    bias and activation."""
    g = family.geometry(geometry)
    return _extension._C._conv_cpu_measured_aten(
        family.op, x, weight, g.stride, g.padding, g.output_padding, g.dilation, g.groups,
        backward_mask, dtype,
    )  # fmt: skip


def stock_layer_wins(family: Family, x, weight, bias, geometry: tuple) -> bool:
    """Whether a layer's call with nothing to fuse (activation "identity") may call the stock
    functional op on the layer's own tensors: the call is one _aten_won would send to the
    stock op anyway, asked before the autocast casts (with the dtype they would give), so the
    layer skips the op's checks (a measured key was checked when it was first seen: same
    sizes, dtype and layouts) and its Python casts; autocast then casts in C++ as it does for
    the stock layer, reusing the cast of a weight used twice in one autocast region. Only
    where the dtypes make the op and the stock layer agree: x, weight and bias of one dtype, or
    float32 and the autocast dtype under autocast. `geometry`: the op's arguments between
    bias and activation."""
    if x.device.type != "cpu" or x.dim() != 4 or torch.compiler.is_compiling():
        return False
    if not (_extension.LOADED and registry.use_native(family.op, x)):
        return False
    dtype = x.dtype
    if torch.is_autocast_enabled("cpu"):
        dtype = torch.get_autocast_dtype("cpu")
        eligible = (torch.float32, dtype)
    else:
        eligible = (dtype,)
    if x.dtype not in eligible or weight.dtype not in eligible:
        return False
    if bias is not None and bias.dtype not in eligible:
        return False
    mask = [x.requires_grad, weight.requires_grad, bias is not None and bias.requires_grad]
    backward_mask = mask if any(mask) and torch.is_grad_enabled() else None
    return _measured_aten(family, x, weight, geometry, backward_mask, dtype)


def check_output_size(fn: str, family: Family, x, weight, g: Geometry, hint: str = "") -> None:
    """ValueError unless the output (Family.output_shape, the formula in each op's docstring)
    is at least 1x1; `hint` ends the message."""
    size = family.output_shape(x, weight, g)[2:]
    if min(size) < 1:
        raise ValueError(
            f"{fn}: output size {size} is below 1 for input {tuple(x.shape)}, weight "
            f"{tuple(weight.shape)}, stride={g.stride}, padding={g.padding}, "
            f"dilation={g.dilation}{hint}"
        )


def as_batch(x) -> tuple[torch.Tensor, bool]:
    """(x, False), or an unbatched 3-D x [C, H, W] as a batch of one and True."""
    if isinstance(x, torch.Tensor) and x.dim() == 3:
        return x.unsqueeze(0), True
    return x, False


def native_or_reference(
    family: Family, reference: Callable, args: tuple, unbatched: bool
) -> torch.Tensor:
    """The op on its checked schema arguments `args`: the native kernel when it serves the
    call (native_call), else ``reference(*args)`` (the stock code); the batch of one that
    as_batch added is taken off again when `unbatched`."""
    out = native_call(family, args)
    if out is None:
        out = reference(*args)
    return out.squeeze(0) if unbatched else out


def conv_cpu_choices() -> list[dict]:
    """The choices CPU convolutions of this process made between fastgen's kernels and aten's
    (csrc/conv/conv_select_cpu.h; README, "Which CPU convolution runs").

    Returns:
        One dict per key measured so far: ``key`` (op, pass, operand sizes and layouts, dtype,
        geometry, threads, CPU copy), ``choice`` ("fastgen" or "aten"), ``fastgen_ms`` and
        ``aten_ms`` (best timed run; None where fastgen has no kernel for the shape) and
        ``measurements`` (1: a key seen again is not timed again). Empty without the extension.
    """
    if not _extension.LOADED:
        return []
    return [
        {
            "key": key,
            "choice": choice,
            "fastgen_ms": None if fastgen_ms < 0 else fastgen_ms,
            "aten_ms": None if aten_ms < 0 else aten_ms,
            "measurements": measurements,
        }
        for key, choice, fastgen_ms, aten_ms, measurements in _extension._C._conv_cpu_choices()
    ]


def prefer_conv_cpu_choices(choices) -> None:
    """Takes recorded CPU convolution choices without timing them again.

    Args:
        choices: dicts with ``key`` and ``choice`` ("fastgen" or "aten"), as
            conv_cpu_choices() returns them (other fields are ignored). A resumed training run
            passes the ones its checkpoint recorded, so that it runs the same kernels as the
            run it continues.
    Returns:
        None. From then on this process takes each key's recorded choice instead of
        measuring it; without the extension nothing happens.
    """
    if not _extension.LOADED:
        return
    for record in choices:
        _extension._C._conv_cpu_prefer(str(record["key"]), str(record["choice"]))


def conv_backward(family, grad, x, weight, g: Geometry, mask) -> tuple:
    """aten's convolution backward (differentiable) for grad of the pre-activation output."""
    return torch.ops.aten.convolution_backward(
        grad, x, weight, [family.out_channels(weight, g.groups)], g.stride, g.padding,
        g.dilation, family.transposed, g.output_padding, g.groups, mask,
    )  # fmt: skip


# --- fake kernels ----------------------------------------------------------------------------


def _fake_forward(family: Family):
    def fake(x, weight, bias, *rest):
        g = family.geometry(rest[: family.geometry_args])
        shape = family.output_shape(x, weight, g)
        layout = conv_format(x, weight)
        return torch.empty(shape, dtype=x.dtype, device=x.device, memory_format=layout)

    return fake


def _fake_backward(family: Family):
    def fake(grad_out, x, weight, output, *rest):
        g = family.geometry(rest[: family.geometry_args])
        output_mask = rest[-1]
        layout = conv_format(x, weight)

        def empty():
            return grad_out.new_empty((0,))

        grad_input = torch.empty_like(x, memory_format=layout) if output_mask[0] else empty()
        grad_weight = torch.empty_like(weight, memory_format=layout) if output_mask[1] else empty()
        channels = family.out_channels(weight, g.groups)
        grad_bias = grad_out.new_empty((channels,)) if output_mask[2] else empty()
        return grad_input, grad_weight, grad_bias

    return fake


if _extension.LOADED:
    for _family in (CONV2D, CONV_TRANSPOSE2D):
        torch.library.register_fake(f"fastgen::{_family.op}")(_fake_forward(_family))
        torch.library.register_fake(f"fastgen::{_family.op}_backward")(_fake_backward(_family))
