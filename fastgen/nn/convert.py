"""convert(): swap stock layers in a model for fastgen's fused ones.

The rewrite is a short, ordered list of rules (``RULES``). A rule looks at a window of
``length`` adjacent children of an ``nn.Sequential`` (adjacent children of a Sequential are
the only place where "A is followed by B" is known from the structure alone) and returns
their replacements, or None if it does not apply. Rules of length 1 also apply to the
children of any other module. The first rule that matches wins, so longer, more specific
rules come first; a new fusion is one more entry in ``RULES``.

A fused layer takes the place of the first layer of the window and ``nn.Identity`` the
places of the others, so every child keeps its name and the model's ``state_dict`` keys
stay exactly the same (the fused layers have their stock layers' parameter and buffer
names).

Parameters and buffers are carried over as the SAME tensor objects (no copies): with
``inplace=True`` an optimizer built on the original model keeps working; with
``inplace=False`` (default) the model is deep-copied first and the copy is converted, so
the original is untouched. Device, dtype, requires_grad and train/eval mode are preserved.

Left untouched: anything no rule matches, subclasses of the stock layers (the exact type
must match), and layers carrying forward/backward hooks or parametrizations (e.g. weight
or spectral norm), since a fused layer would not run them. Activations with a negative
slope are not fused (the fused backward reads the activation's derivative from its
output, which needs a monotone, sign-preserving activation).
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from torch import nn

from fastgen.nn.batch_norm_leaky_relu import BatchNormLeakyReLU2d, sharing_batch_norm
from fastgen.nn.conv2d import Conv2d
from fastgen.nn.conv_transpose2d import ConvTranspose2d
from fastgen.nn.conv_transpose_bn_act import ConvTransposeBNAct2d


@dataclass(frozen=True)
class Rule:
    """Replaces `length` adjacent modules by `replace(modules)` (None: no match)."""

    name: str
    length: int
    replace: Callable[[Sequence[nn.Module]], list[nn.Module] | None]


def _plain(module: nn.Module, stock_type: type) -> bool:
    """Exactly `stock_type` (not a subclass), no hooks, no parametrizations."""
    return (
        type(module) is stock_type
        and not module._forward_hooks
        and not module._forward_pre_hooks
        and not module._backward_hooks
        and not getattr(module, "_backward_pre_hooks", None)
    )


def leaky_slope(module: nn.Module) -> float | None:
    """The negative slope if `module` is a plain ReLU (0.0) or LeakyReLU (>= 0), else None."""
    if _plain(module, nn.ReLU):
        return 0.0
    if _plain(module, nn.LeakyReLU) and module.negative_slope >= 0:
        return float(module.negative_slope)
    return None


def conv_activation(module: nn.Module) -> tuple[str, float] | None:
    """(activation name, negative_slope) for the activations Conv2d / ConvTranspose2d fuse."""
    slope = leaky_slope(module)
    if slope is not None:
        return ("relu", 0.0) if slope == 0.0 and type(module) is nn.ReLU else ("leaky_relu", slope)
    if _plain(module, nn.Tanh):
        return ("tanh", 0.0)
    if _plain(module, nn.Sigmoid):
        return ("sigmoid", 0.0)
    return None


def _identity_like(module: nn.Module) -> nn.Identity:
    return nn.Identity().train(module.training)


def _fused_conv(cls, conv, activation: str, negative_slope: float, **extra):
    """A fastgen `cls` sharing `conv`'s weight and bias tensors (built on the meta device so
    nothing is allocated; the real tensors are put in)."""
    fused = cls(
        conv.in_channels, conv.out_channels, conv.kernel_size, stride=conv.stride,
        padding=conv.padding, dilation=conv.dilation, groups=conv.groups,
        bias=conv.bias is not None, padding_mode=conv.padding_mode, device="meta",
        dtype=conv.weight.dtype, activation=activation, negative_slope=negative_slope, **extra,
    )  # fmt: skip
    fused.weight, fused.bias = conv.weight, conv.bias
    return fused.train(conv.training)


def fused_conv_transpose2d(
    conv: nn.ConvTranspose2d, activation: str = "identity", negative_slope: float = 0.01
) -> ConvTranspose2d:
    """A fastgen ConvTranspose2d sharing `conv`'s weight and bias tensors."""
    return _fused_conv(
        ConvTranspose2d, conv, activation, negative_slope, output_padding=conv.output_padding
    )


def fused_conv2d(
    conv: nn.Conv2d, activation: str = "identity", negative_slope: float = 0.01
) -> Conv2d:
    """A fastgen Conv2d sharing `conv`'s weight and bias tensors (any padding and
    padding_mode: the fused layer handles them all)."""
    return _fused_conv(Conv2d, conv, activation, negative_slope)


