"""fastgen.ops.batch_norm_leaky_relu's native side: the op names, the fake kernels, and the
autograd of the memory-saving op and of the batch_stats= form (registered for the first, eager
Functions the public op calls for both: fastgen/ops/_autograd.py's pattern, with their
differentiable double backward). The plain op's autograd is a C++ kernel
(csrc/batch_norm_leaky_relu/batch_norm_leaky_relu_autograd.cpp)."""

from __future__ import annotations

import torch

from fastgen import _extension
from fastgen._backend import registry
from fastgen.ops._autograd import eager_autograd
from fastgen.ops._checks import FLOAT_DTYPES
from fastgen.reference import batch_norm_leaky_relu as reference

NAME = "batch_norm_leaky_relu"
MEMORY_SAVING = "batch_norm_leaky_relu_memory_saving"
FROM_OUTPUT = "batch_norm_leaky_relu_backward_from_output"
FN = "fastgen.ops.batch_norm_leaky_relu"
HALF_DTYPES = (torch.float16, torch.bfloat16)

registry.register(NAME, FLOAT_DTYPES)
registry.register(MEMORY_SAVING, FLOAT_DTYPES)
registry.register(FROM_OUTPUT, FLOAT_DTYPES)


# --- fake kernels and autograd of the native ops ---------------------------------------------


def _memory_format(x: torch.Tensor) -> torch.memory_format:
    """The layout the native kernels produce (mirrors choose_layout in the C++ header)."""
    if x.is_contiguous():
        return torch.contiguous_format
    if x.is_contiguous(memory_format=torch.channels_last):
        return torch.channels_last
    return torch.contiguous_format


def _acc_dtype(dtype: torch.dtype) -> torch.dtype:
    return torch.float32 if dtype in HALF_DTYPES else dtype


def _fake_forward(input, weight, bias, running_mean, running_var, training, eps, negative_slope):
    out = torch.empty_like(input, memory_format=_memory_format(input))
    stats = (input.shape[1],)
    acc = _acc_dtype(input.dtype)
    return out, input.new_empty(stats, dtype=acc), input.new_empty(stats, dtype=acc)


def _fake_backward(
    grad_out, input, weight, bias, mean, var, training, eps, negative_slope, output_mask
):
    stats = (input.shape[1],)
    grad_input = (
        torch.empty_like(input, memory_format=_memory_format(input))
        if output_mask[0]
        else input.new_empty((0,))
    )
    grad_weight = (
        weight.new_empty(stats) if output_mask[1] and weight is not None else input.new_empty((0,))
    )
    grad_bias = (
        bias.new_empty(stats) if output_mask[2] and bias is not None else input.new_empty((0,))
    )
    return grad_input, grad_weight, grad_bias


def _backward(ctx, grad_out, _grad_mean, _grad_var):
    """The training or eval backward of a Function that saved (input, weight, bias, mean, var)
    and ctx.training/eps/negative_slope: _EagerWithBatchStats's. (The op's own autograd is the
    same in C++: csrc/batch_norm_leaky_relu/batch_norm_leaky_relu_autograd.cpp.)"""
    input, weight, bias, mean, var = ctx.saved_tensors
    needs = ctx.needs_input_grad
    mask = [needs[0], needs[1] and weight is not None, needs[2] and bias is not None]
    if torch.is_grad_enabled():
        grads = _differentiable_backward(grad_out, input, weight, bias, mean, var, ctx)
    else:
        grads = torch.ops.fastgen.batch_norm_leaky_relu_backward(
            grad_out,
            input,
            weight,
            bias,
            mean,
            var,
            ctx.training,
            ctx.eps,
            ctx.negative_slope,
            mask,
        )
    grad_input, grad_weight, grad_bias = (g if m else None for g, m in zip(grads, mask))
    return grad_input, grad_weight, grad_bias, None, None, None, None, None


