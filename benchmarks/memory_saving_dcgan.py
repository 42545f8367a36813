"""Bytes autograd keeps for backward in one training step of the DCGAN tutorial's discriminator
(fastgen.nn.convert'ed; width 64, batch 64, 64x64 RGB), with BatchNormLeakyReLU2d in the normal
and in the memory-saving mode. Works on CPU, where torch has no peak-memory counter: it sums the
distinct storages handed to autograd's saved-tensor hooks. Peak CUDA memory comes from the
harness on a GPU.

    PYTHONPATH=$PWD python -m benchmarks.memory_saving_dcgan [--device cpu|cuda]
"""

from __future__ import annotations

import argparse

import torch

import fastgen.nn as fnn
from benchmarks.bench_dcgan import tutorial_discriminator


def saved_bytes(memory_saving: bool, device: str) -> int:
    torch.manual_seed(0)
    model = fnn.convert(tutorial_discriminator(64)).to(device)
    for module in model.modules():
        if isinstance(module, fnn.BatchNormLeakyReLU2d):
            module.memory_saving = memory_saving
    x = torch.randn(64, 3, 64, 64, device=device)
    storages: dict[int, int] = {}

    def pack(t: torch.Tensor) -> torch.Tensor:
        storages[t.untyped_storage().data_ptr()] = t.untyped_storage().nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        loss = model(x).mean()
    loss.backward()
    return sum(storages.values())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--device", default="cpu")
    device = parser.parse_args().device
    normal, saving = saved_bytes(False, device), saved_bytes(True, device)
    mib = 2**20
    print(
        f"DCGAN discriminator step, saved for backward: normal {normal / mib:.1f} MiB, "
        f"memory_saving {saving / mib:.1f} MiB (-{(normal - saving) / mib:.1f} MiB, "
        f"-{100 * (normal - saving) / normal:.0f}%)"
    )


if __name__ == "__main__":
    main()
