"""fastgen.nn.convert on the PyTorch DCGAN tutorial models and on nested/odd models."""

from __future__ import annotations

import copy

import pytest
import torch
from conftest import assert_close
from torch import nn

import fastgen.nn as fnn
from fastgen.nn.convert import LAYER_RULES, RULES

NZ, NGF, NDF, NC = 100, 8, 8, 3  # the tutorial's nz; small widths keep the test fast


class Generator(nn.Module):
    """The DCGAN tutorial's generator: z [N, nz, 1, 1] -> image [N, nc, 64, 64]."""

    def __init__(self) -> None:
        super().__init__()
        self.main = nn.Sequential(
            nn.ConvTranspose2d(NZ, NGF * 8, 4, 1, 0, bias=False),
            nn.BatchNorm2d(NGF * 8),
            nn.ReLU(True),
            nn.ConvTranspose2d(NGF * 8, NGF * 4, 4, 2, 1, bias=False),
            nn.BatchNorm2d(NGF * 4),
            nn.ReLU(True),
            nn.ConvTranspose2d(NGF * 4, NGF * 2, 4, 2, 1, bias=False),
            nn.BatchNorm2d(NGF * 2),
            nn.ReLU(True),
            nn.ConvTranspose2d(NGF * 2, NGF, 4, 2, 1, bias=False),
            nn.BatchNorm2d(NGF),
            nn.ReLU(True),
            nn.ConvTranspose2d(NGF, NC, 4, 2, 1, bias=False),
            nn.Tanh(),
        )

    def forward(self, z):
        return self.main(z)


class Discriminator(nn.Module):
    """The DCGAN tutorial's discriminator: image [N, nc, 64, 64] -> probability [N, 1, 1, 1]."""

    def __init__(self) -> None:
        super().__init__()
        self.main = nn.Sequential(
            nn.Conv2d(NC, NDF, 4, 2, 1, bias=False),
            nn.LeakyReLU(0.2, inplace=True),
            nn.Conv2d(NDF, NDF * 2, 4, 2, 1, bias=False),
            nn.BatchNorm2d(NDF * 2),
            nn.LeakyReLU(0.2, inplace=True),
            nn.Conv2d(NDF * 2, NDF * 4, 4, 2, 1, bias=False),
            nn.BatchNorm2d(NDF * 4),
            nn.LeakyReLU(0.2, inplace=True),
            nn.Conv2d(NDF * 4, NDF * 8, 4, 2, 1, bias=False),
            nn.BatchNorm2d(NDF * 8),
            nn.LeakyReLU(0.2, inplace=True),
            nn.Conv2d(NDF * 8, 1, 4, 1, 0, bias=False),
            nn.Sigmoid(),
        )

    def forward(self, image):
        return self.main(image)


def init_weights(model: nn.Module) -> None:
    """The tutorial's init, plus random running statistics so eval mode is exercised."""
    torch.manual_seed(0)
    for module in model.modules():
        if isinstance(module, (nn.Conv2d, nn.ConvTranspose2d)):
            nn.init.normal_(module.weight, 0.0, 0.02)
        elif isinstance(module, nn.BatchNorm2d):
            nn.init.normal_(module.weight, 1.0, 0.02)
            nn.init.normal_(module.bias, 0.0, 0.1)
            module.running_mean.normal_(0.0, 0.1)
            module.running_var.uniform_(0.5, 1.5)


def compare(original: nn.Module, converted: nn.Module, x: torch.Tensor, scale: float = 1.0) -> None:
    """Outputs, input gradients, parameter gradients and buffers agree."""
    x_original, x_converted = x.clone().requires_grad_(), x.clone().requires_grad_()
    out_original, out_converted = original(x_original), converted(x_converted)
    assert_close(out_converted, out_original, scale=scale, msg="output")
    grad = torch.randn(out_original.shape, generator=torch.Generator().manual_seed(5))
    out_original.backward(grad.to(x.device))
    out_converted.backward(grad.to(x.device))
    assert_close(x_converted.grad, x_original.grad, scale=scale, msg="grad input")
    converted_params = dict(converted.named_parameters())
    for name, param in original.named_parameters():
        assert_close(converted_params[name].grad, param.grad, scale=scale, msg=f"grad {name}")
    converted_buffers = dict(converted.named_buffers())
    for name, buffer in original.named_buffers():
        assert torch.allclose(converted_buffers[name].double(), buffer.double(), atol=1e-5), name


