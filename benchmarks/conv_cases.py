"""What the conv2d and conv_transpose2d benchmarks share: dtypes and modes per device, the
DCGAN batch and width, one case builder for a convolution layer (inputs, providers through
harness.engine_providers, FLOPs per mode) and the cases of a list of layers."""

from __future__ import annotations

from collections.abc import Callable

import torch

from benchmarks.harness import Case, engine_providers

DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16}
ROUTE = {"conv2d": "FASTGEN_CONV2D", "conv_transpose2d": "FASTGEN_CONV_TRANSPOSE"}


def device_variants(device: str) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """(dtypes, modes): on CUDA fp32 and bf16, forward, backward and full (what the kernel
    issue measures); on CPU fp32, forward and full."""
    if device == "cuda":
        return ("fp32", "bf16"), ("forward", "backward", "full")
    return ("fp32",), ("forward", "full")


def dcgan_batch_and_width(device: str) -> tuple[int, int]:
    """(batch, width) of the DCGAN layers timed: the tutorial's 128 and 64 on CUDA; on CPU
    16 and 16, which time in seconds on two cores."""
    return (128, 64) if device == "cuda" else (16, 16)


def layer_cases(device: str, layers: Callable, layer_case: Callable) -> list[Case]:
    """``layer_case(batch, *layer, fmt, device, dtype, modes)`` for every layer of
    ``layers(width)``, in each dtype and layout (NCHW, channels_last) the device measures."""
    torch.manual_seed(0)
    batch, width = dcgan_batch_and_width(device)
    dtypes, modes = device_variants(device)
    return [
        layer_case(batch, *layer, fmt, device, dtype, modes)
        for dtype in dtypes
        for layer in layers(width)
        for fmt in ("nchw", "channels_last")
    ]


def conv_layer_case(
    op: str,
    fn: Callable,
    reference: Callable,
    *,
    label: str,
    x_shape: tuple[int, ...],
    weight_shape: tuple[int, ...],
    bias: bool,
    kwargs: dict,
    flops: int,
    fmt: str,
    device: str,
    dtype: str = "fp32",
    modes: tuple[str, ...] = ("forward", "full"),
) -> Case:
    """A case of `op` (fn: the fastgen op, reference: the stock code) on random inputs of
    these shapes; `flops` are the forward's useful FLOPs (backward twice that)."""
    memory_format = torch.channels_last if fmt == "channels_last" else torch.contiguous_format
    as_dtype = DTYPES[dtype]
    out_channels = weight_shape[0] if op == "conv2d" else weight_shape[1]

    def make_inputs():
        x = torch.randn(x_shape, device=device).contiguous(memory_format=memory_format)
        weight = torch.randn(weight_shape, device=device) * 0.05
        tensors = [x, weight] + ([torch.randn(out_channels, device=device)] if bias else [])
        return tuple(t.to(as_dtype).requires_grad_() for t in tensors)

    def provider(f):
        def call(x, w, b=None):
            return f(x, w, b, **kwargs)

        return call

    return Case(
        op=op,
        case=f"N={x_shape[0]} {label} {dtype} {fmt}",
        make_inputs=make_inputs,
        providers=engine_providers(
            device, ROUTE[op], fastgen=provider(fn), eager=provider(reference)
        ),
        modes=modes,
        flops={"forward": flops, "backward": 2 * flops, "full": 3 * flops},
        dtype=dtype,
    )
