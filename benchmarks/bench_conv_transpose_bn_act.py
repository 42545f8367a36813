"""fastgen.nn.ConvTransposeBNAct2d vs the stock ConvTranspose2d -> BatchNorm2d -> ReLU block.

The four batch-normed layers of the 64x64 DCGAN generator (bias-free convolutions, as in
the tutorial), in training mode (batch statistics, running-stat updates: what a GAN step
runs) and, forward only, in eval mode (the batch norm folded into the convolution). Both
providers are called through torch.func.functional_call with the same parameter tensors,
which the harness passes as inputs, so "full" times the weight gradients too. "eager" is
the stock nn modules themselves. On CUDA: float32 and bfloat16, forward, backward and full
in training; "fastgen" with fastgen's own convolution kernel (the statistics from its
epilogue), "fastgen-cudnn" on cuDNN.
"""

from __future__ import annotations

import copy

import torch
from torch import nn
from torch.func import functional_call

import fastgen.nn as fnn
from benchmarks.bench_conv_transpose2d import dcgan_generator_layers
from benchmarks.conv_cases import DTYPES, dcgan_batch_and_width, device_variants
from benchmarks.harness import Case, engine_providers


def block_case(
    batch, name, c_in, c_out, size, stride, padding, fmt, train, device,
    dtype="fp32", modes=("forward", "full"),
) -> Case:  # fmt: skip
    stock = nn.Sequential(
        nn.ConvTranspose2d(c_in, c_out, 4, stride, padding, bias=False),
        nn.BatchNorm2d(c_out),
        nn.ReLU(inplace=True),
    ).to(device, DTYPES[dtype])
    fused = fnn.ConvTransposeBNAct2d.from_modules(*copy.deepcopy(stock)[:2])
    stock.train(train), fused.train(train)
    memory_format = torch.channels_last if fmt == "channels_last" else torch.contiguous_format
    stock_names, fused_names = (
        ["0.weight", "1.weight", "1.bias"],
        ["conv.weight", "bn.weight", "bn.bias"],
    )

    def make_inputs():
        x = torch.randn(batch, c_in, size, size, device=device, dtype=DTYPES[dtype])
        x = x.contiguous(memory_format=memory_format)
        params = [p.detach().clone().requires_grad_() for p in stock.parameters()]
        return (x.requires_grad_(), *params)

    def provider(module, names):
        return lambda x, *params: functional_call(module, dict(zip(names, params)), (x,))

    mode = "train" if train else "eval"
    return Case(
        op="conv_transpose_bn_act",
        case=f"N={batch} {name} k4s{stride}p{padding} relu {mode} {dtype} {fmt}",
        make_inputs=make_inputs,
        providers=engine_providers(
            device,
            "FASTGEN_CONV_TRANSPOSE",
            fastgen=provider(fused, fused_names),
            eager=provider(stock, stock_names),
        ),
        modes=modes if train else ("forward",),
        dtype=dtype,
    )


def cases(device: str) -> list[Case]:
    torch.manual_seed(0)
    batch, width = dcgan_batch_and_width(device)
    layers = [layer[:-1] for layer in dcgan_generator_layers(width) if layer[-1] == "relu"]
    dtypes, modes = device_variants(device)
    result = []
    for dtype in dtypes:
        for fmt in ("nchw", "channels_last"):
            for layer in layers:
                result.append(block_case(batch, *layer, fmt, True, device, dtype, modes))
            result.append(block_case(batch, *layers[-1], fmt, False, device, dtype))
    if device == "cpu":
        # Full size on CPU too: the batch-normed layers of the generator `fastgen bench
        # train` times there (32x32 images, width 64, batch 64; the first three layers of the
        # 64x64 tutorial generator at width 32 have exactly its shapes), in training.
        full_size = dcgan_generator_layers(32)[:3]
        result += [block_case(64, *layer[:-1], "nchw", True, device) for layer in full_size]
    return result
