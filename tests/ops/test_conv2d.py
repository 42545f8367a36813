"""fastgen.ops.conv2d against its stock-PyTorch reference (fastgen.reference)."""

from __future__ import annotations

import pytest
import torch
from helpers import conv_helpers

from fastgen import _extension

native = pytest.mark.skipif(not _extension.LOADED, reason="the fastgen extension is not built")


def check(config, dtype, device, kind="contiguous", seed=0):
    return conv_helpers.check("conv2d", config, dtype, device, kind, seed)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.bfloat16, torch.float16])
@pytest.mark.parametrize("kind", ["contiguous", "channels_last"])
def test_gemm_shapes(dtype, kind, monkeypatch):
    """The CPU shapes done as plain GEMMs (csrc/conv/gemm/gemm_conv_cpu.h) match the reference
    in every dtype and layout: a 1x1 output (the DCGAN discriminator's head); and first layers
    from 1 or 3 channels (the few-channel loops, csrc/conv/few_channels). Forced, so the
    measured choice cannot send them to aten."""
    monkeypatch.setenv("FASTGEN_CONV_CPU", "fastgen")
    check(dict(input=(6, 40, 4, 4), weight=(3, 4, 4), bias=False), dtype, "cpu", kind)
    check(dict(input=(6, 40, 4, 4), weight=(1, 4, 4), stride=2), dtype, "cpu", kind)
    first = dict(input=(5, 3, 10, 12), weight=(16, 4, 4), stride=2, padding=1)
    check(dict(first, activation="leaky_relu", negative_slope=0.2), dtype, "cpu", kind)
    check(dict(first, input=(2, 1, 9, 7), dilation=2, padding=2), dtype, "cpu", kind)


@pytest.mark.parametrize(
    "config",
    [
        dict(input=(1, 1, 1, 1), weight=(1, 1, 1)),  # everything size 1
        dict(input=(2, 8, 4, 4), weight=(1, 4, 4), stride=1, padding=0),  # DCGAN head: one logit
        dict(input=(1, 3, 1, 1), weight=(2, 3, 3), padding=1),  # padding larger than the input
        dict(input=(2, 5, 7, 3), weight=(3, 3, 2), stride=(3, 2), padding=(2, 1),
             dilation=(1, 2), activation="sigmoid"),
        dict(input=(3, 6, 5, 5), weight=(6, 3, 3), groups=6, stride=2,
             activation="leaky_relu"),  # depthwise
        dict(input=(2, 4, 5, 5), weight=(2, 2, 2), stride=2, activation="leaky_relu",
             negative_slope=-0.5),  # not monotone: takes the reference path
        dict(input=(2, 4, 5, 5), weight=(2, 2, 2), stride=2, activation="leaky_relu",
             negative_slope=0.0),
    ],
    ids=["ones", "dcgan-head", "pad-beyond-input", "odd", "depthwise", "negative-slope",
         "zero-slope"],
)  # fmt: skip
def test_odd_shapes(config):
    for dtype in (torch.float32, torch.float64):
        check(config, dtype, "cpu")
