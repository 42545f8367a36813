"""fastgen.ops.batch_norm_leaky_relu against the stock F.batch_norm + F.leaky_relu reference."""

from __future__ import annotations

import contextlib

import pytest
import torch
from conftest import DTYPES, assert_close, cpu_kernels, cuda_only, reference_dtype
from hypothesis import given, settings
from hypothesis import strategies as st

from fastgen import _extension
from fastgen.ops import batch_norm_leaky_relu
from fastgen.reference import batch_norm_leaky_relu as reference

HALF = (torch.float16, torch.bfloat16)
LAYOUTS = ("contiguous", "channels_last", "transposed")


def make_input(shape, dtype, device, layout, seed=0, mean=0.0, std=1.0):
    gen = torch.Generator().manual_seed(seed)
    n, c, h, w = shape
    if layout == "transposed":  # non-contiguous, neither layout: H and W swapped in memory
        x = (torch.randn(n, c, w, h, generator=gen, dtype=torch.float64) * std + mean).transpose(
            2, 3
        )
    else:
        x = torch.randn(shape, generator=gen, dtype=torch.float64) * std + mean
    x = x.to(device=device, dtype=dtype)
    if layout == "channels_last":
        x = x.contiguous(memory_format=torch.channels_last)
    return x


def make_params(channels, dtype, device, seed=1, affine=True):
    gen = torch.Generator().manual_seed(seed)
    weight = (torch.rand(channels, generator=gen, dtype=torch.float64) + 0.5) * torch.where(
        torch.arange(channels) % 3 == 2, -1.0, 1.0
    ).double()  # some negative weights too
    bias = torch.randn(channels, generator=gen, dtype=torch.float64)
    running_mean = torch.randn(channels, generator=gen, dtype=torch.float64)
    running_var = torch.rand(channels, generator=gen, dtype=torch.float64) + 0.5
    out = [t.to(device=device, dtype=dtype) for t in (weight, bias, running_mean, running_var)]
    if not affine:
        out[0] = out[1] = None
    return out


def run_both(x, params, training, slope, momentum=0.1, eps=1e-5, grad_seed=7):
    """Runs the op on (x, params) and the reference on upcast copies; returns both results:
    (out, grad_x, grad_weight, grad_bias, running_mean, running_var).

    The reference's gradient takes the activation's branch from the op's output: an element
    whose pre-activation is within rounding of 0 may legitimately land on either side, and
    that choice alone must not fail the comparison of every gradient of its channel."""
    weight, bias, running_mean, running_var = params
    results = []
    for dtype in (x.dtype, reference_dtype(x.dtype)):
        if dtype == x.dtype and len(results) == 0:  # the op, on the input's exact strides
            xx = x.detach().clone().requires_grad_()
            if x.stride() != xx.stride():
                xx = x.detach().requires_grad_()
        else:
            xx = x.detach().to(dtype).requires_grad_()
        ww, bb = (
            None if t is None else t.detach().to(dtype if results else t.dtype).requires_grad_()
            for t in (weight, bias)
        )
        rm, rv = (
            t.detach().to(dtype if results else t.dtype).clone()
            for t in (running_mean, running_var)
        )
        gen = torch.Generator().manual_seed(grad_seed)
        grad = torch.randn(x.shape, generator=gen, dtype=torch.float64).to(x.device, dtype)
        if not results:
            out = batch_norm_leaky_relu(xx, rm, rv, ww, bb, training, momentum, eps, slope)
            upstream = grad
        else:
            y = torch.nn.functional.batch_norm(xx, rm, rv, ww, bb, training, momentum, eps)
            out = torch.nn.functional.leaky_relu(y, slope)
            upstream = torch.where(results[0][0].to(dtype) > 0, grad, grad * slope)
            out_for_grad = y
        inputs = [t for t in (xx, ww, bb) if t is not None]
        grads = list(torch.autograd.grad(out if not results else out_for_grad, inputs, upstream))
        gx = grads.pop(0)
        gw = grads.pop(0) if ww is not None else None
        gb = grads.pop(0) if bb is not None else None
        results.append((out, gx, gw, gb, rm, rv))
    return results


