"""The one autograd pattern of fastgen's Python ops: each native op registers its fake kernel
and autograd with torch.library (what torch.compile traces), and eager calls that need
gradients go through eager_autograd(op), a plain autograd.Function with the same
setup_context and backward. It skips torch.library's generic Python wrapper, which measured
~0.14 ms per backward on a DCGAN layer on CPU (as much as the kernel). The memory-saving
batch norm uses it; the plain batch norm's, the convolutions' and reparameterize's autograd
are C++ kernels of their own (csrc/batch_norm_leaky_relu/batch_norm_leaky_relu_autograd.cpp,
csrc/conv/conv_autograd.cpp, csrc/reparameterize/), which skip even this layer."""

from __future__ import annotations

import torch


def eager_autograd(op_name: str, setup_context, backward) -> type[torch.autograd.Function]:
    """torch.ops.fastgen.<op_name> with `setup_context` and `backward` as a plain Function."""

    class EagerAutograd(torch.autograd.Function):
        @staticmethod
        def forward(ctx, *inputs):
            # Below autograd: the op's registered (torch.library) autograd kernel would only
            # redispatch here, through Python, since grad mode is off inside forward.
            with torch._C._AutoDispatchBelowAutograd():
                output = getattr(torch.ops.fastgen, op_name).default(*inputs)
            setup_context(ctx, inputs, output)
            return output

        @staticmethod
        def backward(ctx, *grads):
            return backward(ctx, *grads)

    EagerAutograd.__name__ = f"Eager_{op_name}"
    return EagerAutograd
