"""DDP training: a 2-process gloo job on CPU trains, keeps the ranks' weights identical, writes
from rank 0 only, and its checkpoint resumes in a single process."""

from __future__ import annotations

import json
import os
import socket

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from helpers.train_helpers import TinyDataset, gan_config, vae_config

import fastgen.nn
from fastgen.train import load_checkpoint, train_gan, train_vae

pytestmark = pytest.mark.skipif(not dist.is_available(), reason="torch.distributed not available")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def worker(rank: int, world: int, port: int, tmp_path, jobs: list) -> None:
    os.environ.update(WORLD_SIZE=str(world), RANK=str(rank), LOCAL_RANK=str(rank))
    torch.set_num_threads(1)
    # One process group for all jobs (the trainers use it rather than starting their own).
    dist.init_process_group(
        "gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world
    )
    try:
        for index, (kind, overrides) in enumerate(jobs):
            trainer, make_config = (
                (train_gan, gan_config) if kind == "dcgan" else (train_vae, vae_config)
            )
            result = trainer(make_config(tmp_path, **overrides), TinyDataset(), progress=False)
            (tmp_path / f"result_{index}_{rank}.json").write_text(json.dumps(result))
    finally:
        dist.destroy_process_group()


def run_two_ranks(tmp_path, jobs: list) -> list[list[dict]]:
    """Runs (kind, config overrides) jobs in one 2-process gloo group; results[job][rank]."""
    mp.spawn(worker, args=(2, free_port(), tmp_path, jobs), nprocs=2, join=True)
    return [
        [json.loads((tmp_path / f"result_{i}_{r}.json").read_text()) for r in range(2)]
        for i in range(len(jobs))
    ]


def test_ddp_trains_in_sync_and_resumes_in_one_process(tmp_path, monkeypatch):
    gan_options = {"steps": 3, "checkpoint_every": 3, "sample_every": 3, "r1_gamma": 1.0}
    gan, vae = run_two_ranks(tmp_path, [("dcgan", gan_options), ("vae", {"steps": 2})])
    for result in gan + vae:
        assert result["world_size"] == 2 and result["ranks_in_sync"], result
    assert gan[0]["checkpoint"] and gan[1]["checkpoint"] is None  # only rank 0 writes
    assert gan[0]["images_per_s"] > 0
    assert load_checkpoint(gan[0]["checkpoint"])["step"] == 3
    # The group's checkpoint continues in a single process.
    for name in ("WORLD_SIZE", "RANK", "LOCAL_RANK"):
        monkeypatch.delenv(name, raising=False)
    resumed = train_gan(
        gan_config(tmp_path, steps=5), TinyDataset(), resume=gan[0]["checkpoint"], progress=False
    )
    assert resumed["step"] == 5 and resumed["steps_run"] == 2 and resumed["world_size"] == 1


@pytest.mark.skipif(
    not hasattr(fastgen.nn, "convert_sync"),
    reason="sync BN on CPU needs fastgen.nn.convert_sync (torch's SyncBatchNorm is CUDA-only)",
)
def test_ddp_sync_bn_stays_in_sync(tmp_path):
    (vae,) = run_two_ranks(tmp_path, [("vae", {"steps": 2, "sync_bn": True, "fused": True})])
    assert all(r["ranks_in_sync"] for r in vae)


def test_sync_bn_converts_fused_and_stock_batch_norms():
    # Before: fastgen.nn.convert_sync alone, so --sync-bn --no-fused left every (stock) batch
    # norm unsynchronised without a word.
    from torch import nn

    from fastgen.train.distributed import convert_sync_bn

    def mixed():
        return nn.Sequential(fastgen.nn.BatchNormLeakyReLU2d(4), nn.BatchNorm2d(4), nn.ReLU())

    converted = convert_sync_bn(mixed(), torch.device("cuda"))  # conversion needs no GPU
    assert isinstance(converted[0], fastgen.nn.SyncBatchNormLeakyReLU2d)
    assert isinstance(converted[1], nn.SyncBatchNorm)
    with pytest.raises(ValueError, match=r"stock batch norms \(fused=False\) needs CUDA"):
        convert_sync_bn(mixed(), torch.device("cpu"))
    fused_only = convert_sync_bn(
        nn.Sequential(fastgen.nn.BatchNormLeakyReLU2d(4)), torch.device("cpu")
    )
    assert isinstance(fused_only[0], fastgen.nn.SyncBatchNormLeakyReLU2d)


def test_refused_sync_bn_on_cpu_writes_nothing(tmp_path):
    """Before: --no-fused --sync-bn on CPU was refused after run.json, config.json and the
    folders were written, so the same command with the right flags met a used folder
    (issue 28.1)."""
    with pytest.raises(Exception, match=r"stock batch norms \(fused=False\) needs CUDA"):
        run_two_ranks(tmp_path, [("dcgan", {"steps": 2, "sync_bn": True, "fused": False})])
    assert not (tmp_path / "gan").exists()
