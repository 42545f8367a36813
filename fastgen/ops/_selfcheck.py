"""The first-call self-check of fastgen's CUDA kernels (issue 24.6).

No GPU has run these kernels yet: they are tested only under fastgen's SIMT emulator
(FASTGEN_BACKEND=emulated-cuda). Until results of scripts/gpu_check.sh committed from a real
GPU show an op's CUDA kernels correct (its name then goes into GPU_VERIFIED), the first call of
each such op that takes a CUDA kernel (a CUDA tensor, or a CPU tensor under the emulated-cuda
backend) per device, dtype and layout first runs the kernels on one small fixed problem of
that dtype and layout (forward and backward, a few hundred values) and compares them with
the PyTorch reference computed in float64 from the same inputs. On a mismatch it warns once
(CudaSelfCheckWarning), naming the op, the output and the difference, and the op runs its
reference on that device for the rest of the process; FASTGEN_STRICT=1 makes a mismatch an
error, FASTGEN_CUDA_SELFCHECK=0 turns the check off (registry.selfcheck at run time).

The backend registry (fastgen/_backend.py, use_native) is the one caller: every op's CUDA
route passes through it. The check is skipped while torch.compile traces and while a CUDA
graph is being captured (it needs real tensors and a host synchronisation).
"""

from __future__ import annotations

import threading
import warnings
from collections.abc import Callable

import torch

from fastgen.reference import batch_norm_leaky_relu as bn_reference
from fastgen.reference import conv2d as conv2d_reference
from fastgen.reference import conv_transpose2d as conv_transpose2d_reference
from fastgen.reference import reparameterize as reparameterize_reference

# Ops whose CUDA kernels committed GPU results (scripts/gpu_check.sh on a real GPU) show
# correct: their calls skip the check. None yet.
GPU_VERIFIED: frozenset[str] = frozenset()

# Largest allowed max |kernel - reference| / max(max |reference|, 1) per dtype. float32 allows
# TF32 tensor-core products (10-bit mantissa) when torch's TF32 switches let the kernels
# take them; a wrong index or a dropped term gives errors of order 1.
TOLERANCE = {
    torch.float64: 1e-7,
    torch.float32: 1e-2,
    torch.float16: 2e-2,
    torch.bfloat16: 6e-2,
}


class CudaSelfCheckWarning(RuntimeWarning):
    """A fastgen CUDA kernel disagreed with the PyTorch reference on its first call."""


def layout_of(t: torch.Tensor) -> str:
    """The layout the check keys on and builds its problem in."""
    if (
        t.dim() == 4
        and not t.is_contiguous()
        and t.is_contiguous(memory_format=torch.channels_last)
    ):
        return "channels_last"
    return "contiguous" if t.is_contiguous() else "strided"


def _inputs(shapes: dict, dtype, device, layout: str, seed: int) -> dict:
    """Fixed random inputs (a private generator: the global RNG is not touched). The first
    tensor is the one whose layout the op's call had."""
    generator = torch.Generator().manual_seed(seed)
    out = {}
    for i, (name, shape) in enumerate(shapes.items()):
        t = torch.randn(shape, generator=generator, dtype=torch.float64)
        t = t.to(device=device, dtype=dtype)
        if i == 0 and layout == "channels_last" and t.dim() == 4:
            t = t.contiguous(memory_format=torch.channels_last)
        elif i == 0 and layout == "strided":
            t = t.transpose(0, -1).contiguous().transpose(0, -1)  # same values, other strides
        out[name] = t
    return out


def _f64(inputs: dict) -> dict:
    return {k: v.detach().double().requires_grad_() for k, v in inputs.items()}


def _grads(outputs, leaves: dict, names, grad_outputs):
    got = torch.autograd.grad(outputs, [leaves[n] for n in names], grad_outputs)
    return dict(zip([f"grad_{n}" for n in names], got))


# --- the problems: (native results, reference results) by output name ----------------------


