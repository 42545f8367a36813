"""fastgen.ops.conv2d against its stock-PyTorch reference (fastgen.reference)."""

from __future__ import annotations

import conv_helpers
import pytest
import torch
from conftest import CUDA_DEVICES, DTYPES, examples, on_device
from hypothesis import given, settings
from hypothesis import strategies as st

from fastgen import _extension
from fastgen.ops import conv2d
from fastgen.reference.conv2d import ACTIVATIONS

native = pytest.mark.skipif(not _extension.LOADED, reason="the fastgen extension is not built")


def check(config, dtype, device, kind="contiguous", seed=0):
    return conv_helpers.check("conv2d", config, dtype, device, kind, seed)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("kind", ["contiguous", "channels_last"])
def test_gemm_shapes(dtype, kind):
    """The CPU shapes done as plain GEMMs (csrc/common/gemm_conv_cpu.h) match the reference:
    a 1x1 output (the DCGAN discriminator's head) and the data gradient of a convolution
    from one channel (a grayscale first layer, GEMM + col2im; from 3 channels: aten's)."""
    check(dict(input=(6, 40, 4, 4), weight=(3, 4, 4), bias=False), dtype, "cpu", kind)
    check(dict(input=(6, 40, 4, 4), weight=(1, 4, 4), stride=2), dtype, "cpu", kind)
    first = dict(input=(5, 3, 10, 12), weight=(16, 4, 4), stride=2, padding=1)
    check(dict(first, activation="leaky_relu", negative_slope=0.2), dtype, "cpu", kind)
    check(dict(first, input=(2, 1, 9, 7), dilation=2, padding=2), dtype, "cpu", kind)


@st.composite
def configs(draw):
    groups = draw(st.integers(1, 3))
    stride = (draw(st.integers(1, 3)), draw(st.integers(1, 3)))
    dilation = (draw(st.integers(1, 2)), draw(st.integers(1, 2)))
    kernel = (draw(st.integers(1, 4)), draw(st.integers(1, 4)))
    padding = tuple(draw(st.integers(0, 2)) for _ in range(2))
    # At least the dilated kernel, so every draw is a valid convolution even without padding.
    size = tuple(dilation[d] * (kernel[d] - 1) + 1 + draw(st.integers(0, 6)) for d in range(2))
    return dict(
        input=(draw(st.integers(1, 3)), groups * draw(st.integers(1, 3)), *size),
        weight=(groups * draw(st.integers(1, 3)), *kernel),
        groups=groups,
        stride=stride,
        padding=padding,
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
        dict(input=(2, 8, 4, 4), weight=(1, 4, 4), stride=1, padding=0),  # DCGAN head: one logit
        dict(input=(1, 3, 1, 1), weight=(2, 3, 3), padding=1),  # padding larger than the input
        dict(input=(2, 5, 7, 3), weight=(3, 3, 2), stride=(3, 2), padding=(2, 1),
             dilation=(1, 2), activation="sigmoid"),
        dict(input=(3, 6, 5, 5), weight=(6, 3, 3), groups=6, stride=2,
             activation="leaky_relu"),  # depthwise
        dict(input=(2, 4, 5, 5), weight=(2, 2, 2), stride=2, activation="leaky_relu",
             negative_slope=-0.5),  # not monotone: takes the reference path
        dict(input=(2, 4, 5, 5), weight=(2, 2, 2), stride=2, activation="leaky_relu",
             negative_slope=0.0),
    ],
    ids=["ones", "dcgan-head", "pad-beyond-input", "odd", "depthwise", "negative-slope",
         "zero-slope"],
)  # fmt: skip
def test_odd_shapes(config):
    for dtype in (torch.float32, torch.float64):
        check(config, dtype, "cpu")


# --- bad input -----------------------------------------------------------------------------

X, W, B = torch.randn(2, 4, 5, 5), torch.randn(3, 4, 3, 3), torch.randn(3)
BAD = [
    (dict(x=torch.randn(4, 5)), ValueError, "input must be 4-D"),
    (dict(x=torch.randn(2, 4, 5, 5, 1)), ValueError, "input must be 4-D"),
    (dict(weight=torch.randn(3, 4, 3)), ValueError, "weight must be 4-D"),
    (dict(weight=torch.randn(3, 5, 3, 3)), ValueError,
     r"weight has 5 input channels per group but input has 4 channels \(groups=1\)"),
    (dict(groups=3), ValueError, "divisible by groups"),
    (dict(groups=2, weight=torch.randn(3, 2, 3, 3)), ValueError,
     r"output channels \(3\) must be divisible by groups"),
    (dict(groups=0), ValueError, "groups must be an int >= 1"),
    (dict(weight=torch.randn(3, 4, 0, 3)), ValueError, "weight must have no zero-size dim"),
    (dict(bias=torch.randn(4)), ValueError, r"bias must have shape \(3,\)"),
    (dict(weight=W.double()), TypeError, "weight has dtype torch.float64 but input"),
    (dict(bias=B.half()), TypeError, "bias has dtype torch.float16"),
    (dict(x=X.long()), TypeError, "input must be float32"),
    (dict(weight=W.int()), TypeError, "weight must be float32"),
    (dict(x="nope"), TypeError, "input must be a Tensor"),
    (dict(weight=torch.randn(3, 4, 3, 3, device="meta")), ValueError, "weight is on meta"),
    (dict(activation="gelu"), ValueError, "activation must be one of"),
    (dict(stride=0), ValueError, "stride must be >= 1"),
    (dict(padding=-1), ValueError, "padding must be >= 0"),
    (dict(padding="same"), ValueError, "padding must be an int or a pair of ints, got 'same'"),
    (dict(dilation=(1, 0)), ValueError, "dilation must be >= 1"),
    (dict(stride=(1, 2, 3)), ValueError, "stride must be an int or a pair"),
    (dict(weight=torch.randn(3, 4, 7, 7)), ValueError, "output size .* is below 1"),
    (dict(x=torch.randn(2, 4, 0, 5)), ValueError, "height and width must be >= 1"),
    (dict(negative_slope="0.1"), TypeError, "negative_slope must be a float"),
]  # fmt: skip


@pytest.mark.parametrize("bad,error,match", BAD, ids=[m for _, _, m in BAD])
def test_bad_input(bad, error, match):
    args = dict(x=X, weight=W, bias=B, stride=1, padding=0, dilation=1, groups=1,
                activation="relu", negative_slope=0.01)  # fmt: skip
    args.update(bad)
    with pytest.raises(error, match=match) as info:
        conv2d(**args)
    assert "fastgen.ops.conv2d" in str(info.value)


# --- CUDA kernels: under the SIMT emulator here, and on a GPU when there is one ----------------
# (the shared CUDA tests are in test_conv_family.py)


@pytest.mark.parametrize("name", CUDA_DEVICES)
@settings(max_examples=examples(40), deadline=None, derandomize=True)
@given(config=configs(), dtype=st.sampled_from(DTYPES))
def test_cuda_hypothesis(name, config, dtype):
    with on_device(name) as device:
        check(config, dtype, device, "channels_last")
