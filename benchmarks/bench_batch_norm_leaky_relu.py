"""BatchNorm2d + LeakyReLU: fastgen.ops.batch_norm_leaky_relu vs the stock F.batch_norm +
F.leaky_relu (fastgen.reference, the same code the tests use as oracle).

CPU: the issue-2 target shape [64, 128, 16, 16] float32, NCHW and channels_last, training
(forward, full = forward + backward) and eval (forward). CUDA: the DCGAN layer shapes at batch
128 and a large [256, 64, 64, 64], float32 and bfloat16, both layouts.

min_bytes (for achieved GB/s) counts the passes the math cannot avoid: training forward reads
x twice (statistics, then normalise) and writes out; eval forward reads x and writes out; the
backward reads x and grad_out twice (sums, then grad_x) and writes grad_x.
"""

from __future__ import annotations

import torch

from benchmarks.harness import Case
from fastgen.ops import batch_norm_leaky_relu
from fastgen.reference import batch_norm_leaky_relu as reference

NEGATIVE_SLOPE = 0.2
CPU_SHAPES = [(64, 128, 16, 16)]
CUDA_SHAPES = [
    (128, 512, 4, 4),
    (128, 256, 8, 8),
    (128, 128, 16, 16),
    (128, 64, 32, 32),
    (256, 64, 64, 64),
]
LAYOUTS = {"nchw": torch.contiguous_format, "channels_last": torch.channels_last}


def _providers(training: bool) -> dict:
    def fused(x, weight, bias, running_mean, running_var):
        return batch_norm_leaky_relu(
            x, running_mean, running_var, weight, bias, training, 0.1, 1e-5, NEGATIVE_SLOPE
        )

    def eager(x, weight, bias, running_mean, running_var):
        return reference.batch_norm_leaky_relu(
            x, running_mean, running_var, weight, bias, training, 0.1, 1e-5, NEGATIVE_SLOPE
        )

    return {"fastgen": fused, "eager": eager}


def make_case(shape, dtype, layout: str, training: bool, device: str) -> Case:
    channels = shape[1]

    def make_inputs():
        generator = torch.Generator().manual_seed(0)
        x = torch.randn(shape, generator=generator).to(device, dtype)
        x = x.to(memory_format=LAYOUTS[layout]).requires_grad_(training)
        weight = (
            (torch.rand(channels, generator=generator) + 0.5).to(device).requires_grad_(training)
        )
        bias = torch.randn(channels, generator=generator).to(device).requires_grad_(training)
        running_mean = torch.zeros(channels, device=device)
        running_var = torch.ones(channels, device=device)
        return x, weight, bias, running_mean, running_var

    size = torch.Size(shape).numel() * torch.empty((), dtype=dtype).element_size()
    dtype_name = str(dtype).removeprefix("torch.")
    mode_name = "train" if training else "eval"
    return Case(
        op="batch_norm_leaky_relu",
        case=f"{mode_name} {'x'.join(map(str, shape))} {dtype_name} {layout}",
        make_inputs=make_inputs,
        providers=_providers(training),
        modes=("forward", "full") if training else ("forward",),
        min_bytes={"forward": 3 * size, "full": 8 * size} if training else {"forward": 2 * size},
    )


def cases(device: str) -> list[Case]:
    shapes = CUDA_SHAPES if device == "cuda" else CPU_SHAPES
    dtypes = [torch.float32, torch.bfloat16] if device == "cuda" else [torch.float32]
    return [
        make_case(shape, dtype, layout, training, device)
        for shape in shapes
        for dtype in dtypes
        for layout in LAYOUTS
        for training in (True, False)
    ]
