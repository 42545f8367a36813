"""The dense-matmul rate of the device, per dtype, measured in the same run as the
convolutions so their TFLOP/s can be read as a fraction of it (harness.add_matmul_fractions).

CUDA only: torch.mm of two 8192 x 8192 matrices in float32 (TF32 exactly when cuDNN's
convolutions may use it, torch.backends.cudnn.allow_tf32, so the fraction compares like with
like) and bfloat16. On CPU, benchmarks/bench_cpu_kernels.py measures the FMA peak instead.
"""

from __future__ import annotations

import torch

from benchmarks.harness import MATMUL_OP, Case

SIZE = 8192


def matmul_case(dtype: torch.dtype, name: str) -> Case:
    def make_inputs():
        generator = torch.Generator(device="cuda").manual_seed(0)
        a = torch.randn(SIZE, SIZE, device="cuda", generator=generator).to(dtype)
        b = torch.randn(SIZE, SIZE, device="cuda", generator=generator).to(dtype)
        return a, b

    def mm(a, b):
        saved = torch.backends.cuda.matmul.allow_tf32
        torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32
        try:
            return torch.mm(a, b)
        finally:
            torch.backends.cuda.matmul.allow_tf32 = saved

    return Case(
        op=MATMUL_OP,
        case=f"mm {SIZE}x{SIZE}x{SIZE} {name}",
        make_inputs=make_inputs,
        providers={"torch.mm": mm},  # no "eager": nothing to compile or compare against
        modes=("forward",),
        flops={"forward": 2 * SIZE**3},
        dtype=name,
    )


def cases(device: str) -> list[Case]:
    if device != "cuda":
        return []
    return [matmul_case(torch.float32, "fp32"), matmul_case(torch.bfloat16, "bf16")]
