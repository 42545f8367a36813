"""fastgen.ops.conv_transpose2d against its stock-PyTorch reference (fastgen.reference)."""

from __future__ import annotations

import conv_helpers
import pytest
import torch
from conftest import CUDA_DEVICES, DTYPES, examples, on_device
from hypothesis import given, settings
from hypothesis import strategies as st

from fastgen import _extension
from fastgen.ops import conv_transpose2d
from fastgen.reference.conv_transpose2d import ACTIVATIONS

native = pytest.mark.skipif(not _extension.LOADED, reason="the fastgen extension is not built")


def check(config, dtype, device, kind="contiguous", seed=0):
    return conv_helpers.check("conv_transpose2d", config, dtype, device, kind, seed)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("stride", [1, 2])
@pytest.mark.parametrize("kind", ["contiguous", "channels_last"])
def test_single_pixel_input(dtype, stride, kind):
    """A 1x1 input without padding (the DCGAN generator's first layer) runs as one GEMM on
    CPU: same output, gradients and layout as the convolution."""
    config = dict(input=(5, 100, 1, 1), weight=(24, 4, 4), stride=stride, activation="relu")
    check(config, dtype, "cpu", kind)
    check(dict(config, bias=False, activation="identity"), dtype, "cpu", kind)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("c_out", [1, 3])
@pytest.mark.parametrize("kind", ["contiguous", "channels_last"])
def test_few_output_channels(dtype, c_out, kind):
    """A transposed convolution of an NCHW input to one channel (a grayscale output layer)
    runs as GEMM + col2im on CPU; to 3 channels, or from channels_last, as aten's."""
    config = dict(input=(4, 24, 7, 6), weight=(c_out, 4, 4), stride=2, padding=1)
    check(dict(config, activation="tanh"), dtype, "cpu", kind)
    check(dict(config, stride=3, padding=2, dilation=2, bias=False), dtype, "cpu", kind)


@st.composite
def configs(draw):
    groups = draw(st.integers(1, 3))
    stride = (draw(st.integers(1, 3)), draw(st.integers(1, 3)))
    dilation = (draw(st.integers(1, 2)), draw(st.integers(1, 2)))
    kernel = (draw(st.integers(1, 4)), draw(st.integers(1, 4)))
    output_padding = tuple(draw(st.integers(0, max(s, d) - 1)) for s, d in zip(stride, dilation))
    padding = tuple(draw(st.integers(0, 2)) for _ in range(2))
    size = (draw(st.integers(1, 7)), draw(st.integers(1, 7)))
    out = [
        (size[d] - 1) * stride[d] - 2 * padding[d] + dilation[d] * (kernel[d] - 1)
        + output_padding[d] + 1
        for d in range(2)
    ]  # fmt: skip
    if min(out) < 1:  # an invalid combination: shrink padding instead of rejecting the draw
        padding = (0, 0)
    return dict(
        input=(draw(st.integers(1, 3)), groups * draw(st.integers(1, 3)), *size),
        weight=(draw(st.integers(1, 3)), *kernel),
        groups=groups,
        stride=stride,
        padding=padding,
        output_padding=output_padding,
        dilation=dilation,
        bias=draw(st.booleans()),
        activation=draw(st.sampled_from(ACTIVATIONS)),
    )


@settings(max_examples=40, deadline=None, derandomize=True)
@given(
    config=configs(),
    dtype=st.sampled_from(DTYPES),
    kind=st.sampled_from(["contiguous", "channels_last", "strided"]),
)
def test_matches_reference(config, dtype, kind):
    out = check(config, dtype, "cpu", kind)
    if kind == "channels_last" and not out.is_contiguous():
        assert out.is_contiguous(memory_format=torch.channels_last)


