"""fastgen.info(): what is built, what loaded, which native backends each op has."""

from __future__ import annotations

import argparse
import importlib
import json
import platform

import torch

from fastgen import _extension
from fastgen._backend import registry
from fastgen.utils import heap

importlib.import_module("fastgen.ops")  # importing the ops registers them with the registry


def info() -> dict:
    """Version, torch/CUDA versions, extension load status and per-op native backends."""
    import fastgen

    cfg = _extension.build_config()
    return {
        "fastgen": fastgen.__version__,
        "python": platform.python_version(),
        "torch": torch.__version__,
        "torch_cuda": torch.version.cuda,
        "cuda_available": torch.cuda.is_available(),
        "device": torch.cuda.get_device_name(0) if torch.cuda.is_available() else "cpu",
        "extension_loaded": _extension.LOADED,
        "extension_error": _extension.LOAD_ERROR,
        "built_with_cuda": cfg.get("with_cuda", False),
        "cuda_archs": cfg.get("cuda_archs", []),
        **_gpu(cfg),
        "built_against_torch": cfg.get("build_torch_version"),
        "compiler": cfg.get("compiler"),
        "nvcc": cfg.get("nvcc_version"),
        "cpu_capabilities_built": cfg.get("cpu_capabilities_built", []),
        # the copy of the CPU kernels this CPU runs (FASTGEN_CPU_CAPABILITY forces one)
        **_cpu(),
        # the CUDA kernels compiled against the SIMT emulator (FASTGEN_BACKEND=emulated-cuda)
        "emulated_cuda_loaded": _extension.EMULATED_LOADED,
        "emulated_cuda_error": _extension.EMULATED_ERROR,
        "backend_mode": registry.mode,
        # the stride-2 4x4 (transposed) convolutions' Winograd path (FASTGEN_WINOGRAD=0: off)
        "winograd": registry.winograd,
        "threads": torch.get_num_threads(),
        # what `fastgen train` does with freed memory (fastgen/utils/heap.py; FASTGEN_HEAP)
        "heap": _heap(),
        "ops": {op: registry.native_backends(op) for op in sorted(registry.kernels)},
    }


def _gpu(cfg: dict) -> dict:
    """The GPU's compute capability and whether the built architectures include it."""
    if not torch.cuda.is_available():
        return {"gpu_capability": None, "gpu_has_kernel_image": None}
    major, minor = torch.cuda.get_device_capability(0)
    has_image = None
    if cfg.get("with_cuda"):
        has_image = _extension.has_kernel_image((major, minor), cfg.get("cuda_archs", []))
    return {"gpu_capability": f"sm_{major}{minor}", "gpu_has_kernel_image": has_image}


# The CPU kernels compiled once per capability (csrc/**/*_kernels.cpp), for cpu_kernel_paths.
_CPU_KERNELS = (
    "winograd_transforms", "batch_norm_leaky_relu", "reparameterize", "conv_epilogues",
    "few_channels",
)  # fmt: skip


def _cpu_kernel_paths(active: str) -> dict:
    """Which copy each CPU kernel runs: the active capability's, and for the Winograd GEMMs
    its micro-kernel (the baseline copy has none and calls at::mm)."""
    gemm = "at::mm" if active == "baseline" else f"{active} micro-kernel"
    return {"winograd_gemm": gemm, **{name: active for name in _CPU_KERNELS}}


def _conv_cpu_policy() -> str:
    try:
        return _extension._C._conv_cpu_policy()
    except ValueError as exc:  # a bad FASTGEN_CONV_CPU / FASTGEN_AUTOTUNE
        return f"error: {exc}"


def _cpu() -> dict:
    if not _extension.LOADED:
        return {
            "cpu_capability": None,
            "cpu_capability_supported": None,
            "cpu_features": [],
            "cpu_kernel_paths": {},
            "avx512_gemm": None,
            "conv_cpu_selection": None,
            "winograd_bf16_products": None,
        }
    try:
        active, supported, features = _extension._C._cpu_capability()
    except ValueError as exc:  # a bad FASTGEN_CPU_CAPABILITY: say so instead of failing
        active, supported, features = f"error: {exc}", None, []
    return {
        "cpu_capability": active,
        "cpu_capability_supported": supported,
        "cpu_features": features,
        "cpu_kernel_paths": _cpu_kernel_paths(active) if supported else {},
        # the convolution GEMM panels: 16-wide AVX-512 ones only on the avx512 copy
        "avx512_gemm": active == "avx512",
        # fastgen's CPU convolutions or aten's, per shape (FASTGEN_AUTOTUNE, FASTGEN_CONV_CPU)
        "conv_cpu_selection": _conv_cpu_policy(),
        # bf16 operands multiplied in bf16 by the Winograd GEMMs (opt-in: FASTGEN_WINOGRAD_BF16)
        "winograd_bf16_products": _winograd_bf16(),
    }


def _heap() -> str:
    try:
        return heap.setting("fastgen info")
    except ValueError as exc:  # a bad FASTGEN_HEAP: say so instead of failing
        return f"error: {exc}"


def _winograd_bf16() -> str:
    try:
        on = _extension._C._winograd_bf16_products()
    except ValueError as exc:  # a bad FASTGEN_WINOGRAD_BF16
        return f"error: {exc}"
    return "on" if on else "off (opt-in: FASTGEN_WINOGRAD_BF16=1, on CPUs with avx512_bf16)"


def format_info(data: dict | None = None) -> str:
    """info() as aligned text: one "key value" line each, then one line per op.

    Both columns widen to the longest key / op name, so a long op name never pushes its
    backends out of line (the key column is at least 22 wide, as `fastgen info` always was).
    """
    data = info() if data is None else data
    ops = data.get("ops", {})
    key_width = max([22] + [len(k) + 1 for k in data if k != "ops"])
    op_width = max([32] + [len(op) + 1 for op in ops])
    lines = []
    for key, value in data.items():
        if key == "ops":
            lines.append("native backends:")
            for op, backends in value.items():
                shown = ", ".join(backends) if backends else "none (reference only)"
                lines.append(f"  {op:{op_width}s} {shown}")
        else:
            lines.append(f"{key:{key_width}s} {value}")
    return "\n".join(lines)


# --- the command ----------------------------------------------------------------------------


def add_arguments(p: argparse.ArgumentParser) -> None:
    """`fastgen info [--json]`."""
    p.add_argument("--json", action="store_true", help="print it as JSON")


def run(args: argparse.Namespace) -> int:
    print(json.dumps(info(), indent=2) if args.json else format_info())
    return 0
