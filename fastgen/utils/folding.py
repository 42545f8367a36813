"""Batch norm folded into the transposed convolution before it: the one copy of the math.

Used by fastgen.nn.ConvTransposeBNAct2d in eval mode (recomputed on every call, so gradients
reach every parameter) and by fastgen.export (once, into stock nn.ConvTranspose2d layers).
"""

from __future__ import annotations

import torch


def fold_batch_norm_into_conv_transpose(
    weight: torch.Tensor,
    bias: torch.Tensor | None,
    *,
    running_mean: torch.Tensor,
    running_var: torch.Tensor,
    eps: float,
    bn_weight: torch.Tensor | None = None,
    bn_bias: torch.Tensor | None = None,
    groups: int = 1,
) -> tuple[torch.Tensor, torch.Tensor]:
    r"""(weight', bias') of the one transposed convolution that computes
    ``batch_norm(conv_transpose2d(x, weight, bias))`` with the running statistics::

        s[o]       = bn_weight[o] / sqrt(running_var[o] + eps)
        weight'[o] = weight[o] * s[o]                       (every tap of output channel o)
        bias'[o]   = -running_mean[o] * s[o] + bias[o] * s[o] + bn_bias[o]

    A missing `bias`, `bn_weight` or `bn_bias` is 0, 1, 0. `weight` is ConvTranspose2d's
    ``[C_in, C_out / groups, kH, kW]`` (output channel ``g * C_out/groups + j`` lives in the
    rows of group g, column j); the statistics and affine parameters are ``[C_out]``. The
    fold is computed in float32 at least (half-precision layers lose nothing extra) and
    returned in weight's dtype. Differentiable in every tensor argument.
    """
    compute = torch.promote_types(weight.dtype, torch.float32)
    scale = torch.rsqrt(running_var.to(compute) + eps)
    if bn_weight is not None:
        scale = scale * bn_weight.to(compute)
    shift = -running_mean.to(compute) * scale
    if bias is not None:
        shift = shift + bias.to(compute) * scale
    if bn_bias is not None:
        shift = shift + bn_bias.to(compute)
    c_in, c_out_per_group = weight.shape[:2]
    grouped = weight.to(compute).view(groups, c_in // groups, c_out_per_group, *weight.shape[2:])
    folded = grouped * scale.view(groups, 1, c_out_per_group, *([1] * (weight.dim() - 2)))
    return folded.view(weight.shape).to(weight.dtype), shift.to(weight.dtype)
