"""The CPU convolutions' choice between fastgen's kernels and aten's (csrc/conv/conv_select_cpu.h):
each forced value takes the path it names, measured choices are cached per key and agree with
the forced path, and bfloat16 through fastgen's kernels keeps the numerical contract the README
states (no further from float64 than stock bf16 autocast)."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from conftest import assert_close

import fastgen.nn as fnn
from fastgen import _extension, ops

pytestmark = pytest.mark.skipif(not _extension.LOADED, reason="needs the extension")

# One Winograd layer each way (4x4, stride 2, >= 32 channels and tiles), and a 1x1-output head.
CASES = {
    "conv2d": (False, (8, 32, 16, 16), (48, 32, 4, 4), 2, 1),
    "conv_transpose2d": (True, (8, 48, 8, 8), (48, 32, 4, 4), 2, 1),
    "conv2d_head": (False, (8, 64, 4, 4), (1, 64, 4, 4), 1, 0),
}


def make(case: str, dtype=torch.float32, channels_last=False, seed=0):
    transposed, x_shape, w_shape, stride, padding = CASES[case]
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(x_shape, generator=gen).to(dtype)
    w = (torch.randn(w_shape, generator=gen) * 0.1).to(dtype)
    if channels_last:
        x = x.to(memory_format=torch.channels_last)
    return transposed, x, w, stride, padding


def run(transposed, x, w, stride, padding, grad_seed=1, *, stock=False):
    """(output, grad_input, grad_weight) of fastgen's op, or of stock's with stock=True."""
    x, w = x.detach().requires_grad_(), w.detach().requires_grad_()
    if stock:
        fn = F.conv_transpose2d if transposed else F.conv2d
    else:
        fn = ops.conv_transpose2d if transposed else ops.conv2d
    out = fn(x, w, None, stride, padding)
    grad = torch.randn(out.shape, generator=torch.Generator().manual_seed(grad_seed)).to(out.dtype)
    grad_x, grad_w = torch.autograd.grad(out, (x, w), grad)
    return out.detach(), grad_x, grad_w


def stock(*args):
    return run(*args, stock=True)


def errors_against_float64(ours, transposed, x, w, stride, padding):
    """(name, ours, stock's) for out, grad_x and grad_w of bf16 results `ours`: the largest
    error against the float64 result over its largest value, and the same for stock's bf16
    convolution of the same operands."""
    theirs = stock(transposed, x, w, stride, padding)
    exact = stock(transposed, x.double(), w.double(), stride, padding)
    for name, a, b, e in zip(("out", "grad_x", "grad_w"), ours, theirs, exact):
        assert a.dtype == torch.bfloat16 and a.shape == b.shape
        scale = e.abs().max()
        yield (
            name,
            ((a.double() - e).abs().max() / scale).item(),
            ((b.double() - e).abs().max() / scale).item(),
        )


@pytest.fixture
def fresh(monkeypatch):
    """No choice remembered; the policy from each test's own environment."""
    monkeypatch.delenv("FASTGEN_AUTOTUNE", raising=False)
    monkeypatch.delenv("FASTGEN_CONV_CPU", raising=False)
    _extension._C._conv_cpu_reset()
    yield monkeypatch
    _extension._C._conv_cpu_reset()


@pytest.mark.parametrize("case", sorted(CASES))
def test_forced_aten_is_stock_bit_for_bit(fresh, case):
    fresh.setenv("FASTGEN_CONV_CPU", "aten")
    args = make(case)
    for got, want, name in zip(run(*args), stock(*args), ("out", "grad_x", "grad_w")):
        assert torch.equal(got, want), f"{case} {name}: max diff {(got - want).abs().max()}"
    assert ops.conv_cpu_choices() == []  # nothing timed


@pytest.mark.parametrize("case", ["conv2d", "conv_transpose2d"])
def test_forced_fastgen_runs_the_winograd_kernels(fresh, case):
    fresh.setenv("FASTGEN_CONV_CPU", "fastgen")
    transposed, x, w, stride, padding = make(case)
    out = run(transposed, x, w, stride, padding)[0]
    direct = (
        torch.ops.fastgen.winograd_conv_transpose2d(x, w)
        if transposed
        else torch.ops.fastgen.winograd_conv2d(x, w)
    )
    assert torch.equal(out, direct)
    # and it is not aten's: Winograd's float32 rounding differs from the direct convolution's
    assert not torch.equal(out, stock(transposed, x, w, stride, padding)[0])
    assert ops.conv_cpu_choices() == []


@pytest.mark.parametrize("case", sorted(CASES))
@pytest.mark.parametrize("channels_last", [False, True])
def test_autotune_caches_each_key_and_matches_the_forced_path(fresh, case, channels_last):
    args = make(case, channels_last=channels_last)
    first = run(*args)
    records = ops.conv_cpu_choices()
    assert {r["key"].split(" ")[1] for r in records} == {"forward", "backward"}, records
    assert all(r["measurements"] == 1 for r in records), records
    for r in records:
        assert r["choice"] in ("fastgen", "aten")
        assert r["fastgen_ms"] is not None and r["aten_ms"] is not None, r
        faster = "fastgen" if r["fastgen_ms"] < 0.95 * r["aten_ms"] else "aten"  # the margin
        assert r["choice"] == faster, r
    again = run(*args)
    assert ops.conv_cpu_choices() == records  # seen again: not timed again
    for a, b in zip(first, again):
        assert torch.equal(a, b)  # the remembered choice is used
    # Each pass equals its chosen path, forced, bit for bit.
    choice = {r["key"].split(" ")[1]: r["choice"] for r in records}
    forced = {}
    for path in ("fastgen", "aten"):
        fresh.setenv("FASTGEN_CONV_CPU", path)
        forced[path] = run(*args)
    assert torch.equal(first[0], forced[choice["forward"]][0])
    assert torch.equal(first[1], forced[choice["backward"]][1])
    assert torch.equal(first[2], forced[choice["backward"]][2])
    for a, b in zip(forced["fastgen"], forced["aten"]):
        assert_close(a, b, scale=4)


def test_a_new_thread_count_or_layout_is_a_new_key(fresh):
    args = make("conv2d")
    run(*args)
    keys = {r["key"] for r in ops.conv_cpu_choices()}
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(1 if threads > 1 else 2)
        run(*args)
    finally:
        torch.set_num_threads(threads)
    run(*make("conv2d", channels_last=True))
    assert len({r["key"] for r in ops.conv_cpu_choices()}) == 3 * len(keys)


def test_shapes_without_a_fastgen_kernel_are_not_timed(fresh):
    x = torch.randn(2, 6, 9, 9, requires_grad=True)  # 6 -> 5 channels: no image side
    w = torch.randn(5, 6, 3, 3, requires_grad=True)
    out = ops.conv2d(x, w, None, 1, 1)
    out.sum().backward()
    records = ops.conv_cpu_choices()
    assert records and all(r["choice"] == "aten" and r["fastgen_ms"] is None for r in records)
    assert torch.equal(out, F.conv2d(x, w, None, 1, 1))


def test_fixed_rules_keep_halves_on_aten(fresh):
    fresh.setenv("FASTGEN_AUTOTUNE", "0")
    args = make("conv2d", torch.bfloat16)
    for got, want in zip(run(*args), stock(*args)):
        assert torch.equal(got, want)


@pytest.mark.parametrize("case", ["conv2d", "conv_transpose2d", "conv2d_head"])
@pytest.mark.parametrize("channels_last", [False, True])
def test_bfloat16_through_fastgen_kernels_is_no_worse_than_stock(fresh, case, channels_last):
    # The contract (README): bf16 operands converted to float32 on load, the float32 kernel,
    # the result rounded to bf16 once: its error against float64 is within that of stock's
    # bf16 convolution on the same operands (plus a margin for Winograd's float32 rounding).
    fresh.setenv("FASTGEN_CONV_CPU", "fastgen")
    transposed, x, w, stride, padding = make(case, torch.bfloat16, channels_last)
    ours = run(transposed, x, w, stride, padding)
    for name, err_ours, err_stock in errors_against_float64(
        ours, transposed, x, w, stride, padding
    ):
        assert err_ours <= err_stock * 1.05 + 1e-4, f"{case} {name}: {err_ours} vs {err_stock}"
    assert ours[0].is_contiguous(
        memory_format=torch.channels_last if channels_last else torch.contiguous_format
    )


def test_autocast_layers_take_the_measured_choice(fresh):
    layer = fnn.Conv2d(32, 48, 4, 2, 1, activation="leaky_relu", negative_slope=0.2)
    x = torch.randn(4, 32, 16, 16)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = layer(x)
    assert out.dtype == torch.bfloat16
    keys = [r["key"] for r in ops.conv_cpu_choices()]
    assert keys and all("BFloat16" in k for k in keys), keys
    with torch.autocast("cpu", dtype=torch.bfloat16):
        stock_out = F.leaky_relu(F.conv2d(x, layer.weight, layer.bias, 2, 1), 0.2)
    assert_close(out.float(), stock_out.float(), dtype=torch.bfloat16)


@pytest.mark.parametrize("name,value", [("FASTGEN_CONV_CPU", "cudnn"), ("FASTGEN_AUTOTUNE", "yes")])
def test_bad_settings_name_the_variable(fresh, name, value):
    fresh.setenv(name, value)
    with pytest.raises(ValueError, match=name):
        ops.conv2d(*make("conv2d")[1:3], None, 2, 1)


def test_preferred_choices_are_taken_without_timing(fresh):
    args = make("conv_transpose2d")
    run(*args)
    records = ops.conv_cpu_choices()
    _extension._C._conv_cpu_reset()
    flipped = [
        {"key": r["key"], "choice": "aten" if r["choice"] == "fastgen" else "fastgen"}
        for r in records
    ]
    ops.prefer_conv_cpu_choices(flipped)
    out = run(*args)
    after = ops.conv_cpu_choices()
    assert [(r["key"], r["choice"]) for r in after] == [(f["key"], f["choice"]) for f in flipped]
    assert all(r["measurements"] == 0 for r in after)  # taken, not timed
    fresh.setenv("FASTGEN_CONV_CPU", flipped[0]["choice"])  # backward sorts first
    assert torch.equal(out[1], run(*args)[1])
    with pytest.raises(ValueError, match="'fastgen' or 'aten'"):
        ops.prefer_conv_cpu_choices([{"key": "k", "choice": "cudnn"}])


def test_a_checkpoint_records_the_choices_and_a_resume_takes_them(fresh, tmp_path):
    from helpers.train_helpers import TinyDataset, gan_config

    from fastgen.train import load_checkpoint, train_gan

    data = TinyDataset()
    # width 16 at 16x16: the 16->32 layers have fastgen kernels (Winograd needs >= 32 channels
    # on both sides, the head and first layer are GEMMs), so there is a choice to record.
    config = dict(steps=2, fused=True, width=16, checkpoint_every=2)
    part = train_gan(gan_config(tmp_path / "part", **config), data, progress=False)
    recorded = load_checkpoint(part["checkpoint"])["conv_cpu_choices"]
    assert recorded and {r["choice"] for r in recorded} <= {"fastgen", "aten"}
    assert recorded == [{"key": r["key"], "choice": r["choice"]} for r in ops.conv_cpu_choices()]
    _extension._C._conv_cpu_reset()
    train_gan(
        gan_config(tmp_path / "part", **{**config, "steps": 3}),
        data,
        resume=str(part["checkpoint"]),
        progress=False,
    )
    taken = {r["key"]: r for r in ops.conv_cpu_choices()}
    for r in recorded:
        assert taken[r["key"]]["choice"] == r["choice"]
        assert taken[r["key"]]["measurements"] == 0  # restored, not measured again


def test_cpu_half_batch_norm_takes_stocks_faster_path(monkeypatch):
    # bf16/fp16 NCHW batch norm on CPU runs stock's F.batch_norm + F.leaky_relu (faster there,
    # see fastgen.ops.batch_norm_leaky_relu.stock_is_faster); FASTGEN_BN_CPU=fastgen or
    # FASTGEN_AUTOTUNE=0 take fastgen's kernel, and so does a channels_last input.
    monkeypatch.delenv("FASTGEN_AUTOTUNE", raising=False)
    x = torch.randn(8, 16, 5, 5).to(torch.bfloat16)

    def fused():
        mean, var = torch.zeros(16), torch.ones(16)
        out = ops.batch_norm_leaky_relu(x, mean, var, None, None, True, negative_slope=0.2)
        return out, mean, var

    stock_mean, stock_var = torch.zeros(16), torch.ones(16)
    stock = F.leaky_relu(F.batch_norm(x, stock_mean, stock_var, None, None, True), 0.2)
    out, mean, var = fused()
    assert torch.equal(out, stock) and torch.equal(mean, stock_mean)
    assert torch.equal(var, stock_var)
    for name, value in (("FASTGEN_BN_CPU", "fastgen"), ("FASTGEN_AUTOTUNE", "0")):
        with monkeypatch.context() as m:
            m.setenv(name, value)
            kernel, kernel_mean, _ = fused()
            assert not torch.equal(kernel, stock)  # fastgen's kernel rounds otherwise
            assert_close(kernel.float(), stock.float(), dtype=torch.bfloat16)
            assert_close(kernel_mean, stock_mean)
    # channels_last takes the kernel (faster there) without being asked
    x = x.contiguous(memory_format=torch.channels_last)
    stock = F.leaky_relu(F.batch_norm(x, torch.zeros(16), torch.ones(16), None, None, True), 0.2)
    out, _, _ = fused()
    assert not torch.equal(out, stock)
    assert_close(out.float(), stock.float(), dtype=torch.bfloat16)
    assert out.is_contiguous(memory_format=torch.channels_last)
    monkeypatch.setenv("FASTGEN_BN_CPU", "cudnn")
    with pytest.raises(ValueError, match="FASTGEN_BN_CPU"):
        fused()


def _ran_fastgen_op(fn) -> bool:
    """Whether fn() called torch.ops.fastgen.conv2d / conv_transpose2d (or its backward)."""
    with torch.profiler.profile() as prof:
        fn()
    return any(e.name.startswith("fastgen::conv") for e in prof.events())


@pytest.mark.parametrize("case", ["conv2d", "conv_transpose2d"])
def test_where_aten_won_every_pass_the_layer_is_the_stock_op(fresh, case):
    args = make(case)
    run(*args)  # measures the forward and the backward keys
    keys = [r["key"] for r in ops.conv_cpu_choices()]
    assert {k.split()[1] for k in keys} == {"forward", "backward"}

    ops.prefer_conv_cpu_choices([{"key": k, "choice": "aten"} for k in keys])
    assert not _ran_fastgen_op(lambda: run(*args))
    for got, want, name in zip(run(*args), stock(*args), ("out", "grad_x", "grad_w")):
        assert torch.equal(got, want), f"{case} {name}"
    transposed, x, w, stride, padding = args
    op = ops.conv_transpose2d if transposed else ops.conv2d
    with torch.no_grad():  # no backward wanted: the forward's key alone decides
        assert not _ran_fastgen_op(lambda: op(x, w, None, stride, padding))
    # An activation to fuse keeps the op, whatever convolution it runs.
    relu = lambda: op(x.requires_grad_(), w, None, stride, padding, activation="relu").sum()  # noqa: E731
    assert _ran_fastgen_op(lambda: relu().backward())

    # fastgen's kernel winning one pass keeps the op; so does any policy but the measured one.
    for key in keys:
        pass_wins = [{"key": k, "choice": "fastgen" if k == key else "aten"} for k in keys]
        ops.prefer_conv_cpu_choices(pass_wins)
        assert _ran_fastgen_op(lambda: run(*args)), key
    ops.prefer_conv_cpu_choices([{"key": k, "choice": "aten"} for k in keys])
    fresh.setenv("FASTGEN_CONV_CPU", "aten")
    assert _ran_fastgen_op(lambda: run(*args))


def _cast_count(fn) -> int:
    with torch.profiler.profile() as prof:
        fn()
    return sum(e.name == "aten::_to_copy" for e in prof.events())


@pytest.mark.parametrize("case", ["conv2d", "conv_transpose2d"])
def test_a_layer_whose_convolution_aten_won_is_the_stock_layer(fresh, case):
    """A fused layer with nothing to fuse, where aten won every measured pass, calls the stock
    functional op on its own parameters: bit-for-bit stock under bf16 autocast, no fastgen op,
    and autocast's cast of the weight reused when the layer runs twice in one region."""
    transposed, x, w, stride, padding = make(case)
    channels = (w.shape[0], w.shape[1]) if transposed else (w.shape[1], w.shape[0])
    kind = "ConvTranspose2d" if transposed else "Conv2d"
    ours = getattr(fnn, kind)(*channels, 4, stride, padding).to(memory_format=torch.channels_last)
    theirs = getattr(torch.nn, kind)(*channels, 4, stride, padding)
    theirs.load_state_dict(ours.state_dict())
    theirs = theirs.to(memory_format=torch.channels_last)
    x = x.to(memory_format=torch.channels_last).requires_grad_()

    def step(layer, twice=False):
        layer.zero_grad()
        x.grad = None
        with torch.autocast("cpu", torch.bfloat16):
            out = layer(x)
            if twice:
                out = out + layer(x)
        out.float().square().sum().backward()
        return out.detach(), x.grad, layer.weight.grad, layer.bias.grad

    step(ours)  # measures the forward and backward keys
    keys = [r["key"] for r in ops.conv_cpu_choices()]
    assert {k.split()[1] for k in keys} == {"forward", "backward"}
    ops.prefer_conv_cpu_choices([{"key": k, "choice": "aten"} for k in keys])
    assert not _ran_fastgen_op(lambda: step(ours))
    for twice in (False, True):
        for got, want in zip(step(ours, twice), step(theirs, twice)):
            assert torch.equal(got, want)
    assert _cast_count(lambda: step(ours, True)) == _cast_count(lambda: step(theirs, True))
    # Outside autocast the dtypes must agree, as the op checks them: a float64 input to a
    # float32 layer gets fastgen's error, not the stock layer's.
    with pytest.raises((TypeError, ValueError), match="fastgen"):
        ours(x.detach().double())
    # fastgen's kernel winning a pass keeps the op.
    ops.prefer_conv_cpu_choices([{"key": k, "choice": "fastgen"} for k in keys])
    assert _ran_fastgen_op(lambda: step(ours))


def bf16_dot_products() -> bool:
    """Whether the CPU multiplies bfloat16 pairs (AVX-512 BF16) in the copy that runs now."""
    active, _, features = _extension._C._cpu_capability()
    return active == "avx512" and "avx512bf16" in features


# FASTGEN_WINOGRAD_BF16=1's contract (README "Which CPU convolution runs"): against float64,
# relative to the largest exact value, within this many times stock bf16 autocast's error.
# Measured on the DCGAN layers: 9-13x; the Winograd transforms' sums and the output
# transform's scaling amplify the one extra rounding of each transformed value.
WINOGRAD_BF16_ERROR_FACTOR = 16


@pytest.mark.parametrize("case", ["conv2d", "conv_transpose2d"])
@pytest.mark.parametrize("channels_last", [False, True])
def test_winograd_bf16_products_keep_their_contract(fresh, case, channels_last):
    fresh.setenv("FASTGEN_CONV_CPU", "fastgen")
    args = make(case, torch.bfloat16, channels_last)
    converted = run(*args)  # the default: bf16 operands converted, float32 products
    fresh.setenv("FASTGEN_WINOGRAD_BF16", "1")
    ours = run(*args)
    if not bf16_dot_products():  # no instruction: the setting changes nothing
        for got, want in zip(ours, converted):
            assert torch.equal(got, want)
        return
    # The bfloat16 products ran: the data passes differ from the converted path's; the weight
    # gradient's GEMMs stay float32, so it is the converted path's bit for bit.
    assert not torch.equal(ours[0], converted[0]) and not torch.equal(ours[1], converted[1])
    assert torch.equal(ours[2], converted[2])
    for name, err_ours, err_stock in errors_against_float64(ours, *args):
        bound = WINOGRAD_BF16_ERROR_FACTOR if name != "grad_w" else 1.05
        assert err_ours <= err_stock * bound + 1e-4, f"{case} {name}: {err_ours} vs {err_stock}"
    assert ours[0].is_contiguous(
        memory_format=torch.channels_last if channels_last else torch.contiguous_format
    )


def test_winograd_bf16_products_follow_the_capability(fresh):
    # Forcing a copy without the instruction (AVX2) turns the bfloat16 products off with it.
    if _extension._C._cpu_capability()[1] == "baseline":
        pytest.skip("needs an AVX2 CPU")
    fresh.setenv("FASTGEN_CONV_CPU", "fastgen")
    fresh.setenv("FASTGEN_CPU_CAPABILITY", "avx2")
    args = make("conv_transpose2d", torch.bfloat16)
    converted = run(*args)
    fresh.setenv("FASTGEN_WINOGRAD_BF16", "1")
    for got, want in zip(run(*args), converted):
        assert torch.equal(got, want)


def test_winograd_bf16_setting_is_checked(fresh):
    fresh.setenv("FASTGEN_CONV_CPU", "fastgen")
    fresh.setenv("FASTGEN_WINOGRAD_BF16", "yes")
    with pytest.raises(ValueError, match="FASTGEN_WINOGRAD_BF16 must be 0 or 1, got 'yes'"):
        run(*make("conv2d", torch.bfloat16))


def test_winograd_bf16_choices_are_their_own_keys(fresh):
    # A choice measured with float32 products is not reused once bfloat16 products are on.
    if not bf16_dot_products():
        pytest.skip("needs AVX-512 BF16")
    args = make("conv2d", torch.bfloat16)
    run(*args)
    before = {r["key"] for r in ops.conv_cpu_choices()}
    fresh.setenv("FASTGEN_WINOGRAD_BF16", "1")
    run(*args)
    added = {r["key"] for r in ops.conv_cpu_choices()} - before
    assert added and all("winograd_bf16" in key for key in added), added
