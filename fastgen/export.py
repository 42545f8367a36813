"""Inference-only generators exported from a training checkpoint.

What is exported: the EMA generator of a DCGAN checkpoint (the raw generator when the run
kept no EMA), or the decoder of a VAE (z -> image in [-1, 1]), rebuilt from stock torch.nn
layers (``fused=False``; the state dicts are identical), in eval mode, with every
BatchNorm2d that follows a ConvTranspose2d folded into it:

    W'[:, o] = W[:, o] * s[o],   b'[o] = (b[o] - mean[o]) * s[o] + beta[o],
    s[o] = gamma[o] / sqrt(running_var[o] + eps)

so an exported file runs with plain PyTorch (no fastgen extension) and does one pass less
over memory per layer. Optionally the weights are cast to bfloat16 or float16; inputs and
outputs stay float32.

Formats:
  torchscript  torch.jit.trace'd module: ``torch.jit.load(path)(z[, labels])``
  pt2          torch.export program with a dynamic batch size:
               ``torch.export.load(path).module()(z[, labels])``
  state_dict   the unfolded stock state dict and the model's constructor arguments:
               ``fastgen.export.load_exported(path)`` rebuilds the folded module.
``load_exported`` reads all three formats.

Every format takes z as [N, latent_dim] or as the pytorch/examples DCGAN tutorial's
[N, latent_dim, 1, 1] (+ labels [N], int64, when conditional) and is frozen for inference:
eval mode, no parameter requires grad (``m(z).numpy()`` works, a call builds no graph).
"""

from __future__ import annotations

import argparse
import os
import warnings
from pathlib import Path

import torch
from torch import nn

FORMATS = ("torchscript", "pt2", "state_dict")
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
STATE_DICT_FORMAT = "fastgen-export"


