"""The one backend registry: decides, per call, native kernel or pure-PyTorch reference.

Modes (environment, read once at import; `set_backend` changes it at run time):
  FASTGEN_BACKEND=auto           (default) the native kernel where the extension has one for
                                 the tensor's device and dtype, else the reference with a
                                 one-time warning saying why;
  FASTGEN_BACKEND=reference      always the reference;
  FASTGEN_BACKEND=native         like auto, but a missing kernel is an error;
  FASTGEN_BACKEND=emulated-cuda  ops on CPU tensors run their CUDA kernel through fastgen's
                                 SIMT emulator (csrc/simt) where they have one, and fall back
                                 as they do on CUDA where they have none (CUDA tensors run
                                 their CUDA kernels as in auto);
  FASTGEN_STRICT=1               in auto and emulated-cuda mode, a missing kernel is an error,
                                 and so is a failed CUDA self-check;
  FASTGEN_CUDA_SELFCHECK=0       no first-call self-check of the CUDA kernels (on by default:
                                 fastgen/ops/_selfcheck.py; `registry.selfcheck` at run time).
  FASTGEN_WINOGRAD=0             the CPU convolutions never take fastgen's Winograd kernels
                                 (`set_winograd` changes it at run time).

The mode is mirrored into fastgen._C (it routes the CPU kernels of ops with a CUDA kernel to
the emulated one), so this registry stays the one place that decides.
"""

from __future__ import annotations

import os
import warnings

import torch

from fastgen import _extension

MODES = ("auto", "reference", "native", "emulated-cuda")
DEVICE_KEYS = {"cpu": "CPU", "cuda": "CUDA"}
EMULATED = "emulated-cuda"


class BackendRegistry:
    def __init__(self) -> None:
        mode = os.environ.get("FASTGEN_BACKEND", "auto").strip().lower() or "auto"
        if mode not in MODES:
            raise ValueError(f"FASTGEN_BACKEND must be one of {', '.join(MODES)}, got {mode!r}")
        self.mode = mode
        self.strict = os.environ.get("FASTGEN_STRICT", "0") not in ("", "0", "false", "False")
        self.winograd = os.environ.get("FASTGEN_WINOGRAD", "1").strip() != "0"
        self.selfcheck = os.environ.get("FASTGEN_CUDA_SELFCHECK", "1").strip() not in (
            "0", "false", "False")  # fmt: skip
        # op name -> supported dtypes; op name -> {device type: has kernel}
        self.dtypes: dict[str, frozenset] = {}
        self.kernels: dict[str, dict[str, bool]] = {}
        self._warned: set[tuple] = set()
        self._mirror_mode()

    def register(self, op_name: str, dtypes) -> None:
        """Declares a native op (torch.ops.fastgen.<op_name>) and the dtypes its kernels take."""
        self.dtypes[op_name] = frozenset(dtypes)
        found = {}
        for device, key in DEVICE_KEYS.items():
            found[device] = bool(
                _extension.LOADED
                and torch._C._dispatch_has_kernel_for_dispatch_key(f"fastgen::{op_name}", key)
            )
        found[EMULATED] = op_name in _extension.emulated_ops()
        self.kernels[op_name] = found

    def native_backends(self, op_name: str) -> list[str]:
        return [d for d, ok in self.kernels.get(op_name, {}).items() if ok]

    def why_not_native(self, op_name: str, tensor: torch.Tensor) -> str | None:
        if not _extension.LOADED:
            return f"the fastgen extension is not loaded ({_extension.LOAD_ERROR})"
        device = tensor.device.type
        if self.mode == EMULATED and device == "cpu":
            if not _extension.EMULATED_LOADED:
                return f"the emulated CUDA kernels are not loaded ({_extension.EMULATED_ERROR})"
            if not self.kernels.get(op_name, {}).get(EMULATED, False):
                return f"fastgen::{op_name} has no CUDA kernel to emulate"
        elif not self.kernels.get(op_name, {}).get(device, False):
            return f"the extension has no {device} kernel for fastgen::{op_name}"
        elif device == "cuda":
            problem = _extension.kernel_image_problem(tensor.device.index or 0)
            if problem is not None:
                return problem
        if tensor.dtype not in self.dtypes[op_name]:
            return f"fastgen::{op_name} has no kernel for {tensor.dtype}"
        return None

    def use_native(self, op_name: str, tensor: torch.Tensor) -> bool:
        """True to call torch.ops.fastgen.<op_name>, False to run the reference."""
        if self.mode == "reference":
            return False
        reason = self.why_not_native(op_name, tensor)
        if reason is None:
            if self.selfcheck and (tensor.is_cuda or self.mode == EMULATED):
                # The CUDA kernels' first-call check against the reference (issue 24.6).
                from fastgen.ops import _selfcheck

                return _selfcheck.passes(op_name, tensor, self.strict)
            return True
        if self.mode == "native" or self.strict:
            raise RuntimeError(
                f"fastgen.ops.{op_name}: no native kernel: {reason} (FASTGEN_STRICT/FASTGEN_BACKEND=native)"
            )
        # One warning for an extension that is missing or unusable, or a GPU it has no kernel
        # image for, not one per op.
        broken = not _extension.LOADED
        no_image = tensor.is_cuda and reason.startswith("the CUDA kernels were built")
        if broken:
            key = ("extension",)
        elif no_image:
            key = ("kernel image", tensor.device.index)
        else:
            key = (op_name, tensor.device.type, tensor.dtype, self.mode)
        if key not in self._warned:
            self._warned.add(key)
            if broken and _extension.BUILD_PROBLEM is not None:
                return False  # already said at import, with the rebuild command
            message = f"fastgen.ops.{op_name}: using the PyTorch reference because {reason}"
            if broken:
                message = (f"fastgen: every op runs its PyTorch reference because {reason}; build "
                           f"the extension: {_extension.REBUILD}")  # fmt: skip
            elif no_image:
                message = (
                    f"fastgen: every op on {tensor.device} runs its PyTorch reference: {reason}"
                )
            warnings.warn(message, stacklevel=3)
        return False

    def set_backend(self, mode: str) -> None:
        if mode not in MODES:
            raise ValueError(
                f"fastgen.set_backend: mode must be one of {', '.join(MODES)}, got {mode!r}"
            )
        self.mode = mode
        self._mirror_mode()

    def set_winograd(self, enabled: bool) -> None:
        """Whether CPU convolutions may take fastgen's Winograd kernels (FASTGEN_WINOGRAD)."""
        self.winograd = bool(enabled)
        self._mirror_mode()

    def _mirror_mode(self) -> None:
        """Tells fastgen._C whether CPU calls of ops with a CUDA kernel run it emulated, and
        whether the Winograd path is on."""
        if _extension.LOADED:
            _extension._C._set_emulated_cuda(self.mode == EMULATED)
            _extension._C._set_winograd(self.winograd)


registry = BackendRegistry()
set_backend = registry.set_backend