def _differentiable_backward(grad_out, input, weight, bias, mean, var, ctx):
    """create_graph=True (double backward): the closed-form backward in torch ops, with the
    batch statistics recomputed from x so their dependence on x is differentiated too."""
    acc = _acc_dtype(input.dtype)
    x = input.to(acc)
    if ctx.training:
        mean, var = reference.batch_statistics(x)
    w = None if weight is None else weight.to(acc)
    b = None if bias is None else bias.to(acc)
    grad_x, grad_w, grad_b = reference.batch_norm_leaky_relu_backward(
        grad_out.to(acc), x, w, b, mean, var, ctx.training, ctx.eps, ctx.negative_slope
    )
    return (
        grad_x.to(input.dtype),
        grad_w if weight is None else grad_w.to(weight.dtype),
        grad_b if bias is None else grad_b.to(bias.dtype),
    )


def _setup_context_memory_saving(ctx, inputs, output) -> None:
    _input, weight, bias, _running_mean, _running_var, training, eps, negative_slope = inputs
    out, mean, var = output
    ctx.save_for_backward(out, weight, bias, var)  # not the input: that is the saving
    ctx.training, ctx.eps, ctx.negative_slope = training, eps, negative_slope
    ctx.mark_non_differentiable(mean, var)


def _backward_memory_saving(ctx, grad_out, _grad_mean, _grad_var):
    out, weight, bias, var = ctx.saved_tensors
    if torch.is_grad_enabled():
        raise NotImplementedError(
            f"{FN}: double backward (create_graph=True) is not supported with memory_saving=True; "
            "use memory_saving=False for gradient penalties"
        )
    needs = ctx.needs_input_grad
    mask = [needs[0], needs[1] and weight is not None, needs[2] and bias is not None]
    args = (ctx.training, ctx.eps, ctx.negative_slope)
    if registry.why_not_native(FROM_OUTPUT, out) is None and registry.mode != "reference":
        grads = torch.ops.fastgen.batch_norm_leaky_relu_backward_from_output(
            grad_out, out, weight, bias, var, *args, mask
        )
    else:  # e.g. a device without this kernel: the same formula in torch ops
        acc = _acc_dtype(out.dtype)
        grads = reference.batch_norm_leaky_relu_backward_from_output(
            grad_out.to(acc),
            out.to(acc),
            None if weight is None else weight.to(acc),
            None if bias is None else bias.to(acc),
            var,
            *args,
        )
        grads = (
            grads[0].to(out.dtype),
            grads[1] if weight is None else grads[1].to(weight.dtype),
            grads[2] if bias is None else grads[2].to(bias.dtype),
        )
    grad_input, grad_weight, grad_bias = (g if m else None for g, m in zip(grads, mask))
    return grad_input, grad_weight, grad_bias, None, None, None, None, None


def _fake_backward_from_output(
    grad_out, output, weight, bias, var, training, eps, negative_slope, output_mask
):
    return _fake_backward(
        grad_out, output, weight, bias, var, var, training, eps, negative_slope, output_mask
    )


class _EagerWithBatchStats(torch.autograd.Function):
    """Training batch norm + activation of x whose batch statistics are given: the op's
    normalising (training=False) forward with them, and the training backward, which
    differentiates through the statistics (so mean and var take no gradient here)."""

    @staticmethod
    def forward(ctx, x, weight, bias, mean, var, eps, negative_slope):
        out, _, _ = torch.ops.fastgen.batch_norm_leaky_relu.default(
            x, weight, bias, mean, var, False, eps, negative_slope
        )
        ctx.save_for_backward(x, weight, bias, mean, var)
        ctx.training, ctx.eps, ctx.negative_slope = True, eps, negative_slope
        return out

    @staticmethod
    def backward(ctx, grad_out):
        grad_input, grad_weight, grad_bias = _backward(ctx, grad_out, None, None)[:3]
        return grad_input, grad_weight, grad_bias, None, None, None, None


_EagerMemorySaving = eager_autograd(
    MEMORY_SAVING, _setup_context_memory_saving, _backward_memory_saving
)

if _extension.LOADED:
    torch.library.register_fake(f"fastgen::{NAME}")(_fake_forward)
    torch.library.register_fake(f"fastgen::{NAME}_backward")(_fake_backward)
    torch.library.register_fake(f"fastgen::{MEMORY_SAVING}")(_fake_forward)
    torch.library.register_fake(f"fastgen::{FROM_OUTPUT}")(_fake_backward_from_output)
    torch.library.register_autograd(
        f"fastgen::{MEMORY_SAVING}",
        _backward_memory_saving,
        setup_context=_setup_context_memory_saving,
    )
