"""fastgen.nn layers against the stock PyTorch layers they replace."""

from __future__ import annotations

import inspect

import pytest
import torch
from conftest import assert_close
from torch import nn

import fastgen.nn as fnn


def seeded(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def randn(*shape, device="cpu", dtype=torch.float32, seed=0):
    return torch.randn(*shape, generator=seeded(seed), dtype=dtype).to(device)


def stock_bn_act(fused: fnn.BatchNormLeakyReLU2d) -> nn.Sequential:
    bn = nn.BatchNorm2d(
        fused.num_features,
        eps=fused.eps,
        momentum=fused.momentum,
        affine=fused.affine,
        track_running_stats=fused.track_running_stats,
    )
    bn.load_state_dict(fused.state_dict())
    return nn.Sequential(bn, nn.LeakyReLU(fused.negative_slope)).to(
        fused.running_mean.device if fused.running_mean is not None else "cpu"
    )


def randomise(module: nn.Module, seed: int = 1) -> None:
    """Non-trivial parameters and running statistics, so that a test can fail."""
    gen = seeded(seed)
    with torch.no_grad():
        for tensor in list(module.parameters()) + [
            b for b in module.buffers() if b is not None and b.is_floating_point()
        ]:
            tensor.copy_(torch.rand(tensor.shape, generator=gen) + 0.5)


def assert_same_state(actual: nn.Module, expected: nn.Module) -> None:
    expected_state = expected.state_dict()
    assert list(actual.state_dict()) == list(expected_state)
    for key, value in actual.state_dict().items():
        if value.is_floating_point():
            assert_close(value, expected_state[key], msg=key)
        else:
            assert torch.equal(value, expected_state[key]), key


# --- BatchNormLeakyReLU2d ------------------------------------------------------------------


@pytest.mark.parametrize("momentum", [0.1, None])
@pytest.mark.parametrize("affine", [True, False])
@pytest.mark.parametrize("track_running_stats", [True, False])
@pytest.mark.parametrize("negative_slope", [0.2, 0.0])
def test_batch_norm_leaky_relu_matches_stock(
    device, momentum, affine, track_running_stats, negative_slope
):
    fused = fnn.BatchNormLeakyReLU2d(
        5,
        momentum=momentum,
        affine=affine,
        track_running_stats=track_running_stats,
        negative_slope=negative_slope,
    ).to(device)
    randomise(fused)
    stock = stock_bn_act(fused).to(device)
    # Three training steps (momentum=None averages them), then eval.
    for step in range(3):
        x = randn(4, 5, 3, 7, device=device, seed=step) * 2 + 1
        x_stock = x.clone().requires_grad_()
        x_fused = x.clone().requires_grad_()
        grad = randn(4, 5, 3, 7, device=device, seed=10 + step)
        out_stock, out_fused = stock(x_stock), fused(x_fused)
        assert_close(out_fused, out_stock, msg=f"train step {step}")
        out_stock.backward(grad)
        out_fused.backward(grad)
        assert_close(x_fused.grad, x_stock.grad, msg=f"grad input, step {step}")
        if affine:
            assert_close(fused.weight.grad, stock[0].weight.grad, msg="grad weight")
            assert_close(fused.bias.grad, stock[0].bias.grad, msg="grad bias")
    assert_same_state(fused, stock[0])
    fused.eval()
    stock.eval()
    x = randn(2, 5, 4, 4, device=device, seed=99)
    assert_close(fused(x), stock(x), msg="eval")
    if track_running_stats:
        assert int(fused.num_batches_tracked) == 3


def test_batch_norm_leaky_relu_channels_last_and_noncontiguous(device):
    fused = fnn.BatchNormLeakyReLU2d(3).to(device)
    randomise(fused)
    stock = stock_bn_act(fused)
    x = randn(3, 3, 5, 6, device=device).to(memory_format=torch.channels_last)
    assert_close(fused(x), stock(x))
    x = randn(3, 3, 6, 5, device=device).transpose(2, 3)
    assert_close(fused(x), stock(x))


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_batch_norm_leaky_relu_half_input_float32_layer(device, dtype):
    # Mixed precision (AMP) feeds half activations to a float32 layer; stock BN accepts that,
    # returns the input dtype and keeps float32 running statistics.
    fused = fnn.BatchNormLeakyReLU2d(4, negative_slope=0.2).to(device)
    randomise(fused)
    stock = stock_bn_act(fused)
    x = (randn(3, 4, 5, 5, device=device) * 3 + 1).to(dtype)
    for mode in ("train", "eval"):
        fused.train(mode == "train")
        stock.train(mode == "train")
        out_fused, out_stock = fused(x), stock(x)
        assert out_fused.dtype == out_stock.dtype == dtype
        assert_close(out_fused.float(), out_stock.float(), dtype=dtype, msg=mode)
    assert fused.running_mean.dtype == torch.float32
    assert_close(fused.running_mean, stock[0].running_mean, dtype=dtype)
    assert_close(fused.running_var, stock[0].running_var, dtype=dtype)


def test_batch_norm_leaky_relu_state_dict_both_ways():
    stock = nn.BatchNorm2d(4)
    randomise(stock)
    stock.num_batches_tracked.fill_(7)
    fused = fnn.BatchNormLeakyReLU2d(4)
    assert list(fused.state_dict()) == list(stock.state_dict())
    fused.load_state_dict(stock.state_dict(), strict=True)
    for key, value in stock.state_dict().items():
        assert torch.equal(fused.state_dict()[key], value), key
    back = nn.BatchNorm2d(4)
    back.load_state_dict(fused.state_dict(), strict=True)
    assert int(back.num_batches_tracked) == 7
    # Checkpoints from before num_batches_tracked existed load like they do into stock BN.
    old = {k: v for k, v in stock.state_dict().items() if k != "num_batches_tracked"}
    old_sd = type(stock.state_dict())(old)
    old_sd._metadata = {"": {"version": 1}}
    fused.load_state_dict(old_sd, strict=True)
    assert int(fused.num_batches_tracked) == 0


def test_batch_norm_leaky_relu_is_not_a_batch_norm():
    # Documented choice: type-based BN rewrites must not catch (and de-activate) it.
    layer = fnn.BatchNormLeakyReLU2d(4)
    assert not isinstance(layer, nn.modules.batchnorm._BatchNorm)
    converted = nn.SyncBatchNorm.convert_sync_batchnorm(nn.Sequential(layer))
    assert isinstance(converted[0], fnn.BatchNormLeakyReLU2d)


def test_batch_norm_leaky_relu_repr_and_errors():
    text = repr(fnn.BatchNormLeakyReLU2d(8, momentum=None, negative_slope=0.2))
    assert text == (
        "BatchNormLeakyReLU2d(8, eps=1e-05, momentum=None, affine=True, "
        "track_running_stats=True, negative_slope=0.2)"
    )
    with pytest.raises(ValueError, match="BatchNormLeakyReLU2d: expected 4-D input"):
        fnn.BatchNormLeakyReLU2d(3)(torch.randn(2, 3, 4))


def test_batch_norm_leaky_relu_dtype_device_args():
    layer = fnn.BatchNormLeakyReLU2d(3, dtype=torch.float64)
    assert layer.weight.dtype == torch.float64 and layer.running_var.dtype == torch.float64
    assert layer.num_batches_tracked.dtype == torch.long
    assert torch.equal(layer.running_var, torch.ones(3, dtype=torch.float64))


# --- ConvTranspose2d -----------------------------------------------------------------------

STOCK_ACTIVATIONS = {
    "identity": lambda t: t,
    "relu": torch.relu,
    "leaky_relu": lambda t: nn.functional.leaky_relu(t, 0.2),
    "tanh": torch.tanh,
    "sigmoid": torch.sigmoid,
}


def compare_with_stock(name, config, activation, device, height):
    """fastgen.nn.<name>(**config, activation) with the state dict of a stock nn.<name>
    (**config) against that layer + the activation, on a [2, C_in, height, 7] input: output
    and the input, weight and bias gradients."""
    torch.manual_seed(0)
    stock = getattr(nn, name)(**config).to(device)
    fused = getattr(fnn, name)(**config, activation=activation, negative_slope=0.2).to(device)
    fused.load_state_dict(stock.state_dict(), strict=True)
    x = randn(2, config["in_channels"], height, 7, device=device)
    x_stock, x_fused = x.clone().requires_grad_(), x.clone().requires_grad_()
    out_stock = STOCK_ACTIVATIONS[activation](stock(x_stock))
    out_fused = fused(x_fused)
    assert out_fused.shape == out_stock.shape
    assert_close(out_fused, out_stock)
    grad = randn(*out_stock.shape, device=x.device, seed=3)
    out_stock.backward(grad)
    out_fused.backward(grad)
    assert_close(x_fused.grad, x_stock.grad, msg="grad input")
    assert_close(fused.weight.grad, stock.weight.grad, msg="grad weight")
    if stock.bias is not None:
        assert_close(fused.bias.grad, stock.bias.grad, msg="grad bias")


@pytest.mark.parametrize("activation", list(STOCK_ACTIVATIONS))
@pytest.mark.parametrize(
    "config",
    [
        dict(in_channels=4, out_channels=6, kernel_size=4, stride=2, padding=1),
        dict(
            in_channels=6,
            out_channels=3,
            kernel_size=(3, 2),
            stride=(2, 1),
            padding=(1, 0),
            output_padding=(1, 0),
            groups=3,
            dilation=(1, 2),
            bias=False,
        ),
    ],
    ids=["dcgan", "odd"],
)
def test_conv_transpose2d_matches_stock(device, activation, config):
    compare_with_stock("ConvTranspose2d", config, activation, device, height=5)


def test_conv_transpose2d_output_size(device):
    stock = nn.ConvTranspose2d(3, 2, 3, stride=2, padding=1).to(device)
    fused = fnn.ConvTranspose2d(3, 2, 3, stride=2, padding=1, activation="relu").to(device)
    fused.load_state_dict(stock.state_dict())
    x = randn(1, 3, 5, 5, device=device)
    for size in ([9, 9], [10, 10], [9, 10], torch.Size([1, 2, 10, 9])):
        expected = torch.relu(stock(x, output_size=size))
        actual = fused(x, output_size=size)
        assert actual.shape[-2:] == expected.shape[-2:] == tuple(size)[-2:]
        assert_close(actual, expected)
    with pytest.raises(ValueError, match="requested an output size of"):
        fused(x, output_size=[12, 12])


@pytest.mark.parametrize("name,activation", [("ConvTranspose2d", "tanh"), ("Conv2d", "leaky_relu")])
def test_conv_layers_follow_autocast(device, name, activation):
    dtype = torch.bfloat16
    stock = getattr(nn, name)(4, 3, 4, stride=2, padding=1).to(device)
    fused = getattr(fnn, name)(4, 3, 4, stride=2, padding=1, activation=activation)
    fused = fused.to(device)
    fused.load_state_dict(stock.state_dict())
    x = randn(2, 4, 6, 6, device=device)
    with torch.autocast(device, dtype=dtype):
        if activation == "leaky_relu":  # the layer's default slope
            expected = nn.functional.leaky_relu(stock(x), fused.negative_slope)
        else:
            expected = STOCK_ACTIVATIONS[activation](stock(x))
        actual = fused(x)
    assert actual.dtype == expected.dtype == dtype
    assert_close(actual.float(), expected.float(), dtype=dtype)


# --- Conv2d --------------------------------------------------------------------------------

CONV2D_CONFIGS = {
    "dcgan": dict(in_channels=4, out_channels=6, kernel_size=4, stride=2, padding=1),
    "odd": dict(in_channels=6, out_channels=3, kernel_size=(3, 2), stride=(2, 1),
                padding=(1, 0), groups=3, dilation=(1, 2), bias=False),
    "same-even-kernel": dict(in_channels=3, out_channels=2, kernel_size=(4, 3), padding="same"),
    "valid": dict(in_channels=3, out_channels=2, kernel_size=3, padding="valid"),
    "reflect": dict(in_channels=3, out_channels=4, kernel_size=3, stride=2, padding=(2, 1),
                    padding_mode="reflect"),
    "circular": dict(in_channels=3, out_channels=2, kernel_size=3, padding=1,
                     padding_mode="circular"),
}  # fmt: skip


@pytest.mark.parametrize("activation", list(STOCK_ACTIVATIONS))
@pytest.mark.parametrize("config", list(CONV2D_CONFIGS.values()), ids=list(CONV2D_CONFIGS))
def test_conv2d_matches_stock(device, activation, config):
    compare_with_stock("Conv2d", config, activation, device, height=6)


def test_conv2d_spectral_norm(device):
    """A spectral_norm parametrization sees a Conv2d and normalises the same weight."""
    torch.manual_seed(0)
    stock = nn.utils.parametrizations.spectral_norm(nn.Conv2d(3, 4, 4, 2, 1)).to(device)
    fused = nn.utils.parametrizations.spectral_norm(
        fnn.Conv2d(3, 4, 4, 2, 1, activation="leaky_relu", negative_slope=0.2)
    ).to(device)
    fused.load_state_dict(stock.state_dict(), strict=True)
    assert list(fused.state_dict()) == list(stock.state_dict())
    stock.eval(), fused.eval()  # no power iteration: both use the loaded u, v
    x = randn(2, 3, 8, 8, device=device).requires_grad_()
    expected = nn.functional.leaky_relu(stock(x), 0.2)
    actual = fused(x)
    assert_close(actual, expected)
    (grad_expected,) = torch.autograd.grad(expected.sum(), x)
    (grad_actual,) = torch.autograd.grad(actual.sum(), x)
    assert_close(grad_actual, grad_expected)


@pytest.mark.parametrize("name", ["Conv2d", "ConvTranspose2d"])
def test_conv_layers_state_dict_repr_and_errors(name):
    stock_cls, fused_cls = getattr(nn, name), getattr(fnn, name)
    stock = stock_cls(2, 3, 4, stride=2, padding=1, bias=False)
    fused = fused_cls(
        2, 3, 4, stride=2, padding=1, bias=False, activation="leaky_relu", negative_slope=0.2
    )
    assert isinstance(fused, stock_cls)
    assert list(fused.state_dict()) == list(stock.state_dict()) == ["weight"]
    stock.load_state_dict(fused.state_dict(), strict=True)
    assert torch.equal(stock.weight, fused.weight)
    assert repr(fused) == (
        f"{name}(2, 3, kernel_size=(4, 4), stride=(2, 2), padding=(1, 1), bias=False, "
        "activation='leaky_relu', negative_slope=0.2)"
    )
    assert repr(fused_cls(2, 3, 4)) == repr(stock_cls(2, 3, 4))
    with pytest.raises(ValueError, match="activation must be one of .* got 'gelu'"):
        fused_cls(2, 3, 4, activation="gelu")
    if name == "ConvTranspose2d":
        with pytest.raises(ValueError, match="padding mode"):
            fused_cls(2, 3, 4, padding_mode="reflect")
    else:
        with pytest.raises(ValueError, match="fastgen.ops.conv2d: weight has 2 input channels"):
            fused_cls(2, 3, 4)(torch.randn(1, 5, 8, 8))


@pytest.mark.parametrize("name", ["Conv2d", "ConvTranspose2d"])
def test_conv_layers_take_the_stock_constructor(name):
    """The stock constructor's parameters, in its order, plus keyword-only activation and
    negative_slope; positional arguments reach the stock layer unchanged."""
    stock_cls, fused_cls = getattr(nn, name), getattr(fnn, name)
    stock = list(inspect.signature(stock_cls).parameters.values())
    fused = list(inspect.signature(fused_cls).parameters.values())
    assert fused[:-2] == stock
    assert [(p.name, p.kind, p.default) for p in fused[-2:]] == [
        ("activation", inspect.Parameter.KEYWORD_ONLY, "identity"),
        ("negative_slope", inspect.Parameter.KEYWORD_ONLY, 0.01),
    ]
    # (in, out, kernel, stride, padding, dilation | output_padding, groups, bias)
    args = (2, 4, 3, 2, 1, 1, 2, False)
    assert repr(fused_cls(*args)) == repr(stock_cls(*args))
    dilation = (1,) if name == "ConvTranspose2d" else ()  # its dilation comes after bias
    every_positional = (*args, *dilation, "zeros", None, None)
    assert repr(fused_cls(*every_positional)) == repr(stock_cls(*every_positional))
    with pytest.raises(TypeError, match="positional arguments"):
        fused_cls(*every_positional, "relu")  # activation is keyword-only, as documented

    class Subclass(fused_cls):  # a user's subclass keeps a constructor of its own
        def __init__(self, channels):
            super().__init__(channels, channels, 3, activation="relu")

    assert list(inspect.signature(Subclass).parameters) == ["channels"]
    assert Subclass(2).activation == "relu"


# --- Reparameterize ------------------------------------------------------------------------


def test_reparameterize_with_given_noise(device):
    mu = randn(4, 8, device=device, seed=1).requires_grad_()
    logvar = (randn(4, 8, device=device, seed=2) * 0.5).requires_grad_()
    eps = randn(4, 8, device=device, seed=3)
    z, kl = fnn.Reparameterize()(mu, logvar, eps)
    expected_z = mu + torch.exp(0.5 * logvar) * eps
    expected_kl = -0.5 * (1 + logvar - mu**2 - logvar.exp()).sum(1)
    assert z.shape == (4, 8) and kl.shape == (4,)
    assert_close(z, expected_z)
    assert_close(kl, expected_kl)
    grads = torch.autograd.grad((z * eps).sum() + kl.sum(), (mu, logvar))
    expected = torch.autograd.grad((expected_z * eps).sum() + expected_kl.sum(), (mu, logvar))
    for actual, wanted in zip(grads, expected):
        assert_close(actual, wanted)


def test_reparameterize_draws_normal_noise(device):
    mu = torch.full((64, 256), 1.5, device=device)
    logvar = torch.full((64, 256), 2 * torch.log(torch.tensor(0.5)).item(), device=device)
    torch.manual_seed(0)
    z, kl = fnn.Reparameterize()(mu, logvar)
    noise = (z - mu) / 0.5
    # 16384 samples: the mean's standard error is 1/128, the std's about 1/181.
    assert abs(noise.mean().item()) < 0.04
    assert abs(noise.std().item() - 1) < 0.04
    assert_close(kl, -0.5 * (1 + logvar - mu**2 - logvar.exp()).sum(1))
    torch.manual_seed(0)
    again, _ = fnn.Reparameterize()(mu, logvar)
    assert torch.equal(z, again), "same seed must give the same noise"


# --- torch.compile -------------------------------------------------------------------------


def test_compile_fullgraph_small_model(device):
    torch.manual_seed(0)
    model = nn.Sequential(
        fnn.ConvTranspose2d(6, 4, 4, stride=2, padding=1, bias=False),
        fnn.BatchNormLeakyReLU2d(4, negative_slope=0.2),
        fnn.ConvTranspose2d(4, 3, 3, padding=1, activation="tanh"),
    ).to(device)
    twin = nn.Sequential(*[type(m)(**_init_args(m)) for m in model]).to(device)
    twin.load_state_dict(model.state_dict())
    # aot_eager traces through the fake kernels and autograd registrations without the
    # (slow, on a shared CPU) inductor C++ compile; the op tests cover inductor.
    compiled = torch.compile(twin, fullgraph=True, backend="aot_eager")
    for mode in ("train", "eval"):
        model.train(mode == "train")
        twin.train(mode == "train")
        x = randn(2, 6, 5, 5, device=device, seed=4)
        x_eager, x_compiled = x.clone().requires_grad_(), x.clone().requires_grad_()
        out_eager, out_compiled = model(x_eager), compiled(x_compiled)
        assert_close(out_compiled, out_eager, msg=mode)
        out_eager.square().sum().backward()
        out_compiled.square().sum().backward()
        assert_close(x_compiled.grad, x_eager.grad, msg=f"{mode} grad")
    assert_same_state(twin, model)


def _init_args(module: nn.Module) -> dict:
    if isinstance(module, fnn.BatchNormLeakyReLU2d):
        return dict(num_features=module.num_features, negative_slope=module.negative_slope)
    return dict(
        in_channels=module.in_channels,
        out_channels=module.out_channels,
        kernel_size=module.kernel_size,
        stride=module.stride,
        padding=module.padding,
        bias=module.bias is not None,
        activation=module.activation,
    )


# --- TorchScript is refused in one clear message (issue 14, item 1) ---------------------------


def _fused_layers():
    return {
        "BatchNormLeakyReLU2d": (fnn.BatchNormLeakyReLU2d(4), (torch.randn(2, 4, 5, 5),)),
        "SyncBatchNormLeakyReLU2d": (fnn.SyncBatchNormLeakyReLU2d(4), (torch.randn(2, 4, 5, 5),)),
        "Conv2d": (fnn.Conv2d(4, 4, 3), (torch.randn(2, 4, 5, 5),)),
        "ConvTranspose2d": (fnn.ConvTranspose2d(4, 4, 3), (torch.randn(2, 4, 5, 5),)),
        "ConvTransposeBNAct2d": (fnn.ConvTransposeBNAct2d(4, 4, 3), (torch.randn(2, 4, 5, 5),)),
        "Reparameterize": (fnn.Reparameterize(), (torch.randn(2, 4), torch.randn(2, 4))),
    }


TORCHSCRIPT = (
    r"TorchScript \(torch\.jit\.script/trace\) is not supported.*torch\.export.*fastgen export"
)


@pytest.mark.parametrize("name", list(_fused_layers()))
@pytest.mark.parametrize("how", ["script", "trace"])
@pytest.mark.parametrize("mode", ["train", "eval"])
def test_torchscript_is_refused_with_one_clear_message(name, how, mode):
    layer, args = _fused_layers()[name]
    layer.train(mode == "train")
    model = torch.nn.Sequential(layer) if len(args) == 1 else layer  # nested too
    with pytest.raises(RuntimeError, match=f"fastgen.nn.{name}: {TORCHSCRIPT}"):
        if how == "script":
            torch.jit.script(model)
        else:
            torch.jit.trace(model, args)


def test_torch_export_still_works_on_fused_layers():
    model = torch.nn.Sequential(fnn.Conv2d(3, 4, 3, activation="relu"), fnn.BatchNormLeakyReLU2d(4))
    model.eval()
    x = torch.randn(2, 3, 8, 8)
    program = torch.export.export(model, (x,))
    torch.testing.assert_close(program.module()(x), model(x))
