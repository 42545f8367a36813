"""The registered ops (torch.ops.fastgen.*) check their arguments in C++, as aten's ops do.

torch.compile and users call them directly, past the Python checks: a mismatched shape,
dtype or device must be a Python exception naming the op and the argument, never a crash or
an out-of-bounds read. The calls run in a child process, so a crash is reported as one
instead of taking the test run down; each runs on the CPU kernels and on the emulated CUDA
kernels.
"""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
from conftest import HAS_EMULATED

R = "torch.randn"
# (name, the call, the exception type, a pattern of its message)
CASES = [
    ("mu/logvar shapes (8192^2 vs 1x1)",
     f"torch.ops.fastgen.reparameterize({R}(8192, 8192), {R}(1, 1), None, None, True)",
     "ValueError", r"fastgen::reparameterize: logvar must have shape \[8192, 8192\]"),
    ("logvar [2, 2] for mu [64, 64]",
     f"torch.ops.fastgen.reparameterize({R}(64, 64), {R}(2, 2), None, None, True)",
     "ValueError", r"fastgen::reparameterize: logvar must have shape"),
    ("eps of another dtype",
     f"torch.ops.fastgen.reparameterize({R}(4, 5), {R}(4, 5), {R}(4, 5).double(), None, False)",
     "TypeError", r"fastgen::reparameterize: eps has dtype Double but mu has dtype Float"),
    ("rng_state of 3 values",
     f"torch.ops.fastgen.reparameterize({R}(4, 5), {R}(4, 5), None, torch.tensor([1, 2, 3]), False)",
     "ValueError", r"rng_state must hold 2 values"),
    ("rng_state of floats",
     f"torch.ops.fastgen.reparameterize({R}(4, 5), {R}(4, 5), None, torch.tensor([1.0, 2.0]), False)",
     "TypeError", r"rng_state must be int64"),
    ("0-d mu", "torch.ops.fastgen.reparameterize(torch.tensor(1.0), torch.tensor(1.0), None, None, False)",
     "ValueError", r"mu must have at least 1 dim"),
    ("backward grad_kl of the wrong length",
     f"torch.ops.fastgen.reparameterize_backward({R}(4, 5), {R}(7), {R}(4, 5), {R}(4, 5), None, torch.tensor([1, 4]))",
     "ValueError", r"grad_kl must be empty or of shape \[4\]"),
    ("backward grad_z shape",
     f"torch.ops.fastgen.reparameterize_backward({R}(4, 6), {R}(0), {R}(4, 5), {R}(4, 5), None, torch.tensor([1, 4]))",
     "ValueError", r"reparameterize_backward: grad_z must have shape \[4, 5\]"),
    ("conv2d: 8M output channels, a bias of 1",
     f"torch.ops.fastgen.conv2d({R}(1, 1, 1, 1), {R}(8_000_000, 1, 1, 1), {R}(1), [1, 1], [0, 0], [1, 1], 1, 'relu', 0.0)",
     "ValueError", r"fastgen::conv2d: bias must have shape \[8000000\], got \[1\]"),
    ("conv2d: channels",
     f"torch.ops.fastgen.conv2d({R}(1, 3, 5, 5), {R}(4, 2, 3, 3), None, [1, 1], [0, 0], [1, 1], 1, 'relu', 0.0)",
     "ValueError", r"fastgen::conv2d: weight has 2 input channels per group but input has 3"),
    ("conv2d: kernel larger than the input",
     f"torch.ops.fastgen.conv2d({R}(1, 3, 2, 2), {R}(4, 3, 3, 3), None, [1, 1], [0, 0], [1, 1], 1, 'relu', 0.0)",
     "ValueError", r"fastgen::conv2d: output size \(0, 0\) is below 1"),
    ("conv2d: stride 0",
     f"torch.ops.fastgen.conv2d({R}(1, 3, 5, 5), {R}(4, 3, 3, 3), None, [0, 1], [0, 0], [1, 1], 1, 'relu', 0.0)",
     "ValueError", r"fastgen::conv2d: stride must be >= 1"),
    ("conv2d: weight on another dtype",
     f"torch.ops.fastgen.conv2d({R}(1, 3, 5, 5), {R}(4, 3, 3, 3).double(), None, [1, 1], [0, 0], [1, 1], 1, 'relu', 0.0)",
     "TypeError", r"fastgen::conv2d: weight has dtype Double but input has dtype Float"),
    ("conv2d_backward: grad_out shape",
     f"torch.ops.fastgen.conv2d_backward({R}(1, 4, 2, 2), {R}(1, 3, 5, 5), {R}(4, 3, 3, 3), {R}(1, 4, 3, 3), [1, 1], [0, 0], [1, 1], 1, 'relu', 0.0, [True, True, True])",
     "ValueError", r"conv2d_backward: grad_out must have shape \[1, 4, 3, 3\]"),
    ("conv2d_backward: saved output shape",
     f"torch.ops.fastgen.conv2d_backward({R}(1, 4, 3, 3), {R}(1, 3, 5, 5), {R}(4, 3, 3, 3), {R}(1), [1, 1], [0, 0], [1, 1], 1, 'relu', 0.0, [True, True, True])",
     "ValueError", r"conv2d_backward: output must have shape \[1, 4, 3, 3\]"),
    ("conv_transpose2d: a bias of 1 for 300 channels",
     f"torch.ops.fastgen.conv_transpose2d({R}(1, 3, 4, 4), {R}(3, 300, 1, 1), {R}(1), [1, 1], [0, 0], [0, 0], 1, [1, 1], 'relu', 0.0)",
     "ValueError", r"fastgen::conv_transpose2d: bias must have shape \[300\], got \[1\]"),
    ("conv_transpose2d: output_padding >= stride",
     f"torch.ops.fastgen.conv_transpose2d({R}(1, 3, 4, 4), {R}(3, 2, 3, 3), None, [1, 1], [0, 0], [1, 1], 1, [1, 1], 'relu', 0.0)",
     "ValueError", r"output_padding must be smaller than stride or dilation"),
    ("conv_transpose2d: 3-D weight",
     f"torch.ops.fastgen.conv_transpose2d({R}(1, 3, 4, 4), {R}(3, 2, 3), None, [1, 1], [0, 0], [0, 0], 1, [1, 1], 'relu', 0.0)",
     "ValueError", r"fastgen::conv_transpose2d: weight must be 4-D"),
    ("conv_transpose2d_backward: grad_out shape",
     f"torch.ops.fastgen.conv_transpose2d_backward({R}(1, 2, 5, 5), {R}(1, 3, 4, 4), {R}(3, 2, 3, 3), {R}(1, 2, 6, 6), [1, 1], [0, 0], [0, 0], 1, [1, 1], 'relu', 0.0, [True, True, True])",
     "ValueError", r"grad_out must have shape \[1, 2, 6, 6\]"),
    ("conv_transpose2d_with_stats: an empty batch",
     f"torch.ops.fastgen.conv_transpose2d_with_stats({R}(0, 3, 4, 4), {R}(3, 2, 3, 3), None, [1, 1], [0, 0], [0, 0], 1, [1, 1])",
     "ValueError", r"fastgen::conv_transpose2d_with_stats: batch statistics need at least one value"),
    ("conv_transpose2d_with_stats: a bias of 5 for 2 channels",
     f"torch.ops.fastgen.conv_transpose2d_with_stats({R}(1, 3, 4, 4), {R}(3, 2, 3, 3), {R}(5), [2, 2], [1, 1], [1, 1], 1, [1, 1])",
     "ValueError", r"fastgen::conv_transpose2d_with_stats: bias must have shape \[2\], got \[5\]"),
    ("conv2d: weight of another dtype",
     f"torch.ops.fastgen.conv2d({R}(1, 3, 8, 8), {R}(2, 3, 3, 3).double(), None, [1, 1], [0, 0], [1, 1], 1, 'relu', 0.0)",
     "TypeError", r"fastgen::conv2d: weight has dtype Double but input has dtype Float"),
    ("batch norm: weight of 5 for 3 channels",
     f"torch.ops.fastgen.batch_norm_leaky_relu({R}(2, 3, 4, 4), {R}(5), None, None, None, True, 1e-5, 0.1)",
     "ValueError", r"fastgen::batch_norm_leaky_relu: weight must have shape \[3\], got \[5\]"),
    ("batch norm: 2-D input",
     f"torch.ops.fastgen.batch_norm_leaky_relu({R}(2, 3), None, None, None, None, True, 1e-5, 0.1)",
     "ValueError", r"batch_norm_leaky_relu: input must be 4-D"),
    ("batch norm: eval without running stats",
     f"torch.ops.fastgen.batch_norm_leaky_relu({R}(2, 3, 4, 4), None, None, None, None, False, 1e-5, 0.1)",
     "ValueError", r"eval \(training=False\) needs running_mean and running_var"),
    ("batch norm: float64 running_var for a float32 input",
     f"torch.ops.fastgen.batch_norm_leaky_relu({R}(2, 3, 4, 4), None, None, {R}(3), {R}(3).double(), False, 1e-5, 0.1)",
     "TypeError", r"running_var has dtype Double, expected Float"),
    ("batch norm: integer input",
     "torch.ops.fastgen.batch_norm_leaky_relu(torch.ones(2, 3, 4, 4, dtype=torch.int32), None, None, None, None, True, 1e-5, 0.1)",
     "TypeError", r"input must be float32, float64, float16 or bfloat16"),
    ("batch norm backward: grad_out shape",
     f"torch.ops.fastgen.batch_norm_leaky_relu_backward({R}(2, 3, 4, 5), {R}(2, 3, 4, 4), None, None, torch.zeros(3), torch.ones(3), True, 1e-5, 0.1, [True, True, True])",
     "ValueError", r"batch_norm_leaky_relu_backward: grad_out must have shape \[2, 3, 4, 4\]"),
    ("batch norm backward: var of 2 for 3 channels",
     f"torch.ops.fastgen.batch_norm_leaky_relu_backward({R}(2, 3, 4, 4), {R}(2, 3, 4, 4), None, None, torch.zeros(3), torch.ones(2), True, 1e-5, 0.1, [True, True, True])",
     "ValueError", r"var must have shape \[3\], got \[2\]"),
    ("batch norm backward from the output: bias of 4",
     f"torch.ops.fastgen.batch_norm_leaky_relu_backward_from_output({R}(2, 3, 4, 4), {R}(2, 3, 4, 4), None, {R}(4), torch.ones(3), True, 1e-5, 0.1, [True, True, True])",
     "ValueError", r"backward_from_output: bias must have shape \[3\]"),
]  # fmt: skip

