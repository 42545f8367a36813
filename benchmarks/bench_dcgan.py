"""End to end: the DCGAN tutorial's generator and discriminator, stock vs fastgen.nn.convert.

"eager" runs the stock model and "fastgen" the converted one; both are called through
torch.func.functional_call with the same parameter tensors, which the harness passes as
inputs so the backward modes time the weight gradients too (as a training step needs).
"""

from __future__ import annotations

import torch
from torch import nn
from torch.func import functional_call

import fastgen.nn as fnn
from benchmarks.harness import Case

NZ, NC = 100, 3


def tutorial_generator(width: int) -> nn.Sequential:
    """z [N, 100, 1, 1] -> image [N, 3, 64, 64], layer for layer as in the PyTorch tutorial."""
    layers, channels = [], [NZ, width * 8, width * 4, width * 2, width]
    for index, (c_in, c_out) in enumerate(zip(channels, channels[1:])):
        stride, padding = (1, 0) if index == 0 else (2, 1)
        layers += [nn.ConvTranspose2d(c_in, c_out, 4, stride, padding, bias=False),
                   nn.BatchNorm2d(c_out), nn.ReLU(True)]  # fmt: skip
    return nn.Sequential(*layers, nn.ConvTranspose2d(width, NC, 4, 2, 1, bias=False), nn.Tanh())


def tutorial_discriminator(width: int) -> nn.Sequential:
    """image [N, 3, 64, 64] -> probability [N, 1, 1, 1], as in the PyTorch tutorial."""
    layers = [nn.Conv2d(NC, width, 4, 2, 1, bias=False), nn.LeakyReLU(0.2, inplace=True)]
    channels = [width, width * 2, width * 4, width * 8]
    for c_in, c_out in zip(channels, channels[1:]):
        layers += [nn.Conv2d(c_in, c_out, 4, 2, 1, bias=False), nn.BatchNorm2d(c_out),
                   nn.LeakyReLU(0.2, inplace=True)]  # fmt: skip
    return nn.Sequential(*layers, nn.Conv2d(width * 8, 1, 4, 1, 0, bias=False), nn.Sigmoid())


def model_case(name: str, model: nn.Module, width: int, input_shape: tuple, device: str) -> Case:
    model = model.to(device)
    fused = fnn.convert(model)  # same state_dict keys; ConvT -> BN -> ReLU nests as one block
    names = {module: [name for name, _ in module.named_parameters()] for module in (model, fused)}
    shapes = {module: [p.shape for p in module.parameters()] for module in (model, fused)}
    assert shapes[model] == shapes[fused], "convert changed the parameters' order or shapes"

    def make_inputs():
        x = torch.randn(input_shape, device=device)
        params = [p.detach().clone().requires_grad_() for p in model.parameters()]
        return (x, *params)

    def provider(module):
        return lambda x, *params: functional_call(module, dict(zip(names[module], params)), (x,))

    return Case(
        op=f"dcgan_{name}",
        case=f"N={input_shape[0]} width={width} fp32",
        make_inputs=make_inputs,
        providers={"fastgen": provider(fused), "eager": provider(model)},
        modes=("forward", "full"),
    )


def cases(device: str) -> list[Case]:
    torch.manual_seed(0)
    batch, width = (128, 64) if device == "cuda" else (16, 16)
    return [
        model_case("generator", tutorial_generator(width), width, (batch, NZ, 1, 1), device),
        model_case(
            "discriminator", tutorial_discriminator(width), width, (batch, NC, 64, 64), device
        ),
    ]
