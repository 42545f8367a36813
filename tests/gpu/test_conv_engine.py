"""fastgen's implicit-GEMM convolution engine (csrc/conv/implicit_gemm_cuda.cuh), forced with
FASTGEN_CONV_TRANSPOSE=fastgen / FASTGEN_CONV2D=fastgen: under the SIMT emulator here, and on
a GPU when there is one. Shapes stay small: every thread of every block is emulated."""

from __future__ import annotations

import pytest
import torch
from conftest import CUDA_DEVICES, DTYPES, assert_close, examples, on_device
from helpers.conv_helpers import LAYOUTS, ROUTE_ENV, check, configs, engine_forced, layout
from hypothesis import given, settings
from hypothesis import strategies as st

from fastgen import _extension
from fastgen.ops import conv2d, conv_transpose2d, conv_transpose2d_with_stats
from fastgen.reference.conv2d import conv2d as reference_conv2d
from fastgen.reference.conv_transpose2d import ACTIVATIONS
from fastgen.reference.conv_transpose2d import conv_transpose2d as reference_ct

pytestmark = pytest.mark.skipif(
    not _extension.EMULATED_LOADED and not torch.cuda.is_available(),
    reason="needs the emulated CUDA kernels or a GPU",
)

ENV = ROUTE_ENV


@pytest.fixture(params=CUDA_DEVICES)
def engine(request):
    with engine_forced(request.param) as device:
        yield device


def launches() -> int:
    """Kernel launches the emulator has run so far (0 on a GPU-only build)."""
    if not _extension.EMULATED_LOADED:
        return 0
    return _extension._emulated_cuda.launch_count()


# Channel counts around the 64-wide tile (and the 32-deep k-step) and tiny ones.
CHANNELS = st.sampled_from([1, 2, 3, 5, 16, 31, 33, 64, 65, 70])


@pytest.mark.parametrize("name", CUDA_DEVICES)
@pytest.mark.parametrize("op", ["conv2d", "conv_transpose2d"])
@settings(max_examples=examples(50), deadline=None, derandomize=True)
@given(data=st.data(), dtype=st.sampled_from(DTYPES), kind=st.sampled_from(LAYOUTS))
def test_matches_reference(name, op, data, dtype, kind):
    # groups 1 and dilation 1 (the engine's domain), kernels to 5, inputs to 9x9
    config = data.draw(configs(op, channels=CHANNELS, groups=st.just(1), dilation=st.just(1),
                               kernel=st.integers(1, 5), size=st.integers(0, 8)))  # fmt: skip
    with engine_forced(name) as device:
        check(op, config, dtype, device, kind)


DCGAN_UP = dict(input=(3, 16, 4, 4), weight=(8, 4, 4), stride=2, padding=1)
DCGAN_DOWN = dict(input=(3, 8, 8, 8), weight=(16, 4, 4), stride=2, padding=1)


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("activation", ACTIVATIONS)
@pytest.mark.parametrize("kind", ["contiguous", "channels_last"])
def test_dcgan_layers_every_dtype_and_activation(engine, dtype, activation, kind):
    expected = torch.channels_last if kind == "channels_last" else torch.contiguous_format
    for op, config in (("conv_transpose2d", DCGAN_UP), ("conv2d", DCGAN_DOWN)):
        out = check(op, dict(config, activation=activation), dtype, engine, kind)
        assert out.is_contiguous(memory_format=expected), op


@pytest.mark.parametrize(
    "config",
    [
        dict(input=(1, 1, 1, 1), weight=(1, 1, 1)),
        dict(input=(2, 7, 1, 1), weight=(65, 4, 4)),  # the generator's first layer
        dict(input=(2, 3, 3, 2), weight=(2, 1, 1), stride=3, output_padding=2),  # taps-less phases
        dict(input=(1, 4, 2, 3), weight=(3, 5, 2), stride=(4, 1), padding=(2, 0),
             output_padding=(3, 0)),  # the widest stride the engine takes
        dict(input=(2, 70, 3, 3), weight=(70, 3, 3), padding=1, activation="sigmoid"),
    ],
    ids=["ones", "first-layer", "tapless-phases", "stride-4", "wide"],
)  # fmt: skip
def test_conv_transpose2d_edge_shapes(engine, config):
    for dtype in (torch.float32, torch.float64):
        check("conv_transpose2d", config, dtype, engine)


