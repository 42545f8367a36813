"""NaN and inf go where stock PyTorch sends them (a diverging model must stay visible).

Every fused op against its stock reference on inputs with NaN, +-inf and huge values, on the
CPU kernels, the emulated CUDA kernels and a GPU when there is one: the same non-finite
pattern, and the finite values within the usual tolerance.
"""

from __future__ import annotations

import itertools

import pytest
import torch
import torch.nn.functional as F
from conftest import assert_close

import fastgen.nn as fnn
from fastgen import ops
from fastgen.reference import conv2d as conv2d_reference
from fastgen.reference import conv_transpose2d as conv_transpose2d_reference

NAN, INF = float("nan"), float("inf")
ACTIVATIONS = ["identity", "relu", "leaky_relu", "tanh", "sigmoid"]


def assert_same_values(actual, expected, msg=""):
    """Same NaN positions, same infinities, finite values close."""
    actual, expected = actual.detach().double(), expected.detach().double()
    assert torch.equal(actual.isnan(), expected.isnan()), f"{msg}: NaN positions differ"
    assert torch.equal(actual.isposinf(), expected.isposinf()), f"{msg}: +inf positions differ"
    assert torch.equal(actual.isneginf(), expected.isneginf()), f"{msg}: -inf positions differ"
    finite = expected.isfinite()
    assert_close(actual[finite], expected[finite], dtype=torch.float32, scale=4, msg=msg)


def poisoned(shape, seed=0):
    x = torch.randn(shape, generator=torch.Generator().manual_seed(seed))
    flat = x.view(-1)
    flat[3], flat[17], flat[-5] = NAN, INF, -INF
    return x


@pytest.mark.parametrize("activation", ACTIVATIONS)
def test_conv_epilogues_keep_nan_as_stock(device, activation):
    # relu used to turn NaN into 0 (x > 0 ? x : 0); stock keeps it.
    x = poisoned((2, 3, 6, 6)).to(device)
    weight = (torch.randn(3, 4, 3, 3) * 0.3).to(device)
    bias = torch.randn(4).to(device)
    out = ops.conv2d(x, weight.transpose(0, 1).contiguous(), bias, 1, 1, activation=activation)
    ref = conv2d_reference.conv2d(x, weight.transpose(0, 1).contiguous(), bias, (1, 1), (1, 1),
                                  (1, 1), 1, activation, 0.01)  # fmt: skip
    assert_same_values(out, ref, f"conv2d {activation}")
    out = ops.conv_transpose2d(x, weight, bias, 2, 1, activation=activation)
    ref = conv_transpose2d_reference.conv_transpose2d(
        x, weight, bias, (2, 2), (1, 1), (0, 0), 1, (1, 1), activation, 0.01
    )
    assert_same_values(out, ref, f"conv_transpose2d {activation}")


def test_relu_gradient_passes_through_nan_like_stock(device):
    # aten's threshold_backward zeroes the gradient only where the output is <= 0.
    x = torch.tensor([[[[NAN, 1.0], [-1.0, 2.0]]]], device=device)
    weight = torch.ones(1, 1, 1, 1, device=device)
    for fn in (ops.conv2d, ops.conv_transpose2d):
        leaf = x.clone().requires_grad_()
        out = fn(leaf, weight, activation="relu")
        stock_leaf = x.clone().requires_grad_()
        stock = F.relu(stock_leaf)
        (grad,) = torch.autograd.grad(out.sum(), leaf)
        (stock_grad,) = torch.autograd.grad(stock.sum(), stock_leaf)
        assert_same_values(grad, stock_grad, fn.__name__)


@pytest.mark.parametrize("transposed", [False, True])
@pytest.mark.parametrize("kind", ["nan", "inf", "huge"])
def test_winograd_shapes_match_stock_on_non_finite_and_huge_inputs(transposed, kind):
    # 4x4 stride-2 float32 layers with >= 32 channels take the Winograd kernels on CPU, whose
    # transforms would spread NaN, turn inf into NaN and overflow near 1e37: such inputs take
    # the exact convolution.
    gen = torch.Generator().manual_seed(1)
    x = torch.randn(2, 32, 16, 16, generator=gen)
    weight = torch.randn(32, 32, 4, 4, generator=gen) * 0.05
    if kind == "nan":
        x[0, 3, 5, 7] = NAN
    elif kind == "inf":
        x[1, 0, 2, 2], x[0, 5, 9, 9] = INF, -INF
    else:
        x[0, :, 4:8, 4:8] = 1e37
    leaf, stock_leaf = x.clone().requires_grad_(), x.clone().requires_grad_()
    if transposed:
        out = ops.conv_transpose2d(leaf, weight, None, 2, 1)
        stock = F.conv_transpose2d(stock_leaf, weight, None, 2, 1)
    else:
        out = ops.conv2d(leaf, weight, None, 2, 1)
        stock = F.conv2d(stock_leaf, weight, None, 2, 1)
    assert_same_values(out, stock, f"forward {kind}")
    grad = torch.randn(out.shape, generator=gen)
    (grad_x,) = torch.autograd.grad(out, leaf, grad)
    (stock_grad_x,) = torch.autograd.grad(stock, stock_leaf, grad)
    assert_same_values(grad_x, stock_grad_x, f"grad {kind}")


