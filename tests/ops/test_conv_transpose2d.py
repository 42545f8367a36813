"""fastgen.ops.conv_transpose2d against its stock-PyTorch reference (fastgen.reference)."""

from __future__ import annotations

import pytest
import torch
from helpers import conv_helpers

from fastgen import _extension

native = pytest.mark.skipif(not _extension.LOADED, reason="the fastgen extension is not built")


def check(config, dtype, device, kind="contiguous", seed=0):
    return conv_helpers.check("conv_transpose2d", config, dtype, device, kind, seed)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.bfloat16, torch.float16])
@pytest.mark.parametrize("stride", [1, 2])
@pytest.mark.parametrize("kind", ["contiguous", "channels_last"])
def test_single_pixel_input(dtype, stride, kind, monkeypatch):
    """A 1x1 input without padding (the DCGAN generator's first layer) runs as one GEMM on
    CPU in the call's dtype (forced here): same output, gradients and layout as the
    convolution."""
    monkeypatch.setenv("FASTGEN_CONV_CPU", "fastgen")
    config = dict(input=(5, 100, 1, 1), weight=(24, 4, 4), stride=stride, activation="relu")
    check(config, dtype, "cpu", kind)
    check(dict(config, bias=False, activation="identity"), dtype, "cpu", kind)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("c_out", [1, 3])
@pytest.mark.parametrize("kind", ["contiguous", "channels_last"])
def test_few_output_channels(dtype, c_out, kind):
    """A transposed convolution to 1 or 3 channels (an output layer): the few-channel loops
    or aten's, as measured (tests/ops/test_few_channels.py forces the loops)."""
    config = dict(input=(4, 24, 7, 6), weight=(c_out, 4, 4), stride=2, padding=1)
    check(dict(config, activation="tanh"), dtype, "cpu", kind)
    check(dict(config, stride=3, padding=2, dilation=2, bias=False), dtype, "cpu", kind)


@pytest.mark.parametrize(
    "config",
    [
        dict(input=(1, 1, 1, 1), weight=(1, 1, 1)),  # everything size 1
        dict(input=(1, 3, 1, 1), weight=(5, 4, 4), stride=1, padding=0),  # DCGAN first layer
        dict(input=(2, 5, 7, 3), weight=(2, 3, 5), stride=(3, 2), padding=(2, 1),
             output_padding=(2, 0), dilation=(1, 2), activation="sigmoid"),
        dict(input=(3, 6, 5, 5), weight=(1, 3, 3), groups=6, stride=2, output_padding=1,
             activation="leaky_relu"),  # depthwise
        dict(input=(2, 4, 3, 3), weight=(2, 2, 2), stride=2, activation="leaky_relu",
             negative_slope=-0.5),  # not monotone: takes the reference path
        dict(input=(2, 4, 3, 3), weight=(2, 2, 2), stride=2, activation="leaky_relu",
             negative_slope=0.0),
    ],
    ids=["ones", "dcgan-first", "odd", "depthwise", "negative-slope", "zero-slope"],
)  # fmt: skip
def test_odd_shapes(config):
    for dtype in (torch.float32, torch.float64):
        check(config, dtype, "cpu")