def test_empty_batch_and_zero_slope(engine):
    weight, bias = torch.randn(3, 2, 4, 4), torch.randn(2)
    empty = conv_transpose2d(torch.randn(0, 3, 5, 5), weight, bias, 2, 1, activation="relu")
    assert empty.shape == (0, 2, 10, 10)
    config = dict(DCGAN_UP, activation="leaky_relu", negative_slope=0.0)
    check("conv_transpose2d", config, torch.float64, engine)


def test_tf32_follows_torch(engine, monkeypatch):
    """float32 takes TF32 tensor cores only when torch.backends.cudnn.allow_tf32 allows them:
    off (the tests' setting) it is exact float32, on it is TF32-accurate and not exact."""
    generator = torch.Generator().manual_seed(3)
    x = torch.randn(2, 40, 5, 5, generator=generator)
    weight = torch.randn(40, 24, 4, 4, generator=generator)
    expected = conv_transpose2d(x.double(), weight.double(), None, 2, 1)
    exact = conv_transpose2d(x.to(engine), weight.to(engine), None, 2, 1)
    monkeypatch.setattr(torch.backends.cudnn, "allow_tf32", True)
    tf32 = conv_transpose2d(x.to(engine), weight.to(engine), None, 2, 1)
    assert_close(exact, expected, torch.float32, scale=4)
    scale = expected.abs().max()
    assert (tf32.double() - expected).abs().max() < 5e-3 * scale
    assert (tf32.double() - expected).abs().max() > (exact.double() - expected).abs().max()


@pytest.fixture
def cudnn_tf32():
    """torch.backends.cudnn, with its TF32 switches (new API and legacy) restored afterwards to
    the suite's setting (conftest: TF32 off, through the legacy switch)."""
    cudnn = torch.backends.cudnn
    legacy, overall = cudnn.allow_tf32, cudnn.fp32_precision
    yield cudnn
    cudnn.fp32_precision = overall
    cudnn.allow_tf32 = legacy  # sets conv and RNN alike: the legacy query works again


# (API, value): the legacy switch, or torch's per-operator one (torch >= 2.9) with the RNN
# switch set the other way, the mix under which torch's query without an operator raises.
TF32_SWITCHES = [("legacy", True), ("legacy", False), ("conv", "tf32"), ("conv", "ieee")]


@pytest.mark.parametrize(("api", "value"), TF32_SWITCHES, ids=str)
def test_tf32_follows_either_api(engine, cudnn_tf32, api, value):
    """float32 takes TF32 tensor cores exactly when torch's switch for cuDNN convolutions says
    so, whichever API set it: torch.backends.cudnn.allow_tf32 or
    torch.backends.cudnn.conv.fp32_precision ("tf32" / "ieee")."""
    if engine == "cuda" and torch.cuda.get_device_capability() < (8, 0):
        pytest.skip("no TF32 before sm_80")
    if api == "legacy":
        cudnn_tf32.allow_tf32 = value
    else:
        cudnn_tf32.conv.fp32_precision = value
        cudnn_tf32.rnn.fp32_precision = "ieee" if value == "tf32" else "tf32"
    generator = torch.Generator().manual_seed(6)
    x = torch.randn(1, 32, 4, 4, generator=generator)
    weight = torch.randn(32, 16, 3, 3, generator=generator)
    expected = conv_transpose2d(x.double(), weight.double())
    out = conv_transpose2d(x.to(engine), weight.to(engine))
    error = ((out.double().cpu() - expected).abs().max() / expected.abs().max()).item()
    tf32 = value in (True, "tf32")
    assert (error > 2e-5) == tf32, f"relative error {error:.2e}, TF32 {'on' if tf32 else 'off'}"


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("kind", ["contiguous", "channels_last"])
def test_batch_statistics_from_the_epilogue(engine, dtype, kind):
    """conv_transpose2d_with_stats: the output as conv_transpose2d's, and the per-channel
    mean and biased variance of that output (as stored) as torch.var_mean computes them."""
    generator = torch.Generator().manual_seed(1)
    x = layout(torch.randn(3, 20, 5, 4, generator=generator).to(dtype), kind).to(engine)
    weight = torch.randn(20, 70, 3, 4, generator=generator).to(dtype).to(engine)
    bias = torch.randn(70, generator=generator).to(dtype).to(engine)
    out, mean, var = conv_transpose2d_with_stats(x, weight, bias, stride=2, padding=1)
    plain = conv_transpose2d(x, weight, bias, stride=2, padding=1)
    acc = torch.promote_types(dtype, torch.float32)
    assert out.dtype == dtype and mean.dtype == acc and var.dtype == acc
    assert_close(out, plain, dtype)
    expected_var, expected_mean = torch.var_mean(out.double(), dim=(0, 2, 3), correction=0)
    tol = {torch.float64: 1e-12}.get(dtype, 1e-5)
    torch.testing.assert_close(mean.double(), expected_mean, atol=tol, rtol=tol)
    torch.testing.assert_close(var.double(), expected_var, atol=tol, rtol=tol)


