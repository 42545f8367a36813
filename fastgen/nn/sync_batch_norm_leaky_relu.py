"""SyncBatchNormLeakyReLU2d: BatchNormLeakyReLU2d with batch statistics shared across processes,
and convert_sync() to switch a model's fused batch norms to it."""

from __future__ import annotations

import torch
import torch.distributed as dist
from torch import nn

from fastgen import ops
from fastgen.nn._torchscript import refuse_tracing
from fastgen.nn.batch_norm_leaky_relu import BatchNormLeakyReLU2d, sharing_batch_norm
from fastgen.ops._checks import check_batch_norm_eps
from fastgen.reference.batch_norm_leaky_relu import batch_statistics

FN = "fastgen.nn.SyncBatchNormLeakyReLU2d"


def merge_moments(counts: torch.Tensor, means: torch.Tensor, m2s: torch.Tensor):
    """Merges per-rank (count, mean, M2) rows ([R] or [R, C]) in rank order with Chan et al.'s
    pairwise update: count-weighted, so ranks may hold different batch sizes, and stable for
    a large mean (no sum of squares is formed). Returns (count, mean, M2)."""
    count, mean, m2 = counts[0], means[0], m2s[0]
    for rank in range(1, means.shape[0]):
        total = count + counts[rank]
        delta = means[rank] - mean
        fraction = counts[rank] / total
        mean = mean + delta * fraction
        m2 = m2 + m2s[rank] + delta * delta * count * fraction
        count = total
    return count, mean, m2


class _SyncBatchNormLeakyReLU(torch.autograd.Function):
    """Training forward/backward with statistics over every rank of `group`.

    Forward: local (count, mean, M2) per channel in float32 (float64 for float64 input), one
    all_gather, a count-weighted merge, then the fused op normalises with the global mean/var.
    Backward: local sum(g) and sum(g * xhat), one all_reduce of the two, then grad_x from the
    global sums (in torch ops: this path is about correctness across ranks, not fusion).
    grad_weight/grad_bias stay local (the rank's share), as with nn.SyncBatchNorm: data-parallel
    training sums or averages parameter gradients across ranks afterwards.
    """

    @staticmethod
    def forward(ctx, x, weight, bias, eps, negative_slope, group, world_size):
        acc = torch.float64 if x.dtype == torch.float64 else torch.float32
        local_mean, local_var = batch_statistics(x.to(acc))
        local_count = x.numel() // x.shape[1]
        channels = x.shape[1]
        row = torch.stack(
            [
                torch.full((channels,), float(local_count), dtype=acc, device=x.device),
                local_mean,
                local_var * local_count,
            ]
        )
        gathered = [torch.empty_like(row) for _ in range(world_size)]
        dist.all_gather(gathered, row, group=group)
        stacked = torch.stack(gathered)  # [R, 3, C]
        count, mean, m2 = merge_moments(stacked[:, 0], stacked[:, 1], stacked[:, 2])
        var = m2 / count
        with torch.no_grad():
            out = ops.batch_norm_leaky_relu(
                x, mean, var, weight, bias, False, 0.0, eps, negative_slope
            )
        ctx.save_for_backward(x, weight, bias, mean, var)
        ctx.eps, ctx.negative_slope, ctx.group = eps, negative_slope, group
        ctx.total_count = count[0].item()
        ctx.mark_non_differentiable(mean, var)
        return out, mean, var, count

    @staticmethod
    def backward(ctx, grad_out, _grad_mean, _grad_var, _grad_count):
        x, weight, bias, mean, var = ctx.saved_tensors
        acc = mean.dtype
        sum_g, sum_gxhat = _local_sums(grad_out, x, weight, bias, mean, var, ctx)
        local = torch.stack([sum_g, sum_gxhat]).to(acc)
        total = local.clone()
        dist.all_reduce(total, group=ctx.group)
        invstd = torch.rsqrt(var + ctx.eps)
        scale = invstd if weight is None else weight.to(acc) * invstd
        xhat, g = _xhat_and_g(grad_out, x, weight, bias, mean, invstd, ctx.negative_slope)
        per_channel = (1, -1, 1, 1)
        mean_g = (total[0] / ctx.total_count).view(per_channel)
        mean_gxhat = (total[1] / ctx.total_count).view(per_channel)
        grad_x = scale.view(per_channel) * (g - mean_g - xhat * mean_gxhat)
        grad_weight = None if weight is None else local[1].to(weight.dtype)
        grad_bias = None if bias is None else local[0].to(bias.dtype)
        return grad_x.to(x.dtype), grad_weight, grad_bias, None, None, None, None


def _xhat_and_g(grad_out, x, weight, bias, mean, invstd, negative_slope):
    acc = mean.dtype
    per_channel = (1, -1, 1, 1)
    xhat = (x.to(acc) - mean.view(per_channel)) * invstd.view(per_channel)
    v = xhat if weight is None else xhat * weight.to(acc).view(per_channel)
    if bias is not None:
        v = v + bias.to(acc).view(per_channel)
    dy = grad_out.to(acc)
    return xhat, torch.where(v > 0, dy, dy * negative_slope)


