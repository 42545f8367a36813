"""fastgen's layers refuse TorchScript with one message that says what to use instead.

TorchScript cannot handle the layers: ``torch.jit.script`` cannot compile their Python
forward (autocast queries, argument checks, the op wrappers), and ``torch.jit.trace`` records
their ops through Python autograd Functions, so the graph fails its own sanity check, and a
trace made without the check would freeze data-dependent choices. Without this refusal each
case ends in a different internal error. ``torch.export`` handles the registered ops (a file
exported with them needs ``import fastgen`` before ``torch.export.load``), and ``fastgen
export`` writes TorchScript or pt2 generators rebuilt from stock layers.
"""

from __future__ import annotations

import torch


def torchscript_error(layer: torch.nn.Module) -> RuntimeError:
    return RuntimeError(
        f"fastgen.nn.{type(layer).__name__}: TorchScript (torch.jit.script/trace) is not "
        "supported by fastgen's fused layers; use torch.export.export(model, args) (load the "
        "file after `import fastgen`, which registers the ops), or `fastgen export CKPT "
        "--format torchscript|pt2` for a generator rebuilt from stock layers"
    )


class NoTorchScript:
    """Mixin of the fused layers: ``torch.jit.script`` (of the layer or of any model holding
    it) raises ``torchscript_error``; their forwards call ``refuse_tracing`` for
    ``torch.jit.trace``."""

    def __prepare_scriptable__(self):  # torch.jit.script calls it on every submodule first
        raise torchscript_error(self)


def refuse_tracing(layer: torch.nn.Module) -> None:
    if torch.jit.is_tracing():
        raise torchscript_error(layer)
