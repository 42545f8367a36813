"""Conv2d: nn.Conv2d with bias and an optional activation fused in."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from fastgen import ops
from fastgen.nn._fused_activation import FusedActivation
from fastgen.nn._torchscript import NoTorchScript, refuse_tracing
from fastgen.ops._conv import CONV2D


class Conv2d(NoTorchScript, FusedActivation, nn.Conv2d):
    r"""A drop-in nn.Conv2d whose output goes through ``activation`` in the same op.

    For input ``[N, C_in, H, W]`` and weight ``[C_out, C_in / groups, kH, kW]``::

        out = act(conv2d(input, weight, stride, padding, dilation, groups)
                  + bias[None, :, None, None])

        H_out = (H + 2 * padding[0] - dilation[0] * (kH - 1) - 1) // stride[0] + 1
                                                              (W_out likewise)

    with ``act`` one of ``"identity"``, ``"relu"``, ``"leaky_relu"`` (``negative_slope``),
    ``"tanh"``, ``"sigmoid"``. Training and eval compute the same thing. Dtypes: float32,
    float64, float16, bfloat16. Under torch.autocast it computes in the autocast dtype, as
    the stock layer does.

    It subclasses nn.Conv2d: same constructor (plus keyword-only ``activation`` and
    ``negative_slope``), same parameters and state dict, so type-based tools (initialisers,
    weight norm, spectral norm parametrizations) treat it as one; they only touch
    ``weight``/``bias``, so not seeing the activation is harmless to them.

    Padding: ints and pairs go to the fused op as they are. ``padding="same"`` whose two
    sides differ (an even kernel), and ``padding_mode`` ``"reflect"``, ``"replicate"`` or
    ``"circular"``, pad the input with ``F.pad`` first (as nn.Conv2d does for those modes)
    and call the op with padding 0: same results, one extra copy of the input.

    Args:
        in_channels: C_in, the channels of the input.
        out_channels: C_out, the channels of the output.
        kernel_size: int or pair (kH, kW).
        stride: int or pair, >= 1.
        padding: int or pair (each side of each dim), or "same" (stride 1 only) or "valid".
        dilation: int or pair, >= 1.
        groups: int >= 1 dividing in_channels and out_channels.
        bias: learn a bias [C_out].
        padding_mode: "zeros", "reflect", "replicate" or "circular".
        device: device of weight and bias.
        dtype: dtype of weight and bias.
        activation: keyword; "identity", "relu", "leaky_relu", "tanh" or "sigmoid".
        negative_slope: keyword; slope of "leaky_relu" for negative values (a negative slope
            runs the stock ops).
    Shape:
        forward(input): input [N, C_in, H, W] or unbatched [C_in, H, W], of the weight's dtype
        (or any, under autocast), any strides. Returns [N, C_out, H_out, W_out] (unbatched:
        [C_out, H_out, W_out]), channels_last when input or weight is channels_last, NCHW
        otherwise, as fastgen.ops.conv2d.
    """

    _family = CONV2D
    _stock_op = staticmethod(F.conv2d)

    def _op_padding(self, input: torch.Tensor) -> tuple[torch.Tensor, tuple[int, int]]:
        """(input, padding for the op): symmetric zero padding goes to the op; anything else
        is applied here."""
        # nn.Conv2d's own (left, right, top, bottom) amounts, already resolved for "same".
        left, right, top, bottom = self._reversed_padding_repeated_twice
        if self.padding_mode == "zeros" and left == right and top == bottom:
            return input, (top, left)
        mode = "constant" if self.padding_mode == "zeros" else self.padding_mode
        return F.pad(input, self._reversed_padding_repeated_twice, mode=mode), (0, 0)

    def forward(self, input: torch.Tensor) -> torch.Tensor:
        refuse_tracing(self)
        input, padding = self._op_padding(input)
        return self._fused_call(ops.conv2d, input, self.stride, padding, self.dilation, self.groups)
