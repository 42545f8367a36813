"""Every block of the main job's models, fused against stock, in float32 and under bf16
autocast: the per-layer rows behind `fastgen bench train --main-job` (README, "The main job,
as users run it").

The blocks are the models' own: the DCGAN generator's and discriminator's blocks and head
(fastgen.models.DCGANGenerator / DCGANDiscriminator at the main job's 32x32, width 32, one
channel, batch 64) built once with fastgen.nn layers (fused=True) and once with stock torch.nn
layers (fused=False). Both have the same parameter names, so both providers are called through
torch.func.functional_call with the same parameter tensors, passed as inputs, and "full" times
the weight gradients too; training mode (batch statistics), as a training step runs them. bf16
runs the block under torch.autocast("cpu", torch.bfloat16) as `--amp bf16` does, both
providers alike. CPU only (the main job's machine); on CUDA there are no cases.
"""

from __future__ import annotations

import torch
from torch.func import functional_call

from benchmarks.harness import Case
from fastgen.models import DCGANDiscriminator, DCGANGenerator

BATCH, WIDTH, RESOLUTION, LATENT = 64, 32, 32, 100


def _recorder(shapes: dict, name: str):
    """A forward pre-hook noting the block's input shape (it returns None: args unchanged)."""

    def hook(module, args) -> None:
        shapes.setdefault(name, tuple(args[0].shape))

    return hook


def _blocks(fused: bool) -> list[tuple[str, torch.nn.Module, tuple[int, ...]]]:
    """(name, block, input shape) of every block of both models (their ``blocks`` and the
    discriminator's ``head``), in order."""
    torch.manual_seed(0)
    generator = DCGANGenerator(
        latent_dim=LATENT, resolution=RESOLUTION, channels=1, width=WIDTH, fused=fused
    )
    discriminator = DCGANDiscriminator(resolution=RESOLUTION, channels=1, width=WIDTH, fused=fused)
    found = []
    for prefix, model, x in (
        ("G", generator, torch.randn(BATCH, LATENT)),
        ("D", discriminator, torch.randn(BATCH, 1, RESOLUTION, RESOLUTION)),
    ):
        children = [(f"{prefix}.blocks.{n}", b) for n, b in model.blocks.named_children()]
        if hasattr(model, "head"):
            children.append((f"{prefix}.head", model.head))
        shapes: dict[str, tuple[int, ...]] = {}
        hooks = [
            block.register_forward_pre_hook(_recorder(shapes, name)) for name, block in children
        ]
        with torch.no_grad():
            model(x)
        for hook in hooks:
            hook.remove()
        found += [(name, block.train(), shapes[name]) for name, block in children]
    return found


def channels_last(t: torch.Tensor) -> torch.Tensor:
    """`t` with channels_last's strides even where it is contiguous both ways, as
    Module.to(memory_format=torch.channels_last) lays out a model's weights."""
    if t.dim() != 4:
        return t
    return torch.empty_like(t, memory_format=torch.channels_last).copy_(t)


def block_case(name, fused_block, stock_block, shape, dtype: str, layout: str = "nchw") -> Case:
    names = [n for n, _ in stock_block.named_parameters()]
    assert names == [n for n, _ in fused_block.named_parameters()], name
    arrange = channels_last if layout == "channels_last" else (lambda t: t)

    def make_inputs():
        x = arrange(torch.randn(shape)).requires_grad_()
        params = [arrange(p.detach()).clone().requires_grad_() for p in stock_block.parameters()]
        return (x, *params)

    def provider(block):
        def call(x, *params):
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=dtype == "bf16"):
                return functional_call(block, dict(zip(names, params)), (x,))

        return call

    return Case(
        op="main_job_layers",
        case=f"N={BATCH} w{WIDTH} {name} {list(shape[1:])} {dtype}"
        + (" channels_last" if layout == "channels_last" else ""),
        make_inputs=make_inputs,
        providers={"fastgen": provider(fused_block), "eager": provider(stock_block)},
        modes=("full",),
        dtype=dtype,
    )


def cases(device: str) -> list[Case]:
    if device != "cpu":
        return []
    fused, stock = _blocks(True), _blocks(False)
    # float32 in NCHW, bf16 in both layouts: `fastgen train --memory-format auto` runs bf16
    # models in channels_last on CPU
    settings = (("fp32", "nchw"), ("bf16", "nchw"), ("bf16", "channels_last"))
    return [
        block_case(name, fused_block, stock_block, shape, dtype, layout)
        for dtype, layout in settings
        for (name, fused_block, shape), (_, stock_block, _) in zip(fused, stock)
    ]