def check(x, params, training, slope, scale=1.0, **kwargs):
    actual, expected = run_both(x, params, training, slope, **kwargs)
    names = ("out", "grad_x", "grad_weight", "grad_bias", "running_mean", "running_var")
    for name, a, e in zip(names, actual, expected):
        if a is None:
            assert e is None, name
            continue
        assert_close(
            a, e, dtype=x.dtype, scale=scale, msg=f"{name} (training={training}, {tuple(x.shape)})"
        )
    return actual


# --- values -------------------------------------------------------------------------------


@settings(max_examples=25, deadline=None, derandomize=True)
@given(
    n=st.integers(1, 5),
    c=st.sampled_from([1, 2, 3, 7, 13]),
    h=st.sampled_from([1, 2, 3, 5, 11]),
    w=st.sampled_from([1, 2, 4, 7]),
    layout=st.sampled_from(LAYOUTS),
    training=st.booleans(),
    affine=st.booleans(),
    slope=st.sampled_from([0.0, 0.01, 0.2]),
    dtype=st.sampled_from([torch.float32, torch.float64]),
)
def test_matches_reference(n, c, h, w, layout, training, affine, slope, dtype):
    if training and n * h * w < 2:
        n = 2
    x = make_input((n, c, h, w), dtype, "cpu", layout, seed=n * 100 + c)
    check(x, make_params(c, dtype, "cpu", affine=affine), training, slope)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("training", [True, False])
def test_dtypes(device, dtype, layout, training):
    x = make_input((4, 6, 5, 7), dtype, device, layout, mean=0.5, std=2.0)
    # Half types: parameters in float32 as under autocast, and in the input's own dtype.
    for param_dtype in {dtype, torch.float32} if dtype in HALF else {dtype}:
        check(x, make_params(6, param_dtype, device), training, 0.2)


def test_output_layout(device):
    params = make_params(5, torch.float32, device)
    for layout, fmt in (
        ("contiguous", torch.contiguous_format),
        ("channels_last", torch.channels_last),
    ):
        x = make_input((3, 5, 4, 4), torch.float32, device, layout)
        out = batch_norm_leaky_relu(x, None, None, params[0], params[1], True)
        assert out.is_contiguous(memory_format=fmt), layout


def test_batch_of_one_in_eval(device):
    x = make_input((1, 4, 1, 1), torch.float32, device, "contiguous")
    check(x, make_params(4, torch.float32, device), False, 0.01)


@pytest.mark.parametrize("layout", ["contiguous", "channels_last"])
def test_large_mean_small_std(device, layout):
    # float32 with mean 1000 and std 0.01: a naive E[x^2] - E[x]^2 loses every digit, an
    # unshifted float32 Welford three of them (the CUDA kernel's bug B1, over several slots).
    x = make_input((16, 3, 24, 24), torch.float32, device, layout, mean=1000.0, std=0.01)
    _, mean, var = torch.ops.fastgen.batch_norm_leaky_relu(
        x, None, None, None, None, True, 1e-5, 0.01
    )
    exact = x.double().var(dim=(0, 2, 3), unbiased=False)
    torch.testing.assert_close(var.double(), exact, rtol=1e-4, atol=0)
    torch.testing.assert_close(mean.double(), x.double().mean(dim=(0, 2, 3)), rtol=1e-7, atol=0)


def test_running_stats_and_momentum(device):
    x = make_input((8, 3, 4, 4), torch.float32, device, "contiguous", mean=2.0, std=3.0)
    weight, bias, running_mean, running_var = make_params(3, torch.float32, device)
    expected_mean, expected_var = running_mean.clone(), running_var.clone()
    for momentum in (0.1, 0.5, 1.0):
        batch_norm_leaky_relu(x, running_mean, running_var, weight, bias, True, momentum)
        reference.batch_norm_leaky_relu(
            x, expected_mean, expected_var, weight, bias, True, momentum
        )
    assert_close(running_mean, expected_mean)
    assert_close(running_var, expected_var)
    # eval leaves them alone
    before = running_mean.clone()
    batch_norm_leaky_relu(x, running_mean, running_var, weight, bias, False)
    assert torch.equal(running_mean, before)


def test_deterministic(device):
    x = make_input((6, 5, 9, 9), torch.float32, device, "channels_last", mean=3.0)
    first = torch.ops.fastgen.batch_norm_leaky_relu(x, None, None, None, None, True, 1e-5, 0.1)
    for _ in range(3):
        again = torch.ops.fastgen.batch_norm_leaky_relu(x, None, None, None, None, True, 1e-5, 0.1)
        for a, b in zip(first, again):
            assert torch.equal(a, b)


