"""The CPU kernels compiled per instruction set (csrc/common/cpu_capability.h): every copy the
machine can run gives the same results, and FASTGEN_CPU_CAPABILITY picks one (an unsupported
one is an error, not a crash)."""

from __future__ import annotations

import pytest
import torch
from conftest import assert_close

from fastgen import _extension, ops

pytestmark = pytest.mark.skipif(not _extension.LOADED, reason="the fastgen extension is not built")

ORDER = ["baseline", "avx2", "avx512"]


def runnable() -> list[str]:
    supported = _extension._C._cpu_capability()[1]
    return ORDER[: ORDER.index(supported) + 1]


@pytest.fixture(params=ORDER)
def capability(request, monkeypatch):
    if request.param not in runnable():
        pytest.skip(f"this CPU does not run {request.param}")
    monkeypatch.setenv("FASTGEN_CPU_CAPABILITY", request.param)
    assert _extension._C._cpu_capability()[0] == request.param
    return request.param


@pytest.mark.parametrize(
    "m,k,width", [(1, 1, 1), (7, 5, 3), (13, 64, 16), (25, 33, 17), (64, 128, 32), (6, 9, 31)]
)
@pytest.mark.parametrize("transposed", [False, True])
def test_gemm_panels_match_float64(capability, m, k, width, transposed):
    gen = torch.Generator().manual_seed(m * 1000 + k)
    a = torch.randn(k, m, generator=gen) if transposed else torch.randn(m, k, generator=gen)
    b = torch.randn(k, width, generator=gen)
    c = torch.ops.fastgen.winograd_gemm(a, b, transposed)
    expected = (a.double().t() if transposed else a.double()) @ b.double()
    assert_close(c, expected.float(), scale=k / 8 + 1)


def test_winograd_convolutions_agree_across_capabilities(monkeypatch):
    gen = torch.Generator().manual_seed(3)
    x = torch.randn(2, 32, 16, 16, generator=gen, requires_grad=True)
    weight = torch.randn(32, 40, 4, 4, generator=gen) * 0.05
    results = {}
    for capability in runnable():
        monkeypatch.setenv("FASTGEN_CPU_CAPABILITY", capability)
        out = ops.conv_transpose2d(x, weight, None, 2, 1)
        (grad,) = torch.autograd.grad(out.square().sum(), x)
        results[capability] = (out.detach(), grad)
    stock = torch.nn.functional.conv_transpose2d(x.double(), weight.double(), None, 2, 1)
    for capability, (out, grad) in results.items():
        assert_close(out, stock.float(), scale=8, msg=capability)
        assert_close(grad, results["baseline"][1], scale=8, msg=capability)


def test_noise_and_batch_norm_agree_across_capabilities(monkeypatch):
    state = torch.tensor([123, 8])
    zeros = torch.zeros(37, 129)
    x = torch.randn(8, 5, 9, 7, generator=torch.Generator().manual_seed(4)).to(
        memory_format=torch.channels_last
    )
    noise, norms = {}, {}
    for capability in runnable():
        monkeypatch.setenv("FASTGEN_CPU_CAPABILITY", capability)
        noise[capability] = torch.ops.fastgen.reparameterize(zeros, zeros, None, state, False)[0]
        norms[capability] = ops.batch_norm_leaky_relu(
            x, None, None, None, None, True, negative_slope=0.2
        )
    for capability in runnable():
        # Philox and Box-Muller are integer and IEEE +-*/sqrt: the same bits at any width.
        assert torch.equal(noise[capability], noise["baseline"]), capability
        assert_close(norms[capability], norms["baseline"], msg=capability)


def test_forcing_a_capability_the_cpu_lacks_is_an_error(monkeypatch):
    missing = [c for c in ORDER if c not in runnable()]
    monkeypatch.setenv("FASTGEN_CPU_CAPABILITY", "sse9")
    with pytest.raises(
        ValueError, match="FASTGEN_CPU_CAPABILITY must be baseline, avx2 or avx512, got 'sse9'"
    ):
        torch.ops.fastgen.winograd_gemm(torch.ones(2, 2), torch.ones(2, 2), False)
    if missing:
        monkeypatch.setenv("FASTGEN_CPU_CAPABILITY", missing[-1])
        with pytest.raises(ValueError, match="this CPU .* runs at most"):
            torch.ops.fastgen.winograd_gemm(torch.ones(2, 2), torch.ones(2, 2), False)


def test_info_names_the_capability_and_features():
    import fastgen

    data = fastgen.info()
    active, supported, features = _extension._C._cpu_capability()
    assert data["cpu_capability"] == active and data["cpu_capability_supported"] == supported
    assert data["cpu_features"] == features


def test_info_names_the_path_of_each_cpu_kernel(monkeypatch):
    import fastgen

    for capability in runnable():
        monkeypatch.setenv("FASTGEN_CPU_CAPABILITY", capability)
        paths = fastgen.info()["cpu_kernel_paths"]
        gemm = "at::mm" if capability == "baseline" else f"{capability} micro-kernel"
        assert paths.pop("winograd_gemm") == gemm
        kernels = {
            "winograd_transforms",
            "batch_norm_leaky_relu",
            "reparameterize",
            "conv_epilogues",
            "few_channels",
        }
        assert set(paths) == kernels
        assert set(paths.values()) == {capability}


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.bfloat16])
@pytest.mark.parametrize("layout", [torch.contiguous_format, torch.channels_last])
def test_conv_epilogues_are_the_same_on_every_capability(monkeypatch, dtype, layout):
    # A 1x1 convolution from one channel with unit weights is exact (x * 1), so the output is
    # the epilogue's: act(x + bias), NaN, +-Inf and -0 included; act'(y) likewise backward.
    from fastgen.reference.conv2d import conv2d as stock_conv2d

    gen = torch.Generator().manual_seed(5)
    x = torch.randn(3, 1, 9, 7, generator=gen, dtype=torch.float64)
    x.view(-1)[:4] = torch.tensor([float("nan"), float("inf"), -float("inf"), -0.0])
    x = x.to(dtype).to(memory_format=layout).requires_grad_()
    weight = torch.ones(19, 1, 1, 1, dtype=dtype)
    bias = torch.randn(19, generator=gen, dtype=torch.float64).to(dtype)
    grad_out = torch.randn(3, 19, 9, 7, generator=gen, dtype=torch.float64).to(dtype)
    for activation in ("identity", "relu", "leaky_relu"):
        results = {}
        for capability in runnable():
            monkeypatch.setenv("FASTGEN_CPU_CAPABILITY", capability)
            out = ops.conv2d(x, weight, bias, activation=activation, negative_slope=0.2)
            (grad,) = torch.autograd.grad(out, x, grad_out)
            results[capability] = (out.detach(), grad)
        expected = stock_conv2d(x.detach(), weight, bias, activation=activation, negative_slope=0.2)
        # bfloat16: stock rounds x + bias to bfloat16 before the activation, fastgen once after.
        exact = {"rtol": 0, "atol": 0} if dtype != torch.bfloat16 else {}
        for capability, (out, grad) in results.items():
            where = f"{capability} {activation}"
            torch.testing.assert_close(out, expected, **exact, equal_nan=True, msg=where)
            for got, want in zip((out, grad), results["baseline"]):
                torch.testing.assert_close(got, want, rtol=0, atol=0, equal_nan=True, msg=where)