def test_batch_statistics_of_a_large_mean(engine):
    """A channel with mean 1000 and std 0.01 keeps its variance in float32 (per-tile two-pass
    sums merged with Chan's update, as the batch-norm kernel does)."""
    generator = torch.Generator().manual_seed(2)
    x = torch.randn(3, 8, 6, 6, generator=generator).to(engine)
    weight = (torch.randn(8, 5, 3, 3, generator=generator) * 2e-3).to(engine)
    bias = torch.full((5,), 1000.0, device=engine)
    out, mean, var = conv_transpose2d_with_stats(x, weight, bias, stride=1, padding=0)
    expected_var, expected_mean = torch.var_mean(out.double(), dim=(0, 2, 3), correction=0)
    torch.testing.assert_close(mean.double(), expected_mean, atol=0, rtol=1e-6)
    torch.testing.assert_close(var.double(), expected_var, atol=0, rtol=1e-3)


def test_statistics_are_deterministic(engine):
    generator = torch.Generator().manual_seed(4)
    x = torch.randn(3, 16, 9, 9, generator=generator).to(engine)
    weight = torch.randn(16, 33, 4, 4, generator=generator).to(engine)
    first = conv_transpose2d_with_stats(x, weight, None, stride=2, padding=1)
    second = conv_transpose2d_with_stats(x, weight, None, stride=2, padding=1)
    for a, b in zip(first, second):
        assert torch.equal(a, b)


@pytest.mark.parametrize("op", ["conv2d", "conv_transpose2d"])
def test_route_per_environment_value(op, monkeypatch):
    """auto and cudnn take the library convolution (with no bias and no activation: no fastgen
    kernel at all), fastgen the engine (one launch), and a bad value is a ValueError."""
    x, weight = torch.randn(1, 4, 5, 5), torch.randn(4, 4, 3, 3)
    fn = conv2d if op == "conv2d" else conv_transpose2d
    with on_device("emulated-cuda") as device:
        counts = {}
        for value in ("auto", "cudnn", "fastgen", ""):
            monkeypatch.setenv(ENV[op], value)
            before = launches()
            fn(x.to(device), weight.to(device))
            counts[value] = launches() - before
        assert counts == {"auto": 0, "cudnn": 0, "fastgen": 1, "": 0}
        monkeypatch.setenv(ENV[op], "fastgen")
        before = launches()  # grouped or dilated: the engine does not apply, the library runs
        fn(x.to(device), weight[:, :2].contiguous() if op == "conv2d" else weight[:, :2], groups=2)
        fn(x.to(device), weight, dilation=2, padding=2)
        assert launches() == before
        monkeypatch.setenv(ENV[op], "tensor-cores")
        with pytest.raises(ValueError, match=f"{ENV[op]} must be auto, fastgen or cudnn"):
            fn(x.to(device), weight)


