"""fastgen.ops.conv_transpose2d vs stock act(F.conv_transpose2d(...)) on DCGAN generator layers.

The five layers of the 64x64 DCGAN generator (100 -> 8w, 1 -> 4, k4 s1 p0; then k4 s2 p1
doubling the resolution; tanh on the image layer, ReLU elsewhere), with bias, in float32
NCHW and channels_last. CUDA: batch 128, width 64 as in issue 5; CPU: a batch and width that
time in seconds on two cores. "eager" is fastgen.reference (the stock code the op replaces).
"""

from __future__ import annotations

import torch

from benchmarks.harness import Case, engine_providers
from fastgen.ops import conv_transpose2d
from fastgen.reference import conv_transpose2d as reference


def dcgan_generator_layers(width: int, latent: int = 100, image_channels: int = 3):
    """(name, C_in, C_out, H_in, stride, padding, activation) for each generator layer."""
    channels = [latent, 8 * width, 4 * width, 2 * width, width, image_channels]
    layers, size = [], 1
    for index, (c_in, c_out) in enumerate(zip(channels, channels[1:])):
        stride, padding = (1, 0) if index == 0 else (2, 1)
        activation = "tanh" if index == len(channels) - 2 else "relu"
        layers.append(
            (f"{c_in}->{c_out} {size}x{size}", c_in, c_out, size, stride, padding, activation)
        )
        size = 4 if index == 0 else size * 2
    return layers


def layer_case(batch, name, c_in, c_out, size, stride, padding, activation, fmt, device) -> Case:
    memory_format = torch.channels_last if fmt == "channels_last" else torch.contiguous_format

    def make_inputs():
        x = torch.randn(batch, c_in, size, size, device=device).contiguous(
            memory_format=memory_format
        )
        weight = torch.randn(c_in, c_out, 4, 4, device=device) * 0.05
        bias = torch.randn(c_out, device=device)
        return tuple(t.requires_grad_() for t in (x, weight, bias))

    def provider(fn):
        return lambda x, w, b: fn(x, w, b, stride, padding, activation=activation)

    flops = 2 * batch * size * size * c_in * c_out * 16  # useful FLOPs, no inserted zeros
    return Case(
        op="conv_transpose2d",
        case=f"N={batch} {name} k4s{stride}p{padding} {activation} fp32 {fmt}",
        make_inputs=make_inputs,
        providers=engine_providers(
            device,
            "FASTGEN_CONV_TRANSPOSE",
            fastgen=provider(conv_transpose2d),
            eager=provider(reference.conv_transpose2d),
        ),
        modes=("forward", "full"),
        flops={"forward": flops, "full": 3 * flops},
    )


def cases(device: str) -> list[Case]:
    torch.manual_seed(0)
    batch, width = (128, 64) if device == "cuda" else (16, 16)
    return [
        layer_case(batch, *layer, fmt, device)
        for layer in dcgan_generator_layers(width)
        for fmt in ("nchw", "channels_last")
    ]
