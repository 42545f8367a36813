"""ConvTransposeBNAct2d: ConvTranspose2d -> BatchNorm2d -> ReLU/LeakyReLU as one block."""

from __future__ import annotations

import torch
from torch import nn

from fastgen import _extension, ops
from fastgen._backend import EMULATED, registry
from fastgen.nn._fused_activation import autocast_inputs
from fastgen.nn._torchscript import NoTorchScript, refuse_tracing
from fastgen.nn.batch_norm_leaky_relu import BatchNormLeakyReLU2d, share_state
from fastgen.nn.conv_transpose2d import ConvTranspose2d
from fastgen.ops._checks import check_batch_norm_eps
from fastgen.ops.conv_transpose2d import WITH_STATS

FN = "fastgen.nn.ConvTransposeBNAct2d"


class ConvTransposeBNAct2d(NoTorchScript, nn.Module):
    r"""``nn.ConvTranspose2d`` then ``nn.BatchNorm2d`` then ``nn.ReLU``/``nn.LeakyReLU``, fused.

    For input ``x`` ``[N, C_in, H, W]`` (shapes, dtypes and layouts as
    fastgen.ops.conv_transpose2d)::

        y   = conv_transpose2d(x, conv.weight, stride, padding, output_padding, groups,
                               dilation) + conv.bias
        out = leaky_relu((y - mean) / sqrt(var + eps) * bn.weight + bn.bias, negative_slope)

    ``negative_slope=0`` (the default) is ReLU.

    Training (or ``track_running_stats=False``): ``mean``/``var`` are the batch statistics of
    ``y`` and the running statistics are updated exactly as nn.BatchNorm2d does (momentum,
    ``momentum=None`` cumulative average, unbiased running_var, num_batches_tracked): the
    convolution (bias fused) and then ONE fused batch-norm + activation op. With fastgen's
    CUDA convolution engine (FASTGEN_CONV_TRANSPOSE=fastgen) the batch statistics come from
    the convolution's epilogue and the batch norm only normalises: two kernels forward.

    Eval with running statistics: the batch norm is folded into the convolution,
    ``scale = bn.weight / sqrt(running_var + eps)``, ``weight' = conv.weight * scale`` (per
    output channel), ``bias' = (conv.bias - running_mean) * scale + bn.bias``, and the whole
    block is ONE fastgen.ops.conv_transpose2d call with the activation fused. The fold is
    recomputed from the parameters on every call (a weight-sized pass), so gradients reach
    conv.*, bn.weight and bn.bias in eval mode too.

    State dict: the stock modules' keys under ``conv.`` and ``bn.``. The mapping to a stock
    ``nn.Sequential(nn.ConvTranspose2d, nn.BatchNorm2d, nn.ReLU())`` is::

        conv.weight  <->  0.weight            bn.weight        <->  1.weight
        conv.bias    <->  0.bias (if bias)    bn.bias          <->  1.bias
                                              bn.running_mean  <->  1.running_mean
                                              bn.running_var   <->  1.running_var
                                              bn.num_batches_tracked <-> 1.num_batches_tracked

    (``from_modules`` builds the block from such stock modules, sharing their tensors;
    fastgen.nn.convert keeps a converted model's own keys unchanged.) ``conv`` is a
    fastgen.nn.ConvTranspose2d and ``bn`` a fastgen.nn.BatchNormLeakyReLU2d, so each part
    also works on its own.

    Args:
        in_channels: C_in, the channels of the input.
        out_channels: C_out, the channels of the convolution's output and of the batch norm.
        kernel_size: int or pair (kH, kW).
        stride: int or pair, >= 1.
        padding: int or pair, >= 0 (taken off each side of the output).
        output_padding: int or pair, smaller than stride or dilation; forward's output_size
            can choose it instead.
        groups: int >= 1 dividing in_channels and out_channels.
        bias: give the convolution a bias ``conv.bias`` [C_out].
        dilation: int or pair, >= 1.
        padding_mode: "zeros" only (others raise a ValueError here).
        eps: the batch norm's, added to the variance (> 0 to train).
        momentum: weight of the batch statistics in the running-statistics update; None for a
            cumulative average.
        affine: learn ``bn.weight`` (init 1) and ``bn.bias`` (init 0), each [C_out].
        track_running_stats: keep running statistics, used (and folded) in eval; False
            normalises with the batch in eval too.
        negative_slope: slope for negative values, >= 0 (0, the default, gives ReLU).
        device: device of the parameters and buffers.
        dtype: dtype of the parameters and buffers.
    Shape:
        forward(input, output_size=None): input [N, C_in, H, W] of the parameters' dtype (or
        any, under autocast), any strides; output_size, optional, the (H_out, W_out) wanted,
        as nn.ConvTranspose2d takes it. Returns [N, C_out, H_out, W_out] in the dtype the
        convolution computes in (the autocast dtype under autocast), laid out as
        fastgen.ops.conv_transpose2d's output.
    """

    # Where its parts sat in the stock Sequential it replaces (used by fastgen.nn.convert to
    # keep the parent's state_dict keys): part name -> offset in the window.
    stock_parts = {"conv": 0, "bn": 1}

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size,
        stride=1,
        padding=0,
        output_padding=0,
        groups: int = 1,
        bias: bool = True,
        dilation=1,
        padding_mode: str = "zeros",
        eps: float = 1e-5,
        momentum: float | None = 0.1,
        affine: bool = True,
        track_running_stats: bool = True,
        negative_slope: float = 0.0,
        device=None,
        dtype=None,
    ) -> None:
        super().__init__()
        if negative_slope < 0:
            raise ValueError(
                f"{FN}: negative_slope must be >= 0 (ReLU or LeakyReLU), got {negative_slope}"
            )
        factory = {"device": device, "dtype": dtype}
        self.conv = ConvTranspose2d(
            in_channels, out_channels, kernel_size, stride=stride, padding=padding,
            output_padding=output_padding, groups=groups, bias=bias, dilation=dilation,
            padding_mode=padding_mode, **factory,
        )  # fmt: skip
        self.bn = BatchNormLeakyReLU2d(
            out_channels, eps=eps, momentum=momentum, affine=affine,
            track_running_stats=track_running_stats, negative_slope=negative_slope, **factory,
        )  # fmt: skip

    @property
    def negative_slope(self) -> float:
        return self.bn.negative_slope

    # The convolution's parameters under the stock layer's names, for code that walks modules
    # by class name, as the PyTorch DCGAN tutorial's weights_init does ("Conv" in the name:
    # init m.weight). They are views of conv's, not parameters of their own.
    @property
    def weight(self) -> torch.Tensor:
        return self.conv.weight

    @property
    def bias(self) -> torch.Tensor | None:
        return self.conv.bias

    @classmethod
    def from_modules(
        cls, conv: nn.ConvTranspose2d, bn: nn.BatchNorm2d, negative_slope: float = 0.0
    ) -> ConvTransposeBNAct2d:
        """A block computing bn(conv(x)) then the activation, sharing conv's and bn's
        parameter and buffer tensors (no copies); train/eval mode taken from conv."""
        block = cls(
            conv.in_channels, conv.out_channels, conv.kernel_size, stride=conv.stride,
            padding=conv.padding, output_padding=conv.output_padding, groups=conv.groups,
            bias=conv.bias is not None, dilation=conv.dilation, padding_mode=conv.padding_mode,
            eps=bn.eps, momentum=bn.momentum, affine=bn.affine,
            track_running_stats=bn.track_running_stats, negative_slope=negative_slope,
            device="meta", dtype=conv.weight.dtype,
        )  # fmt: skip
        block.conv.weight, block.conv.bias = conv.weight, conv.bias
        share_state(block.bn, bn)
        return block.train(conv.training)

    def folded_weight_and_bias(self) -> tuple[torch.Tensor, torch.Tensor]:
        """The eval-mode convolution weight and bias with the batch norm folded in."""
        from fastgen.utils.folding import fold_batch_norm_into_conv_transpose

        conv, bn = self.conv, self.bn
        return fold_batch_norm_into_conv_transpose(
            conv.weight, conv.bias, running_mean=bn.running_mean, running_var=bn.running_var,
            eps=bn.eps, bn_weight=bn.weight, bn_bias=bn.bias, groups=conv.groups,
        )  # fmt: skip

    def _statistics_from_epilogue(self, input: torch.Tensor) -> bool:
        """Whether the training forward takes the two-kernel path: fastgen's CUDA convolution
        engine (chosen for this layer by FASTGEN_CONV_TRANSPOSE, csrc/conv/conv_engine.h)
        writing the output and its batch statistics, then one normalise + activate pass.
        Elsewhere (cuDNN's convolution, CPU, torch.compile, autocast, memory_saving) the
        convolution and the batch norm run as two ops, the batch norm computing the
        statistics itself."""
        conv = self.conv
        emulated = input.device.type == "cpu" and registry.mode == EMULATED
        if not (input.is_cuda or emulated) or not _extension.LOADED:
            return False
        if input.dim() != 4 or input.shape[0] == 0 or conv.padding_mode != "zeros":
            return False
        if self.bn.memory_saving or torch.compiler.is_compiling():
            return False
        if torch.is_autocast_enabled(input.device.type):
            return False
        route = _extension._C._conv_route(True, list(conv.stride), list(conv.dilation), conv.groups)
        return route == "fastgen" and registry.use_native(WITH_STATS, input)

    def forward(self, input: torch.Tensor, output_size: list[int] | None = None) -> torch.Tensor:
        refuse_tracing(self)
        conv, bn = self.conv, self.bn
        if self.training or bn.running_mean is None:
            if self._statistics_from_epilogue(input):
                geometry = conv._op_geometry(input, output_size)
                y, mean, var = ops.conv_transpose2d_with_stats(
                    input, conv.weight, conv.bias, *geometry
                )
                return bn.normalise(y, batch_stats=(mean, var))
            return bn(conv(input, output_size))
        check_batch_norm_eps(FN, bn.eps, training=False)  # F.batch_norm's eval rule
        geometry = conv._op_geometry(input, output_size)
        input, weight, bias = autocast_inputs(input, *self.folded_weight_and_bias())
        slope = self.negative_slope
        activation = "relu" if slope == 0 else "leaky_relu"
        return ops.conv_transpose2d(input, weight, bias, *geometry, activation, slope)
