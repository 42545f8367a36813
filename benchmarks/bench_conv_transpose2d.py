"""fastgen.ops.conv_transpose2d vs stock act(F.conv_transpose2d(...)) on DCGAN generator layers.

The five layers of the 64x64 DCGAN generator (100 -> 8w, 1 -> 4, k4 s1 p0; then k4 s2 p1
doubling the resolution; tanh on the image layer, ReLU elsewhere), with bias, in float32
NCHW and channels_last. CUDA: batch 128, width 64, float32 and bfloat16, forward, backward
and full; CPU: float32, a batch and width that time in seconds on two cores. "eager" is
fastgen.reference (the stock code the op replaces); on CUDA "fastgen" is fastgen's own
implicit-GEMM kernel and "fastgen-cudnn" the cuDNN route (benchmarks/harness.py).
"""

from __future__ import annotations

from benchmarks.conv_cases import conv_layer_case, layer_cases
from benchmarks.harness import Case
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


def layer_case(
    batch, name, c_in, c_out, size, stride, padding, activation, fmt, device,
    dtype="fp32", modes=("forward", "full"),
) -> Case:  # fmt: skip
    return conv_layer_case(
        "conv_transpose2d", conv_transpose2d, reference.conv_transpose2d,
        label=f"{name} k4s{stride}p{padding} {activation}",
        x_shape=(batch, c_in, size, size), weight_shape=(c_in, c_out, 4, 4), bias=True,
        kwargs=dict(stride=stride, padding=padding, activation=activation),
        flops=2 * batch * size * size * c_in * c_out * 16,  # useful FLOPs, no inserted zeros
        fmt=fmt, device=device, dtype=dtype, modes=modes,
    )  # fmt: skip


def cases(device: str) -> list[Case]:
    return layer_cases(device, dcgan_generator_layers, layer_case)
