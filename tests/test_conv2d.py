"""fastgen.ops.conv2d against its stock-PyTorch reference (fastgen.reference)."""

from __future__ import annotations

import conv_helpers
import pytest
import torch
from conftest import CUDA_DEVICES, DTYPES, assert_close, examples, on_device
from conv_helpers import layout
from hypothesis import given, settings
from hypothesis import strategies as st

from fastgen import _backend, _extension
from fastgen.ops import conv2d
from fastgen.reference import conv2d as reference
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


# A DCGAN discriminator layer: 4x4, stride 2, padding 1 (the shape the CPU hook targets).
DCGAN = dict(input=(4, 8, 8, 8), weight=(16, 4, 4), stride=2, padding=1)


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("activation", ACTIVATIONS)
@pytest.mark.parametrize("kind", ["contiguous", "channels_last"])
def test_dcgan_layer_every_dtype(dtype, activation, kind):
    out = check(dict(DCGAN, activation=activation), dtype, "cpu", kind)
    expected_format = torch.channels_last if kind == "channels_last" else torch.contiguous_format
    assert out.is_contiguous(memory_format=expected_format)


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


def test_unbatched_and_empty_batch():
    weight, bias = torch.randn(2, 3, 4, 4), torch.randn(2)
    x = torch.randn(3, 6, 6)
    out = conv2d(x, weight, bias, 2, 1, activation="tanh")
    assert out.shape == (2, 3, 3)
    assert_close(out, reference.conv2d(x, weight, bias, 2, 1, activation="tanh"))
    empty = conv2d(torch.randn(0, 3, 6, 6), weight, bias, 2, 1, activation="relu")
    assert empty.shape == (0, 2, 3, 3)


GRAD_CONFIGS = [
    dict(stride=2, padding=1),
    dict(stride=(1, 2), padding=(0, 1), dilation=(2, 1), groups=2),
]


@native
@pytest.mark.parametrize("activation", ACTIVATIONS)
@pytest.mark.parametrize("kwargs", GRAD_CONFIGS, ids=["s2", "groups-dilation"])
def test_gradcheck_and_gradgradcheck(activation, kwargs):
    torch.manual_seed(0)
    # Small on purpose: gradgradcheck differentiates every output numerically.
    x = torch.randn(1, 2, 5, 4, dtype=torch.float64, requires_grad=True)
    weight = torch.randn(2, 2 // kwargs.get("groups", 1), 3, 2, dtype=torch.float64,
                         requires_grad=True)  # fmt: skip
    bias = torch.randn(2, dtype=torch.float64, requires_grad=True)

    def fn(x, weight, bias):
        return conv2d(x, weight, bias, activation=activation, negative_slope=0.3, **kwargs)

    assert torch.autograd.gradcheck(fn, (x, weight, bias))
    assert torch.autograd.gradgradcheck(fn, (x, weight, bias), fast_mode=True)


@native
def test_gradient_penalty_through_op():
    """R1-style penalty (a discriminator's): d/dw of |d out / d x|^2 matches the reference's."""
    torch.manual_seed(0)
    x = torch.randn(2, 3, 6, 6, dtype=torch.float64, requires_grad=True)
    weight = torch.randn(4, 3, 4, 4, dtype=torch.float64, requires_grad=True)
    bias = torch.randn(4, dtype=torch.float64, requires_grad=True)

    def penalty(fn):
        out = fn(x, weight, bias, 2, 1, activation="leaky_relu", negative_slope=0.2)
        (grad_x,) = torch.autograd.grad(out.sum(), x, create_graph=True)
        return torch.autograd.grad(grad_x.square().sum(), weight)[0]

    assert_close(penalty(conv2d), penalty(reference.conv2d))