@pytest.mark.parametrize(
    "config",
    [
        dict(input=(1, 1, 1, 1), weight=(1, 1, 1)),  # everything size 1
        dict(input=(1, 3, 1, 1), weight=(5, 4, 4), stride=1, padding=0),  # DCGAN first layer
        dict(input=(2, 5, 7, 3), weight=(2, 3, 5), stride=(3, 2), padding=(2, 1),
             output_padding=(2, 0), dilation=(1, 2), activation="sigmoid"),
        dict(input=(3, 6, 5, 5), weight=(1, 3, 3), groups=6, stride=2, output_padding=1,
             activation="leaky_relu"),  # depthwise
        dict(input=(2, 4, 3, 3), weight=(2, 2, 2), stride=2, activation="leaky_relu",
             negative_slope=-0.5),  # not monotone: takes the reference path
        dict(input=(2, 4, 3, 3), weight=(2, 2, 2), stride=2, activation="leaky_relu",
             negative_slope=0.0),
    ],
    ids=["ones", "dcgan-first", "odd", "depthwise", "negative-slope", "zero-slope"],
)  # fmt: skip
def test_odd_shapes(config):
    for dtype in (torch.float32, torch.float64):
        check(config, dtype, "cpu")


# --- bad input -----------------------------------------------------------------------------

X, W, B = torch.randn(2, 4, 5, 5), torch.randn(4, 3, 3, 3), torch.randn(3)
BAD = [
    (dict(x=torch.randn(4, 5)), ValueError, "input must be 4-D"),
    (dict(x=torch.randn(2, 4, 5, 5, 1)), ValueError, "input must be 4-D"),
    (dict(weight=torch.randn(4, 3, 3)), ValueError, "weight must be 4-D"),
    (dict(weight=torch.randn(5, 3, 3, 3)), ValueError, "weight has 5 input channels but input has 4"),
    (dict(groups=3), ValueError, "divisible by groups"),
    (dict(groups=0), ValueError, "groups must be an int >= 1"),
    (dict(bias=torch.randn(4)), ValueError, r"bias must have shape \(3,\)"),
    (dict(weight=W.double()), TypeError, "weight has dtype torch.float64 but input"),
    (dict(bias=B.half()), TypeError, "bias has dtype torch.float16"),
    (dict(x=X.long()), TypeError, "input must be float32"),
    (dict(weight=W.int()), TypeError, "weight must be float32"),
    (dict(x="nope"), TypeError, "input must be a Tensor"),
    (dict(weight=torch.randn(4, 3, 3, 3, device="meta")), ValueError, "weight is on meta"),
    (dict(activation="gelu"), ValueError, "activation must be one of"),
    (dict(stride=0), ValueError, "stride must be >= 1"),
    (dict(padding=-1), ValueError, "padding must be >= 0"),
    (dict(dilation=(1, 0)), ValueError, "dilation must be >= 1"),
    (dict(stride=(1, 2, 3)), ValueError, "stride must be an int or a pair"),
    (dict(output_padding=2, stride=2), ValueError, "output_padding must be smaller than stride"),
    (dict(padding=4), ValueError, "output size .* is below 1"),
    (dict(x=torch.randn(2, 4, 0, 5)), ValueError, "height and width must be >= 1"),
    (dict(negative_slope="0.1"), TypeError, "negative_slope must be a float"),
]  # fmt: skip


@pytest.mark.parametrize("bad,error,match", BAD, ids=[m for _, _, m in BAD])
def test_bad_input(bad, error, match):
    args = dict(x=X, weight=W, bias=B, stride=1, padding=0, output_padding=0, groups=1,
                dilation=1, activation="relu", negative_slope=0.01)  # fmt: skip
    args.update(bad)
    with pytest.raises(error, match=match) as info:
        conv_transpose2d(**args)
    assert "fastgen.ops.conv_transpose2d" in str(info.value)


# --- CUDA kernels: under the SIMT emulator here, and on a GPU when there is one ----------------
# (the shared CUDA tests are in test_conv_family.py)


@pytest.mark.parametrize("name", CUDA_DEVICES)
@settings(max_examples=examples(40), deadline=None, derandomize=True)
@given(config=configs(), dtype=st.sampled_from(DTYPES))
def test_cuda_hypothesis(name, config, dtype):
    with on_device(name) as device:
        check(config, dtype, device, "channels_last")
