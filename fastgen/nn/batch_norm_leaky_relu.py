"""BatchNormLeakyReLU2d: nn.BatchNorm2d followed by nn.LeakyReLU, as one fused layer."""

from __future__ import annotations

import warnings

import torch
import torch.distributed as dist
from torch import nn

from fastgen import ops
from fastgen.nn._torchscript import NoTorchScript, refuse_tracing


class UnsyncedBatchNormWarning(UserWarning):
    """A fused batch norm trains with per-process statistics under torch.distributed."""


def warn_unsynchronised(layer: nn.Module) -> None:
    """Warns (rank 0, once per layer) that `layer` normalises with its own process's batch.

    Why: ``nn.SyncBatchNorm.convert_sync_batchnorm`` converts only subclasses of _BatchNorm,
    which the fused layers are not (see BatchNormLeakyReLU2d), so after
    ``convert_sync_batchnorm(fnn.convert(model))`` the fused ones stay per-process without a
    word. Per-process statistics are also what a plain nn.BatchNorm2d gives under DDP, so this
    is a warning, not an error (silence it with warnings.filterwarnings("ignore",
    category=fastgen.nn.UnsyncedBatchNormWarning)).
    """
    if getattr(layer, "_warned_unsynchronised", False) or torch.compiler.is_compiling():
        return
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() < 2:
        return
    layer._warned_unsynchronised = True
    if dist.get_rank() != 0:
        return
    warnings.warn(
        f"fastgen.nn.{type(layer).__name__}: training in {dist.get_world_size()} processes, each "
        "normalising with its own batch statistics; nn.SyncBatchNorm.convert_sync_batchnorm "
        "does not convert fastgen's fused batch norms: use fastgen.nn.convert_sync(model) "
        "(fastgen train --sync-bn) to share them across processes",
        UnsyncedBatchNormWarning,
        stacklevel=3,
    )


# nn.BatchNorm2d's parameters and buffers, which the fused batch norms have under its names.
BATCH_NORM_STATE = ("weight", "bias", "running_mean", "running_var", "num_batches_tracked")


def share_state(layer: nn.Module, bn: nn.Module) -> None:
    """Puts bn's parameter and buffer tensors into `layer`: the same objects, no copies, so
    an optimizer built on bn's parameters keeps updating them."""
    for name in BATCH_NORM_STATE:
        setattr(layer, name, getattr(bn, name))


def sharing_batch_norm(cls: type, bn: nn.Module, negative_slope: float, **extra) -> nn.Module:
    """A `cls` (BatchNormLeakyReLU2d or a subclass; `extra`: more of its keywords) with bn's
    settings, tensors (share_state) and train/eval mode. It is built on the meta device, so
    nothing is allocated before bn's tensors go in."""
    layer = cls(
        bn.num_features,
        eps=bn.eps,
        momentum=bn.momentum,
        affine=bn.affine,
        track_running_stats=bn.track_running_stats,
        negative_slope=negative_slope,
        device="meta",
        **extra,
    )
    share_state(layer, bn)
    return layer.train(bn.training)


