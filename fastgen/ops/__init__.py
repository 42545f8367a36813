"""Fused ops. Each is a torch op (torch.ops.fastgen.*) with a fake kernel and autograd
registered here, and a pure-PyTorch reference in fastgen.reference used as fallback."""

from fastgen.ops._conv import conv_cpu_choices, prefer_conv_cpu_choices
from fastgen.ops.batch_norm_leaky_relu import batch_norm_leaky_relu
from fastgen.ops.conv2d import conv2d
from fastgen.ops.conv_transpose2d import conv_transpose2d, conv_transpose2d_with_stats
from fastgen.ops.reparameterize import reparameterize, reparameterize_kl

__all__ = [
    "batch_norm_leaky_relu",
    "conv2d",
    "conv_cpu_choices",
    "conv_transpose2d",
    "conv_transpose2d_with_stats",
    "prefer_conv_cpu_choices",
    "reparameterize",
    "reparameterize_kl",
]