CHILD = """
import json, os, re, sys, torch, fastgen
if sys.argv[1] == "engine":  # the emulated CUDA kernels with fastgen's convolution engine
    os.environ["FASTGEN_CONV_TRANSPOSE"] = os.environ["FASTGEN_CONV2D"] = "fastgen"
fastgen.set_backend("emulated-cuda" if sys.argv[1] == "engine" else sys.argv[1])
for name, call in json.loads(sys.argv[2]):
    try:
        eval(call)
        print(json.dumps([name, None, None]), flush=True)
    except Exception as error:
        print(json.dumps([name, type(error).__name__, str(error).split(chr(10))[0]]), flush=True)
"""


@pytest.mark.parametrize("backend", ["auto", "emulated-cuda", "engine"])
def test_bad_direct_calls_raise_naming_the_op_and_argument(backend):
    if backend != "auto" and not HAS_EMULATED:
        pytest.skip("the emulated CUDA kernels are not built")
    calls = json.dumps([[name, call] for name, call, _, _ in CASES])
    done = subprocess.run(
        [sys.executable, "-c", CHILD, backend, calls], capture_output=True, text=True, timeout=300
    )
    results = {}
    for line in done.stdout.splitlines():
        name, kind, message = json.loads(line)
        results[name] = (kind, message)
    assert done.returncode == 0, (
        f"the child crashed (exit {done.returncode}) after {len(results)} of {len(CASES)} calls; "
        f"the next one was {CASES[len(results)][0]!r}\n{done.stderr[-2000:]}"
    )
    import re

    for name, _, kind, pattern in CASES:
        got_kind, message = results[name]
        assert got_kind == kind and re.search(pattern, message), (name, got_kind, message)
