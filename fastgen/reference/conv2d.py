"""Stock PyTorch for fastgen.ops.conv2d: the fallback, the test oracle and the benchmark
baseline (nn.Conv2d followed by an activation module, as written in a DCGAN discriminator)."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from fastgen.reference.conv_transpose2d import ACTIVATIONS, activate

__all__ = ["ACTIVATIONS", "activate", "conv2d"]


def conv2d(
    x: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor | None = None,
    stride=1,
    padding=0,
    dilation=1,
    groups: int = 1,
    activation: str = "identity",
    negative_slope: float = 0.01,
) -> torch.Tensor:
    """act(F.conv2d(x, weight, bias, stride, padding, dilation, groups))."""
    out = F.conv2d(x, weight, bias, stride, padding, dilation, groups)
    return activate(out, activation, negative_slope)
