"""SyncBatchNormLeakyReLU2d over 2 gloo processes on CPU equals one BatchNormLeakyReLU2d over
the concatenated batch: outputs, input gradients, summed weight/bias gradients, running stats."""

from __future__ import annotations

import datetime
import json
import os
import socket
import warnings

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from conftest import assert_close
from torch import nn

import fastgen.nn as fnn
from fastgen.nn.sync_batch_norm_leaky_relu import merge_moments

BATCH_SIZES = (3, 5)  # different per rank on purpose: the merge must be count-weighted
CHANNELS, STEPS = 4, 2


def make_layer() -> fnn.BatchNormLeakyReLU2d:
    layer = fnn.BatchNormLeakyReLU2d(CHANNELS, momentum=None, negative_slope=0.2)
    gen = torch.Generator().manual_seed(1)
    with torch.no_grad():
        layer.weight.copy_(torch.rand(CHANNELS, generator=gen) + 0.5)
        layer.bias.copy_(torch.randn(CHANNELS, generator=gen))
    return layer


def batch(step: int):
    gen = torch.Generator().manual_seed(100 + step)
    x = torch.randn(sum(BATCH_SIZES), CHANNELS, 5, 6, generator=gen) * 2 + 50
    grad = torch.randn(x.shape, generator=gen)
    return x, grad


def rank_slice(rank: int) -> slice:
    start = sum(BATCH_SIZES[:rank])
    return slice(start, start + BATCH_SIZES[rank])


def worker(rank: int, world_size: int, port: int, out_dir: str) -> None:
    torch.set_num_threads(1)
    dist.init_process_group(
        "gloo",
        init_method=f"tcp://127.0.0.1:{port}",
        rank=rank,
        world_size=world_size,
        timeout=datetime.timedelta(seconds=60),
    )
    try:
        model = fnn.convert_sync(nn.Sequential(make_layer()))
        layer = model[0]
        assert isinstance(layer, fnn.SyncBatchNormLeakyReLU2d)
        results = []
        for step in range(STEPS):
            x, grad = batch(step)
            x = x[rank_slice(rank)].clone()
            if rank == 1:  # the other layout on the other rank
                x = x.contiguous(memory_format=torch.channels_last)
            x.requires_grad_()
            out = model(x)
            layer.weight.grad = layer.bias.grad = None
            out.backward(grad[rank_slice(rank)])
            results.append(
                {
                    "out": out.detach(),
                    "grad_x": x.grad,
                    "grad_weight": layer.weight.grad.clone(),
                    "grad_bias": layer.bias.grad.clone(),
                }  # fmt: skip
            )
        state = {k: v.clone() for k, v in layer.state_dict().items()}
        torch.save({"steps": results, "state": state}, os.path.join(out_dir, f"rank{rank}.pt"))
    finally:
        dist.destroy_process_group()


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.skipif(not dist.is_available(), reason="torch.distributed is not available")
def test_two_gloo_ranks_equal_one_process(tmp_path):
    mp.spawn(worker, args=(2, free_port(), str(tmp_path)), nprocs=2, join=True)
    ranks = [torch.load(tmp_path / f"rank{r}.pt", weights_only=True) for r in range(2)]

    single = make_layer()
    for step in range(STEPS):
        x, grad = batch(step)
        x.requires_grad_()
        single.weight.grad = single.bias.grad = None
        out = single(x)
        out.backward(grad)
        for rank in range(2):
            got = ranks[rank]["steps"][step]
            assert_close(
                got["out"], out.detach()[rank_slice(rank)], msg=f"out rank {rank} step {step}"
            )
            assert_close(
                got["grad_x"], x.grad[rank_slice(rank)], msg=f"grad_x rank {rank} step {step}"
            )
        for name, expected in (
            ("grad_weight", single.weight.grad),
            ("grad_bias", single.bias.grad),
        ):
            summed = ranks[0]["steps"][step][name] + ranks[1]["steps"][step][name]
            assert_close(summed, expected, msg=f"{name} summed over ranks, step {step}")
    for rank in range(2):
        for key, value in single.state_dict().items():
            got = ranks[rank]["state"][key]
            if value.is_floating_point():
                assert_close(got, value, msg=f"{key} rank {rank}")
            else:
                assert torch.equal(got, value), key


