"""fastgen.ops.conv2d vs stock act(F.conv2d(...)) on DCGAN discriminator layers.

The five convolutions of the 64x64 DCGAN discriminator: 3 -> w at 64x64 with bias and
LeakyReLU(0.2) fused; then k4 s2 p1 halving the resolution without bias or activation (a
BatchNorm + LeakyReLU follows them); then the k4 s1 p0 head to one logit, with bias. Float32,
NCHW and channels_last. CUDA: batch 128, width 64; CPU: a batch and width that time in
seconds on two cores. "eager" is fastgen.reference (the stock code the op replaces). The
k4 s2 p1 rows are the shapes a faster CPU kernel can take over through the hook in
csrc/conv2d/conv2d_cpu.cpp.
"""

from __future__ import annotations

import torch

from benchmarks.harness import Case, engine_providers
from fastgen.ops import conv2d
from fastgen.reference import conv2d as reference


def dcgan_discriminator_layers(width: int, image_channels: int = 3, resolution: int = 64):
    """(name, C_in, C_out, H_in, stride, padding, bias, activation) for each layer."""
    channels = [image_channels, width, 2 * width, 4 * width, 8 * width]
    layers, size = [], resolution
    for index, (c_in, c_out) in enumerate(zip(channels, channels[1:])):
        first = index == 0
        activation = "leaky_relu" if first else "identity"
        layers.append(
            (f"{c_in}->{c_out} {size}x{size}", c_in, c_out, size, 2, 1, first, activation)
        )
        size //= 2
    layers.append(
        (f"{channels[-1]}->1 {size}x{size}", channels[-1], 1, size, 1, 0, True, "identity")
    )
    return layers


def layer_case(batch, name, c_in, c_out, size, stride, padding, bias, activation, fmt, device):
    memory_format = torch.channels_last if fmt == "channels_last" else torch.contiguous_format

    def make_inputs():
        x = torch.randn(batch, c_in, size, size, device=device).contiguous(
            memory_format=memory_format
        )
        weight = torch.randn(c_out, c_in, 4, 4, device=device) * 0.05
        tensors = [x, weight] + ([torch.randn(c_out, device=device)] if bias else [])
        return tuple(t.requires_grad_() for t in tensors)

    def provider(fn):
        def call(x, w, b=None):
            return fn(x, w, b, stride, padding, activation=activation, negative_slope=0.2)

        return call

    out_size = (size + 2 * padding - 4) // stride + 1
    flops = 2 * batch * out_size * out_size * c_in * c_out * 16
    return Case(
        op="conv2d",
        case=f"N={batch} {name} k4s{stride}p{padding} {activation} fp32 {fmt}",
        make_inputs=make_inputs,
        providers=engine_providers(
            device, "FASTGEN_CONV2D", fastgen=provider(conv2d), eager=provider(reference.conv2d)
        ),
        modes=("forward", "full"),
        flops={"forward": flops, "full": 3 * flops},
    )


def cases(device: str) -> list[Case]:
    torch.manual_seed(0)
    batch, width = (128, 64) if device == "cuda" else (16, 16)
    return [
        layer_case(batch, *layer, fmt, device)
        for layer in dcgan_discriminator_layers(width)
        for fmt in ("nchw", "channels_last")
    ]
