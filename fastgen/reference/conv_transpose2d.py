"""Stock PyTorch for fastgen.ops.conv_transpose2d: the fallback, the test oracle and the
benchmark baseline (nn.ConvTranspose2d followed by an activation module, as written in a
DCGAN generator)."""

from __future__ import annotations

import torch
import torch.nn.functional as F

ACTIVATIONS = ("identity", "relu", "leaky_relu", "tanh", "sigmoid")


def activate(x: torch.Tensor, activation: str, negative_slope: float = 0.01) -> torch.Tensor:
    """act(x) for the activation names fastgen fuses."""
    if activation == "identity":
        return x
    if activation == "relu":
        return F.relu(x)
    if activation == "leaky_relu":
        return F.leaky_relu(x, negative_slope)
    if activation == "tanh":
        return torch.tanh(x)
    if activation == "sigmoid":
        return torch.sigmoid(x)
    raise ValueError(f"activation must be one of {', '.join(ACTIVATIONS)}, got {activation!r}")


def conv_transpose2d(
    x: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor | None = None,
    stride=1,
    padding=0,
    output_padding=0,
    groups: int = 1,
    dilation=1,
    activation: str = "identity",
    negative_slope: float = 0.01,
) -> torch.Tensor:
    """act(F.conv_transpose2d(x, weight, bias, ...))."""
    out = F.conv_transpose2d(x, weight, bias, stride, padding, output_padding, groups, dilation)
    return activate(out, activation, negative_slope)