# --- gradients, op checks, compile -----------------------------------------------------------


@pytest.mark.parametrize("training", [True, False])
@pytest.mark.parametrize("affine", [True, False])
@pytest.mark.parametrize("layout", ["contiguous", "channels_last"])
def test_gradcheck(device, training, affine, layout):
    x = make_input((3, 4, 3, 2), torch.float64, device, layout).requires_grad_()
    weight, bias, running_mean, running_var = make_params(4, torch.float64, device, affine=affine)
    leaves = [x] + ([weight.requires_grad_(), bias.requires_grad_()] if affine else [])

    def fn(x, *wb):
        w, b = wb if affine else (None, None)
        return batch_norm_leaky_relu(
            x, running_mean.clone(), running_var.clone(), w, b, training, 0.1, 1e-5, 0.2
        )

    assert torch.autograd.gradcheck(fn, leaves)
    assert torch.autograd.gradgradcheck(fn, leaves)


@pytest.mark.skipif(not _extension.LOADED, reason="needs the extension")
@pytest.mark.parametrize("training", [True, False])
@pytest.mark.parametrize("given", ["weight", "bias", "both", "neither"])
@pytest.mark.parametrize("wanted", ["x", "parameters", "all"])
def test_autograd_is_cpp_and_gives_only_the_wanted_gradients(device, training, given, wanted):
    """The op's autograd is a C++ node (batch_norm_leaky_relu_autograd.cpp), not a Python
    Function; with weight or bias absent or not requiring grad it returns exactly the
    gradients asked for, equal to the reference's (an absent weight moves bias's edge)."""
    x = make_input((3, 4, 3, 2), torch.float32, device, "contiguous")
    weight, bias, running_mean, running_var = make_params(4, torch.float32, device)
    weight = weight if given in ("weight", "both") else None
    bias = bias if given in ("bias", "both") else None
    if wanted in ("x", "all"):
        x.requires_grad_()
    for t in (weight, bias):
        if t is not None and wanted in ("parameters", "all"):
            t.requires_grad_()
    leaves = [t for t in (x, weight, bias) if t is not None and t.requires_grad]
    if not leaves:
        return

    def grads(f):
        out = f(x, running_mean.clone(), running_var.clone(), weight, bias, training, 0.1, 1e-5,
                0.2)  # fmt: skip
        return out, torch.autograd.grad(out.square().sum(), leaves)

    out, ours = grads(batch_norm_leaky_relu)
    assert not isinstance(out.grad_fn, torch.autograd.function.BackwardCFunction)
    assert "BatchNormLeakyReLUFunction" in out.grad_fn.name()
    for got, want in zip(ours, grads(reference.batch_norm_leaky_relu)[1]):
        assert_close(got, want)


@pytest.mark.parametrize("training", [True, False])
@pytest.mark.parametrize("layout", ["contiguous", "channels_last"])
def test_opcheck(device, training, layout):
    x = make_input((3, 4, 5, 2), torch.float32, device, layout).requires_grad_()
    weight, bias, running_mean, running_var = make_params(4, torch.float32, device)
    weight.requires_grad_()
    bias.requires_grad_()
    stats = (None, None) if training else (running_mean, running_var)
    args = (x, weight, bias, *stats, training, 1e-5, 0.2)
    torch.library.opcheck(torch.ops.fastgen.batch_norm_leaky_relu.default, args)
    out, mean, var = torch.ops.fastgen.batch_norm_leaky_relu(*args)
    grad = torch.randn_like(out)
    for mask in ([True, True, True], [True, False, False], [False, True, True]):
        backward_args = (
            grad,
            x.detach(),
            weight.detach(),
            bias.detach(),
            mean,
            var,
            training,
            1e-5,
            0.2,
            mask,
        )
        torch.library.opcheck(
            torch.ops.fastgen.batch_norm_leaky_relu_backward.default, backward_args
        )


def test_backward_op_matches_closed_form(device):
    x = make_input((4, 3, 5, 5), torch.float64, device, "channels_last")
    weight, bias, _, _ = make_params(3, torch.float64, device)
    grad = make_input((4, 3, 5, 5), torch.float64, device, "contiguous", seed=3)
    _, mean, var = torch.ops.fastgen.batch_norm_leaky_relu(
        x, weight, bias, None, None, True, 1e-5, 0.2
    )
    actual = torch.ops.fastgen.batch_norm_leaky_relu_backward(
        grad, x, weight, bias, mean, var, True, 1e-5, 0.2, [True, True, True]
    )
    expected = reference.batch_norm_leaky_relu_backward(
        grad, x, weight, bias, mean, var, True, 1e-5, 0.2
    )
    for a, e in zip(actual, expected):
        assert_close(a, e)