def _local_sums(grad_out, x, weight, bias, mean, var, ctx):
    invstd = torch.rsqrt(var + ctx.eps)
    xhat, g = _xhat_and_g(grad_out, x, weight, bias, mean, invstd, ctx.negative_slope)
    return g.sum((0, 2, 3)), (g * xhat).sum((0, 2, 3))


class SyncBatchNormLeakyReLU2d(BatchNormLeakyReLU2d):
    r"""BatchNormLeakyReLU2d whose training statistics cover the whole batch across processes.

    In training, when torch.distributed is initialised with more than one rank in
    ``process_group`` (default: the world), every rank contributes its per-channel
    (count, mean, M2); they are merged count-weighted (ranks may hold different batch sizes),
    so the output, the input gradients and the running statistics equal those of a single
    BatchNormLeakyReLU2d over the concatenated batch. Weight/bias gradients are each rank's
    share (their sum over ranks is the single-process gradient), as with nn.SyncBatchNorm.
    Works with gloo (CPU) and NCCL (CUDA). Eval, or a single process, is the plain layer.
    memory_saving is not supported here.

    Args:
        num_features: C, the channels of the input. It and the other arguments of
            BatchNormLeakyReLU2d (eps, momentum, affine, track_running_stats, negative_slope,
            device, dtype, keyword bias) mean what they mean there, positional or keyword;
            memory_saving=True is refused (ValueError).
        process_group: keyword; the torch.distributed group whose ranks share the statistics;
            None for the world.
    Shape:
        forward(input): input [N, C, H, W] (4-D only), float32/float64/float16/bfloat16; N
        may differ between ranks. Returns a tensor of input's shape and dtype, as
        BatchNormLeakyReLU2d does.
    """

    synchronised = True

    def __init__(self, *args, process_group=None, **kwargs) -> None:
        if kwargs.get("memory_saving"):
            raise ValueError(
                f"{FN}: memory_saving=True is not supported with synchronised statistics"
            )
        super().__init__(*args, **kwargs)
        self.process_group = process_group

    def _world_size(self) -> int:
        if not (dist.is_available() and dist.is_initialized()):
            return 1
        return dist.get_world_size(self.process_group)

    def forward(self, input: torch.Tensor) -> torch.Tensor:
        refuse_tracing(self)
        world_size = self._world_size() if self.training else 1
        if world_size == 1:
            return super().forward(input)
        if input.dim() != 4:
            raise ValueError(
                f"{FN}: expected 4-D input [N, C, H, W], got {input.dim()}-D with shape {tuple(input.shape)}"
            )
        check_batch_norm_eps(FN, self.eps, training=True)
        momentum = 0.0 if self.momentum is None else self.momentum
        if self.track_running_stats and self.num_batches_tracked is not None:
            self.num_batches_tracked.add_(1)
            if self.momentum is None:
                momentum = 1.0 / float(self.num_batches_tracked)
        out, mean, var, count = _SyncBatchNormLeakyReLU.apply(
            input,
            self.weight,
            self.bias,
            self.eps,
            self.negative_slope,
            self.process_group,
            world_size,
        )
        if self.track_running_stats:
            with torch.no_grad():
                unbiased = var * (count / (count - 1))
                self.running_mean.mul_(1 - momentum).add_(
                    mean.to(self.running_mean.dtype), alpha=momentum
                )
                self.running_var.mul_(1 - momentum).add_(
                    unbiased.to(self.running_var.dtype), alpha=momentum
                )
        return out


def convert_sync(model: nn.Module, process_group=None) -> nn.Module:
    """Replaces every BatchNormLeakyReLU2d in `model` (nested too, the root included) with a
    SyncBatchNormLeakyReLU2d over `process_group`, as nn.SyncBatchNorm.convert_sync_batchnorm
    does for stock batch norms (which it cannot see in fastgen's fused ones): the new layer
    SHARES the old one's parameter and buffer tensors (an optimizer built before the call keeps
    updating them) and its training flag. Call it before wrapping the model in
    DistributedDataParallel.

    Args:
        model: any nn.Module; its BatchNormLeakyReLU2d layers must not use memory_saving
            (ValueError).
        process_group: the torch.distributed group whose ranks share statistics; None for
            the world.
    Returns:
        `model`, its children changed in place, or a new SyncBatchNormLeakyReLU2d when
        `model` itself is a BatchNormLeakyReLU2d (so always use the returned module).
    """
    if isinstance(model, BatchNormLeakyReLU2d) and not isinstance(model, SyncBatchNormLeakyReLU2d):
        if getattr(model, "memory_saving", False):
            raise ValueError("fastgen.nn.convert_sync: memory_saving layers cannot be synchronised")
        bias = model.bias is not None or not model.affine
        slope = model.negative_slope
        sync = sharing_batch_norm(
            SyncBatchNormLeakyReLU2d, model, slope, bias=bias, process_group=process_group
        )
        sync.has_bias = model.has_bias
        return sync
    for name, child in model.named_children():
        model._modules[name] = convert_sync(child, process_group)
    return model


__all__ = ["SyncBatchNormLeakyReLU2d", "convert_sync", "merge_moments"]
