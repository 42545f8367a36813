"""What the conv2d, conv_transpose2d and convolution-engine tests share: layouts, one harness
that runs an op and its float64 reference on the same inputs, and the comparison."""

from __future__ import annotations

import contextlib

import pytest
import torch
from conftest import assert_close, on_device, reference_dtype

from fastgen.ops import conv2d, conv_transpose2d
from fastgen.reference import conv2d as reference_conv2d
from fastgen.reference import conv_transpose2d as reference_conv_transpose2d

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