@pytest.mark.parametrize("layout", ["contiguous", "channels_last"])
def test_compile_fullgraph(device, layout):
    x = make_input((4, 3, 5, 5), torch.float32, device, layout)
    weight, bias, running_mean, running_var = make_params(3, torch.float32, device)

    def step(x, weight, bias, running_mean, running_var):
        out = batch_norm_leaky_relu(
            x, running_mean, running_var, weight, bias, True, 0.1, 1e-5, 0.2
        )
        return out.square().sum()

    compiled = torch.compile(step, fullgraph=True, backend="aot_eager")
    results = []
    for fn in (step, compiled):
        leaves = [t.clone().requires_grad_() for t in (x, weight, bias)]
        stats = [running_mean.clone(), running_var.clone()]
        loss = fn(*leaves, *stats)
        results.append([loss, *torch.autograd.grad(loss, leaves), *stats])
    for a, e in zip(*results):
        assert_close(a, e)


# --- bad input ------------------------------------------------------------------------------


def test_bad_inputs():
    x = torch.randn(2, 3, 4, 4)
    w, b, rm, rv = make_params(3, torch.float32, "cpu")
    fn = "fastgen.ops.batch_norm_leaky_relu"
    cases = [
        ((torch.randn(2, 3, 4), rm, rv, w, b, True), ValueError, "x must be 4-D"),
        ((x.long(), rm, rv, w, b, True), TypeError, "x must be float32"),
        ((x, rm[:2], rv, w, b, True), ValueError, r"running_mean must have shape \(3,\)"),
        ((x, rm, rv, torch.ones(4), b, True), ValueError, r"weight must have shape \(3,\)"),
        ((x, rm, rv, w, b.double(), True), TypeError, "bias has dtype torch.float64"),
        ((x, rm, rv, w, b.int(), True), TypeError, "bias must be float32"),
        ((x, rm, None, w, b, True), ValueError, "running_mean and running_var must both"),
        (
            (x, None, None, w, b, False),
            ValueError,
            "running_mean and running_var are required when training=False",
        ),
        (
            (torch.randn(1, 3, 1, 1), rm, rv, w, b, True),
            ValueError,
            "x must have more than 1 value per channel",
        ),
        ((x, rm, rv, w, b, True, 0.1, "1e-5"), TypeError, "eps must be a float"),
        ((x, rm, rv, w, b, True, None), TypeError, "momentum must be a float"),
        ((x, rm, rv, "w", b, True), TypeError, "weight must be a Tensor"),
    ]
    for args, error, message in cases:
        with pytest.raises(error, match=f"{fn}: {message}"):
            batch_norm_leaky_relu(*args)


@cuda_only
def test_device_mismatch():
    x = torch.randn(2, 3, 4, 4, device="cuda")
    w, b, rm, rv = make_params(3, torch.float32, "cpu")
    with pytest.raises(ValueError, match="weight is on cpu but x is on cuda"):
        batch_norm_leaky_relu(x, None, None, w, None, True)


# --- memory-saving mode ------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("layout", ["contiguous", "channels_last"])
@pytest.mark.parametrize("training", [True, False])
def test_memory_saving_matches_normal_mode(device, dtype, layout, training):
    x = make_input((4, 6, 5, 3), dtype, device, layout, mean=0.5, std=2.0)
    weight, bias, running_mean, running_var = make_params(6, dtype, device)
    grad = make_input((4, 6, 5, 3), dtype, device, "contiguous", seed=9)
    results = []
    for memory_saving in (False, True):
        leaves = [t.detach().clone().requires_grad_() for t in (x, weight, bias)]
        stats = [running_mean.clone(), running_var.clone()]
        out = batch_norm_leaky_relu(
            leaves[0], *stats, *leaves[1:], training, 0.1, 1e-5, 0.2, memory_saving=memory_saving
        )
        results.append([out, *torch.autograd.grad(out, leaves, grad), *stats])
    names = ("out", "grad_x", "grad_weight", "grad_bias", "running_mean", "running_var")
    for name, a, e in zip(names, *results):
        assert_close(a.float(), e.float(), dtype=dtype, msg=name)


