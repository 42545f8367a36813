"""What fastgen.ops.conv2d and fastgen.ops.conv_transpose2d must both do, tested once per op:
every dtype and activation on a DCGAN layer, unbatched and empty input, gradcheck and double
backward, a gradient penalty through the op, opcheck of the registered ops, torch.compile,
the reference backend, and the CUDA kernels (emulated here, on a GPU when there is one).
Each op's own shapes, hypothesis strategy and bad-input table are in test_<op>.py."""

from __future__ import annotations

import pytest
import torch
from conftest import DTYPES, assert_close
from conv_helpers import OPS, check, layout

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
