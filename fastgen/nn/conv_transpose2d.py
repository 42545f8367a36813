"""ConvTranspose2d: nn.ConvTranspose2d with bias and an optional activation fused in."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from fastgen import ops
from fastgen.nn._fused_activation import FusedActivation
from fastgen.nn._torchscript import NoTorchScript, refuse_tracing
from fastgen.ops._conv import CONV_TRANSPOSE2D


class ConvTranspose2d(NoTorchScript, FusedActivation, nn.ConvTranspose2d):
    r"""A drop-in nn.ConvTranspose2d whose output goes through ``activation`` in the same op.

    For input ``[N, C_in, H, W]`` and weight ``[C_in, C_out / groups, kH, kW]``::

        out = act(conv_transpose2d(input, weight, stride, padding, output_padding,
                                   groups, dilation) + bias[None, :, None, None])

        H_out = (H - 1) * stride[0] - 2 * padding[0] + dilation[0] * (kH - 1)
                + output_padding[0] + 1                       (W_out likewise)

    with ``act`` one of ``"identity"``, ``"relu"``, ``"leaky_relu"`` (``negative_slope``),
    ``"tanh"``, ``"sigmoid"``. Training and eval compute the same thing. Dtypes: float32,
    float64, float16, bfloat16. Under torch.autocast it computes in the autocast dtype, as
    the stock layer does.

    It subclasses nn.ConvTranspose2d: same constructor (plus keyword-only ``activation``
    and ``negative_slope``), same parameters and state dict, same ``output_size`` argument
    to ``forward``; ``padding_mode`` must be ``"zeros"`` (as for the stock layer). Because
    it is an nn.ConvTranspose2d, type-based tools (initialisers, weight norm, spectral
    norm) treat it as one; such tools cannot see the activation, which is harmless for
    them since they only touch ``weight``/``bias``.

    Args:
        in_channels: C_in, the channels of the input.
        out_channels: C_out, the channels of the output.
        kernel_size: int or pair (kH, kW).
        stride: int or pair, >= 1.
        padding: int or pair, >= 0 (taken off each side of the output).
        output_padding: int or pair, smaller than stride or dilation (added to one side of
            the output); forward's output_size can choose it instead.
        groups: int >= 1 dividing in_channels and out_channels.
        bias: learn a bias [C_out].
        dilation: int or pair, >= 1.
        padding_mode: "zeros" only (others raise a ValueError here, as in the stock layer).
        device: device of weight and bias.
        dtype: dtype of weight and bias.
        activation: keyword; "identity", "relu", "leaky_relu", "tanh" or "sigmoid".
        negative_slope: keyword; slope of "leaky_relu" for negative values (a negative slope
            runs the stock ops).
    Shape:
        forward(input, output_size=None): input [N, C_in, H, W] or unbatched [C_in, H, W], of
        the weight's dtype (or any, under autocast), any strides; output_size, optional, the
        (H_out, W_out) wanted (as nn.ConvTranspose2d takes it). Returns
        [N, C_out, H_out, W_out] (unbatched: [C_out, H_out, W_out]), channels_last when input
        or weight is channels_last, NCHW otherwise, as fastgen.ops.conv_transpose2d.
    """

    _family = CONV_TRANSPOSE2D
    _stock_op = staticmethod(F.conv_transpose2d)

    def _op_geometry(self, input: torch.Tensor, output_size: list[int] | None) -> tuple:
        """(stride, padding, output_padding, groups, dilation) for fastgen.ops.conv_transpose2d
        on `input`, as the stock forward takes them; ValueError unless padding_mode is
        "zeros"."""
        if self.padding_mode != "zeros":
            raise ValueError("Only `zeros` padding mode is supported for ConvTranspose2d")
        # The stock helper turns a requested output_size into the output_padding that gives it
        # (and validates it), so both layers accept exactly the same output sizes.
        output_padding = self._output_padding(
            input, output_size, self.stride, self.padding, self.kernel_size, 2, self.dilation
        )
        return self.stride, self.padding, output_padding, self.groups, self.dilation

    def forward(self, input: torch.Tensor, output_size: list[int] | None = None) -> torch.Tensor:
        refuse_tracing(self)
        return self._fused_call(ops.conv_transpose2d, input, *self._op_geometry(input, output_size))
