"""The one device-name rule of every command and trainer: "auto" (or empty) is the GPU when
torch sees one, else the CPU; any other name is torch's, and a CUDA device on a machine or
torch build without CUDA is a ValueError (an ArgumentError) naming the caller and the argument
`device` (one line under the CLI, naming the command's --device)."""

from __future__ import annotations

import torch

from fastgen.utils.errors import ArgumentError


def resolve_device(name: str | None, fn: str) -> torch.device:
    if name in (None, "", "auto"):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except (RuntimeError, TypeError) as exc:
        raise ArgumentError(fn, "device", f"must be auto, cpu or cuda[:N], got {name!r}") from exc
    if device.type == "cuda" and not torch.cuda.is_available():
        why = "this torch build has no CUDA" if torch.version.cuda is None else "no GPU is visible"
        raise ArgumentError(fn, "device", f"{name!r} requested but {why}")
    return device