@pytest.mark.parametrize("mode", ["train", "eval"])
def test_dcgan_generator(device, mode):
    original = Generator().to(device)
    init_weights(original)
    original.train(mode == "train")
    # by default ConvT -> BN -> ReLU becomes one block (compared with the stock layers in
    # test_conv_transpose_bn_act.py); layer by layer here
    blocks = list(fnn.convert(original).main)
    assert [type(m) for m in blocks[:3]] == [fnn.ConvTransposeBNAct2d, nn.Identity, nn.Identity]
    converted = fnn.convert(original, rules=LAYER_RULES)
    layers = list(converted.main)
    assert [type(m) for m in layers[:3]] == [
        fnn.ConvTranspose2d,
        fnn.BatchNormLeakyReLU2d,
        nn.Identity,
    ]
    assert layers[1].negative_slope == 0.0
    assert isinstance(layers[-2], fnn.ConvTranspose2d) and layers[-2].activation == "tanh"
    assert isinstance(layers[-1], nn.Identity)
    assert list(converted.state_dict()) == list(original.state_dict())
    assert all(m.training == (mode == "train") for m in converted.modules())
    z = torch.randn(4, NZ, 1, 1, generator=torch.Generator().manual_seed(1)).to(device)
    for _ in range(2):  # twice: the second step sees updated running stats
        # The 64->32 layer runs Winograd on CPU (csrc/conv/winograd): its float32 rounding differs
        # from oneDNN's by a few 1e-6 of the largest value, which batch norm over 4 samples
        # passes on to weight gradients as large as ~100; hence 4x the table's tolerance.
        compare(original, converted, z, scale=4)


@pytest.mark.parametrize("mode", ["train", "eval"])
def test_dcgan_discriminator(device, mode):
    original = Discriminator().to(device)
    init_weights(original)
    original.train(mode == "train")
    converted = fnn.convert(original)
    layers = list(converted.main)
    assert type(layers[0]) is fnn.Conv2d and type(layers[1]) is nn.Identity
    assert layers[0].activation == "leaky_relu" and layers[0].negative_slope == 0.2
    # Conv2d -> BatchNorm2d -> LeakyReLU: a plain fused Conv2d, then the BN rule.
    assert type(layers[2]) is fnn.Conv2d and layers[2].activation == "identity"
    assert type(layers[3]) is fnn.BatchNormLeakyReLU2d and layers[3].negative_slope == 0.2
    assert type(layers[4]) is nn.Identity
    assert type(layers[-2]) is fnn.Conv2d and layers[-2].activation == "sigmoid"
    assert type(layers[-1]) is nn.Identity
    assert list(converted.state_dict()) == list(original.state_dict())
    image = torch.randn(4, NC, 64, 64, generator=torch.Generator().manual_seed(2)).to(device)
    compare(original, converted, image)


def test_conv2d_padding_variants(device):
    """Conv2d with string padding and non-zero padding modes converts and still matches."""
    original = nn.Sequential(
        nn.Conv2d(3, 4, (4, 3), padding="same", padding_mode="reflect"),
        nn.Tanh(),
        nn.Conv2d(4, 4, 3, stride=2, padding=1, padding_mode="circular", groups=2),
        nn.ReLU(inplace=True),
        nn.Conv2d(4, 2, 3, padding="valid", dilation=2),
    ).to(device)
    init_weights(original)
    converted = fnn.convert(original)
    assert [type(m) for m in converted] == [fnn.Conv2d, nn.Identity, fnn.Conv2d, nn.Identity,
                                            fnn.Conv2d]  # fmt: skip
    assert [converted[i].activation for i in (0, 2, 4)] == ["tanh", "relu", "identity"]
    assert converted[0].padding_mode == "reflect" and converted[0].padding == "same"
    x = torch.randn(2, 3, 12, 11, generator=torch.Generator().manual_seed(4)).to(device)
    compare(original, converted, x)


def test_state_dict_loads_both_ways():
    original = Generator()
    init_weights(original)
    converted = fnn.convert(original)
    fresh = Generator()
    fresh.load_state_dict(converted.state_dict(), strict=True)
    fnn.convert(Generator()).load_state_dict(original.state_dict(), strict=True)


def test_parameters_carried_over_and_inplace():
    original = Generator().double()
    init_weights(original)
    original.main[0].weight.requires_grad_(False)
    snapshot = copy.deepcopy(original.state_dict())
    # layer rules: named_parameters() keep their names (the default block rule keeps the
    # state_dict keys, checked in test_conv_transpose_bn_act.py, but nests the parameters)
    copied = fnn.convert(original, rules=LAYER_RULES)
    # inplace=False: the original is untouched and shares nothing with the result.
    assert [type(m) for m in original.main] == [type(m) for m in Generator().main]
    for key, value in original.state_dict().items():
        assert torch.equal(value, snapshot[key])
    assert copied.main[0].weight is not original.main[0].weight
    assert copied.main[0].weight.dtype == torch.float64
    assert not copied.main[0].weight.requires_grad
    # inplace=True: same object, and the fused layers hold the very same tensors, so an
    # optimizer built before conversion keeps training them.
    params_before = {name: p for name, p in original.named_parameters()}
    buffers_before = {name: b for name, b in original.named_buffers()}
    result = fnn.convert(original, inplace=True, rules=LAYER_RULES)
    assert result is original
    for name, param in result.named_parameters():
        assert param is params_before[name], name
    for name, buffer in result.named_buffers():
        assert buffer is buffers_before[name], name


