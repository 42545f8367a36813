"""fastgen.nn.ConvTransposeBNAct2d against the stock ConvTranspose2d -> BatchNorm2d -> act."""

from __future__ import annotations

import copy
import pickle

import pytest
import torch
from conftest import CUDA_DEVICES, assert_close
from helpers.conv_helpers import engine_forced
from torch import nn

import fastgen.nn as fnn
import fastgen.ops
from fastgen.nn.convert import BLOCK_RULES, LAYER_RULES, RULES


def stock_block(config: dict, negative_slope: float) -> nn.Sequential:
    conv_args = {k: v for k, v in config.items() if k not in ("momentum", "affine", "track")}
    bn_args = dict(
        momentum=config.get("momentum", 0.1),
        affine=config.get("affine", True),
        track_running_stats=config.get("track", True),
    )
    act = nn.ReLU() if negative_slope == 0 else nn.LeakyReLU(negative_slope)
    return nn.Sequential(
        nn.ConvTranspose2d(**conv_args), nn.BatchNorm2d(config["out_channels"], **bn_args), act
    )


def randomise(model: nn.Module) -> None:
    torch.manual_seed(0)
    for module in model.modules():
        if isinstance(module, nn.BatchNorm2d):
            if module.affine:
                nn.init.normal_(module.weight, 1.0, 0.2)
                nn.init.normal_(module.bias, 0.0, 0.2)
            if module.track_running_stats:
                module.running_mean.normal_(0.0, 0.2)
                module.running_var.uniform_(0.5, 1.5)


def to_block_keys(state: dict) -> dict:
    """The documented mapping: stock Sequential keys 0.* -> conv.*, 1.* -> bn.*."""
    names = {"0": "conv", "1": "bn"}
    return {names[k.split(".", 1)[0]] + "." + k.split(".", 1)[1]: v for k, v in state.items()}


def compare(stock: nn.Module, fused: nn.Module, x: torch.Tensor, scale: float = 1.0) -> None:
    x_stock, x_fused = x.clone().requires_grad_(), x.clone().requires_grad_()
    out_stock, out_fused = stock(x_stock), fused(x_fused)
    assert out_fused.shape == out_stock.shape
    assert_close(out_fused, out_stock, scale=scale, msg="output")
    grad = torch.randn(out_stock.shape, generator=torch.Generator().manual_seed(5)).to(x)
    out_stock.backward(grad)
    out_fused.backward(grad)
    assert_close(x_fused.grad, x_stock.grad, scale=scale, msg="grad input")
    fused_state = dict(fused.named_parameters())
    stock_params = dict(stock.named_parameters())
    if set(fused_state) != set(stock_params):  # block vs Sequential: map the names
        fused_state = to_stock_names(fused_state)
    for name, param in stock_params.items():
        assert_close(fused_state[name].grad, param.grad, scale=scale, msg=f"grad {name}")


def to_stock_names(named: dict) -> dict:
    names = {"conv": "0", "bn": "1"}
    return {names[k.split(".", 1)[0]] + "." + k.split(".", 1)[1]: v for k, v in named.items()}


CONFIGS = {
    "dcgan": dict(in_channels=8, out_channels=6, kernel_size=4, stride=2, padding=1, bias=False),
    "odd": dict(in_channels=6, out_channels=4, kernel_size=(3, 2), stride=(2, 1), padding=(1, 0),
                output_padding=(1, 0), groups=2, dilation=(1, 2), momentum=None),
    "no-affine": dict(in_channels=3, out_channels=5, kernel_size=3, affine=False, momentum=0.3),
}  # fmt: skip


@pytest.mark.parametrize("negative_slope", [0.0, 0.2])
@pytest.mark.parametrize("config", list(CONFIGS.values()), ids=list(CONFIGS))
@pytest.mark.parametrize("channels_last", [False, True])
def test_matches_stock_train_then_eval(config, negative_slope, channels_last):
    stock = stock_block(config, negative_slope).double()
    randomise(stock)
    fused = fnn.ConvTransposeBNAct2d(
        **{k: v for k, v in config.items() if k not in ("affine", "track")},
        affine=config.get("affine", True),
        negative_slope=negative_slope,
        dtype=torch.float64,
    )
    fused.load_state_dict(to_block_keys(stock.state_dict()), strict=True)
    x = torch.randn(3, config["in_channels"], 5, 4, dtype=torch.float64)
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    for _ in range(2):  # twice: the second step sees updated running stats
        compare(stock, fused, x)
    for key, value in stock.state_dict().items():
        assert torch.allclose(to_stock_names(fused.state_dict())[key], value), key
    stock.eval(), fused.eval()
    for module in (stock, fused):
        module.zero_grad()
    compare(stock, fused, x)  # eval: the batch norm folded into the convolution