def test_merge_moments_is_count_weighted_and_stable():
    gen = torch.Generator().manual_seed(0)
    parts = [torch.randn(n, generator=gen, dtype=torch.float64) * 0.01 + 1000 for n in (3, 50, 7)]
    counts = torch.tensor([len(p) for p in parts], dtype=torch.float64)
    means = torch.stack([p.mean() for p in parts])
    m2s = torch.stack([(p - p.mean()).square().sum() for p in parts])
    count, mean, m2 = merge_moments(counts, means, m2s)
    everything = torch.cat(parts)
    assert count == len(everything)
    torch.testing.assert_close(mean, everything.mean())
    torch.testing.assert_close(m2 / count, everything.var(unbiased=False))


def test_single_process_and_eval_fall_back_to_the_plain_layer():
    layer = make_layer()
    sync = fnn.convert_sync(nn.Sequential(make_layer()))[0]
    x = torch.randn(4, CHANNELS, 3, 3)
    assert_close(sync(x), layer(x))
    sync.eval()
    layer.eval()
    assert_close(sync(x), layer(x))
    with pytest.raises(ValueError, match="memory_saving"):
        fnn.convert_sync(fnn.BatchNormLeakyReLU2d(3, memory_saving=True))


# --- torch's convert_sync_batchnorm does not see the fused layers (issue 14, item 2) ----------


def stock_block() -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(3, CHANNELS, 3), nn.BatchNorm2d(CHANNELS), nn.ReLU())


def warning_worker(rank: int, world_size: int, port: int, out_dir: str) -> None:
    torch.set_num_threads(1)
    dist.init_process_group(
        "gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world_size,
        timeout=datetime.timedelta(seconds=60),
    )  # fmt: skip
    try:
        x = torch.randn(2, 3, 6, 6)
        seen = {}
        for name, convert in (
            ("torch_convert_sync", lambda m: nn.SyncBatchNorm.convert_sync_batchnorm(m)),
            ("fastgen_convert_sync", fnn.convert_sync),
        ):
            model = convert(fnn.convert(stock_block()))
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always")
                model(x)
                model(x)  # once per layer, not once per forward
            seen[name] = [
                str(w.message)
                for w in caught
                if issubclass(w.category, fnn.UnsyncedBatchNormWarning)
            ]
        with open(os.path.join(out_dir, f"warnings{rank}.json"), "w") as handle:
            json.dump(seen, handle)
    finally:
        dist.destroy_process_group()


@pytest.mark.skipif(not dist.is_available(), reason="torch.distributed is not available")
def test_unsynchronised_fused_batch_norm_under_ddp_warns_on_rank_zero(tmp_path):
    mp.spawn(warning_worker, args=(2, free_port(), str(tmp_path)), nprocs=2, join=True)
    rank0, rank1 = (json.loads((tmp_path / f"warnings{r}.json").read_text()) for r in range(2))
    (message,) = rank0["torch_convert_sync"]
    assert "fastgen.nn.BatchNormLeakyReLU2d" in message and "2 processes" in message
    assert "nn.SyncBatchNorm.convert_sync_batchnorm does not convert" in message
    assert "fastgen.nn.convert_sync(model)" in message and "--sync-bn" in message
    assert rank0["fastgen_convert_sync"] == [] and rank1 == {
        "torch_convert_sync": [], "fastgen_convert_sync": []
    }  # fmt: skip


def test_convert_sync_shares_parameters_so_an_existing_optimizer_keeps_working():
    # As nn.SyncBatchNorm.convert_sync_batchnorm does: fastgen's trainer (and the DDP recipe)
    # builds the optimizer before converting, so copies would never be updated.
    model = nn.Sequential(make_layer())
    plain = model[0]
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    sync = fnn.convert_sync(model)[0]
    assert isinstance(sync, fnn.SyncBatchNormLeakyReLU2d)
    assert sync.weight is plain.weight and sync.bias is plain.bias
    assert sync.running_mean is plain.running_mean and sync.running_var is plain.running_var
    assert sync.num_batches_tracked is plain.num_batches_tracked
    before = sync.weight.detach().clone()
    sync(torch.randn(4, CHANNELS, 3, 3)).square().sum().backward()
    optimizer.step()
    assert not torch.equal(sync.weight.detach(), before)
