"""What the fused convolution layers (Conv2d, ConvTranspose2d) share beside the stock layer
they subclass: the constructor (the stock one plus the fused activation's arguments), the
activation's repr, the autocast rule, and the call of their op."""

from __future__ import annotations

import inspect
from collections.abc import Callable

import torch

from fastgen.ops._conv import Family, stock_layer_wins
from fastgen.reference.conv2d import ACTIVATIONS


def autocast_inputs(
    input: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None
) -> tuple[torch.Tensor, ...]:
    """(input, weight, bias) in the autocast dtype when autocast is on for input's device,
    as they are otherwise: the stock layers run in it (input, weight and bias cast), so AMP
    training behaves and saves memory alike."""
    device_type = input.device.type
    if torch.is_autocast_enabled(device_type):
        dtype = torch.get_autocast_dtype(device_type)
        input, weight = input.to(dtype), weight.to(dtype)
        bias = None if bias is None else bias.to(dtype)
    return input, weight, bias


class FusedActivation:
    """Mixin before the stock convolution class: ``activation`` and ``negative_slope``.

    The constructor takes the stock layer's arguments as they are (positional or keyword,
    passed on unchanged) and the keyword-only ``activation`` and ``negative_slope``; its
    signature, as ``inspect.signature`` and ``help`` show it, is built from the stock
    layer's by ``__init_subclass__``, so the two cannot drift apart when torch changes its
    layer."""

    activation: str = "identity"
    negative_slope: float = 0.01

    def __init__(
        self, *args, activation: str = "identity", negative_slope: float = 0.01, **kwargs
    ) -> None:
        super().__init__(*args, **kwargs)
        self._set_activation(activation, negative_slope)

    def __init_subclass__(cls, **kwargs) -> None:
        super().__init_subclass__(**kwargs)
        if "__init__" in cls.__dict__:  # a subclass with a constructor of its own keeps it
            return
        # The stock layer: the first nn.Module class above the fused ones (a name test would
        # also match the subclasses torch.nn.utils.parametrize makes of a fused layer).
        stock = next(
            base
            for base in cls.__mro__
            if issubclass(base, torch.nn.Module) and not issubclass(base, FusedActivation)
        )
        fused = inspect.signature(FusedActivation.__init__).parameters
        parameters = [*inspect.signature(stock.__init__).parameters.values()]
        parameters += [fused["activation"], fused["negative_slope"]]

        def __init__(self, *args, **kwargs) -> None:  # the class's own, to carry its signature
            FusedActivation.__init__(self, *args, **kwargs)

        __init__.__signature__ = inspect.Signature(parameters, return_annotation=None)
        __init__.__qualname__ = f"{cls.__qualname__}.__init__"
        cls.__init__ = __init__

    def _set_activation(self, activation: str, negative_slope: float) -> None:
        if activation not in ACTIVATIONS:
            raise ValueError(
                f"fastgen.nn.{type(self).__name__}: activation must be one of "
                f"{', '.join(ACTIVATIONS)}, got {activation!r}"
            )
        self.activation = activation
        self.negative_slope = negative_slope

    # Set by each layer: its op's Family (fastgen/ops/_conv.py) and the stock functional op
    # that takes the same arguments (F.conv2d for fastgen.ops.conv2d).
    _family: Family
    _stock_op: Callable

    def _fused_call(self, op: Callable, input: torch.Tensor, *geometry) -> torch.Tensor:
        """``op(input, weight, bias, *geometry, activation, negative_slope)`` with this
        layer's activation and the autocast rule; ``geometry`` is the op's arguments between
        bias and activation, in the op's order (fastgen.ops.conv2d: stride, padding,
        dilation, groups). A call with nothing to fuse whose convolution aten won in every
        pass is the stock op itself, called on the layer's own tensors (stock_layer_wins)."""
        if self.activation == "identity" and stock_layer_wins(
            self._family, input, self.weight, self.bias, geometry
        ):
            return self._stock_op(input, self.weight, self.bias, *geometry)
        input, weight, bias = autocast_inputs(input, self.weight, self.bias)
        return op(input, weight, bias, *geometry, self.activation, self.negative_slope)

    def extra_repr(self) -> str:
        text = super().extra_repr()
        if self.activation != "identity":
            text += f", activation={self.activation!r}"
            if self.activation == "leaky_relu":
                text += f", negative_slope={self.negative_slope}"
        return text