class BatchNormLeakyReLU2d(NoTorchScript, nn.Module):
    r"""Batch normalisation over (N, H, W) per channel, then a leaky ReLU, in one fused op.

    For input ``x`` of shape ``[N, C, H, W]`` (any memory layout; float32, float64,
    float16 or bfloat16) it computes, per channel ``c``::

        y = (x - mean[c]) / sqrt(var[c] + eps) * weight[c] + bias[c]
        out = y if y >= 0 else negative_slope * y          # negative_slope=0 is ReLU

    Training (or ``track_running_stats=False``): ``mean``/``var`` are the batch statistics
    (biased variance); the running statistics, when tracked, are updated as nn.BatchNorm2d
    does: ``running = (1 - m) * running + m * batch`` with the *unbiased* batch variance,
    where ``m = momentum``, or ``m = 1 / num_batches_tracked`` (a cumulative average) when
    ``momentum`` is None. ``num_batches_tracked`` counts training forwards.
    Eval with tracked statistics: ``mean``/``var`` are the running statistics.

    Design choice: this is a plain ``nn.Module``, NOT a subclass of ``nn.BatchNorm2d``. It
    has exactly BatchNorm2d's parameters and buffers (``weight``, ``bias``,
    ``running_mean``, ``running_var``, ``num_batches_tracked``), so state dicts load both
    ways, but ``isinstance(layer, nn.modules.batchnorm._BatchNorm)`` is False. That is on
    purpose: code that rewrites batch norms by type (``nn.SyncBatchNorm
    .convert_sync_batchnorm``, fuse-conv-bn passes, "exclude BN from weight decay" rules)
    would otherwise treat this layer as a bare batch norm and silently drop its activation.
    Weight-decay rules keyed on parameter names (``*.bias``, ``*norm*``) still see the same
    names as before conversion.

    ``memory_saving=True``: In-Place-ABN-style backward that keeps only the output instead of
    the input. It needs ``negative_slope > 0`` and uses ``sign(weight) * max(|weight|, 1e-3)``
    as the weight (a zero weight counts as positive; the gradient passes straight through the
    clamp), so its results equal the normal mode whenever every ``|weight| >= 1e-3``; see
    fastgen.ops.batch_norm_leaky_relu. No double backward in this mode.

    Args:
        num_features: C, the channels of the input.
        eps: added to the variance (> 0 to train).
        momentum: weight of the batch statistics in the running-statistics update; None for a
            cumulative average over the training forwards.
        affine: learn ``weight`` (init 1) and ``bias`` (init 0), each [C].
        track_running_stats: keep ``running_mean``/``running_var`` (init 0 and 1) and
            ``num_batches_tracked``, used in eval; False normalises with the batch in eval too.
        negative_slope: LeakyReLU slope for negative values (0 gives ReLU; > 0 with
            memory_saving=True). Default 0.01, nn.LeakyReLU's.
        device: device of the parameters and buffers.
        dtype: dtype of the parameters and buffers (float32 ones also serve half inputs).
        bias: keyword; False keeps ``weight`` without a ``bias`` (nn.BatchNorm2d's
            ``bias=False``).
        memory_saving: keyword; the In-Place-ABN-style backward above.
    Shape:
        forward(input): input [N, C, H, W] (4-D only), float32/float64/float16/bfloat16, any
        strides. Returns a tensor of input's shape and dtype, channels_last when input is
        channels_last (and not also contiguous), NCHW otherwise.
    """

    _version = 2  # the nn.BatchNorm2d state-dict version that has num_batches_tracked
    synchronised = False  # batch statistics over every process (SyncBatchNormLeakyReLU2d)

    def __init__(
        self,
        num_features: int,
        eps: float = 1e-5,
        momentum: float | None = 0.1,
        affine: bool = True,
        track_running_stats: bool = True,
        negative_slope: float = 0.01,
        device=None,
        dtype=None,
        *,
        bias: bool = True,
        memory_saving: bool = False,
    ) -> None:
        super().__init__()
        if memory_saving and not negative_slope > 0:
            raise ValueError(
                "fastgen.nn.BatchNormLeakyReLU2d: memory_saving=True needs negative_slope > 0, "
                f"got {negative_slope}"
            )
        self.memory_saving = memory_saving
        factory = {"device": device, "dtype": dtype}
        self.num_features = num_features
        self.eps = eps
        self.momentum = momentum
        self.affine = affine
        self.track_running_stats = track_running_stats
        self.negative_slope = negative_slope
        self.has_bias = affine and bias  # nn.BatchNorm2d's bias=False: a weight, no bias
        if affine:
            self.weight = nn.Parameter(torch.empty(num_features, **factory))
            if bias:
                self.bias = nn.Parameter(torch.empty(num_features, **factory))
            else:
                self.register_parameter("bias", None)
        else:
            self.register_parameter("weight", None)
            self.register_parameter("bias", None)
        if track_running_stats:
            self.register_buffer("running_mean", torch.zeros(num_features, **factory))
            self.register_buffer("running_var", torch.ones(num_features, **factory))
            self.register_buffer(
                "num_batches_tracked",
                torch.tensor(0, dtype=torch.long, device=device),
            )
        else:
            self.register_buffer("running_mean", None)
            self.register_buffer("running_var", None)
            self.register_buffer("num_batches_tracked", None)
        self.reset_parameters()

    def reset_running_stats(self) -> None:
        if self.track_running_stats:
            self.running_mean.zero_()
            self.running_var.fill_(1)
            self.num_batches_tracked.zero_()

    def reset_parameters(self) -> None:
        self.reset_running_stats()
        if self.affine:
            nn.init.ones_(self.weight)
            if self.bias is not None:
                nn.init.zeros_(self.bias)

    def forward(self, input: torch.Tensor) -> torch.Tensor:
        return self.normalise(input)

    def normalise(self, input: torch.Tensor, batch_stats=None) -> torch.Tensor:
        """forward(input); batch_stats as fastgen.ops.batch_norm_leaky_relu takes them (the
        batch mean and variance of `input`, already computed) when they are used."""
        refuse_tracing(self)
        if input.dim() != 4:
            raise ValueError(
                f"fastgen.nn.BatchNormLeakyReLU2d: expected 4-D input [N, C, H, W], "
                f"got {input.dim()}-D with shape {tuple(input.shape)}"
            )
        # Same decisions as nn.BatchNorm2d.forward, so results and running stats match it.
        momentum = 0.0 if self.momentum is None else self.momentum
        if self.training and self.track_running_stats and self.num_batches_tracked is not None:
            self.num_batches_tracked.add_(1)
            if self.momentum is None:
                momentum = 1.0 / float(self.num_batches_tracked)
        use_batch_stats = self.training or self.running_mean is None
        if self.training and not self.synchronised:
            warn_unsynchronised(self)
        # Running stats are passed only when they are to be used or updated.
        track = not self.training or self.track_running_stats
        return ops.batch_norm_leaky_relu(
            input,
            self.running_mean if track else None,
            self.running_var if track else None,
            self.weight,
            self.bias,
            use_batch_stats,
            momentum,
            self.eps,
            self.negative_slope,
            memory_saving=self.memory_saving,
            batch_stats=batch_stats if use_batch_stats else None,
        )

    def _load_from_state_dict(
        self, state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys, error_msgs
    ) -> None:
        # Old nn.BatchNorm2d checkpoints (version < 2) lack num_batches_tracked; accept
        # them like the stock layer does.
        version = local_metadata.get("version", None)
        key = prefix + "num_batches_tracked"
        if (version is None or version < 2) and self.track_running_stats and key not in state_dict:
            state_dict[key] = torch.tensor(0, dtype=torch.long)
        super()._load_from_state_dict(
            state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys, error_msgs
        )

    def extra_repr(self) -> str:
        return (
            f"{self.num_features}, eps={self.eps}, momentum={self.momentum}, "
            f"affine={self.affine}, "
            + ("" if self.has_bias or not self.affine else "bias=False, ")
            + f"track_running_stats={self.track_running_stats}, "
            f"negative_slope={self.negative_slope}"
            + (", memory_saving=True" if self.memory_saving else "")
        )