VALUES = [0.0, 1.0, -1.0, INF, -INF, NAN, 88.7, 89.0, 100.0, -200.0, 1e20, -1e20]


@pytest.mark.parametrize("with_kl", [False, True])
def test_reparameterize_matches_stock_on_extreme_values(device, with_kl):
    # Without the KL term its gradient used to be multiplied by zero: 0 * inf = NaN where
    # stock gives 1.06e19 and 2.59e21 (logvar 89 and 100) or 1 (mu = inf).
    pairs = list(itertools.product(VALUES, VALUES))
    mu = torch.tensor([[m for m, _ in pairs]], device=device)
    logvar = torch.tensor([[lv for _, lv in pairs]], device=device)
    eps = torch.full_like(mu, 0.5)
    leaves = [mu.clone().requires_grad_(), logvar.clone().requires_grad_()]
    stock_leaves = [mu.clone().requires_grad_(), logvar.clone().requires_grad_()]
    if with_kl:
        z, kl = ops.reparameterize_kl(*leaves, eps)
        loss = z.sum() + kl.sum()
    else:
        z = ops.reparameterize(*leaves, eps)
        loss = z.sum()
    m, lv = stock_leaves
    stock_z = m + torch.exp(0.5 * lv) * eps
    stock_loss = stock_z.sum()
    if with_kl:
        stock_kl = -0.5 * (1 + lv - m.pow(2) - lv.exp()).sum(1)
        stock_loss = stock_loss + stock_kl.sum()
        assert_same_values(kl, stock_kl, "kl")
    assert_same_values(z, stock_z, "z")
    for name, a, b in zip(("mu", "logvar"), torch.autograd.grad(loss, leaves),
                          torch.autograd.grad(stock_loss, stock_leaves)):  # fmt: skip
        assert_same_values(a, b, f"grad {name}")


@pytest.mark.parametrize("slope", [NAN, INF])
def test_batch_norm_non_finite_slope_leaves_positive_outputs_alone(device, slope):
    x = torch.randn(2, 3, 4, 4, generator=torch.Generator().manual_seed(2)).to(device)
    out = ops.batch_norm_leaky_relu(x, None, None, None, None, True, negative_slope=slope)
    stock = F.leaky_relu(F.batch_norm(x, None, None, training=True), slope)
    assert_same_values(out, stock, f"slope {slope}")


@pytest.mark.parametrize("value", [INF, -INF, NAN])
def test_batch_norm_running_mean_follows_stock_on_non_finite_input(device, value):
    x = torch.randn(4, 3, 5, 5, generator=torch.Generator().manual_seed(3)).to(device)
    x[1, 0, 2, 3] = value
    x[2, 2, 0, 0] = 1e30  # finite but huge: its channel's statistics stay finite-or-inf as stock's
    stats = [torch.zeros(3, device=device), torch.ones(3, device=device)]
    stock_stats = [torch.zeros(3, device=device), torch.ones(3, device=device)]
    out = ops.batch_norm_leaky_relu(x, *stats, None, None, True)
    stock = F.leaky_relu(F.batch_norm(x, *stock_stats, None, None, True), 0.01)
    assert_same_values(stats[0], stock_stats[0], "running_mean")
    assert_same_values(stats[1], stock_stats[1], "running_var")
    assert_same_values(out, stock, "output")