def fused_batch_norm(bn: nn.BatchNorm2d, negative_slope: float) -> BatchNormLeakyReLU2d:
    """A BatchNormLeakyReLU2d sharing `bn`'s parameters and buffers."""
    return sharing_batch_norm(BatchNormLeakyReLU2d, bn, negative_slope, bias=bn.bias is not None)


def _stock_conv_transpose2d(conv: nn.Module) -> bool:
    # The fused layer, like the stock one in forward, has zero padding only.
    return _plain(conv, nn.ConvTranspose2d) and conv.padding_mode == "zeros"


def _stock_conv2d(conv: nn.Module) -> bool:
    return _plain(conv, nn.Conv2d)  # any padding and padding_mode: the fused layer has them all


def _batch_norm_act(modules):
    bn, act = modules
    slope = leaky_slope(act)
    if not _plain(bn, nn.BatchNorm2d) or slope is None:
        return None
    return [fused_batch_norm(bn, slope), _identity_like(act)]


def _conv_act_rule(name: str, stock: Callable, fused_type: type, to_fused: Callable) -> Rule:
    """Conv (`stock(conv)` true, or an already converted `fused_type` with no activation
    yet, e.g. from convert run twice) then an activation -> to_fused(conv, activation)."""

    def replace(modules):
        conv, act = modules
        activation = conv_activation(act)
        fresh = _plain(conv, fused_type) and conv.activation == "identity"
        if not (stock(conv) or fresh) or activation is None:
            return None
        return [to_fused(conv, *activation), _identity_like(act)]

    return Rule(name, 2, replace)


def _conv_rule(name: str, stock: Callable, to_fused: Callable) -> Rule:
    """A lone conv with `stock(conv)` true -> to_fused(conv)."""

    def replace(modules):
        (conv,) = modules
        return [to_fused(conv)] if stock(conv) else None

    return Rule(name, 1, replace)


def _conv_batch_norm_act(modules):
    conv, bn, act = modules
    slope = leaky_slope(act)
    if not _stock_conv_transpose2d(conv):
        return None
    if not _plain(bn, nn.BatchNorm2d) or bn.num_features != conv.out_channels or slope is None:
        return None
    return [
        ConvTransposeBNAct2d.from_modules(conv, bn, slope),
        _identity_like(bn),
        _identity_like(act),
    ]


class _StockKeys:
    """Keeps a parent's state_dict keys unchanged after a fused block took the place of
    several of its children: the block's ``<block>.<part>.<rest>`` keys are saved as
    ``<sibling>.<rest>`` (the key the stock child had) and loaded back the other way.
    Registered on the parent as a state_dict post-hook (``save``) and a load_state_dict
    pre-hook (``load``); plain objects, so deepcopy and pickling keep working."""

    def __init__(self, block: str, parts: dict[str, str]) -> None:
        self.block = block
        self.parts = parts  # part of the block (e.g. "bn") -> the stock sibling's name

    def _renames(self, prefix: str) -> list[tuple[str, str]]:
        return [
            (f"{prefix}{self.block}.{part}", f"{prefix}{sibling}")
            for part, sibling in self.parts.items()
        ]

    @staticmethod
    def _rename(key: str, renames: list[tuple[str, str]]) -> str:
        for old, new in renames:
            if key.startswith(old + "."):
                return new + key[len(old) :]
        return key

    def save(self, module, state_dict, prefix, local_metadata) -> None:
        renames = self._renames(prefix)
        items = list(state_dict.items())  # rebuilt in order, so the keys keep their places
        state_dict.clear()
        for key, value in items:
            state_dict[self._rename(key, renames)] = value
        metadata = getattr(state_dict, "_metadata", None)
        if metadata is not None:
            for old, new in renames:
                if old in metadata:
                    metadata[new] = metadata[old]

    def load(self, module, state_dict, prefix, *args) -> None:
        self.load_prefix = prefix  # for report(), which load_state_dict calls afterwards
        renames = [(new, old) for old, new in self._renames(prefix)]
        for key in list(state_dict):
            renamed = self._rename(key, renames)
            if renamed != key:
                state_dict[renamed] = state_dict.pop(key)

    def report(self, module, incompatible_keys) -> None:
        """Names missing and unexpected keys as the stock model has them (main.1.running_var,
        not the block's main.0.bn.running_var)."""
        renames = self._renames(getattr(self, "load_prefix", ""))
        for keys in (incompatible_keys.missing_keys, incompatible_keys.unexpected_keys):
            keys[:] = [self._rename(key, renames) for key in keys]


class _SaveHook:
    def __init__(self, keys: _StockKeys) -> None:
        self.keys = keys

    def __call__(self, *args) -> None:
        self.keys.save(*args)


def _keep_stock_keys(parent: nn.Module, names: list[str], block: nn.Module) -> None:
    parts = getattr(block, "stock_parts", None)
    if parts is None:
        return
    keys = _StockKeys(names[0], {part: names[offset] for part, offset in parts.items()})
    parent.register_state_dict_post_hook(_SaveHook(keys))
    parent.register_load_state_dict_pre_hook(keys.load)
    parent.register_load_state_dict_post_hook(keys.report)


