"""fastgen.ops.conv2d vs stock act(F.conv2d(...)) on DCGAN discriminator layers.

The five convolutions of the 64x64 DCGAN discriminator: 3 -> w at 64x64 with bias and
LeakyReLU(0.2) fused; then k4 s2 p1 halving the resolution without bias or activation (a
BatchNorm + LeakyReLU follows them); then the k4 s1 p0 head to one logit, with bias. NCHW
and channels_last. CUDA: batch 128, width 64, float32 and bfloat16, forward, backward and
full ("fastgen": fastgen's own kernel, "fastgen-cudnn": the cuDNN route); CPU: float32, a
batch and width that time in seconds on two cores. "eager" is fastgen.reference (the stock code the op replaces). The
k4 s2 p1 rows are the shapes a faster CPU kernel can take over through the hook in
csrc/conv2d/conv2d_cpu.cpp.
"""

from __future__ import annotations

from benchmarks.conv_cases import conv_layer_case, layer_cases
from benchmarks.harness import Case
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


def layer_case(
    batch, name, c_in, c_out, size, stride, padding, bias, activation, fmt, device,
    dtype="fp32", modes=("forward", "full"),
) -> Case:  # fmt: skip
    out_size = (size + 2 * padding - 4) // stride + 1
    return conv_layer_case(
        "conv2d", conv2d, reference.conv2d,
        label=f"{name} k4s{stride}p{padding} {activation}",
        x_shape=(batch, c_in, size, size), weight_shape=(c_out, c_in, 4, 4), bias=bias,
        kwargs=dict(stride=stride, padding=padding, activation=activation, negative_slope=0.2),
        flops=2 * batch * out_size * out_size * c_in * c_out * 16,
        fmt=fmt, device=device, dtype=dtype, modes=modes,
    )  # fmt: skip


def cases(device: str) -> list[Case]:
    return layer_cases(device, dcgan_discriminator_layers, layer_case)
