"""The first-call self-check of the CUDA kernels (fastgen/ops/_selfcheck.py, issue 24.6),
under the emulated-cuda backend: a planted wrong kernel is found on the op's first call,
warned about once, and the op runs its reference from then on; FASTGEN_STRICT=1 raises;
FASTGEN_CUDA_SELFCHECK=0 skips the check. The real kernels pass it in every dtype and layout.

The rest of the suite runs with the check off (conftest.py): it compares the kernels with the
references itself, and a check that rerouted a wrong kernel would hide what it looks for.
"""

from __future__ import annotations

import os
import subprocess
import sys
import warnings

import pytest
import torch
from conftest import DTYPES, EMULATED, on_device

from fastgen import ops
from fastgen._backend import registry
from fastgen.ops import _selfcheck
from fastgen.reference import conv2d as conv2d_reference
from fastgen.reference import reparameterize as reparameterize_reference


@pytest.fixture
def emulated(monkeypatch):
    """The emulated CUDA backend with the self-check on and nothing checked yet."""
    monkeypatch.setattr(registry, "selfcheck", True)
    monkeypatch.setattr(registry, "strict", False)
    _selfcheck.reset()
    with on_device(EMULATED) as device:
        yield device
    _selfcheck.reset()


class Planted:
    """A wrong kernel in place of torch.ops.fastgen.<op>: the real one's result plus 0.5 on
    the first output, counting its calls."""

    def __init__(self, op: str):
        self.real = getattr(torch.ops.fastgen, op)
        self.calls = 0

    def default(self, *args):
        self.calls += 1
        out = self.real.default(*args)
        if isinstance(out, tuple):
            return (out[0] + 0.5, *out[1:])
        return out + 0.5

    __call__ = default


def plant(monkeypatch, op: str) -> Planted:
    planted = Planted(op)
    monkeypatch.setattr(torch.ops.fastgen, op, planted)
    return planted


