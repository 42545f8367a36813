"""The processes of a run: one, or a torchrun group (WORLD_SIZE > 1) trained with
DistributedDataParallel, where only rank 0 writes."""

from __future__ import annotations

import hashlib
import os

import torch
import torch.distributed as dist
from torch import nn


class Distributed:
    """The process group when launched by torchrun (WORLD_SIZE > 1), else a single process."""

    def __init__(self, device: torch.device, environ=os.environ) -> None:
        self.world_size = int(environ.get("WORLD_SIZE", "1"))
        self.rank = int(environ.get("RANK", "0"))
        self.local_rank = int(environ.get("LOCAL_RANK", "0"))
        self.owns_group = False
        self.device = device
        if self.world_size > 1:
            if device.type == "cuda":
                self.device = torch.device("cuda", self.local_rank)
                torch.cuda.set_device(self.device)
            if not dist.is_initialized():
                dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
                self.owns_group = True
            self.rank, self.world_size = dist.get_rank(), dist.get_world_size()

    @classmethod
    def single(cls, device) -> Distributed:
        """One process on `device`, whatever the environment says (benchmarks, tests)."""
        return cls(torch.device(device), environ={})

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def barrier(self) -> None:
        if self.enabled:
            dist.barrier()

    def all_true(self, flag: bool) -> bool:
        """True when `flag` holds on every rank (so all ranks take the same branch)."""
        if not self.enabled:
            return flag
        value = torch.tensor([1.0 if flag else 0.0], device=self.device)
        dist.all_reduce(value, op=dist.ReduceOp.MIN)
        return bool(value.item() > 0)

    def largest(self, value: int) -> int:
        """The largest of the ranks' `value`s (so all ranks take the same branch)."""
        if not self.enabled:
            return value
        tensor = torch.tensor([value], dtype=torch.int64, device=self.device)
        dist.all_reduce(tensor, op=dist.ReduceOp.MAX)
        return int(tensor.item())

    def in_sync(self, modules) -> bool:
        """True when the modules' parameters are bitwise equal on every rank. (Buffers are not
        compared: without sync BN each rank's running statistics follow its own batches and
        DDP re-broadcasts rank 0's at every forward; checkpoints hold rank 0's.)"""
        digest = hashlib.sha256()
        for module in modules:
            for key, value in module.named_parameters():
                digest.update(key.encode())
                digest.update(
                    value.detach().cpu().contiguous().view(-1).view(torch.uint8).numpy().tobytes()
                )
        if not self.enabled:
            return True
        digests: list[str | None] = [None] * self.world_size
        dist.all_gather_object(digests, digest.hexdigest())
        return len(set(digests)) == 1

    def close(self) -> None:
        if self.owns_group and dist.is_initialized():
            dist.destroy_process_group()


def wrap_for_training(
    model: nn.Module, config, processes: Distributed
) -> tuple[nn.Module, nn.Module]:
    """(model, module to call): the model after sync-BN conversion (what checkpoints hold; it
    shares the layers' tensors, so optimizers built before keep working), and the module a
    training step calls, under DistributedDataParallel and torch.compile as configured."""
    from torch.nn.parallel import DistributedDataParallel

    called = model
    if processes.enabled:
        if config.sync_bn:
            model = convert_sync_bn(model, processes.device)
        ids = [processes.device.index] if processes.device.type == "cuda" else None
        called = DistributedDataParallel(model, device_ids=ids)
    if config.compile:
        called = torch.compile(called)
    return model, called


def convert_sync_bn(model: nn.Module, device: torch.device) -> nn.Module:
    """Batch norms synced across ranks: fastgen.nn.convert_sync for the fused ones (any
    device), then torch's SyncBatchNorm for stock ones (fused=False; CUDA only). Both share the
    layers' tensors, so optimizers built before keep working."""
    import fastgen.nn as fnn

    model = fnn.convert_sync(model)
    stock = [
        m
        for m in model.modules()
        if isinstance(m, nn.modules.batchnorm._BatchNorm) and not isinstance(m, nn.SyncBatchNorm)
    ]
    if stock and device.type != "cuda":
        raise ValueError(
            "fastgen.train: sync_bn with stock batch norms (fused=False) needs CUDA: torch's "
            "SyncBatchNorm runs on GPUs only; on CPU keep the fused layers, whose "
            "SyncBatchNormLeakyReLU2d works with gloo"
        )
    return nn.SyncBatchNorm.convert_sync_batchnorm(model) if stock else model