class InferenceGenerator(nn.Module):
    """z [N, latent_dim] or [N, latent_dim, 1, 1] (+ labels [N] when conditional) -> float32
    images [N, C, R, R] in [-1, 1].

    Frozen for inference: eval mode and no parameter requires grad, so ``m(z).numpy()`` works
    and a call builds no autograd graph (a z that requires grad still gets its gradient).
    The 4-D z is the pytorch/examples DCGAN tutorial's noise shape."""

    def __init__(self, net: nn.Module, *, kind: str, dtype: torch.dtype = torch.float32) -> None:
        super().__init__()
        self.net = net.to(dtype)
        self.kind = kind
        self.dtype = dtype
        self.latent_dim = net.latent_dim
        self.num_classes = getattr(net, "num_classes", 0) if kind == "dcgan" else 0
        self.requires_grad_(False).eval()

    def forward(self, z: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        # Python checks: a traced or exported file keeps only the (unconditional) flatten
        if (
            z.dim() not in (2, 4)
            or z.shape[1] != self.latent_dim
            or any(size != 1 for size in z.shape[2:])
        ):
            raise ValueError(
                f"fastgen.export: z must have shape [N, {self.latent_dim}] or "
                f"[N, {self.latent_dim}, 1, 1], got {list(z.shape)}"
            )
        return self.net.generate(z.flatten(1).to(self.dtype), labels).float()


def fold_batch_norm(module: nn.Module) -> nn.Module:
    """Folds each eval-mode BatchNorm2d that directly follows a ConvTranspose2d (inside an
    nn.Sequential) into the convolution (fastgen.utils.folding), replacing the BatchNorm2d by
    nn.Identity. In place; returns the module."""
    from fastgen.utils.folding import fold_batch_norm_into_conv_transpose

    for seq in module.modules():
        if not isinstance(seq, nn.Sequential):
            continue
        names = list(seq._modules)
        for first, second in zip(names, names[1:]):
            conv, bn = seq._modules[first], seq._modules[second]
            if not (isinstance(conv, nn.ConvTranspose2d) and isinstance(bn, nn.BatchNorm2d)):
                continue
            if bn.running_mean is None:
                continue
            with torch.no_grad():
                weight, bias = fold_batch_norm_into_conv_transpose(
                    conv.weight, conv.bias, running_mean=bn.running_mean,
                    running_var=bn.running_var, eps=bn.eps, bn_weight=bn.weight,
                    bn_bias=bn.bias, groups=conv.groups,
                )  # fmt: skip
                conv.weight.copy_(weight)
                conv.bias = nn.Parameter(bias)
            seq._modules[second] = nn.Identity()
    return module


def _build(kind: str, kwargs: dict, state_dict: dict) -> nn.Module:
    from fastgen.models import ConvVAE, DCGANGenerator

    net = (ConvVAE if kind == "vae" else DCGANGenerator)(**kwargs, fused=False)
    net.load_state_dict(state_dict)
    return net.eval()


def _model_kwargs(kind: str, net: nn.Module) -> dict:
    common = {
        "resolution": net.resolution,
        "channels": net.channels,
        "latent_dim": net.latent_dim,
        "width": net.width,
    }
    if kind == "vae":
        return {**common, "likelihood": net.likelihood, "beta": net.beta}
    return {**common, "num_classes": net.num_classes}


def inference_module(
    kind: str, kwargs: dict, state_dict: dict, dtype=torch.float32
) -> InferenceGenerator:
    """The folded, eval-mode, stock-layer generator for constructor args + state dict."""
    net = fold_batch_norm(_build(kind, kwargs, state_dict))
    return InferenceGenerator(net, kind=kind, dtype=dtype)


def export_checkpoint(
    checkpoint: str | os.PathLike,
    out: str | os.PathLike,
    *,
    format: str = "torchscript",
    dtype: str = "float32",
) -> dict:
    """Exports a checkpoint's generator (see the module docstring); returns a summary dict
    (path, format, kind, dtype, bytes, checkpoint hash). Raises ValueError for a bad argument,
    fastgen.checkpoint_io.CheckpointError for an unusable checkpoint and WriteError for an
    `out` that cannot be written (it is then left as it was)."""
    from fastgen.models.loading import load_model
    from fastgen.utils.atomic import atomic_write

    fn = "fastgen.export.export_checkpoint"
    if format not in FORMATS:
        raise ValueError(f"{fn}: format must be one of {', '.join(FORMATS)}, got {format!r}")
    if dtype not in DTYPES:
        raise ValueError(f"{fn}: dtype must be one of {', '.join(DTYPES)}, got {dtype!r}")
    out = Path(out)
    if out.is_dir():
        raise ValueError(f"{fn}: out must be a file path, got the folder {out}")
    loaded = load_model(checkpoint, device="cpu", fused=False)
    kind, net, step, source_hash = loaded.kind, loaded.model, loaded.step, loaded.hash
    kwargs = _model_kwargs(kind, net)
    state_dict = {k: v.detach().clone() for k, v in net.state_dict().items()}

    if format == "state_dict":
        payload = {
            "format": STATE_DICT_FORMAT,
            "version": 1,
            "kind": kind,
            "kwargs": kwargs,
            "dtype": dtype,
            "state_dict": state_dict,
            "checkpoint": source_hash,
            "step": step,
        }
        atomic_write(out, lambda handle: torch.save(payload, handle), fn=fn)
    else:
        module = inference_module(kind, kwargs, state_dict, DTYPES[dtype])
        example = _example_inputs(module)
        if format == "torchscript":
            # the models' shape checks are Python ifs: tracing records them as constants,
            # which is right for an inference module with a fixed latent size
            with torch.no_grad(), warnings.catch_warnings():
                warnings.simplefilter("ignore", torch.jit.TracerWarning)
                traced = torch.jit.trace(module, example, check_trace=False)
            atomic_write(out, lambda handle: torch.jit.save(traced, handle), fn=fn)
        else:
            batch = torch.export.Dim("batch", min=1)
            shapes = tuple({0: batch} for _ in example)
            program = torch.export.export(module, example, dynamic_shapes=shapes)
            atomic_write(out, lambda handle: torch.export.save(program, handle), fn=fn)
    return {
        "path": str(out),
        "format": format,
        "kind": kind,
        "dtype": dtype,
        "bytes": out.stat().st_size,
        "checkpoint": source_hash,
        "step": step,
        "conditional": bool(kwargs.get("num_classes", 0)),
    }


def _example_inputs(module: InferenceGenerator) -> tuple[torch.Tensor, ...]:
    z = torch.zeros(2, module.latent_dim)
    if module.num_classes:
        return z, torch.zeros(2, dtype=torch.int64)
    return (z,)


def load_exported(path: str | os.PathLike) -> nn.Module:
    """Loads any exported file as a frozen callable module: (z[, labels]) -> images in [-1, 1],
    z [N, latent_dim] or [N, latent_dim, 1, 1]. Frozen: no parameter requires grad and (but
    for pt2 programs, whose graph was captured in eval mode and which refuse .eval()) eval
    mode, files written before exports were frozen included."""
    fn = "fastgen.export.load_exported"
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{fn}: no exported file at {path}")
    return _frozen(_load(path, fn))


def _frozen(module: nn.Module) -> nn.Module:
    for parameter in module.parameters():  # ScriptModules refuse requires_grad_()
        parameter.requires_grad_(False)
    if not isinstance(module, torch.fx.GraphModule):  # pt2: .eval() is NotImplementedError
        module.eval()
    return module


def _load(path: Path, fn: str) -> nn.Module:
    if path.suffix == ".pt2":
        return torch.export.load(path).module()
    try:
        with warnings.catch_warnings():  # torch.load notes when it meets a TorchScript archive
            warnings.simplefilter("ignore")
            payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception:
        payload = None  # not a plain torch.save file: a TorchScript or pt2 archive
    if isinstance(payload, dict):
        if payload.get("format") != STATE_DICT_FORMAT:
            raise ValueError(f"{fn}: {path} is not a fastgen export (no format tag)")
        return inference_module(
            payload["kind"], payload["kwargs"], payload["state_dict"], DTYPES[payload["dtype"]]
        )
    errors = []
    for loader in (lambda: torch.jit.load(str(path), map_location="cpu"),
                   lambda: torch.export.load(path).module()):  # fmt: skip
        try:
            return loader()
        except Exception as err:
            errors.append(str(err).strip().splitlines()[0] if str(err).strip() else repr(err))
    raise ValueError(
        f"{fn}: {path} is not a TorchScript, pt2 or state_dict export ({'; '.join(errors)})"
    )


# --- the command ----------------------------------------------------------------------------


def add_arguments(p: argparse.ArgumentParser) -> None:
    """`fastgen export CKPT --out G.pt [--format torchscript|pt2|state_dict] [--dtype ...]`."""
    from fastgen.options import add_which_checkpoint

    p.add_argument("checkpoint", metavar="CKPT", help="a checkpoint, or a run folder (its newest)")
    p.add_argument("--out", required=True, help="file to write")
    p.add_argument("--format", choices=["torchscript", "pt2", "state_dict"], default="torchscript")
    p.add_argument("--dtype", choices=["float32", "bfloat16", "float16"], default="float32")
    add_which_checkpoint(p)


def run(args: argparse.Namespace) -> int:
    from fastgen.checkpoint_io import checkpoint_file

    summary = export_checkpoint(
        checkpoint_file(args.checkpoint, args.which), args.out, format=args.format, dtype=args.dtype
    )
    print(f"wrote {summary['path']} ({summary['format']}, {summary['kind']}, {summary['dtype']}, "
          f"{summary['bytes'] / 1e6:.2f} MB)")  # fmt: skip
    return 0
