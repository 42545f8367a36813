"""What fastgen.ops.conv2d and fastgen.ops.conv_transpose2d must both do, tested once per op:
every dtype and activation on a DCGAN layer, unbatched and empty input, gradcheck and double
backward, a gradient penalty through the op, opcheck of the registered ops, torch.compile,
the reference backend, and the CUDA kernels (emulated here, on a GPU when there is one).
Each op's own shapes, hypothesis strategy and bad-input table are in test_<op>.py."""

from __future__ import annotations

import pytest
import torch
from conftest import CUDA_DEVICES, DTYPES, assert_close, examples, on_device
from helpers.conv_helpers import LAYOUTS, OPS, check, configs, layout
from hypothesis import given, settings
from hypothesis import strategies as st

from fastgen import _backend, _extension
from fastgen.reference.conv2d import ACTIVATIONS

native = pytest.mark.skipif(not _extension.LOADED, reason="the fastgen extension is not built")
FAMILY = list(OPS)

# A DCGAN layer of each: the discriminator's k4 s2 p1 and the generator's.
DCGAN = {
    "conv2d": dict(input=(4, 8, 8, 8), weight=(16, 4, 4), stride=2, padding=1),
    "conv_transpose2d": dict(input=(4, 16, 4, 4), weight=(8, 4, 4), stride=2, padding=1),
}
# An odd one: groups, unequal strides, padding, dilation (and output_padding).
ODD = {
    "conv2d": dict(input=(2, 6, 7, 5), weight=(3, 2, 2), groups=3, stride=(3, 2), padding=(1, 0),
                   dilation=(1, 2)),
    "conv_transpose2d": dict(input=(2, 6, 5, 3), weight=(2, 3, 2), groups=3, stride=(3, 2),
                             padding=(1, 0), output_padding=(2, 1), dilation=(1, 2)),
}  # fmt: skip


def fn(op):
    return OPS[op][0]


def reference(op):
    return OPS[op][1]