def test_converted_generator_and_folded_eval_keep_nan(device):
    # convert() fuses ConvTranspose2d -> BatchNorm2d -> ReLU; in eval the batch norm is folded
    # into the convolution and the ReLU runs in its epilogue.
    torch.manual_seed(4)
    stock = torch.nn.Sequential(
        torch.nn.ConvTranspose2d(8, 4, 4, 2, 1, bias=False), torch.nn.BatchNorm2d(4),
        torch.nn.ReLU(),
    ).to(device)  # fmt: skip
    fused = fnn.convert(stock)
    x = poisoned((2, 8, 3, 3)).to(device)
    for mode in ("train", "eval"):
        getattr(stock, mode)()
        getattr(fused, mode)()
        with torch.no_grad():
            assert_same_values(fused(x.clone()), stock(x.clone()), mode)


# mu, logvar, eps and the incoming gradients at NaN, +-inf, exp(0.5 * logvar) overflowing
# (logvar 177: exp(88.5) is finite in float32, 178: inf), underflowing into denormals (-180)
# and to 0 (-300), exp(logvar) finite (88.5) and infinite (89), and products that overflow in
# one order of multiplication but not the other (grad_z 1e30 with eps 1e-30).
EXTREME_MU = [0.0, 1.0, -1.0, INF, -INF, NAN, 1e38, 3e38]
EXTREME_LOGVAR = [0.0, 2.0, INF, -INF, NAN, 177.0, 178.0, -180.0, -300.0, 88.5, 89.0]
EXTREME_EPS = [0.5, 0.0, INF, -INF, NAN, 1e-30]
EXTREME_GRAD = [1.0, 0.0, -1e30]


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=str)
@pytest.mark.parametrize("rows", [True, False], ids=["one-value-rows", "one-row"])
@pytest.mark.parametrize("loss", ["z", "z+kl", "kl"])
def test_reparameterize_every_output_and_gradient_has_stocks_non_finite_pattern(
    device, dtype, rows, loss
):
    """z, kl, grad_mu, grad_logvar and grad_eps against the stock composition
    z = mu + exp(0.5 * logvar) * eps (fastgen.reference.reparameterize) with autograd, for a
    loss of z, of z and kl, and of kl alone (a gradient stock leaves out counts as zeros)."""
    cases = list(itertools.product(EXTREME_MU, EXTREME_LOGVAR, EXTREME_EPS, EXTREME_GRAD))
    shape = (len(cases), 1) if rows else (1, len(cases))
    columns = [torch.tensor([case[i] for case in cases], dtype=dtype).reshape(shape).to(device)
               for i in range(4)]  # fmt: skip
    mu, logvar, eps, grad_z = columns
    grad_kl = grad_z.reshape(shape[0], -1)[:, 0].flip(0)
    with_kl = "kl" in loss
    results = []
    for stock in (False, True):
        leaves = [t.clone().requires_grad_() for t in (mu, logvar, eps)]
        m, lv, e = leaves
        if stock:
            z = m + torch.exp(0.5 * lv) * e
            kl = -0.5 * (1 + lv - m.pow(2) - lv.exp()).reshape(shape[0], -1).sum(1)
        elif with_kl:
            z, kl = ops.reparameterize_kl(m, lv, e)
        else:
            z, kl = ops.reparameterize(m, lv, e), None
        total = (z * grad_z).sum() if "z" in loss else 0
        outputs = {"z": z}
        if with_kl:
            total = total + (kl * grad_kl).sum()
            outputs["kl"] = kl
        grads = torch.autograd.grad(total, leaves, allow_unused=True)
        grads = [torch.zeros_like(t) if g is None else g for g, t in zip(grads, leaves)]
        outputs.update(zip(("grad_mu", "grad_logvar", "grad_eps"), grads))
        results.append(outputs)
    ours, stock = results
    fn = f"fastgen.ops.reparameterize{'_kl' if with_kl else ''} (loss of {loss})"
    for name in stock:
        a, b = ours[name].detach().reshape(-1).cpu(), stock[name].detach().reshape(-1).cpu()
        kinds = [(a.isnan(), b.isnan()), (a.isposinf(), b.isposinf()),
                 (a.isneginf(), b.isneginf())]  # fmt: skip
        differ = torch.zeros_like(a, dtype=torch.bool)
        for x, y in kinds:
            differ |= x != y
        where = differ.nonzero().reshape(-1).tolist()
        described = [
            f"(mu, logvar, eps, grad_z)={cases[i]}: {a[i].item()} vs stock {b[i].item()}"
            for i in where[:6]
        ]
        assert not where, (
            f"{fn} {name} ({dtype}, {'rows of one value' if rows else 'one row'}): non-finite "
            f"pattern differs from stock's at {len(where)} places, e.g. {described}"
        )
        assert_same_values(ours[name], stock[name], f"{fn} {name} against stock")