@pytest.mark.parametrize("op", ["conv2d", "conv_transpose2d"])
def test_opcheck_and_compile(engine, op):
    torch.manual_seed(0)
    x = torch.randn(2, 4, 6, 5, device=engine).contiguous(memory_format=torch.channels_last)
    weight = torch.randn(4, 3, 3, 3, device=engine)
    bias = torch.randn(3, device=engine)
    if op == "conv2d":
        args = (x, weight.transpose(0, 1).contiguous(), bias, [2, 1], [1, 0], [1, 1], 1,
                "leaky_relu", 0.1)  # fmt: skip
        fn = conv2d
    else:
        args = (x, weight, bias, [2, 1], [1, 0], [1, 0], 1, [1, 1], "leaky_relu", 0.1)
        fn = conv_transpose2d
    torch.library.opcheck(getattr(torch.ops.fastgen, op), args)
    if op == "conv_transpose2d":
        torch.library.opcheck(torch.ops.fastgen.conv_transpose2d_with_stats, args[:8])

    def block(x, weight, bias):
        return fn(x, weight, bias, stride=2, padding=1, activation="tanh") * 2

    compiled = torch.compile(block, fullgraph=True, backend="aot_eager")
    results = []
    for f in (block, compiled):
        inputs = [t.clone().requires_grad_() for t in args[:3]]
        out = f(*inputs)
        out.square().sum().backward()
        results.append((out, *(t.grad for t in inputs)))
    for actual, expected in zip(results[1], results[0]):
        assert_close(actual, expected)


@pytest.mark.skipif(not _extension.EMULATED_LOADED, reason="needs the emulated CUDA kernels")
def test_bitwise_identical_across_thread_schedules(monkeypatch):
    """The engine's results (output, batch statistics, all three gradients) do not depend on
    the order in which the emulator resumes threads: nothing races, every reduction has a
    fixed order (per-tile partials merged in block order, split-K partials in split order)."""
    generator = torch.Generator().manual_seed(5)
    x = torch.randn(2, 33, 5, 4, generator=generator)
    weight = torch.randn(33, 65, 3, 4, generator=generator)
    bias = torch.randn(65, generator=generator)
    grad = torch.randn(2, 65, 9, 8, generator=generator)
    results = []
    for seed in ("0", "1", "7"):
        monkeypatch.setenv("FASTGEN_SIMT_SCHEDULE", seed)
        with engine_forced("emulated-cuda") as device:
            inputs = [t.to(device).requires_grad_() for t in (x, weight, bias)]
            out, mean, var = conv_transpose2d_with_stats(*inputs, stride=2, padding=1)
            grads = torch.autograd.grad(out, inputs, grad)
            results.append([out, mean, var, *grads])
    for other in results[1:]:
        for a, b in zip(results[0], other):
            assert torch.equal(a, b)


def any_size_one_strides(t: torch.Tensor, data) -> torch.Tensor:
    """t (dense) with a drawn stride on each of its size-1 dims: the same memory and still
    contiguous in its layout, since a size-1 dim's stride is never used to address it."""
    strides = [
        data.draw(st.sampled_from([1, 2, 3, 7, 64, 1000])) if size == 1 else stride
        for size, stride in zip(t.shape, t.stride())
    ]
    return t.as_strided(t.shape, strides)