def tensors(op, x_shape, c_out, kernel, groups=1, dtype=torch.float32, device="cpu"):
    """(x, weight, bias) requiring grad, for an op with C_out outputs and this kernel."""
    c_in = x_shape[1]
    if op == "conv2d":
        w_shape = (c_out, c_in // groups, *kernel)
    else:
        w_shape = (c_in, c_out // groups, *kernel)
    make = dict(dtype=dtype, device=device, requires_grad=True)
    return torch.randn(x_shape, **make), torch.randn(w_shape, **make), torch.randn(c_out, **make)


@pytest.mark.parametrize("op", FAMILY)
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("activation", ACTIVATIONS)
@pytest.mark.parametrize("kind", ["contiguous", "channels_last"])
def test_dcgan_layer_every_dtype(op, dtype, activation, kind):
    out = check(op, dict(DCGAN[op], activation=activation), dtype, "cpu", kind)
    expected_format = torch.channels_last if kind == "channels_last" else torch.contiguous_format
    assert out.is_contiguous(memory_format=expected_format)


@pytest.mark.parametrize("op", FAMILY)
def test_unbatched_and_empty_batch(op):
    torch.manual_seed(0)
    x, weight, bias = (t.detach() for t in tensors(op, (1, 3, 6, 6), 2, (4, 4)))
    out = fn(op)(x[0], weight, bias, 2, 1, activation="tanh")
    expected = reference(op)(x, weight, bias, 2, 1, activation="tanh")
    assert out.shape == expected.shape[1:]
    assert_close(out, expected[0])
    empty = fn(op)(torch.randn(0, 3, 6, 6), weight, bias, 2, 1, activation="relu")
    assert empty.shape == (0, *expected.shape[1:])


GRAD_CONFIGS = [
    dict(stride=2, padding=1),
    dict(stride=(1, 2), padding=(0, 1), dilation=(2, 1), groups=2),
]


@native
@pytest.mark.parametrize("op", FAMILY)
@pytest.mark.parametrize("activation", ACTIVATIONS)
@pytest.mark.parametrize("kwargs", GRAD_CONFIGS, ids=["s2", "groups-dilation"])
def test_gradcheck_and_gradgradcheck(op, activation, kwargs):
    torch.manual_seed(0)
    if op == "conv_transpose2d":
        kwargs = dict(kwargs, output_padding=(1, 1) if kwargs["stride"] == 2 else (0, 1))
    # Small on purpose: gradgradcheck differentiates every output numerically.
    size = (5, 4) if op == "conv2d" else (3, 2)
    inputs = tensors(op, (1, 2, *size), 2, (3, 2), kwargs.get("groups", 1), torch.float64)

    def call(x, weight, bias):
        return fn(op)(x, weight, bias, activation=activation, negative_slope=0.3, **kwargs)

    assert torch.autograd.gradcheck(call, inputs)
    assert torch.autograd.gradgradcheck(call, inputs, fast_mode=True)


@native
@pytest.mark.parametrize("op", FAMILY)
def test_gradient_penalty_through_op(op):
    """R1-style penalty: d/dw of |d out / d x|^2 matches the reference's."""
    torch.manual_seed(0)
    x, weight, bias = tensors(op, (2, 3, 6, 6), 4, (4, 4), dtype=torch.float64)

    def penalty(f):
        out = f(x, weight, bias, 2, 1, activation="leaky_relu", negative_slope=0.2)
        (grad_x,) = torch.autograd.grad(out.sigmoid().sum(), x, create_graph=True)
        return torch.autograd.grad(grad_x.square().sum(), weight)[0]

    assert_close(penalty(fn(op)), penalty(reference(op)))


@native
@pytest.mark.parametrize("op", FAMILY)
@pytest.mark.parametrize("wanted", ["x", "weight", "bias", "x-weight", "all", "no-bias"])
def test_eager_autograd_is_cpp_and_gives_only_the_wanted_gradients(op, wanted):
    """The ops' autograd is a C++ node (csrc/conv/conv_autograd.cpp), not a Python Function,
    and returns exactly the gradients autograd asks for, equal to the reference's."""
    torch.manual_seed(0)
    x, weight, bias = (t.detach() for t in tensors(op, (2, 4, 6, 6), 6, (4, 4)))
    bias = None if wanted == "no-bias" else bias
    names = ("x", "weight", "bias")
    for name, t in zip(names, (x, weight, bias)):
        if t is not None and (wanted in ("all", "no-bias") or name in wanted.split("-")):
            t.requires_grad_()
    leaves = [t for t in (x, weight, bias) if t is not None and t.requires_grad]

    def grads(f):
        out = f(x, weight, bias, 2, 1, activation="tanh")
        return out, torch.autograd.grad(out.square().sum(), leaves)

    out, ours = grads(fn(op))
    assert not isinstance(out.grad_fn, torch.autograd.function.BackwardCFunction)
    assert "Function" in out.grad_fn.name()  # the C++ node, e.g. CppNode<...Conv2dFunction>
    for got, want in zip(ours, grads(reference(op))[1]):
        assert_close(got, want)


def schema_args(op, x, weight, bias, stride, padding, dilation, groups, activation, slope,
                output_padding=(0, 0)):  # fmt: skip
    """The registered op's arguments in its schema's order."""
    if op == "conv2d":
        return (x, weight, bias, list(stride), list(padding), list(dilation), groups, activation,
                slope)  # fmt: skip
    return (x, weight, bias, list(stride), list(padding), list(output_padding), groups,
            list(dilation), activation, slope)  # fmt: skip


@native
@pytest.mark.parametrize("op", FAMILY)
@pytest.mark.parametrize("kind", ["contiguous", "channels_last"])
@pytest.mark.parametrize("with_bias", [True, False])
def test_opcheck(op, kind, with_bias):
    torch.manual_seed(0)
    x, weight, bias = tensors(op, (2, 4, 7, 6), 6, (3, 3), groups=2)
    x = layout(x.detach(), kind).requires_grad_()
    args = schema_args(op, x, weight, bias if with_bias else None, (2, 1), (1, 0), (1, 2), 2,
                       "leaky_relu", 0.1, output_padding=(1, 0))  # fmt: skip
    registered = getattr(torch.ops.fastgen, op)
    torch.library.opcheck(registered, args)
    output = registered(*args).detach()
    grad = torch.randn(output.shape)
    detached = [t.detach() if isinstance(t, torch.Tensor) else t for t in args]
    backward_args = (grad, detached[0], detached[1], output, *detached[3:],
                     [True, True, with_bias])  # fmt: skip
    torch.library.opcheck(getattr(torch.ops.fastgen, f"{op}_backward"), backward_args)


@native
@pytest.mark.parametrize("op", FAMILY)
def test_torch_compile_fullgraph(op):
    torch.manual_seed(0)
    x, weight, bias = (t.detach() for t in tensors(op, (2, 8, 8, 8), 4, (4, 4)))
    x = x.contiguous(memory_format=torch.channels_last)

    def block(x, weight, bias):
        return fn(op)(x, weight, bias, stride=2, padding=1, activation="tanh") * 2

    compiled = torch.compile(block, fullgraph=True, backend="aot_eager")
    results = []
    for f in (block, compiled):
        inputs = [t.clone().requires_grad_() for t in (x, weight, bias)]
        out = f(*inputs)
        out.square().sum().backward()
        results.append((out, *(t.grad for t in inputs)))
    for actual, expected in zip(results[1], results[0]):
        assert_close(actual, expected)


@pytest.mark.parametrize("op", FAMILY)
def test_reference_backend_gives_same_numbers(op):
    x, weight, bias = (t.detach() for t in tensors(op, (2, 3, 6, 6), 2, (3, 3)))
    fused = fn(op)(x, weight, bias, 2, activation="relu")
    mode = _backend.registry.mode
    try:
        _backend.set_backend("reference")
        assert_close(fn(op)(x, weight, bias, 2, activation="relu"), fused)
    finally:
        _backend.set_backend(mode)


# --- every valid input: hypothesis over each op's own argument space -----------------------


@pytest.mark.parametrize("op", FAMILY)
@settings(max_examples=40, deadline=None, derandomize=True)
@given(data=st.data(), dtype=st.sampled_from(DTYPES), kind=st.sampled_from(LAYOUTS))
def test_matches_reference(op, data, dtype, kind):
    config = data.draw(configs(op))
    out = check(op, config, dtype, "cpu", kind)
    if kind == "channels_last" and not out.is_contiguous():
        assert out.is_contiguous(memory_format=torch.channels_last)


# --- bad input: what stock rejects, rejected naming the function and the argument ----------


def common_bad_inputs(xwb) -> list:
    """What both ops reject alike, for a good (input, weight, bias) `xwb` with 4 input and 3
    output channels: (bad arguments, error, message)."""
    x, weight, bias = xwb
    return [
        (dict(x=torch.randn(4, 5)), ValueError, "input must be 4-D"),
        (dict(x=torch.randn(2, 4, 5, 5, 1)), ValueError, "input must be 4-D"),
        (dict(weight=weight[..., 0]), ValueError, "weight must be 4-D"),
        (dict(groups=3), ValueError, "divisible by groups"),
        (dict(groups=0), ValueError, "groups must be an int >= 1"),
        (dict(bias=torch.randn(4)), ValueError, r"bias must have shape \(3,\)"),
        (dict(weight=weight.double()), TypeError, "weight has dtype torch.float64 but input"),
        (dict(bias=bias.half()), TypeError, "bias has dtype torch.float16"),
        (dict(x=x.long()), TypeError, "input must be float32"),
        (dict(weight=weight.int()), TypeError, "weight must be float32"),
        (dict(x="nope"), TypeError, "input must be a Tensor"),
        (dict(weight=weight.to("meta")), ValueError, "weight is on meta"),
        (dict(activation="gelu"), ValueError, "activation must be one of"),
        (dict(stride=0), ValueError, "stride must be >= 1"),
        (dict(padding=-1), ValueError, "padding must be >= 0"),
        (dict(dilation=(1, 0)), ValueError, "dilation must be >= 1"),
        (dict(stride=(1, 2, 3)), ValueError, "stride must be an int or a pair"),
        (dict(x=torch.randn(2, 4, 0, 5)), ValueError, "height and width must be >= 1"),
        (dict(negative_slope="0.1"), TypeError, "negative_slope must be a float"),
    ]


def good_arguments(xwb, **extra) -> dict:
    """A valid call's keyword arguments around `xwb` (stride 1, no padding, relu)."""
    x, weight, bias = xwb
    geometry = dict(stride=1, padding=0, dilation=1, groups=1, **extra)
    return dict(x=x, weight=weight, bias=bias, **geometry, activation="relu", negative_slope=0.01)


CONV2D_XWB = torch.randn(2, 4, 5, 5), torch.randn(3, 4, 3, 3), torch.randn(3)
CONV2D_BAD = common_bad_inputs(CONV2D_XWB) + [
    (dict(weight=torch.randn(3, 5, 3, 3)), ValueError,
     r"weight has 5 input channels per group but input has 4 channels \(groups=1\)"),
    (dict(groups=2, weight=torch.randn(3, 2, 3, 3)), ValueError,
     r"output channels \(3\) must be divisible by groups"),
    (dict(weight=torch.randn(3, 4, 0, 3)), ValueError, "weight must have no zero-size dim"),
    (dict(padding="same"), ValueError, "padding must be an int or a pair of ints, got 'same'"),
    (dict(weight=torch.randn(3, 4, 7, 7)), ValueError, "output size .* is below 1"),
]  # fmt: skip


CONV_TRANSPOSE2D_XWB = torch.randn(2, 4, 5, 5), torch.randn(4, 3, 3, 3), torch.randn(3)
CONV_TRANSPOSE2D_BAD = common_bad_inputs(CONV_TRANSPOSE2D_XWB) + [
    (dict(weight=torch.randn(5, 3, 3, 3)), ValueError, "weight has 5 input channels but input has 4"),
    (dict(output_padding=2, stride=2), ValueError, "output_padding must be smaller than stride"),
    (dict(padding=4), ValueError, "output size .* is below 1"),
]  # fmt: skip


BAD = [("conv2d", *case) for case in CONV2D_BAD] + [
    ("conv_transpose2d", *case) for case in CONV_TRANSPOSE2D_BAD
]
GOOD = {
    "conv2d": good_arguments(CONV2D_XWB),
    "conv_transpose2d": good_arguments(CONV_TRANSPOSE2D_XWB, output_padding=0),
}


@pytest.mark.parametrize("op,bad,error,match", BAD, ids=[f"{o}-{m}" for o, _, _, m in BAD])
def test_bad_input(op, bad, error, match):
    with pytest.raises(error, match=match) as info:
        fn(op)(**{**GOOD[op], **bad})
    assert f"fastgen.ops.{op}" in str(info.value)


# --- CUDA kernels: under the SIMT emulator here, and on a GPU when there is one ----------------
# cuda_device is "cpu" with the emulated-cuda backend on (aten's CPU convolution around the
# emulated CUDA epilogues, what cuDNN is around them on a GPU), or "cuda".


@pytest.mark.parametrize("op", FAMILY)
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("activation", ACTIVATIONS)
@pytest.mark.parametrize("kind", ["contiguous", "channels_last", "strided"])
def test_cuda_matches_reference(cuda_device, op, dtype, activation, kind):
    check(op, dict(DCGAN[op], activation=activation), dtype, cuda_device, kind)
    check(op, dict(ODD[op], activation=activation), dtype, cuda_device, kind)


@pytest.mark.parametrize("op", FAMILY)
def test_cuda_gradgradcheck_and_opcheck(cuda_device, op):
    torch.manual_seed(0)
    size = (6, 5) if op == "conv2d" else (3, 4)
    x, weight, bias = tensors(op, (2, 4, *size), 3, (3, 2), dtype=torch.float64, device=cuda_device)

    def call(x, weight, bias):
        if op == "conv2d":
            return fn(op)(x, weight, bias, 2, 1, activation="tanh")
        return fn(op)(x, weight, bias, 2, 1, 1, activation="tanh")

    assert torch.autograd.gradgradcheck(call, (x, weight, bias))
    args = schema_args(op, x.float(), weight.float(), bias.float(), (2, 2), (1, 1), (1, 1), 1,
                       "relu", 0.0, output_padding=(1, 1))  # fmt: skip
    torch.library.opcheck(getattr(torch.ops.fastgen, op), args)


@pytest.mark.parametrize("name", CUDA_DEVICES)
@pytest.mark.parametrize("op", FAMILY)
@settings(max_examples=examples(40), deadline=None, derandomize=True)
@given(data=st.data(), dtype=st.sampled_from(DTYPES))
def test_cuda_hypothesis(name, op, data, dtype):
    config = data.draw(configs(op))
    with on_device(name) as device:
        check(op, config, dtype, device, "channels_last")