def conv_inputs(seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(2, 3, 7, 7, generator=g), torch.randn(5, 3, 3, 3, generator=g), None


def test_every_op_with_a_cuda_kernel_has_a_selfcheck_problem():
    with_cuda = {op for op, found in registry.kernels.items() if found.get("cuda") or
                 found.get("emulated-cuda")}  # fmt: skip
    missing = sorted(with_cuda - set(_selfcheck.PROBLEMS))
    assert not missing, f"ops with a CUDA kernel but no self-check problem: {missing}"


@pytest.mark.parametrize("layout", ["contiguous", "channels_last", "strided"])
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("op", sorted(_selfcheck.PROBLEMS))
def test_real_kernels_pass_their_selfcheck(emulated, op, dtype, layout):
    if op not in registry.kernels or not registry.kernels[op].get("emulated-cuda"):
        pytest.skip(f"fastgen::{op} has no emulated CUDA kernel in this build")
    if op.startswith("reparameterize") and layout == "channels_last":
        pytest.skip("reparameterize's inputs are 2-D")
    problem = _selfcheck.compare(op, dtype, torch.device("cpu"), layout)
    assert problem is None, f"_selfcheck.compare({op!r}, {dtype}, {layout}): {problem}"


def test_planted_wrong_conv2d_warns_once_and_reroutes_to_the_reference(emulated, monkeypatch):
    planted = plant(monkeypatch, "conv2d")
    x, weight, bias = conv_inputs()
    expected = conv2d_reference.conv2d(x, weight, bias, (1, 1), (1, 1), (1, 1), 1, "relu", 0.01)
    with pytest.warns(_selfcheck.CudaSelfCheckWarning) as record:
        out = ops.conv2d(x, weight, bias, 1, 1, activation="relu")
    assert len(record) == 1, [str(w.message) for w in record]
    message = str(record[0].message)
    assert "fastgen.ops.conv2d" in message and "output differs by up to 0.5" in message, message
    assert "runs the PyTorch reference" in message, message
    torch.testing.assert_close(out, expected)  # the reference's result, not the planted one
    calls = planted.calls
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # warned once: no second warning
        again = ops.conv2d(x, weight, bias, 1, 1, activation="relu")
        other_layout = ops.conv2d(x.contiguous(memory_format=torch.channels_last), weight, bias,
                                  1, 1, activation="relu")  # fmt: skip
    assert planted.calls == calls, "the rerouted op called its CUDA kernel again"
    torch.testing.assert_close(again, expected)
    torch.testing.assert_close(other_layout, expected)


def test_planted_wrong_reparameterize_is_rerouted_with_gradients(emulated, monkeypatch):
    planted = plant(monkeypatch, "reparameterize")
    g = torch.Generator().manual_seed(1)
    mu, logvar, eps = (torch.randn(4, 6, generator=g) for _ in range(3))
    mu.requires_grad_()
    with pytest.warns(_selfcheck.CudaSelfCheckWarning, match=r"fastgen\.ops\.reparameterize.*z"):
        z = ops.reparameterize(mu, logvar, eps)
    torch.testing.assert_close(z, reparameterize_reference.reparameterize(mu, logvar, eps))
    (grad_mu,) = torch.autograd.grad(z.sum(), mu)
    torch.testing.assert_close(grad_mu, torch.ones_like(mu))
    calls = planted.calls
    ops.reparameterize(mu, logvar, eps)
    assert planted.calls == calls


def test_strict_makes_a_selfcheck_mismatch_an_error(emulated, monkeypatch):
    plant(monkeypatch, "conv2d")
    monkeypatch.setattr(registry, "strict", True)
    x, weight, bias = conv_inputs()
    with pytest.raises(RuntimeError, match=r"fastgen\.ops\.conv2d: .*self-check.*FASTGEN_STRICT"):
        ops.conv2d(x, weight, bias, 1, 1)


def test_selfcheck_off_runs_the_kernel_unchecked(emulated, monkeypatch):
    planted = plant(monkeypatch, "conv2d")
    monkeypatch.setattr(registry, "selfcheck", False)
    x, weight, bias = conv_inputs()
    expected = conv2d_reference.conv2d(x, weight, bias, (1, 1), (1, 1), (1, 1), 1, "identity", 0)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        out = ops.conv2d(x, weight, bias, 1, 1)
    assert planted.calls == 1
    torch.testing.assert_close(out, expected + 0.5)  # the planted kernel served the call


def test_selfcheck_runs_once_per_dtype_and_layout_and_leaves_the_rng_alone(emulated, monkeypatch):
    runs = []
    real_compare = _selfcheck.compare
    monkeypatch.setattr(
        _selfcheck, "compare", lambda *args: runs.append(args[1:]) or real_compare(*args)
    )
    x, weight, bias = conv_inputs()
    torch.manual_seed(0)
    state = torch.get_rng_state()
    for _ in range(2):
        ops.conv2d(x, weight, bias, 1, 1)
        ops.conv2d(x.contiguous(memory_format=torch.channels_last), weight, bias, 1, 1)
        ops.conv2d(x.double(), weight.double(), None, 1, 1)
    assert torch.equal(torch.get_rng_state(), state), "the self-check moved the global RNG"
    assert runs == [
        (torch.float32, torch.device("cpu"), "contiguous"),
        (torch.float32, torch.device("cpu"), "channels_last"),
        (torch.float64, torch.device("cpu"), "contiguous"),
    ], runs


def test_cpu_kernels_are_not_selfchecked(monkeypatch):
    monkeypatch.setattr(registry, "selfcheck", True)
    _selfcheck.reset()
    plant(monkeypatch, "conv2d")
    x, weight, bias = conv_inputs()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        ops.conv2d(x, weight, bias, 1, 1)
    assert not _selfcheck._checked


@pytest.mark.parametrize("value, expected", [("0", False), ("1", True), (None, True)])
def test_selfcheck_environment_switch(value, expected):
    env = {k: v for k, v in os.environ.items() if k != "FASTGEN_CUDA_SELFCHECK"}
    if value is not None:
        env["FASTGEN_CUDA_SELFCHECK"] = value
    out = subprocess.run(
        [sys.executable, "-c", "from fastgen._backend import registry; print(registry.selfcheck)"],
        env=env, capture_output=True, text=True, check=True,
    )  # fmt: skip
    assert out.stdout.strip() == str(expected), (value, out.stdout, out.stderr)


def test_selfcheck_under_autocast_compares_in_the_calls_dtype(emulated):
    # The reference runs in float64 whatever autocast the caller is in: under a bfloat16
    # autocast the float32 check must not compare against bfloat16 convolutions.
    with torch.autocast("cpu", dtype=torch.bfloat16):
        for op in ("conv2d", "conv_transpose2d", "batch_norm_leaky_relu"):
            problem = _selfcheck.compare(op, torch.float32, torch.device("cpu"), "contiguous")
            assert problem is None, f"_selfcheck.compare({op!r}) under autocast: {problem}"
