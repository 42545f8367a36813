"""reparameterize_kl: fused op (noise made in-kernel, regenerated in backward) vs the stock
``mu + exp(0.5 * logvar) * randn_like(mu)`` with the KL sum (fastgen.reference)."""

from __future__ import annotations

import torch

from benchmarks.harness import Case
from fastgen import ops
from fastgen.reference import reparameterize as reference

# Issue 2's CPU target shape first, then issue 4's latents and spatial latent.
CPU_SHAPES = [(256, 128), (128, 32), (512, 128)]
CUDA_SHAPES = [(128, 32), (128, 128), (512, 128), (1024, 512), (64, 16, 16, 16), (256, 128)]


def fused(mu, logvar):
    return ops.reparameterize_kl(mu, logvar)


def eager(mu, logvar):
    return reference.stock_reparameterize_kl(mu, logvar)


def make_case(shape: tuple, dtype: torch.dtype, device: str) -> Case:
    def make_inputs():
        generator = torch.Generator().manual_seed(0)
        mu = torch.randn(shape, generator=generator).to(device, dtype).requires_grad_()
        logvar = (torch.randn(shape, generator=generator) * 0.5).to(device, dtype)
        return mu, logvar.requires_grad_()

    numel = 1
    for size in shape:
        numel *= size
    item = torch.finfo(dtype).bits // 8
    # forward reads mu, logvar, writes z (+ kl); backward also reads grad_z, writes 2 grads.
    return Case(
        op="reparameterize_kl",
        case=f"{'x'.join(map(str, shape))} {str(dtype).removeprefix('torch.')}",
        make_inputs=make_inputs,
        providers={"fastgen": fused, "eager": eager},
        modes=("forward", "full"),
        min_bytes={"forward": 3 * numel * item, "full": 8 * numel * item},
    )


def cases(device: str) -> list[Case]:
    if device == "cuda":
        return [
            make_case(shape, dtype, device)
            for shape in CUDA_SHAPES
            for dtype in (torch.float32, torch.bfloat16)
        ]
    return [make_case(shape, torch.float32, device) for shape in CPU_SHAPES]