@pytest.mark.parametrize("name", CUDA_DEVICES)
@pytest.mark.parametrize("op", ["conv2d", "conv_transpose2d"])
@pytest.mark.parametrize("kind", ["contiguous", "channels_last"])
@settings(max_examples=examples(10), deadline=None, derandomize=True)
@given(data=st.data())
def test_size_one_dims_with_any_stride(name, op, kind, data):
    """Every entry point (input, weight and bias forward; grad_out, input, weight and output
    backward) takes tensors whose size-1 dims carry any stride, e.g. grad_out =
    randn(2, 4, 1, 5).transpose(2, 3) (W == 1 with stride(3) == 5), in both layouts."""
    n, c_in, c_out = (data.draw(st.sampled_from([1, 2])) for _ in range(3))
    kernel = [data.draw(st.integers(1, 2)) for _ in range(2)]
    if op == "conv2d":  # a size-1 output dim where the kernel covers the input
        size = [k + data.draw(st.integers(0, 1)) for k in kernel]
        shapes = dict(x=(n, c_in, *size), weight=(c_out, c_in, *kernel), bias=(c_out,))
    else:  # a size-1 output dim where input and kernel are 1 wide
        size = [data.draw(st.integers(1, 2)) for _ in range(2)]
        kernel = [k if s > 1 else 1 for k, s in zip(kernel, size)]
        shapes = dict(x=(n, c_in, *size), weight=(c_in, c_out, *kernel), bias=(c_out,))
    generator = torch.Generator().manual_seed(data.draw(st.integers(0, 100)))
    base = {k: torch.randn(s, generator=generator, dtype=torch.float64) for k, s in shapes.items()}
    fn, reference = (
        (conv2d, reference_conv2d) if op == "conv2d" else (conv_transpose2d, reference_ct)
    )
    activation = data.draw(st.sampled_from(["identity", "tanh"]))
    inputs = {k: t.clone().requires_grad_() for k, t in base.items()}
    expected = reference(*inputs.values(), activation=activation)
    grad = torch.randn(expected.shape, generator=generator, dtype=torch.float64)
    expected_grads = torch.autograd.grad(expected, list(inputs.values()), grad)
    with engine_forced(name) as device:
        tensors = {k: layout(t, kind) if t.dim() == 4 else t for k, t in base.items()}
        tensors = {k: any_size_one_strides(t.to(device), data).requires_grad_()
                   for k, t in tensors.items()}  # fmt: skip
        out = fn(*tensors.values(), activation=activation)
        grad_out = any_size_one_strides(layout(grad, kind).to(device), data)
        grads = torch.autograd.grad(out, list(tensors.values()), grad_out)
    assert_close(out.cpu(), expected, msg=f"{op} output {shapes} {kind}")
    for key, actual, wanted in zip(tensors, grads, expected_grads):
        assert_close(actual.cpu(), wanted, msg=f"{op} grad {key} {shapes} {kind}")


@pytest.mark.skipif(not _extension.EMULATED_LOADED, reason="needs the emulated CUDA kernels")
def test_weight_grad_split_is_int64():
    """A reduction of 2^32 rows (batch * u * v) in one split: the split's row count is kept
    whole (int32 wrapped it to 0, a silently zero weight gradient)."""
    launch = _extension._emulated_cuda.conv_weight_grad_launch
    # [a, b] = [8192, 8192]: 2^26 workspace values per split, so a single split
    grid_x, grid_y, grid_z, rows_per_split = launch(False, [2**16, 8192, 256, 256], 8192, [1, 1])
    assert (grid_x, grid_y, grid_z, rows_per_split) == (128, 128, 1, 2**32)
    # small channel counts: many splits, which together cover every row
    grid_x, grid_y, grid_z, rows_per_split = launch(True, [2**16, 1, 256, 256], 1, [1, 1])
    assert (grid_x, grid_y) == (1, 1) and rows_per_split % 32 == 0
    assert grid_z * rows_per_split >= 2**32 > (grid_z - 1) * rows_per_split


@pytest.mark.skipif(not _extension.EMULATED_LOADED, reason="needs the emulated CUDA kernels")
@pytest.mark.parametrize("op", ["conv2d", "conv_transpose2d"])
def test_grids_beyond_cuda_limits_are_errors_naming_the_op(op):
    """gridDim.y is at most 65535: more than 65535 64-wide column blocks is an error that names
    the op and the way around it (the library route), from the launch arithmetic for the
    weight gradient and from a real call for the forward (~17 MB per tensor)."""
    launch = _extension._emulated_cuda.conv_weight_grad_launch
    transposed = op == "conv_transpose2d"
    message = f"fastgen::{op}: .*{ROUTE_ENV[op]}=cudnn"
    with pytest.raises(RuntimeError, match=message):
        launch(transposed, [1, 1, 1, 2], 1, [2048, 2049])  # 4196352 columns: 65568 blocks
    assert launch(transposed, [1, 1, 1, 2], 1, [2048, 2047])[1] == 65504
    channels = 65536 * 64  # output channels: 65536 column blocks
    x = torch.randn(1, 1, 1, 1)
    weight = torch.randn(channels, 1, 1, 1) if op == "conv2d" else torch.randn(1, channels, 1, 1)
    with engine_forced("emulated-cuda") as device, pytest.raises(RuntimeError, match=message):
        (conv2d if op == "conv2d" else conv_transpose2d)(x.to(device), weight.to(device))
