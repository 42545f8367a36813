"""Reference for fastgen.ops.batch_norm_leaky_relu: stock F.batch_norm then F.leaky_relu.

This module is the fallback when no native kernel applies, the oracle the tests compare the
kernels with, and the "eager" baseline of the benchmarks. `batch_norm_leaky_relu_backward`
writes the backward out in closed form with differentiable torch ops: it is the reference of
the native backward op and what double backward (R1, WGAN-GP penalties) runs through.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def batch_norm_leaky_relu(
    x: torch.Tensor,
    running_mean: torch.Tensor | None,
    running_var: torch.Tensor | None,
    weight: torch.Tensor | None,
    bias: torch.Tensor | None,
    training: bool,
    momentum: float = 0.1,
    eps: float = 1e-5,
    negative_slope: float = 0.01,
) -> torch.Tensor:
    """The stock code the fused op replaces (updates running stats in place when training)."""
    y = F.batch_norm(x, running_mean, running_var, weight, bias, training, momentum, eps)
    return F.leaky_relu(y, negative_slope)


def _per_channel(t: torch.Tensor) -> torch.Tensor:
    return t.view(1, -1, 1, 1)


def batch_statistics(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-channel batch mean and biased variance (differentiable, two-pass)."""
    mean = x.mean(dim=(0, 2, 3))
    var = (x - _per_channel(mean)).square().mean(dim=(0, 2, 3))
    return mean, var


def _gradients(g, xhat, weight, invstd, training: bool) -> tuple[torch.Tensor, ...]:
    """(grad_x, grad_weight, grad_bias) from g = dL/dv, v = xhat * weight + bias being the
    leaky ReLU's input: the closed form batch_norm_leaky_relu_backward states."""
    dims = (0, 2, 3)
    scale = invstd if weight is None else weight * invstd
    grad_bias = g.sum(dims)
    grad_weight = (g * xhat).sum(dims)
    if training:
        grad_x = _per_channel(scale) * (
            g - _per_channel(g.mean(dims)) - xhat * _per_channel((g * xhat).mean(dims))
        )
    else:
        grad_x = g * _per_channel(scale)
    return grad_x, grad_weight, grad_bias


def batch_norm_leaky_relu_backward(
    grad_out: torch.Tensor,
    x: torch.Tensor,
    weight: torch.Tensor | None,
    bias: torch.Tensor | None,
    mean: torch.Tensor,
    var: torch.Tensor,
    training: bool,
    eps: float,
    negative_slope: float,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(grad_x, grad_weight, grad_bias) of leaky_relu(batch_norm(x)) in closed form.

    With v = (x - mean) * invstd * weight + bias and g = grad_out * (v > 0 ? 1 : slope):
    grad_bias = sum g, grad_weight = sum g * xhat, and grad_x = weight * invstd *
    (g - mean(g) - xhat * mean(g * xhat)) in training (mean/var are batch statistics), or
    weight * invstd * g in eval. Sums and means are over (N, H, W) per channel.
    """
    invstd = torch.rsqrt(var + eps)
    xhat = (x - _per_channel(mean)) * _per_channel(invstd)
    v = xhat if weight is None else xhat * _per_channel(weight)
    if bias is not None:
        v = v + _per_channel(bias)
    g = torch.where(v > 0, grad_out, grad_out * negative_slope)
    return _gradients(g, xhat, weight, invstd, training)


def batch_norm_leaky_relu_backward_from_output(
    grad_out: torch.Tensor,
    out: torch.Tensor,
    weight: torch.Tensor | None,
    bias: torch.Tensor | None,
    var: torch.Tensor,
    training: bool,
    eps: float,
    negative_slope: float,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The same gradients as batch_norm_leaky_relu_backward, from the output (memory-saving
    mode, as in In-Place Activated BatchNorm): with negative_slope > 0, out > 0 exactly where
    v > 0, so v = out or out / negative_slope and xhat = (v - bias) / weight. ``weight`` must
    have no zeros (the op clamps it)."""
    invstd = torch.rsqrt(var + eps)
    positive = out > 0
    v = torch.where(positive, out, out / negative_slope)
    if bias is not None:
        v = v - _per_channel(bias)
    xhat = v if weight is None else v / _per_channel(weight)
    g = torch.where(positive, grad_out, grad_out * negative_slope)
    return _gradients(g, xhat, weight, invstd, training)
