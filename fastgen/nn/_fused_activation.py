"""What the fused convolution layers (Conv2d, ConvTranspose2d) share beside the stock layer
they subclass: the fused activation's arguments and repr, and the autocast rule."""

from __future__ import annotations

import torch

from fastgen.reference.conv2d import ACTIVATIONS


class FusedActivation:
    """Mixin before the stock convolution class: ``activation`` and ``negative_slope``."""

    activation: str = "identity"
    negative_slope: float = 0.01

    def _set_activation(self, activation: str, negative_slope: float) -> None:
        if activation not in ACTIVATIONS:
            raise ValueError(
                f"fastgen.nn.{type(self).__name__}: activation must be one of "
                f"{', '.join(ACTIVATIONS)}, got {activation!r}"
            )
        self.activation = activation
        self.negative_slope = negative_slope

    def _autocast(self, input: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """(input, weight, bias) in the autocast dtype when autocast is on: the stock layer
        runs in it (input, weight and bias cast), so AMP training behaves and saves memory
        alike."""
        weight, bias = self.weight, self.bias
        device_type = input.device.type
        if torch.is_autocast_enabled(device_type):
            dtype = torch.get_autocast_dtype(device_type)
            input, weight = input.to(dtype), weight.to(dtype)
            bias = None if bias is None else bias.to(dtype)
        return input, weight, bias

    def extra_repr(self) -> str:
        text = super().extra_repr()
        if self.activation != "identity":
            text += f", activation={self.activation!r}"
            if self.activation == "leaky_relu":
                text += f", negative_slope={self.negative_slope}"
        return text