def test_eval_is_one_fused_conv_and_follows_autocast():
    stock = stock_block(CONFIGS["dcgan"], 0.0)
    randomise(stock)
    fused = fnn.ConvTransposeBNAct2d.from_modules(stock[0], stock[1], 0.0).eval()
    stock.eval()
    x = torch.randn(2, 8, 4, 4)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out_fused, out_stock = fused(x), stock(x)
    assert out_fused.dtype == torch.bfloat16
    assert_close(out_fused, out_stock.float(), dtype=torch.bfloat16, scale=2)
    # output_size is honoured like the stock layer's.
    assert fused(x, output_size=[9, 9]).shape[-2:] == (9, 9)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16], ids=str)
def test_half_eval_fold(dtype):
    stock = stock_block(CONFIGS["dcgan"], 0.2)
    randomise(stock)
    stock.eval()
    fused = fnn.ConvTransposeBNAct2d.from_modules(
        copy.deepcopy(stock[0]).to(dtype), copy.deepcopy(stock[1]).to(dtype), 0.2
    ).eval()
    x = torch.randn(2, 8, 4, 4)
    assert_close(fused(x.to(dtype)), stock(x), dtype=dtype, scale=2)


def test_untracked_stats_use_batch_stats_in_eval():
    config = dict(CONFIGS["dcgan"], track=False)
    stock = stock_block(config, 0.0).eval()
    fused = fnn.ConvTransposeBNAct2d(**CONFIGS["dcgan"], track_running_stats=False).eval()
    fused.load_state_dict(to_block_keys(stock.state_dict()))
    compare(stock, fused, torch.randn(2, 8, 3, 3))


def test_from_modules_shares_tensors_and_state_dict_mapping():
    stock = stock_block(CONFIGS["odd"], 0.0)
    block = fnn.ConvTransposeBNAct2d.from_modules(stock[0], stock[1])
    assert block.conv.weight is stock[0].weight and block.bn.running_var is stock[1].running_var
    assert list(block.state_dict()) == list(to_block_keys(stock.state_dict()))
    fresh = stock_block(CONFIGS["odd"], 0.0)
    fresh.load_state_dict(to_stock_names(block.state_dict()), strict=True)


def test_bad_arguments():
    with pytest.raises(ValueError, match="negative_slope must be >= 0"):
        fnn.ConvTransposeBNAct2d(2, 3, 4, negative_slope=-1.0)
    with pytest.raises(ValueError, match="weight has 3 input channels but input has 2"):
        fnn.ConvTransposeBNAct2d(3, 3, 4).eval()(torch.randn(1, 2, 4, 4))


# --- convert ------------------------------------------------------------------------------


def generator() -> nn.Sequential:
    """The DCGAN tutorial generator's layer pattern, small."""
    layers, channels = [], [16, 12, 8, 4]
    for index, (c_in, c_out) in enumerate(zip(channels, channels[1:])):
        stride, padding = (1, 0) if index == 0 else (2, 1)
        layers += [nn.ConvTranspose2d(c_in, c_out, 4, stride, padding, bias=False),
                   nn.BatchNorm2d(c_out), nn.ReLU(True)]  # fmt: skip
    return nn.Sequential(*layers, nn.ConvTranspose2d(4, 3, 4, 2, 1, bias=False), nn.Tanh())