def _conv2d(dtype, device, layout):
    t = _inputs({"x": (2, 3, 5, 5), "weight": (4, 3, 3, 3), "bias": (4,), "grad": (2, 4, 5, 5)},
                dtype, device, layout, 1)  # fmt: skip
    # tanh: an activation whose derivative (taken from the output) is continuous, so that a
    # half-precision output near 0 cannot flip act' as it would relu's (1 or 0).
    geometry = ([1, 1], [1, 1], [1, 1], 1, "tanh", 0.0)
    out = torch.ops.fastgen.conv2d.default(t["x"], t["weight"], t["bias"], *geometry)
    grads = torch.ops.fastgen.conv2d_backward.default(
        t["grad"], t["x"], t["weight"], out, *geometry, [True, True, True]
    )
    native = {"output": out, **dict(zip(("grad_x", "grad_weight", "grad_bias"), grads))}
    leaves = _f64(t)
    ref = conv2d_reference.conv2d(leaves["x"], leaves["weight"], leaves["bias"], *geometry)
    reference = {"output": ref, **_grads(ref, leaves, ("x", "weight", "bias"), leaves["grad"])}
    return native, reference


_TRANSPOSED = ([2, 2], [1, 1], [0, 0], 1, [1, 1])


def _conv_transpose2d(dtype, device, layout):
    t = _inputs({"x": (2, 4, 3, 3), "weight": (4, 3, 4, 4), "bias": (3,), "grad": (2, 3, 6, 6)},
                dtype, device, layout, 2)  # fmt: skip
    geometry = (*_TRANSPOSED, "tanh", 0.0)  # tanh: as in _conv2d
    out = torch.ops.fastgen.conv_transpose2d.default(t["x"], t["weight"], t["bias"], *geometry)
    grads = torch.ops.fastgen.conv_transpose2d_backward.default(
        t["grad"], t["x"], t["weight"], out, *geometry, [True, True, True]
    )
    native = {"output": out, **dict(zip(("grad_x", "grad_weight", "grad_bias"), grads))}
    leaves = _f64(t)
    ref = conv_transpose2d_reference.conv_transpose2d(
        leaves["x"], leaves["weight"], leaves["bias"], *geometry
    )
    reference = {"output": ref, **_grads(ref, leaves, ("x", "weight", "bias"), leaves["grad"])}
    return native, reference


def _conv_transpose2d_with_stats(dtype, device, layout):
    t = _inputs({"x": (2, 4, 3, 3), "weight": (4, 3, 4, 4), "bias": (3,)}, dtype, device, layout, 3)
    out, mean, var = torch.ops.fastgen.conv_transpose2d_with_stats.default(
        t["x"], t["weight"], t["bias"], *_TRANSPOSED
    )
    native = {"output": out, "mean": mean, "var": var}
    x, weight, bias = (v.double() for v in t.values())
    ref = conv_transpose2d_reference.conv_transpose2d(x, weight, bias, *_TRANSPOSED)
    ref_var, ref_mean = torch.var_mean(ref, dim=(0, 2, 3), correction=0)
    return native, {"output": ref, "mean": ref_mean, "var": ref_var}


_BN = {"x": (3, 4, 3, 3), "weight": (4,), "bias": (4,), "grad": (3, 4, 3, 3)}
_BN_EPS, _BN_SLOPE = 1e-5, 0.2


def _bn_native_forward(op, t, training, running=(None, None)):
    return op.default(t["x"], t["weight"], t["bias"], *running, training, _BN_EPS, _BN_SLOPE)