def test_memory_saving_from_output_kernel_matches_reference():
    # CPU only: on CUDA the backward from the output runs as torch ops (no kernel yet), which
    # test_memory_saving_matches_normal_mode covers.
    device = "cpu"
    x = make_input((3, 4, 5, 5), torch.float64, device, "channels_last")
    weight, bias, _, _ = make_params(4, torch.float64, device)
    grad = make_input((3, 4, 5, 5), torch.float64, device, "contiguous", seed=5)
    for training in (True, False):
        out, mean, var = torch.ops.fastgen.batch_norm_leaky_relu(
            x, weight, bias, None, None, True, 1e-5, 0.2
        )
        actual = torch.ops.fastgen.batch_norm_leaky_relu_backward_from_output(
            grad, out, weight, bias, var, training, 1e-5, 0.2, [True, True, True]
        )
        expected = reference.batch_norm_leaky_relu_backward(
            grad, x, weight, bias, mean, var, training, 1e-5, 0.2
        )
        for a, e in zip(actual, expected):
            assert_close(a, e)
        args = (grad, out, weight, bias, var, training, 1e-5, 0.2, [True, True, True])
        torch.library.opcheck(
            torch.ops.fastgen.batch_norm_leaky_relu_backward_from_output.default, args
        )
    args = (
        x.requires_grad_(),
        weight.requires_grad_(),
        bias.requires_grad_(),
        None,
        None,
        True,
        1e-5,
        0.2,
    )
    torch.library.opcheck(torch.ops.fastgen.batch_norm_leaky_relu_memory_saving.default, args)


def test_memory_saving_keeps_only_the_output():
    import fastgen.nn as fnn

    layer = fnn.BatchNormLeakyReLU2d(3, negative_slope=0.2, memory_saving=True)
    x = torch.randn(4, 3, 5, 5, requires_grad=True)
    saved = []
    with torch.autograd.graph.saved_tensors_hooks(lambda t: saved.append(t) or t, lambda t: t):
        out = layer(x)
    assert not any(t.data_ptr() == x.data_ptr() for t in saved), "the input must not be saved"
    assert any(t.data_ptr() == out.data_ptr() for t in saved)
    assert "memory_saving=True" in repr(layer)


def test_memory_saving_weight_clamp_and_errors():
    x = torch.randn(4, 3, 5, 5)
    weight = torch.tensor([0.0, -1e-6, 2.0], requires_grad=True)
    out = batch_norm_leaky_relu(
        x, None, None, weight, None, True, negative_slope=0.2, memory_saving=True
    )
    clamped = torch.tensor([1e-3, -1e-3, 2.0])
    expected = reference.batch_norm_leaky_relu(x, None, None, clamped, None, True, 0.1, 1e-5, 0.2)
    assert_close(out, expected)
    out.sum().backward()
    assert torch.isfinite(weight.grad).all()
    with pytest.raises(ValueError, match="memory_saving=True needs negative_slope > 0"):
        batch_norm_leaky_relu(
            x, None, None, None, None, True, negative_slope=0.0, memory_saving=True
        )
    import fastgen.nn as fnn

    with pytest.raises(
        ValueError, match="BatchNormLeakyReLU2d: memory_saving=True needs negative_slope > 0"
    ):
        fnn.BatchNormLeakyReLU2d(3, negative_slope=0.0, memory_saving=True)
    x = torch.randn(4, 3, 5, 5, requires_grad=True)
    out = batch_norm_leaky_relu(
        x, None, None, None, None, True, negative_slope=0.2, memory_saving=True
    )
    with pytest.raises(NotImplementedError, match="double backward"):
        torch.autograd.grad(out.square().sum(), x, create_graph=True)


# --- CUDA kernels: under the SIMT emulator here, and on a GPU when there is one ----------------
# cuda_device is "cpu" with the emulated-cuda backend on, or "cuda". Shapes are chosen to reach
# every launch path: several partial slots per channel (the last-block merge), one warp per
# channel (few values per channel), channels_last tiles with partial channel groups, C = 1,
# H = W = 1, batch 1 in eval, empty tensors.

