"""What the conv2d, conv_transpose2d and convolution-engine tests share: layouts, one harness
that runs an op and its float64 reference on the same inputs, and the comparison."""

from __future__ import annotations

import contextlib

import pytest
import torch
from conftest import assert_close, on_device, reference_dtype
from hypothesis import strategies as st

from fastgen.ops import conv2d, conv_transpose2d
from fastgen.reference import conv2d as reference_conv2d
from fastgen.reference import conv_transpose2d as reference_conv_transpose2d
from fastgen.reference.conv2d import ACTIVATIONS

LAYOUTS = ["contiguous", "channels_last", "strided"]
# The route switch of each op (csrc/conv/conv_engine.h): auto | fastgen | cudnn.
ROUTE_ENV = {"conv2d": "FASTGEN_CONV2D", "conv_transpose2d": "FASTGEN_CONV_TRANSPOSE"}


@contextlib.contextmanager
def engine_forced(name: str):
    """The torch device for the test device `name` (emulated-cuda or cuda), with both conv
    ops forced onto fastgen's implicit-GEMM engine for the duration."""
    with pytest.MonkeyPatch.context() as patch, on_device(name) as device:
        for variable in ROUTE_ENV.values():
            patch.setenv(variable, "fastgen")
        yield device


# op name -> (fastgen op, its reference, the geometry keyword arguments it takes)
OPS = {
    "conv2d": (conv2d, reference_conv2d.conv2d, ("stride", "padding", "dilation")),
    "conv_transpose2d": (
        conv_transpose2d,
        reference_conv_transpose2d.conv_transpose2d,
        ("stride", "padding", "output_padding", "dilation"),
    ),
}


def layout(t: torch.Tensor, kind: str) -> torch.Tensor:
    """The same values as `t` in NCHW, channels_last or a non-contiguous (strided) view."""
    if kind == "channels_last":
        return t.contiguous(memory_format=torch.channels_last)
    if kind == "strided":
        wide = torch.zeros(*t.shape[:-1], 2 * t.shape[-1], dtype=t.dtype, device=t.device)
        wide[..., ::2] = t
        return wide[..., ::2]
    return t.contiguous()


def weight_shape(op: str, config: dict) -> tuple[int, ...]:
    """config["weight"] is (C_out, kH, kW) for conv2d and (C_out / groups, kH, kW) for a
    transposed convolution, as each op's own weight is laid out."""
    c_in, groups = config["input"][1], config.get("groups", 1)
    first, kh, kw = config["weight"]
    if op == "conv2d":
        return (first, c_in // groups, kh, kw)
    return (c_in, first, kh, kw)


def run_both(
    op: str, config: dict, dtype: torch.dtype, device: str, kind: str = "contiguous", seed: int = 0
):
    """Output and gradients of the op (at `dtype`) and of its reference (at the oracle dtype,
    from the same upcast inputs). config: input (N, C_in, H, W), weight (see weight_shape),
    the geometry, groups, bias (default True), activation and negative_slope."""
    fn, reference, geometry = OPS[op]
    generator = torch.Generator().manual_seed(seed)
    groups = config.get("groups", 1)
    shapes = {"x": tuple(config["input"]), "weight": weight_shape(op, config)}
    if config.get("bias", True):
        out_channels = shapes["weight"][0] if op == "conv2d" else shapes["weight"][1] * groups
        shapes["bias"] = (out_channels,)
    base = {k: (torch.randn(s, generator=generator) * 0.5).to(dtype) for k, s in shapes.items()}
    kwargs = {k: config[k] for k in geometry if k in config}
    kwargs.update(groups=groups, activation=config.get("activation", "identity"))
    kwargs["negative_slope"] = config.get("negative_slope", 0.2)

    def call(fn, tensors):
        out = fn(tensors["x"], tensors["weight"], tensors.get("bias"), **kwargs)
        grad = torch.randn(out.shape, generator=torch.Generator().manual_seed(seed + 1))
        grads = torch.autograd.grad(out, list(tensors.values()), grad.to(out))
        return out, dict(zip(tensors, grads))

    ours = {k: v.to(device) for k, v in base.items()}
    ours["x"] = layout(ours["x"], kind)
    ours = {k: v.requires_grad_() for k, v in ours.items()}
    oracle = {k: v.to(device, reference_dtype(dtype)).requires_grad_() for k, v in base.items()}
    return call(fn, ours), call(reference, oracle)


def check(op: str, config, dtype, device, kind="contiguous", seed=0, scale: float = 1.0):
    """The op's output and gradients against the reference's, within the tolerance table
    (times `scale`); returns the output."""
    (out, grads), (expected, expected_grads) = run_both(op, config, dtype, device, kind, seed)
    assert out.dtype == dtype and out.shape == expected.shape
    # Sums over C_in * kH * kW products: allow the table's tolerance times a few.
    assert_close(out, expected, dtype, scale=4 * scale, msg=f"{op} output {config} {kind}")
    for name, grad in grads.items():
        assert_close(
            grad, expected_grads[name], dtype, scale=8 * scale,
            msg=f"{op} grad {name} {config} {kind}",
        )  # fmt: skip
    return out


@st.composite
def configs(draw, op: str, *, channels=None, groups=None, dilation=None, kernel=None, size=None):
    """A random valid call of `op` as run_both takes it. The keyword arguments are
    strategies for the ranges (defaults: 1-3 channels per group, 1-3 groups, dilation 1-2,
    kernel 1-4, and `size` 0-6: the input's extent beyond the smallest valid one); every draw
    is valid (no draw is rejected)."""
    size = st.integers(0, 6) if size is None else size
    channels = st.integers(1, 3) if channels is None else channels
    kernel = st.integers(1, 4) if kernel is None else kernel
    dilation = st.integers(1, 2) if dilation is None else dilation
    group_count = draw(st.integers(1, 3) if groups is None else groups)
    kernel_size = (draw(kernel), draw(kernel))
    dil = (draw(dilation), draw(dilation))
    stride = (draw(st.integers(1, 3)), draw(st.integers(1, 3)))
    padding = (draw(st.integers(0, 2)), draw(st.integers(0, 2)))
    extent = [dil[d] * (kernel_size[d] - 1) + 1 for d in range(2)]  # the dilated kernel
    geometry = dict(groups=group_count, stride=stride, dilation=dil)
    if op == "conv2d":
        # The padded input at least as large as the dilated kernel (padding may exceed it).
        spatial = tuple(max(1, extent[d] - 2 * padding[d]) + draw(size) for d in range(2))
        weight = (group_count * draw(channels), *kernel_size)
    else:
        output_padding = tuple(draw(st.integers(0, max(s, d) - 1)) for s, d in zip(stride, dil))
        spatial = (1 + draw(size), 1 + draw(size))
        out = [(spatial[d] - 1) * stride[d] - 2 * padding[d] + extent[d] + output_padding[d]
               for d in range(2)]  # fmt: skip
        if min(out) < 1:  # an invalid combination: no padding instead of rejecting the draw
            padding = (0, 0)
        geometry["output_padding"] = output_padding
        weight = (draw(channels), *kernel_size)
    return dict(
        input=(draw(st.integers(1, 3)), group_count * draw(channels), *spatial),
        weight=weight,
        padding=padding,
        bias=draw(st.booleans()),
        activation=draw(st.sampled_from(ACTIVATIONS)),
        **geometry,
    )