@pytest.mark.parametrize("mode", ["train", "eval"])
def test_convert_with_block_rules(mode):
    original = nn.Sequential(generator())  # nested
    randomise(original)
    original.train(mode == "train")
    converted = fnn.convert(original, rules=BLOCK_RULES)
    layers = list(converted[0])
    assert [type(m) for m in layers[:3]] == [fnn.ConvTransposeBNAct2d, nn.Identity, nn.Identity]
    assert type(layers[-2]) is fnn.ConvTranspose2d and layers[-2].activation == "tanh"
    assert list(converted.state_dict()) == list(original.state_dict())
    assert all(m.training == (mode == "train") for m in converted.modules())
    z = torch.randn(3, 16, 1, 1, generator=torch.Generator().manual_seed(1))
    for _ in range(2):
        original.zero_grad(), converted.zero_grad()
        x_original, x_converted = z.clone().requires_grad_(), z.clone().requires_grad_()
        out_original, out_converted = original(x_original), converted(x_converted)
        assert_close(out_converted, out_original, msg="output")
        out_original.square().sum().backward()
        out_converted.square().sum().backward()
        assert_close(x_converted.grad, x_original.grad, msg="grad input")
        # Parameter names differ (0.conv.weight vs 0.weight); the state_dict keys do not.
        params = converted.state_dict(keep_vars=True)
        for name, param in original.named_parameters():
            assert_close(params[name].grad, param.grad, scale=2, msg=f"grad {name}")
    buffers = converted.state_dict()
    for name, buffer in original.named_buffers():
        assert torch.allclose(buffers[name].double(), buffer.double(), atol=1e-5), name


def test_convert_block_state_dict_both_ways_inplace_copy_and_pickle():
    original = generator()
    randomise(original)
    converted = fnn.convert(original, rules=BLOCK_RULES)
    generator().load_state_dict(converted.state_dict(), strict=True)
    other = fnn.convert(generator(), rules=BLOCK_RULES)
    other.load_state_dict(original.state_dict(), strict=True)
    for key, value in original.state_dict().items():
        assert torch.equal(other.state_dict()[key], value), key
    assert torch.equal(other[0].bn.running_var, original[1].running_var)
    for clone in (copy.deepcopy(converted), pickle.loads(pickle.dumps(converted))):
        assert list(clone.state_dict()) == list(original.state_dict())
    params_before = dict(original.named_parameters())
    result = fnn.convert(original, inplace=True, rules=BLOCK_RULES)
    assert result is original
    for name, param in result.state_dict(keep_vars=True).items():
        if name in params_before:
            assert param is params_before[name], name


def test_layer_rules_keep_one_fused_layer_per_stock_layer():
    converted = fnn.convert(generator(), rules=LAYER_RULES)
    assert type(converted[0]) is fnn.ConvTranspose2d
    assert type(converted[1]) is fnn.BatchNormLeakyReLU2d
    assert BLOCK_RULES is RULES and RULES[1:] == LAYER_RULES


@pytest.mark.parametrize("name", CUDA_DEVICES)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=str)
@pytest.mark.parametrize("channels_last", [False, True])
def test_training_takes_the_statistics_from_the_convolution(name, dtype, channels_last):
    """With the CUDA convolution engine the training block is the convolution writing its
    output and batch statistics, then one normalise + activate pass; output, gradients and
    running statistics stay the stock block's, over two steps and a gradient penalty."""
    config = dict(CONFIGS["dcgan"], bias=True, momentum=None)
    stock = stock_block(config, 0.2).to(dtype)
    randomise(stock)
    fused = fnn.ConvTransposeBNAct2d.from_modules(
        copy.deepcopy(stock[0]), copy.deepcopy(stock[1]), 0.2
    )
    calls = []
    real = fastgen.ops.conv_transpose2d_with_stats
    with engine_forced(name) as device, pytest.MonkeyPatch.context() as patch:
        patch.setattr(
            fastgen.ops, "conv_transpose2d_with_stats", lambda *a: calls.append(1) or real(*a)
        )
        stock, fused = stock.to(device), fused.to(device)
        x = torch.randn(3, 8, 5, 4, dtype=dtype, device=device)
        if channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        for _ in range(2):
            compare(stock, fused, x, scale=4)
        assert len(calls) == 2
        for key, value in stock.state_dict().items():
            actual = to_stock_names(fused.state_dict())[key]
            if value.is_floating_point():
                assert_close(actual, value, msg=key)
            else:
                assert torch.equal(actual, value), key

        def penalty(model):
            inputs = x.clone().requires_grad_()
            (grad,) = torch.autograd.grad(model(inputs).square().sum(), inputs, create_graph=True)
            return torch.autograd.grad(grad.square().sum(), list(model.parameters()))

        for actual, expected in zip(penalty(fused), penalty(stock)):
            assert_close(actual, expected, scale=8)