def _batch_norm_leaky_relu(dtype, device, layout):
    t = _inputs(_BN, dtype, device, layout, 4)
    out, mean, var = _bn_native_forward(torch.ops.fastgen.batch_norm_leaky_relu, t, True)
    grads = torch.ops.fastgen.batch_norm_leaky_relu_backward.default(
        t["grad"], t["x"], t["weight"], t["bias"], mean, var, True, _BN_EPS, _BN_SLOPE,
        [True, True, True],
    )  # fmt: skip
    running = (torch.zeros(4, device=device, dtype=mean.dtype) + 0.5,
               torch.ones(4, device=device, dtype=var.dtype) * 2)  # fmt: skip
    eval_out = _bn_native_forward(torch.ops.fastgen.batch_norm_leaky_relu, t, False, running)[0]
    native = {"output": out, "mean": mean, "var": var, "eval output": eval_out,
              **dict(zip(("grad_x", "grad_weight", "grad_bias"), grads))}  # fmt: skip
    leaves = _f64(t)
    ref = bn_reference.batch_norm_leaky_relu(
        leaves["x"], None, None, leaves["weight"], leaves["bias"], True, 0.1, _BN_EPS, _BN_SLOPE
    )
    ref_mean, ref_var = bn_reference.batch_statistics(leaves["x"].detach())
    ref_eval = bn_reference.batch_norm_leaky_relu(
        leaves["x"].detach(), running[0].double(), running[1].double(), leaves["weight"].detach(),
        leaves["bias"].detach(), False, 0.1, _BN_EPS, _BN_SLOPE,
    )  # fmt: skip
    reference = {"output": ref, "mean": ref_mean, "var": ref_var, "eval output": ref_eval,
                 **_grads(ref, leaves, ("x", "weight", "bias"), leaves["grad"])}  # fmt: skip
    return native, reference


def _batch_norm_leaky_relu_memory_saving(dtype, device, layout):
    t = _inputs(_BN, dtype, device, layout, 5)
    out, mean, var = _bn_native_forward(
        torch.ops.fastgen.batch_norm_leaky_relu_memory_saving, t, True
    )
    grads = torch.ops.fastgen.batch_norm_leaky_relu_backward_from_output.default(
        t["grad"], out, t["weight"], t["bias"], var, True, _BN_EPS, _BN_SLOPE, [True, True, True]
    )
    native = {"output": out, "mean": mean, "var": var,
              **dict(zip(("grad_x", "grad_weight", "grad_bias"), grads))}  # fmt: skip
    leaves = _f64(t)
    ref = bn_reference.batch_norm_leaky_relu(
        leaves["x"], None, None, leaves["weight"], leaves["bias"], True, 0.1, _BN_EPS, _BN_SLOPE
    )
    ref_mean, ref_var = bn_reference.batch_statistics(leaves["x"].detach())
    reference = {"output": ref, "mean": ref_mean, "var": ref_var,
                 **_grads(ref, leaves, ("x", "weight", "bias"), leaves["grad"])}  # fmt: skip
    return native, reference


def _reparameterize(dtype, device, layout):
    t = _inputs({"mu": (3, 5), "logvar": (3, 5), "eps": (3, 5), "grad_z": (3, 5), "grad_kl": (3,)},
                dtype, device, layout, 6)  # fmt: skip
    no_key = torch.zeros(2, dtype=torch.int64, device=device)
    z, kl, _ = torch.ops.fastgen.reparameterize.default(t["mu"], t["logvar"], t["eps"], None, True)
    grad_mu, grad_logvar = torch.ops.fastgen.reparameterize_backward.default(
        t["grad_z"], t["grad_kl"], t["mu"], t["logvar"], t["eps"], no_key
    )
    # The in-kernel noise (Philox + Box-Muller) for a fixed key.
    key = torch.tensor([12345, 64], dtype=torch.int64, device=device)
    noise = torch.ops.fastgen.reparameterize.default(
        torch.zeros_like(t["mu"]), torch.zeros_like(t["mu"]), None, key, False
    )[0]
    native = {"z": z, "kl": kl, "grad_mu": grad_mu, "grad_logvar": grad_logvar, "noise": noise}
    leaves = _f64(t)
    ref_z, ref_kl = reparameterize_reference.reparameterize_kl(
        leaves["mu"], leaves["logvar"], leaves["eps"]
    )
    grads = torch.autograd.grad(
        (ref_z, ref_kl), (leaves["mu"], leaves["logvar"]), (leaves["grad_z"], leaves["grad_kl"])
    )
    ref_noise = reparameterize_reference.philox_normal((3, 5), 12345, 64, device)
    reference = {"z": ref_z, "kl": ref_kl, "grad_mu": grads[0], "grad_logvar": grads[1],
                 "noise": ref_noise.to(dtype).double()}  # fmt: skip
    return native, reference