@native
@pytest.mark.parametrize("kind", ["contiguous", "channels_last"])
@pytest.mark.parametrize("with_bias", [True, False])
def test_opcheck(kind, with_bias):
    torch.manual_seed(0)
    x = layout(torch.randn(2, 4, 7, 6), kind).requires_grad_()
    weight = torch.randn(6, 2, 3, 3, requires_grad=True)
    bias = torch.randn(6, requires_grad=True) if with_bias else None
    args = (x, weight, bias, [2, 1], [1, 0], [1, 2], 2, "leaky_relu", 0.1)
    torch.library.opcheck(torch.ops.fastgen.conv2d, args)
    output = torch.ops.fastgen.conv2d(*args).detach()
    grad = torch.randn(output.shape)
    backward_args = (grad, x.detach(), weight.detach(), output, [2, 1], [1, 0], [1, 2], 2,
                     "leaky_relu", 0.1, [True, True, with_bias])  # fmt: skip
    torch.library.opcheck(torch.ops.fastgen.conv2d_backward, backward_args)


@native
def test_torch_compile_fullgraph():
    torch.manual_seed(0)
    x = torch.randn(2, 4, 8, 8).contiguous(memory_format=torch.channels_last)
    weight, bias = torch.randn(8, 4, 4, 4), torch.randn(8)

    def block(x, weight, bias):
        return conv2d(x, weight, bias, stride=2, padding=1, activation="leaky_relu") * 2

    compiled = torch.compile(block, fullgraph=True, backend="aot_eager")
    results = []
    for fn in (block, compiled):
        inputs = [t.clone().requires_grad_() for t in (x, weight, bias)]
        out = fn(*inputs)
        out.square().sum().backward()
        results.append((out, *(t.grad for t in inputs)))
    for actual, expected in zip(results[1], results[0]):
        assert_close(actual, expected)


def test_reference_backend_gives_same_numbers():
    x, weight, bias = torch.randn(2, 3, 6, 6), torch.randn(2, 3, 3, 3), torch.randn(2)
    fused = conv2d(x, weight, bias, 2, activation="relu")
    mode = _backend.registry.mode
    try:
        _backend.set_backend("reference")
        assert_close(conv2d(x, weight, bias, 2, activation="relu"), fused)
    finally:
        _backend.set_backend(mode)


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
# cuda_device is "cpu" with the emulated-cuda backend on (aten's CPU convolution around the
# emulated CUDA epilogues, what cuDNN is around them on a GPU), or "cuda".


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("activation", ACTIVATIONS)
@pytest.mark.parametrize("kind", ["contiguous", "channels_last", "strided"])
def test_cuda_matches_reference(cuda_device, dtype, activation, kind):
    check(dict(DCGAN, activation=activation), dtype, cuda_device, kind)
    check(dict(input=(2, 6, 7, 5), weight=(3, 2, 2), groups=3, stride=(3, 2), padding=(1, 0),
               dilation=(1, 2), activation=activation), dtype, cuda_device, kind)  # fmt: skip


@pytest.mark.parametrize("name", CUDA_DEVICES)
@settings(max_examples=examples(40), deadline=None, derandomize=True)
@given(config=configs(), dtype=st.sampled_from(DTYPES))
def test_cuda_hypothesis(name, config, dtype):
    with on_device(name) as device:
        check(config, dtype, device, "channels_last")


def test_cuda_gradgradcheck_and_opcheck(cuda_device):
    x = torch.randn(2, 4, 6, 5, dtype=torch.float64, device=cuda_device, requires_grad=True)
    weight = torch.randn(3, 4, 3, 2, dtype=torch.float64, device=cuda_device, requires_grad=True)
    bias = torch.randn(3, dtype=torch.float64, device=cuda_device, requires_grad=True)

    def fn(x, weight, bias):
        return conv2d(x, weight, bias, 2, 1, activation="tanh")

    assert torch.autograd.gradgradcheck(fn, (x, weight, bias))
    args = (x.float(), weight.float(), bias.float(), [2, 2], [1, 1], [1, 1], 1, "relu", 0.0)
    torch.library.opcheck(torch.ops.fastgen.conv2d, args)