CUDA_SHAPES = [
    (4, 6, 5, 7),  # one block per channel
    (3, 40, 1, 1),  # H = W = 1, a partial tile of 32 channels in channels_last
    (2, 3, 64, 65),  # 8320 values per channel: 3 slots, the last block merges them
    (32, 5, 8, 8),  # 2048 values per channel
    (2, 1, 3, 3),  # C = 1
]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("layout", ["contiguous", "channels_last"])
@pytest.mark.parametrize("training", [True, False])
def test_cuda_matches_reference(cuda_device, dtype, layout, training):
    for shape in CUDA_SHAPES:
        x = make_input(shape, dtype, cuda_device, layout, mean=0.5, std=2.0)
        check(x, make_params(shape[1], dtype, cuda_device), training, 0.2)


def test_cuda_edge_shapes(cuda_device):
    device = cuda_device
    # batch 1 in eval, a 1x1 image
    x = make_input((1, 4, 1, 1), torch.float32, device, "contiguous")
    check(x, make_params(4, torch.float32, device), False, 0.01)
    # memory-saving mode through the same kernels
    x = make_input((3, 5, 4, 6), torch.float32, device, "channels_last", mean=1.0)
    weight, bias, running_mean, running_var = make_params(5, torch.float32, device)
    out = batch_norm_leaky_relu(
        x, running_mean, running_var, weight, bias, True, negative_slope=0.2, memory_saving=True
    )
    assert_close(
        out, reference.batch_norm_leaky_relu(x, None, None, weight, bias, True, 0.1, 1e-5, 0.2)
    )
    # empty tensors: no launch with a zero grid (B4), empty results like the CPU kernel's
    for shape in [(2, 0, 4, 4), (0, 3, 4, 4)]:
        x = torch.zeros(shape, device=device)
        weight, bias, running_mean, running_var = make_params(shape[1], torch.float32, device)
        out, mean, var = torch.ops.fastgen.batch_norm_leaky_relu(
            x, weight, bias, running_mean, running_var, False, 1e-5, 0.2
        )
        assert out.shape == shape and mean.shape == (shape[1],)
        grads = torch.ops.fastgen.batch_norm_leaky_relu_backward(
            x, x, weight, bias, mean, var, False, 1e-5, 0.2, [True, True, True]
        )
        assert grads[0].shape == shape
        assert torch.equal(grads[1], torch.zeros(shape[1])) and torch.equal(
            grads[2], torch.zeros(shape[1])
        )


def test_cuda_training_without_values_is_an_error_as_on_cpu(cuda_device):
    # B4: no values per channel in training: the CPU kernel's error, not a NaN variance.
    x = torch.zeros(0, 3, 4, 4, device=cuda_device)
    for kernels in (cpu_kernels, contextlib.nullcontext):
        with kernels(), pytest.raises(RuntimeError, match="empty input in training"):
            torch.ops.fastgen.batch_norm_leaky_relu(x, None, None, None, None, True, 1e-5, 0.2)


def test_cuda_more_channels_than_a_grid_dimension(cuda_device):
    # B3: 70000 channels, more than gridDim.y's 65535.
    x = make_input((4, 70000, 1, 1), torch.float32, cuda_device, "contiguous", mean=1.0)
    grad = make_input((4, 70000, 1, 1), torch.float32, cuda_device, "contiguous", seed=3)
    out, mean, var = torch.ops.fastgen.batch_norm_leaky_relu(
        x, None, None, None, None, True, 1e-5, 0.2
    )
    assert_close(mean.double(), x.double().mean(dim=(0, 2, 3)), dtype=torch.float32)
    assert_close(var.double(), x.double().var(dim=(0, 2, 3), unbiased=False), dtype=torch.float32)
    grad_x, _, _ = torch.ops.fastgen.batch_norm_leaky_relu_backward(
        grad, x, None, None, mean, var, True, 1e-5, 0.2, [True, False, False]
    )
    expected = reference.batch_norm_leaky_relu_backward(
        grad.double(), x.double(), None, None, mean.double(), var.double(), True, 1e-5, 0.2
    )
    assert_close(grad_x.double(), expected[0], dtype=torch.float32, scale=4)