# registry op name -> the problem that runs its CUDA kernels
PROBLEMS: dict[str, Callable] = {
    "conv2d": _conv2d,
    "conv_transpose2d": _conv_transpose2d,
    "conv_transpose2d_with_stats": _conv_transpose2d_with_stats,
    "batch_norm_leaky_relu": _batch_norm_leaky_relu,
    "batch_norm_leaky_relu_memory_saving": _batch_norm_leaky_relu_memory_saving,
    "batch_norm_leaky_relu_backward_from_output": _batch_norm_leaky_relu_memory_saving,
    "reparameterize": _reparameterize,
}


def compare(op: str, dtype: torch.dtype, device, layout: str) -> str | None:
    """Runs op's problem; None when every output is within TOLERANCE[dtype], else a sentence
    naming the first output that is not and by how much."""
    device = torch.device(device)
    # The problem runs as written whatever the caller is in: no autocast (it would run the
    # float64 reference in bfloat16), gradients on, no inference mode.
    with (
        torch.inference_mode(False),
        torch.enable_grad(),
        torch.autocast(device.type, enabled=False),
    ):
        native, reference = PROBLEMS[op](dtype, device, layout)
    tolerance = TOLERANCE[dtype]
    for name, expected in reference.items():
        actual = native[name].detach().double()
        expected = expected.detach().double()
        if actual.shape != expected.shape:
            return f"{name} has shape {tuple(actual.shape)}, expected {tuple(expected.shape)}"
        if not bool(actual.isfinite().all()):
            count = int((~actual.isfinite()).sum())
            return f"{name} has {count} non-finite values where the reference has none"
        scale = max(float(expected.abs().max()) if expected.numel() else 0.0, 1.0)
        error = float((actual - expected).abs().max()) if expected.numel() else 0.0
        if error > tolerance * scale:
            return (f"{name} differs by up to {error:.3g} (allowed {tolerance * scale:.3g}: "
                    f"{tolerance:g} of max(max |reference|, 1) = {scale:.3g})")  # fmt: skip
    return None


# (op, device, dtype, layout) -> passed; (op, device) that failed: reference for the process
_checked: dict[tuple, bool] = {}
_failed: set[tuple] = set()
_lock = threading.RLock()
_running = threading.local()


def reset() -> None:
    """Forgets every check and reroute (tests)."""
    with _lock:
        _checked.clear()
        _failed.clear()


def passes(op: str, tensor: torch.Tensor, strict: bool) -> bool:
    """Whether op's CUDA kernels may serve this call: True once its check for the tensor's
    device, dtype and layout passed; False (after one warning) when a check of op on this
    device failed; raises RuntimeError on a mismatch when `strict`."""
    if op in GPU_VERIFIED or op not in PROBLEMS or getattr(_running, "active", False):
        return True
    if torch.compiler.is_compiling():
        return True
    if tensor.is_cuda and torch.cuda.is_current_stream_capturing():
        return True
    device = tensor.device if tensor.is_cuda else torch.device("cpu")
    where = str(device) if tensor.is_cuda else "the emulated CUDA backend (cpu)"
    layout = layout_of(tensor)
    key = (op, str(device), tensor.dtype, layout)
    with _lock:
        if (op, str(device)) in _failed:
            return False
        if key in _checked:
            return _checked[key]
        _running.active = True
        try:
            problem = compare(op, tensor.dtype, device, layout)
        except Exception as exc:  # a kernel that raises on a valid problem is wrong too
            problem = f"its kernel raised {type(exc).__name__}: {exc}"
        finally:
            _running.active = False
        _checked[key] = problem is None
        if problem is None:
            return True
        _failed.add((op, str(device)))
    message = (
        f"fastgen.ops.{op}: the CUDA kernel's first-call self-check on {where} "
        f"({tensor.dtype}, {layout}) disagrees with the PyTorch reference: {problem}"
    )
    if strict:
        raise RuntimeError(f"{message} (FASTGEN_STRICT=1)")
    warnings.warn(
        f"{message}; fastgen.ops.{op} runs the PyTorch reference on {where} for the rest of "
        "this process (FASTGEN_CUDA_SELFCHECK=0 turns the check off, FASTGEN_STRICT=1 makes "
        "this an error)",
        CudaSelfCheckWarning,
        stacklevel=4,
    )
    return False