class Block(nn.Module):
    """Not a Sequential: its children's order says nothing about the data flow."""

    def __init__(self) -> None:
        super().__init__()
        self.up = nn.ConvTranspose2d(4, 4, 3, padding=1)
        self.norm = nn.BatchNorm2d(4)
        self.act = nn.ReLU()
        self.layers = nn.ModuleList([nn.Sequential(nn.BatchNorm2d(4), nn.LeakyReLU(0.1))])
        self.heads = nn.ModuleDict(
            {"out": nn.Sequential(nn.ConvTranspose2d(4, 2, 1), nn.Sigmoid())}
        )

    def forward(self, x):
        x = self.act(self.norm(self.up(x))) + x  # the residual is why norm/act are not fused
        for layer in self.layers:
            x = layer(x)
        return self.heads["out"](x)


def test_nested_modules(device):
    original = nn.Sequential(
        Block(), nn.Sequential(nn.Sequential(nn.BatchNorm2d(2), nn.ReLU(inplace=True)))
    )
    original.to(device)
    init_weights(original)
    converted = fnn.convert(original)
    block = converted[0]
    assert type(block.up) is fnn.ConvTranspose2d and block.up.activation == "identity"
    assert type(block.norm) is nn.BatchNorm2d and type(block.act) is nn.ReLU
    assert (
        type(block.layers[0][0]) is fnn.BatchNormLeakyReLU2d
        and block.layers[0][0].negative_slope == 0.1
    )
    assert block.heads["out"][0].activation == "sigmoid"
    assert type(converted[1][0][0]) is fnn.BatchNormLeakyReLU2d
    x = torch.randn(3, 4, 5, 5, generator=torch.Generator().manual_seed(3)).to(device)
    compare(original, converted, x)
    original.eval()
    converted.eval()
    compare(original, converted, x)


class MyBatchNorm(nn.BatchNorm2d):
    pass


class MyConv2d(nn.Conv2d):
    pass


def test_leaves_everything_else_untouched():
    hooked = nn.BatchNorm2d(3)
    hooked.register_forward_hook(lambda *args: None)
    spectral = nn.utils.parametrizations.spectral_norm(nn.ConvTranspose2d(3, 3, 1))
    original = nn.Sequential(
        MyBatchNorm(3),
        nn.ReLU(),  # a subclass: may do something else
        hooked,
        nn.ReLU(),  # the hook would no longer run
        nn.BatchNorm2d(3),
        nn.LeakyReLU(-0.5),  # a negative slope
        nn.BatchNorm2d(3),
        nn.GELU(),  # not an activation we fuse
        nn.BatchNorm1d(3),
        nn.ReLU(),  # not 2d
        spectral,
        nn.ReLU(),  # parametrized weight
        MyConv2d(3, 3, 1),
        nn.ReLU(),  # a subclass
        nn.utils.parametrizations.spectral_norm(nn.Conv2d(3, 3, 1)),
        nn.LeakyReLU(0.2),  # parametrized weight
        nn.Conv2d(3, 3, 1),
        nn.LeakyReLU(-0.2),  # a negative slope
        nn.ConvTranspose2d(3, 3, 1, padding_mode="zeros"),
        nn.Conv2d(3, 3, 1),
        nn.ReLU(),
    )
    converted = fnn.convert(original)
    before = [type(m) for m in original]
    after = [type(m) for m in converted]
    assert after[:16] == before[:16]
    assert after[16:] == [fnn.Conv2d, nn.LeakyReLU, fnn.ConvTranspose2d, fnn.Conv2d, nn.Identity]
    assert converted[16].activation == "identity" and converted[19].activation == "relu"


def test_root_layer_and_idempotence():
    root = fnn.convert(nn.ConvTranspose2d(2, 3, 4))
    assert type(root) is fnn.ConvTranspose2d
    assert type(fnn.convert(nn.Conv2d(2, 3, 4))) is fnn.Conv2d
    for model in (Generator(), Discriminator()):
        once = fnn.convert(model)
        twice = fnn.convert(once)
        assert [type(m) for m in twice.main] == [type(m) for m in once.main]
    # A converted Conv2d without an activation still takes the one that follows it.
    refit = fnn.convert(nn.Sequential(fnn.Conv2d(2, 3, 1), nn.Sigmoid()))
    assert refit[0].activation == "sigmoid" and type(refit[1]) is nn.Identity


def test_custom_rules():
    # The rule list is the extension point: an empty list converts nothing.
    model = Generator()
    assert [type(m) for m in fnn.convert(model, rules=[]).main] == [type(m) for m in model.main]
    only_conv = [r for r in RULES if r.length == 1]
    converted = fnn.convert(model, rules=only_conv)
    assert (
        type(converted.main[1]) is nn.BatchNorm2d and type(converted.main[0]) is fnn.ConvTranspose2d
    )