@pytest.mark.parametrize("training", [True, False])
def test_cuda_half_input_with_mixed_parameter_dtypes(cuda_device, training):
    # B2: each of weight, bias and the running stats may be the input's dtype or float32 on its
    # own (SyncBatchNormLeakyReLU2d on a .half() model passes half weight, float32 stats).
    x = make_input((4, 6, 5, 3), torch.float16, cuda_device, "contiguous", std=2.0)
    weight, bias, running_mean, running_var = make_params(6, torch.float32, cuda_device)
    for w, b, rm, rv in [
        (weight.half(), bias, running_mean, running_var),
        (weight, bias.half(), running_mean.half(), running_var.half()),
        (weight.half(), bias.half(), running_mean, running_var),
    ]:
        leaves = [t.detach().clone().requires_grad_() for t in (x, w, b)]
        out = batch_norm_leaky_relu(
            leaves[0], rm.clone(), rv.clone(), *leaves[1:], training, negative_slope=0.2
        )
        expected = reference.batch_norm_leaky_relu(
            x.float(), rm.float(), rv.float(), w.float(), b.float(), training, 0.1, 1e-5, 0.2
        )
        assert_close(out, expected, dtype=torch.float16)
        grads = torch.autograd.grad(out.float().sum(), leaves)
        assert [g.dtype for g in grads] == [t.dtype for t in leaves]


def test_cuda_backward_takes_the_forward_branch(cuda_device):
    # B5: a constant channel normalises to v = x * scale + shift = 0 up to rounding, so the sign
    # of v depends on how shift was rounded: the backward must recompute v exactly as the
    # forward did, or its gradient takes the other branch of the activation.
    channels = 64
    gen = torch.Generator().manual_seed(5)
    values = torch.rand(channels, generator=gen) * 10 - 5
    weight = (torch.rand(channels, generator=gen) + 0.5).to(cuda_device)
    x = values.view(1, channels, 1, 1).expand(4, channels, 3, 3).contiguous().to(cuda_device)
    grad = torch.randn(x.shape, generator=gen).to(cuda_device)
    bias = torch.zeros(channels, device=cuda_device)
    out, mean, var = torch.ops.fastgen.batch_norm_leaky_relu(
        x, weight, bias, None, None, True, 1e-5, 0.2
    )
    grad_x, grad_weight, grad_bias = torch.ops.fastgen.batch_norm_leaky_relu_backward(
        grad, x, weight, bias, mean, var, True, 1e-5, 0.2, [True, True, True]
    )
    slope_of_output = torch.where(out > 0, 1.0, 0.2)  # the branch the forward took
    assert_close(grad_bias, (grad * slope_of_output).sum(dim=(0, 2, 3)))


def test_cuda_deterministic_across_runs_and_schedules(cuda_device, monkeypatch):
    from fastgen._backend import registry

    assert (
        registry.why_not_native("batch_norm_leaky_relu", torch.empty(1, device=cuda_device)) is None
    )
    emulated = cuda_device == "cpu"
    # Under emulation, each run also takes another thread and block order (the schedule seed):
    # the merge order is fixed, so the bits must not change.
    seeds = ["0", "1", "2"] if emulated else [None, None, None]
    for layout in ("contiguous", "channels_last"):
        shape = (8, 32, 33, 17) if emulated else (64, 32, 33, 17)
        x = make_input(shape, torch.float32, cuda_device, layout, mean=3.0)
        grad = make_input(shape, torch.float32, cuda_device, layout, seed=4)
        w, b, _, _ = make_params(32, torch.float32, cuda_device)
        results = []
        for seed in seeds:
            if seed is not None:
                monkeypatch.setenv("FASTGEN_SIMT_SCHEDULE", seed)
            forward = torch.ops.fastgen.batch_norm_leaky_relu(x, w, b, None, None, True, 1e-5, 0.1)
            grads = torch.ops.fastgen.batch_norm_leaky_relu_backward(
                grad, x, w, b, forward[1], forward[2], True, 1e-5, 0.1, [True, True, True]
            )
            results.append((*forward, *grads))
        for again in results[1:]:
            for a, e in zip(again, results[0]):
                assert torch.equal(a, e), "bitwise-identical results run to run"


def test_cuda_gradcheck(cuda_device):
    x = make_input((3, 4, 3, 2), torch.float64, cuda_device, "contiguous").requires_grad_()
    w, b, _, _ = make_params(4, torch.float64, cuda_device)
    w.requires_grad_()
    b.requires_grad_()
    assert torch.autograd.gradcheck(
        lambda x, w, b: batch_norm_leaky_relu(x, None, None, w, b, True, 0.1, 1e-5, 0.2), (x, w, b)
    )
