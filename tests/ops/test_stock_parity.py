"""Arguments and layers behave as stock PyTorch's: what stock accepts, fastgen accepts with the
same result; what stock refuses, fastgen refuses with an error naming the function and the
argument; a call that raises changes nothing."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from conftest import assert_close
from torch import nn

import fastgen.nn as fnn
from fastgen import ops

X = torch.randn(2, 3, 6, 6, generator=torch.Generator().manual_seed(0))
W2 = torch.randn(4, 3, 3, 3, generator=torch.Generator().manual_seed(1))  # conv2d weight
WT = torch.randn(3, 4, 3, 3, generator=torch.Generator().manual_seed(2))  # transposed weight

# Values int() would quietly coerce and stock refuses.
BAD_PAIRS = [(1.5, 2), (0.5, 0.5), True, "22", "11", None, 1.5, (1, 2, 3), torch.tensor(2.0)]
GOOD_PAIRS = [2, (2,), [2, 2], np.int64(2), (np.int64(2), 2), torch.tensor(2)]


@pytest.mark.parametrize("value", BAD_PAIRS, ids=repr)
@pytest.mark.parametrize("name", ["stride", "padding", "dilation"])
def test_int_pairs_refuse_what_stock_refuses(name, value):
    for fn, weight in ((ops.conv2d, W2), (ops.conv_transpose2d, WT)):
        with pytest.raises(
            (TypeError, ValueError), match=rf"fastgen.ops.{fn.__name__}: {name} must be"
        ):
            fn(X, weight, **{name: value})


@pytest.mark.parametrize("value", GOOD_PAIRS, ids=repr)
def test_int_pairs_accept_what_stock_accepts(value):
    assert_close(ops.conv2d(X, W2, stride=value), F.conv2d(X, W2, stride=value))
    assert_close(ops.conv_transpose2d(X, WT, stride=value), F.conv_transpose2d(X, WT, stride=value))


def test_conv_transpose2d_string_padding_names_the_argument():
    with pytest.raises(
        TypeError,
        match="fastgen.ops.conv_transpose2d: padding must be an int or a pair of ints, got 'same'",
    ):
        ops.conv_transpose2d(X, WT, padding="same")


@pytest.mark.parametrize("slope", ["0.1", None])
def test_negative_slope_must_be_a_number(slope):
    with pytest.raises(TypeError, match="fastgen.ops.conv2d: negative_slope must be a float"):
        ops.conv2d(X, W2, activation="leaky_relu", negative_slope=slope)
    with pytest.raises(
        TypeError, match="fastgen.ops.batch_norm_leaky_relu: negative_slope must be a float"
    ):
        ops.batch_norm_leaky_relu(X, None, None, None, None, True, negative_slope=slope)


@pytest.mark.parametrize("name,value,error,message", [
    ("training", "False", TypeError, "training must be a bool, got str"),
    ("training", None, TypeError, "training must be a bool, got NoneType"),
    ("eps", "1e-5", TypeError, "eps must be a float, got str"),
    ("eps", None, TypeError, "eps must be a float, got NoneType"),
    ("momentum", None, TypeError, "momentum must be a float, got NoneType"),
])  # fmt: skip
def test_batch_norm_arguments_are_not_coerced(name, value, error, message):
    rm, rv = torch.zeros(3), torch.ones(3)
    args = dict(x=X, running_mean=rm, running_var=rv, weight=None, bias=None, training=True)
    args[name] = value
    with pytest.raises(error, match=f"fastgen.ops.batch_norm_leaky_relu: {message}"):
        ops.batch_norm_leaky_relu(**args)
    assert torch.equal(rm, torch.zeros(3)) and torch.equal(rv, torch.ones(3))


def test_batch_norm_accepts_what_stock_accepts(device):
    x = X.to(device)
    for kwargs in (
        dict(momentum=True),
        dict(eps=0.0, training=False),
        dict(momentum=np.float32(0.3)),
    ):
        stats = [torch.rand(3, device=device) + 0.5 for _ in range(2)]
        stock_stats = [t.clone() for t in stats]
        training = kwargs.pop("training", True)
        out = ops.batch_norm_leaky_relu(x, *stats, None, None, training, **kwargs)
        stock = F.leaky_relu(F.batch_norm(x, *stock_stats, None, None, training, **kwargs), 0.01)
        assert_close(out, stock, msg=str(kwargs))
        for a, b in zip(stats, stock_stats):
            assert_close(a, b, msg=str(kwargs))


# (training, eps) that F.batch_norm and nn.BatchNorm2d refuse: eps <= 0 in training, < 0 in eval.
BAD_EPS = [(True, 0.0), (True, -1e-5), (False, -1e-5)]


def _batch_norm_eps_callers(eps: float, training: bool):
    """(name in the error, call) for the op and every layer that normalises with eps."""
    rm, rv = torch.zeros(3), torch.ones(3)
    op = (
        "fastgen.ops.batch_norm_leaky_relu",
        lambda: ops.batch_norm_leaky_relu(X, rm, rv, None, None, training, eps=eps),
    )
    layer = fnn.BatchNormLeakyReLU2d(3, eps=eps).train(training)
    sync = fnn.SyncBatchNormLeakyReLU2d(3, eps=eps).train(training)
    block = fnn.ConvTransposeBNAct2d(3, 3, 4, 2, 1, eps=eps).train(training)
    callers = [op, ("fastgen.ops.batch_norm_leaky_relu", lambda: layer(X))]
    callers += [("fastgen.ops.batch_norm_leaky_relu", lambda: sync(X))]
    block_fn = (
        "fastgen.ops.batch_norm_leaky_relu" if training else "fastgen.nn.ConvTransposeBNAct2d"
    )
    callers += [(block_fn, lambda: block(X))]
    if training:  # the synchronised path (world size > 1) checks before any collective
        synced = fnn.SyncBatchNormLeakyReLU2d(3, eps=eps).train()
        synced._world_size = lambda: 2
        callers += [("fastgen.nn.SyncBatchNormLeakyReLU2d", lambda: synced(X))]
    return callers


@pytest.mark.parametrize("training,eps", BAD_EPS)
def test_batch_norm_eps_is_refused_where_stock_refuses_it(training, eps):
    stock = nn.BatchNorm2d(3, eps=eps).train(training)
    with pytest.raises(ValueError, match="batch_norm eps must be") as stock_error:
        stock(X)
    meaning = "positive during training" if training else "non-negative"
    assert meaning in str(stock_error.value)
    for fn, call in _batch_norm_eps_callers(eps, training):
        with pytest.raises(ValueError, match=rf"^{fn}: eps must be {meaning}, got {eps}$"):
            call()


def test_batch_norm_eps_zero_in_eval_is_accepted_like_stock():
    for _, call in _batch_norm_eps_callers(0.0, training=False):
        assert torch.isfinite(call()).all()


def test_a_refused_call_changes_nothing():
    for running_var, error in ((torch.ones(1).expand(3), "sharing memory"),
                               (torch.ones(3, requires_grad=True), "must not require grad")):  # fmt: skip
        running_mean = torch.full((3,), 5.0)
        with pytest.raises(ValueError, match=f"running_var .*{error}|running_var {error}"):
            ops.batch_norm_leaky_relu(X, running_mean, running_var, None, None, True)
        assert torch.equal(running_mean, torch.full((3,), 5.0)), "running_mean was updated"


def test_empty_batch_in_training_is_like_stock(device):
    # nn.BatchNorm2d returns an empty output, leaves the running stats alone and still counts
    # num_batches_tracked; only exactly one value per channel is an error.
    stock = nn.BatchNorm2d(5).to(device).train()
    fused = fnn.convert(nn.Sequential(nn.BatchNorm2d(5), nn.LeakyReLU(0.2))).to(device).train()
    layer = fnn.BatchNormLeakyReLU2d(5).to(device).train()
    x = torch.randn(0, 5, 2, 2, device=device, requires_grad=True)
    for module in (layer, fused):
        out = module(x)
        assert out.shape == (0, 5, 2, 2)
        out.sum().backward()
    stock(x)
    for module in (layer, fused[0]):
        assert torch.equal(module.running_mean, stock.running_mean)
        assert int(module.num_batches_tracked) == int(stock.num_batches_tracked) == 1
    with pytest.raises(ValueError, match="more than 1 value per channel"):
        layer(torch.randn(1, 5, 1, 1, device=device))


def test_batch_norm_layer_has_stock_keyword_bias():
    stock = nn.BatchNorm2d(3, bias=False)
    layer = fnn.BatchNormLeakyReLU2d(3, bias=False)
    assert list(layer.state_dict()) == list(stock.state_dict())
    assert layer.bias is None and "bias=False" in repr(layer)
    with torch.no_grad():
        stock.weight.uniform_(0.5, 2.0)
    layer.load_state_dict(stock.state_dict())
    x = torch.randn(4, 3, 5, 5)
    assert_close(layer(x), F.leaky_relu(stock(x), 0.01))
    converted = fnn.convert(nn.Sequential(nn.BatchNorm2d(3, bias=False), nn.ReLU()))
    assert converted[0].bias is None
    assert list(converted.state_dict()) == [
        "0.weight",
        "0.running_mean",
        "0.running_var",
        "0.num_batches_tracked",
    ]


def dcgan_generator() -> nn.Sequential:
    return nn.Sequential(
        nn.ConvTranspose2d(16, 8, 4, 1, 0, bias=False), nn.BatchNorm2d(8), nn.ReLU(True),
        nn.ConvTranspose2d(8, 4, 4, 2, 1, bias=False), nn.BatchNorm2d(4), nn.ReLU(True),
        nn.ConvTranspose2d(4, 3, 4, 2, 1, bias=False), nn.Tanh(),
    )  # fmt: skip


def layout(t: torch.Tensor) -> str:
    return (
        "channels_last"
        if not t.is_contiguous() and t.is_contiguous(memory_format=torch.channels_last)
        else "nchw"
    )


def test_channels_last_model_runs_channels_last_like_stock(device):
    # aten's convolution goes channels_last when the input OR the weight is; a [N, 16, 1, 1]
    # latent is plainly contiguous, so only the weight can say it.
    torch.manual_seed(0)
    stock = dcgan_generator().to(device).to(memory_format=torch.channels_last)
    fused = fnn.convert(dcgan_generator()).to(device)
    fused.load_state_dict(stock.state_dict())
    fused = fused.to(memory_format=torch.channels_last)
    z = torch.randn(2, 16, 1, 1, device=device)
    seen = {"stock": [], "fused": []}
    for name, model in (("stock", stock), ("fused", fused)):
        hooks = [m.register_forward_hook(lambda m, i, o, n=name: seen[n].append(layout(o)))
                 for m in model if not isinstance(m, (nn.ReLU, nn.Identity))]  # fmt: skip
        out = model(z)
        for h in hooks:
            h.remove()
        seen[name].append(layout(out))
    assert seen["stock"][-1] == seen["fused"][-1] == "channels_last"
    assert set(seen["fused"]) == {"channels_last"}, seen
    # gradients follow the same rule
    weight = WT.to(device).to(memory_format=torch.channels_last).requires_grad_()
    x = X.to(device).requires_grad_()
    grads = torch.autograd.grad(
        ops.conv_transpose2d(x, weight, activation="relu").sum(), (x, weight)
    )
    stock_grads = torch.autograd.grad(F.relu(F.conv_transpose2d(x, weight)).sum(), (x, weight))
    assert [layout(g) for g in grads] == [layout(g) for g in stock_grads]


def channels_last_strides(t: torch.Tensor) -> torch.Tensor:
    """`t` with the strides channels_last gives it, even where plain contiguity would do
    (one channel, or 1x1 planes): what Module.to(memory_format=torch.channels_last) leaves."""
    n, c, h, w = t.shape
    out = torch.empty_strided(t.shape, (h * w * c, 1, w * c, c), dtype=t.dtype, device=t.device)
    return out.copy_(t)


@pytest.mark.parametrize("op", ["conv2d", "conv_transpose2d"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float64], ids=str)
@pytest.mark.parametrize(
    "x_shape,out_channels,kernel",
    [((2, 1, 8, 8), 4, 3), ((2, 4, 8, 8), 1, 3), ((2, 4, 1, 1), 4, 1), ((2, 4, 8, 8), 4, 1)],
    ids=["in1", "out1", "x-1x1", "k1"],
)
def test_output_layout_follows_strides_like_stock(device, op, dtype, x_shape, out_channels, kernel):
    # Operands contiguous both ways: the strides, not is_contiguous, decide the layout aten's
    # convolutions give (a grayscale discriminator's first weight after
    # .to(memory_format=torch.channels_last) goes channels_last), every input/weight pairing.
    torch.manual_seed(0)
    x0 = torch.randn(x_shape, device=device, dtype=dtype)
    pair = (out_channels, x_shape[1]) if op == "conv2d" else (x_shape[1], out_channels)
    w0 = torch.randn(*pair, kernel, kernel, device=device, dtype=dtype)
    stock_op, fused_op = getattr(F, op), getattr(ops, op)
    for x, w in [(a, b) for a in (x0, channels_last_strides(x0))
                 for b in (w0, channels_last_strides(w0))]:  # fmt: skip
        x, w = x.clone().requires_grad_(), w.clone().requires_grad_()
        stock = stock_op(x, w)
        fused = fused_op(x, w)
        assert fused.stride() == stock.stride(), (x.stride(), w.stride())
        assert_close(fused, stock, dtype)
        grads = torch.autograd.grad(fused.sum(), (x, w))
        stock_grads = torch.autograd.grad(stock.sum(), (x, w))
        assert [layout(g) for g in grads] == [layout(g) for g in stock_grads]


def test_grayscale_discriminator_channels_last_like_stock(device):
    # One input channel: the first weight is contiguous both ways after the conversion, and
    # stock still runs every layer channels_last; so must the fused layers (no copies back
    # and forth between the layers).
    torch.manual_seed(0)

    def discriminator() -> nn.Sequential:
        return nn.Sequential(
            nn.Conv2d(1, 8, 4, 2, 1, bias=False), nn.LeakyReLU(0.2),
            nn.Conv2d(8, 16, 4, 2, 1, bias=False), nn.BatchNorm2d(16), nn.LeakyReLU(0.2),
        )  # fmt: skip

    stock = discriminator().to(device).to(memory_format=torch.channels_last)
    fused = fnn.convert(discriminator()).to(device)
    fused.load_state_dict(stock.state_dict())
    fused = fused.to(memory_format=torch.channels_last)
    x = torch.randn(4, 1, 16, 16, device=device)
    outs = {}
    for name, model in (("stock", stock), ("fused", fused)):
        seen = []
        hooks = [m.register_forward_hook(lambda m, i, o, seen=seen: seen.append(layout(o)))
                 for m in model if not isinstance(m, (nn.LeakyReLU, nn.Identity))]  # fmt: skip
        outs[name] = model(x)
        for h in hooks:
            h.remove()
        assert set(seen) == {"channels_last"}, (name, seen)
    assert_close(outs["fused"], outs["stock"], torch.float32)


def weights_init(m):
    """The PyTorch DCGAN tutorial's initialisation, which walks modules by class name."""
    classname = m.__class__.__name__
    if classname.find("Conv") != -1:
        nn.init.normal_(m.weight.data, 0.0, 0.02)
    elif classname.find("BatchNorm") != -1:
        nn.init.normal_(m.weight.data, 1.0, 0.02)
        nn.init.constant_(m.bias.data, 0)


def test_tutorial_weights_init_and_stock_key_errors_after_convert():
    model = fnn.convert(dcgan_generator())
    model.apply(weights_init)
    assert abs(float(model[0].conv.weight.std()) - 0.02) < 0.01
    assert abs(float(model[0].bn.weight.mean()) - 1.0) < 0.05
    state = dcgan_generator().state_dict()
    del state["1.running_var"]
    with pytest.raises(RuntimeError, match=r'Missing key\(s\) in state_dict: "1.running_var"'):
        model.load_state_dict(state)
    result = model.load_state_dict(state, strict=False)
    assert result.missing_keys == ["1.running_var"]