# ConvTranspose2d -> BatchNorm2d -> ReLU/LeakyReLU as one ConvTransposeBNAct2d, tried first.
# In training it runs the same two fused ops as the layer rules would (ConvTranspose2d +
# BatchNormLeakyReLU2d); in eval the batch norm is folded into the convolution, so the block
# is one fused op. convert(model, rules=LAYER_RULES) keeps one fused layer per stock layer.
CONV_BN_ACT_RULE = Rule(
    "ConvTranspose2d + BatchNorm2d + ReLU/LeakyReLU -> ConvTransposeBNAct2d",
    3,
    _conv_batch_norm_act,
)

LAYER_RULES: list[Rule] = [
    Rule("BatchNorm2d + ReLU/LeakyReLU -> BatchNormLeakyReLU2d", 2, _batch_norm_act),
    _conv_act_rule(
        "ConvTranspose2d + activation -> ConvTranspose2d(activation=...)",
        _stock_conv_transpose2d,
        ConvTranspose2d,
        fused_conv_transpose2d,
    ),
    _conv_rule(
        "ConvTranspose2d -> fastgen ConvTranspose2d",
        _stock_conv_transpose2d,
        fused_conv_transpose2d,
    ),
    _conv_act_rule(
        "Conv2d + activation -> Conv2d(activation=...)", _stock_conv2d, Conv2d, fused_conv2d
    ),
    _conv_rule("Conv2d -> fastgen Conv2d", _stock_conv2d, fused_conv2d),
]
RULES: list[Rule] = [CONV_BN_ACT_RULE, *LAYER_RULES]
BLOCK_RULES = RULES  # the default; the name is kept for code that asked for the block


def convert(
    model: nn.Module, inplace: bool = False, rules: Sequence[Rule] | None = None
) -> nn.Module:
    """Returns `model` with stock layers swapped for fused fastgen layers (see module doc).

    Rewrites, inside any nesting of modules, first
      * ConvTranspose2d then BatchNorm2d then ReLU/LeakyReLU -> ConvTransposeBNAct2d,
        Identity, Identity (the parent keeps the stock state_dict keys through state_dict
        hooks; named_parameters() shows the nesting, e.g. main.0.conv.weight)
    then
      * BatchNorm2d then ReLU/LeakyReLU (in-place or not) -> BatchNormLeakyReLU2d, Identity
      * ConvTranspose2d then ReLU/LeakyReLU/Tanh/Sigmoid -> ConvTranspose2d(activation=...), Identity
      * any other ConvTranspose2d -> fastgen.nn.ConvTranspose2d
      * Conv2d then ReLU/LeakyReLU/Tanh/Sigmoid -> Conv2d(activation=...), Identity
      * any other Conv2d -> fastgen.nn.Conv2d (so Conv2d then BatchNorm2d then an activation
        becomes Conv2d, BatchNormLeakyReLU2d, Identity)
    rules=LAYER_RULES leaves out the first (one fused layer per stock layer).
    Outputs and gradients match the original model's in train and eval mode to floating-point
    rounding (the fused kernels and the eval-mode fold sum in another order), and its
    state_dict keys are unchanged. With inplace=False the original model is not modified.

    Args:
        model: any nn.Module; a stock layer on its own is swapped too.
        inplace: convert `model` itself, its fused layers sharing its parameter and buffer
            tensors, instead of a deep copy.
        rules: the rewrite rules to try, in order (fastgen.nn.convert.RULES by default;
            LAYER_RULES for one fused layer per stock layer).
    Returns:
        The converted model: the deep copy, or `model` itself with inplace=True, or the new
        fused layer when `model` is a lone stock layer (so always use the returned module).
    """
    rules = RULES if rules is None else list(rules)
    if not inplace:
        model = copy.deepcopy(model)
    single = [rule for rule in rules if rule.length == 1]
    for rule in single:  # the root itself may be a layer to swap
        replaced = rule.replace([model])
        if replaced is not None:
            return replaced[0]
    _convert_children(model, rules)
    return model


def _convert_children(parent: nn.Module, rules: Sequence[Rule]) -> None:
    names = [name for name, child in parent._modules.items() if child is not None]
    usable = rules if isinstance(parent, nn.Sequential) else [r for r in rules if r.length == 1]
    index = 0
    while index < len(names):
        for rule in usable:
            window = names[index : index + rule.length]
            if len(window) < rule.length:
                continue
            replaced = rule.replace([parent._modules[name] for name in window])
            if replaced is not None:
                for name, module in zip(window, replaced):
                    setattr(parent, name, module)
                _keep_stock_keys(parent, window, replaced[0])
                index += rule.length
                break
        else:
            _convert_children(parent._modules[names[index]], rules)
            index += 1
