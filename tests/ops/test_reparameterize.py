"""fastgen.ops.reparameterize / reparameterize_kl against the stock code, and their noise.

The oracle is fastgen.reference.reparameterize (the stock code) in float64 (float32 for
half inputs, from the same upcast values). Noise checks use the reference's pure-PyTorch
Philox, which must match the kernels bit for bit.
"""

from __future__ import annotations

import contextlib

import pytest
import torch
from conftest import (
    DTYPES,
    HAS_CUDA,
    assert_close,
    cpu_kernels,
    cuda_only,
    reference_dtype,
    using_backend,
)
from hypothesis import given, settings
from hypothesis import strategies as st

from fastgen import ops, registry
from fastgen.ops.reparameterize import draw_rng_state
from fastgen.reference import reparameterize as reference

NATIVE = registry.native_backends("reparameterize")
needs_native_cpu = pytest.mark.skipif("cpu" not in NATIVE, reason="no native CPU kernel built")


def seeded(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def inputs(shape, dtype=torch.float32, device="cpu", seed=0):
    generator = seeded(seed)
    mu = torch.randn(shape, generator=generator)
    logvar = torch.randn(shape, generator=generator) * 0.7
    eps = torch.randn(shape, generator=generator)
    return tuple(t.to(device=device, dtype=dtype) for t in (mu, logvar, eps))


def expected(mu, logvar, eps):
    """The stock code in the oracle dtype, cast back to the input dtype."""
    ref = reference_dtype(mu.dtype)
    z, kl = reference.reparameterize_kl(mu.to(ref), logvar.to(ref), eps.to(ref))
    return z, kl


def op_noise(shape, seed, offset, device="cpu", dtype=torch.float32):
    """The noise the op makes for (seed, offset): z of mu = 0, logvar = 0."""
    zeros = torch.zeros(shape, device=device, dtype=dtype)
    state = torch.tensor([seed, offset], dtype=torch.int64, device=device)
    return torch.ops.fastgen.reparameterize(zeros, zeros, None, state, False)[0]


# --- values against the stock code --------------------------------------------------------

SHAPES = [(1, 1), (4, 8), (3, 5), (7, 13), (2, 3, 5, 7), (256, 128), (1, 131), (64, 1)]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", SHAPES)
def test_explicit_eps_matches_stock(device, dtype, shape):
    mu, logvar, eps = inputs(shape, dtype, device)
    z, kl = ops.reparameterize_kl(mu, logvar, eps)
    want_z, want_kl = expected(mu, logvar, eps)
    assert z.dtype == dtype and kl.dtype == dtype
    assert z.shape == mu.shape and kl.shape == (shape[0],)
    assert_close(z, want_z, dtype, msg="z")
    # kl sums numel / N terms of size ~1: scale the tolerance with the row length.
    row = mu[0].numel()
    assert_close(kl, want_kl, dtype, scale=max(1.0, row**0.5), msg="kl")
    assert_close(ops.reparameterize(mu, logvar, eps), want_z, dtype)


@settings(max_examples=15, deadline=None, derandomize=True)
@given(
    shape=st.lists(st.integers(1, 9), min_size=1, max_size=4),
    dtype=st.sampled_from(DTYPES),
    seed=st.integers(0, 2**31 - 1),
)
def test_random_shapes_property(shape, dtype, seed):
    mu, logvar, eps = inputs(tuple(shape), dtype, seed=seed)
    z, kl = ops.reparameterize_kl(mu, logvar, eps)
    want_z, want_kl = expected(mu, logvar, eps)
    assert_close(z, want_z, dtype)
    assert_close(kl, want_kl, dtype, scale=max(1.0, mu[0].numel() ** 0.5))


def test_non_contiguous_inputs(device):
    base_mu, base_logvar, base_eps = inputs((6, 10, 4), torch.float32, device)
    # [6, 4, 2] views: transposed, then every fifth column
    mu, logvar, eps = (t.transpose(1, 2)[:, :, ::5] for t in (base_mu, base_logvar, base_eps))
    assert not mu.is_contiguous() and mu.shape == logvar.shape == eps.shape
    z, kl = ops.reparameterize_kl(mu, logvar, eps)
    want_z, want_kl = expected(mu, logvar, eps)
    assert_close(z, want_z)
    assert_close(kl, want_kl)
    # Generated noise follows the logical (row-major) order, not the memory order.
    state = torch.tensor([11, 4], device=device)
    got = torch.ops.fastgen.reparameterize(mu, logvar, None, state, True)[0]
    contiguous = torch.ops.fastgen.reparameterize(
        mu.contiguous(), logvar.contiguous(), None, state, True
    )[0]
    assert torch.equal(got, contiguous)


def test_empty_and_single(device):
    mu = torch.zeros(0, 5, device=device)
    z, kl = ops.reparameterize_kl(mu, mu)
    assert z.shape == (0, 5) and kl.shape == (0,)
    mu = torch.zeros(3, 0, device=device)
    z, kl = ops.reparameterize_kl(mu, mu)
    assert z.shape == (3, 0) and torch.equal(kl, torch.zeros(3, device=device))
    mu = torch.tensor([0.5], device=device)
    z, kl = ops.reparameterize_kl(mu, torch.tensor([0.0], device=device))
    assert z.shape == (1,) and kl.shape == (1,)


def test_extreme_logvar_stays_finite_or_nan_like_stock(device):
    mu = torch.zeros(1, 6, device=device)
    logvar = torch.tensor([[-200.0, -80.0, 0.0, 80.0, 170.0, float("nan")]], device=device)
    eps = torch.ones(1, 6, device=device)
    z, _ = ops.reparameterize_kl(mu, logvar, eps)
    want = reference.reparameterize(mu.double(), logvar.double(), eps.double()).float()
    assert torch.isnan(z[0, 5])
    torch.testing.assert_close(z[0, :5], want[0, :5], atol=1e-30, rtol=1e-5)


# --- gradients ---------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", DTYPES)
def test_gradients_match_stock(device, dtype):
    mu, logvar, eps = inputs((5, 3, 7), dtype, device, seed=3)
    mu.requires_grad_()
    logvar.requires_grad_()
    grad_z, grad_kl = torch.randn(5, 3, 7, generator=seeded(4)), torch.randn(5, generator=seeded(5))
    grad_z, grad_kl = grad_z.to(device, dtype), grad_kl.to(device, dtype)
    z, kl = ops.reparameterize_kl(mu, logvar, eps)
    got = torch.autograd.grad((z, kl), (mu, logvar), (grad_z, grad_kl))
    ref = reference_dtype(dtype)
    leaves = [t.detach().to(ref).requires_grad_() for t in (mu, logvar)]
    want_z, want_kl = reference.reparameterize_kl(*leaves, eps.to(ref))
    want = torch.autograd.grad((want_z, want_kl), leaves, (grad_z.to(ref), grad_kl.to(ref)))
    for name, actual, wanted in zip(("mu", "logvar"), got, want):
        assert actual.dtype == dtype
        assert_close(actual, wanted, dtype, msg=f"grad {name}")


def test_gradcheck_explicit_eps(device):
    mu, logvar, eps = inputs((3, 4), torch.float64, device, seed=6)
    mu.requires_grad_()
    logvar.requires_grad_()
    eps.requires_grad_()
    assert torch.autograd.gradcheck(
        lambda m, v, e: ops.reparameterize_kl(m, v, e), (mu, logvar, eps)
    )
    assert torch.autograd.gradgradcheck(
        lambda m, v, e: ops.reparameterize_kl(m, v, e), (mu, logvar, eps)
    )


@needs_native_cpu
def test_gradcheck_generated_noise(device):
    """With generated noise, a fixed rng_state makes the op a deterministic function."""
    mu, logvar, _ = inputs((3, 5), torch.float64, device, seed=7)
    mu.requires_grad_()
    logvar.requires_grad_()
    state = torch.tensor([1234, 8], device=device)

    def fn(m, v):
        z, kl, _ = torch.ops.fastgen.reparameterize(m, v, None, state, True)
        return z, kl

    assert torch.autograd.gradcheck(fn, (mu, logvar))
    assert torch.autograd.gradgradcheck(fn, (mu, logvar))


@needs_native_cpu
def test_backward_regenerates_the_forward_noise():
    mu, logvar, _ = inputs((4, 9), torch.float32, seed=8)
    mu.requires_grad_()
    logvar.requires_grad_()
    torch.manual_seed(3)
    z, kl = ops.reparameterize_kl(mu, logvar)
    grad_logvar = torch.autograd.grad(z.sum(), logvar)[0]
    noise = (z - mu) / torch.exp(0.5 * logvar)
    assert_close(grad_logvar, (0.5 * torch.exp(0.5 * logvar) * noise).detach())


def test_only_kl_or_only_z_used(device):
    mu, logvar, eps = inputs((3, 4), torch.float64, device, seed=9)
    mu.requires_grad_()
    logvar.requires_grad_()
    _, kl = ops.reparameterize_kl(mu, logvar, eps)
    got = torch.autograd.grad(kl.sum(), (mu, logvar))
    want = torch.autograd.grad(reference.kl_divergence(mu, logvar).sum(), (mu, logvar))
    for a, b in zip(got, want):
        assert_close(a, b)
    z = ops.reparameterize(mu, logvar, eps)
    got = torch.autograd.grad(z.sum(), (mu, logvar))
    want = torch.autograd.grad(reference.reparameterize(mu, logvar, eps).sum(), (mu, logvar))
    for a, b in zip(got, want):
        assert_close(a, b)


# --- op registration -----------------------------------------------------------------------


@needs_native_cpu
@pytest.mark.parametrize("with_eps", [True, False])
def test_opcheck(device, with_eps):
    mu, logvar, eps = inputs((3, 6), torch.float32, device, seed=10)
    mu.requires_grad_()
    logvar.requires_grad_()
    state = torch.tensor([5, 12], device=device)
    args = (mu, logvar, eps if with_eps else None, None if with_eps else state, True)
    torch.library.opcheck(torch.ops.fastgen.reparameterize.default, args)
    grad_z = torch.randn(3, 6, generator=seeded(11)).to(device)
    grad_kl = torch.randn(3, generator=seeded(12)).to(device)
    backward_args = (grad_z, grad_kl, mu.detach(), logvar.detach(), args[2], state)
    torch.library.opcheck(torch.ops.fastgen.reparameterize_backward.default, backward_args)


def test_compile_fullgraph(device):
    mu, logvar, eps = inputs((4, 6), torch.float32, device, seed=13)
    mu.requires_grad_()
    logvar.requires_grad_()

    def step(m, v, e):
        z, kl = ops.reparameterize_kl(m, v, e)
        return (z * z).sum() + kl.mean()

    compiled = torch.compile(step, fullgraph=True, backend="aot_eager")
    loss = compiled(mu, logvar, eps)
    grads = torch.autograd.grad(loss, (mu, logvar))
    want_loss = step(mu, logvar, eps)
    want_grads = torch.autograd.grad(want_loss, (mu, logvar))
    assert_close(loss, want_loss)
    for a, b in zip(grads, want_grads):
        assert_close(a, b)


@needs_native_cpu
def test_compile_fullgraph_generated_noise_is_seeded(device):
    mu, logvar, _ = inputs((4, 6), torch.float32, device, seed=14)

    def sample(m, v):
        return ops.reparameterize_kl(m, v)

    compiled = torch.compile(sample, fullgraph=True, backend="aot_eager")
    torch.manual_seed(21)
    z1, kl1 = compiled(mu, logvar)
    torch.manual_seed(21)
    z2, _ = sample(mu, logvar)
    assert torch.equal(z1, z2)
    z3, _ = compiled(mu, logvar)
    assert not torch.equal(z1, z3), "consecutive calls must draw fresh noise"


# --- the noise -----------------------------------------------------------------------------


def test_reference_philox_known_answers():
    """Random123's known-answer vectors for Philox4x32-10."""
    cases = [
        ((0, 0, 0, 0), (0, 0), (0x6627E8D5, 0xE169C58D, 0xBC57AC4C, 0x9B00DBD8)),
        ((2**32 - 1,) * 4, (2**32 - 1,) * 2, (0x408F276D, 0x41C83B0E, 0xA20BC7C6, 0x6D5451FD)),
        (
            (0x243F6A88, 0x85A308D3, 0x13198A2E, 0x03707344),
            (0xA4093822, 0x299F31D0),
            (0xD16CFE09, 0x94FDCCEB, 0x5001E420, 0x24126EA1),
        ),
    ]
    for counter, key, want in cases:
        got = reference.philox4x32_10([torch.tensor([c]) for c in counter], key)
        assert [int(g) for g in got] == list(want)


@needs_native_cpu
@pytest.mark.parametrize("seed,offset", [(0, 0), (1234567890123, 8), (-1, 2**40), (7, 4)])
def test_cpu_noise_bit_identical_to_reference(seed, offset):
    shape = (37, 53)  # 1961 elements: groups straddle rows
    got = op_noise(shape, seed, offset)
    want = reference.philox_normal(shape, seed, offset)
    mismatch = (got != want).nonzero()
    assert mismatch.numel() == 0, (
        f"{mismatch.shape[0]} elements differ, first at {mismatch[0].tolist()}: "
        f"{got[tuple(mismatch[0])].item()!r} vs {want[tuple(mismatch[0])].item()!r}"
    )


@needs_native_cpu
@pytest.mark.parametrize("dtype", DTYPES)
def test_noise_is_the_same_float32_noise_for_every_dtype(dtype):
    got = op_noise((5, 7), 99, 0, dtype=dtype)
    want = reference.philox_normal((5, 7), 99, 0).to(dtype)
    assert torch.equal(got, want)


def test_reference_path_reproduces_kernel_noise():
    mu, logvar, _ = inputs((6, 11), torch.float32, seed=15)
    generator = seeded(42)
    state = draw_rng_state("test", seeded(42), "cpu")
    previous = registry.mode
    registry.set_backend("reference")
    try:
        z_ref, kl_ref = ops.reparameterize_kl(mu, logvar, generator=generator)
    finally:
        registry.set_backend(previous)
    noise = reference.philox_normal(mu.shape, *state.tolist())
    assert_close(z_ref, reference.reparameterize(mu, logvar, noise), scale=0.01)
    if "cpu" in NATIVE:
        z_native, kl_native = ops.reparameterize_kl(mu, logvar, generator=seeded(42))
        assert_close(z_native, z_ref, scale=0.01)
        assert_close(kl_native, kl_ref)


@needs_native_cpu
def test_native_and_reference_draw_the_same_noise_under_manual_seed(device):
    """Training with FASTGEN_BACKEND=reference must follow the native run step by step (R2:
    on CUDA too, where the native key is the CUDA generator's Philox state)."""
    # mu = logvar = 0: z is the noise itself (exp(0) = 1 in every implementation of exp).
    mu = logvar = torch.zeros(6, 11, device=device)
    torch.manual_seed(8)
    native = [ops.reparameterize(mu, logvar) for _ in range(2)]
    with using_backend("reference"):
        torch.manual_seed(8)
        referenced = [ops.reparameterize(mu, logvar) for _ in range(2)]
    for a, b in zip(native, referenced):
        assert torch.equal(a, b)


def test_manual_seed_reproduces(device):
    mu, logvar, _ = inputs((8, 16), torch.float32, device, seed=16)
    torch.manual_seed(5)
    first = [ops.reparameterize(mu, logvar) for _ in range(2)]
    torch.manual_seed(5)
    second = [ops.reparameterize(mu, logvar) for _ in range(2)]
    assert torch.equal(first[0], second[0]) and torch.equal(first[1], second[1])
    assert not torch.equal(first[0], first[1]), "consecutive calls must draw fresh noise"
    z1 = ops.reparameterize(mu, logvar, generator=torch.Generator(device).manual_seed(3))
    z2 = ops.reparameterize(mu, logvar, generator=torch.Generator(device).manual_seed(3))
    assert torch.equal(z1, z2)


def _moments(noise: torch.Tensor) -> tuple[float, float, float, float]:
    x = noise.double().flatten()
    mean = x.mean()
    centred = x - mean
    var = (centred**2).mean()
    skew = (centred**3).mean() / var**1.5
    kurt = (centred**4).mean() / var**2
    return mean.item(), var.item(), skew.item(), kurt.item()


def check_normal(noise: torch.Tensor, sigmas: float = 5.0) -> None:
    """Moments of n standard normals within `sigmas` standard errors."""
    n = noise.numel()
    mean, var, skew, kurt = _moments(noise)
    assert abs(mean) < sigmas * (1 / n) ** 0.5, f"mean {mean}"
    assert abs(var - 1) < sigmas * (2 / n) ** 0.5, f"variance {var}"
    assert abs(skew) < sigmas * (6 / n) ** 0.5, f"skew {skew}"
    assert abs(kurt - 3) < sigmas * (24 / n) ** 0.5, f"kurtosis {kurt}"


def check_uncorrelated(a: torch.Tensor, b: torch.Tensor, sigmas: float = 5.0) -> None:
    a, b = a.double().flatten(), b.double().flatten()
    corr = torch.corrcoef(torch.stack([a, b]))[0, 1].item()
    assert abs(corr) < sigmas / a.numel() ** 0.5, f"correlation {corr}"


@needs_native_cpu
def test_noise_statistics_cpu():
    noise = op_noise((1000, 1000), 2024, 0)
    check_normal(noise)
    flat = noise.flatten()
    check_uncorrelated(flat[:-1], flat[1:])  # neighbours (inside and across Philox groups)
    check_uncorrelated(flat[:-4], flat[4:])  # the same lane of neighbouring groups
    torch.manual_seed(0)
    zeros = torch.zeros(500, 500)
    check_uncorrelated(ops.reparameterize(zeros, zeros), ops.reparameterize(zeros, zeros))
    # The tails: Box-Muller's radius reaches ~5.9 (u >= 2^-25).
    assert flat.abs().max() > 4.5


# --- bad input -----------------------------------------------------------------------------


def test_bad_inputs():
    mu = torch.zeros(2, 3)
    fn = "fastgen.ops.reparameterize_kl"
    with pytest.raises(ValueError, match=f"{fn}: logvar must have shape"):
        ops.reparameterize_kl(mu, torch.zeros(2, 4))
    with pytest.raises(ValueError, match=f"{fn}: eps must have shape"):
        ops.reparameterize_kl(mu, mu, torch.zeros(3, 2))
    with pytest.raises(TypeError, match=f"{fn}: logvar has dtype torch.float64"):
        ops.reparameterize_kl(mu, mu.double())
    with pytest.raises(TypeError, match=f"{fn}: mu must be float32, float64"):
        ops.reparameterize_kl(torch.zeros(2, 3, dtype=torch.int64), mu)
    with pytest.raises(TypeError, match=f"{fn}: eps must be float32"):
        ops.reparameterize_kl(mu, mu, torch.zeros(2, 3, dtype=torch.int32))
    with pytest.raises(TypeError, match=f"{fn}: mu must be a Tensor"):
        ops.reparameterize_kl([1.0, 2.0], mu)
    with pytest.raises(ValueError, match=f"{fn}: mu must have at least 1 dims"):
        ops.reparameterize_kl(torch.tensor(1.0), torch.tensor(1.0))
    with pytest.raises(TypeError, match="fastgen.ops.reparameterize: generator must be"):
        ops.reparameterize(mu, mu, generator=3)
    if HAS_CUDA:
        with pytest.raises(ValueError, match=f"{fn}: logvar is on cuda"):
            ops.reparameterize_kl(mu, mu.cuda())
        with pytest.raises(ValueError, match="generator is on cuda but mu is on cpu"):
            ops.reparameterize_kl(mu, mu, generator=torch.Generator("cuda"))


# --- CUDA kernels: under the SIMT emulator here, and on a GPU when there is one ----------------
# cuda_device is "cpu" with the emulated-cuda backend on, or "cuda".


@pytest.mark.parametrize("seed,offset", [(0, 0), (1234567890123, 8), (-1, 2**40)])
def test_cuda_noise_bit_identical_to_cpu(cuda_device, seed, offset):
    shape = (129, 67)
    cuda = op_noise(shape, seed, offset, device=cuda_device).cpu()
    with cpu_kernels():
        cpu = op_noise(shape, seed, offset)
    assert torch.equal(cuda, cpu)
    assert torch.equal(cpu, reference.philox_normal(shape, seed, offset))


@pytest.mark.parametrize("dtype", DTYPES)
def test_cuda_explicit_eps_exact_against_cpu_kernel_and_reference(cuda_device, dtype):
    mu, logvar, eps = inputs((33, 65), dtype, cuda_device, seed=17)
    z, kl = ops.reparameterize_kl(mu, logvar, eps)
    want_z, want_kl = expected(mu, logvar, eps)
    assert_close(z, want_z, dtype)
    assert_close(kl, want_kl, dtype, scale=8.0)
    with cpu_kernels():
        z_cpu, kl_cpu = ops.reparameterize_kl(mu.cpu(), logvar.cpu(), eps.cpu())
    assert_close(z.cpu(), z_cpu, dtype)
    assert_close(kl.cpu(), kl_cpu, dtype, scale=8.0)


# The forward's launch modes: a warp per row (rows up to 1024 elements, 8 rows per block) or a
# block per row (longer rows); noise generated, from a given key, or eps given; KL or not.
@pytest.mark.parametrize("shape", [(37, 5), (9, 1024), (3, 1025), (2, 4099), (1, 3, 5, 7)], ids=str)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16], ids=str)
def test_cuda_launch_modes_match_the_cpu_kernel(cuda_device, shape, dtype):
    mu, logvar, eps = inputs(shape, dtype, cuda_device, seed=21)
    state = torch.tensor([77, 12], device=cuda_device)
    for given_eps, key in ((eps, None), (None, state)):
        for compute_kl in (False, True):
            out = torch.ops.fastgen.reparameterize(mu, logvar, given_eps, key, compute_kl)
            with cpu_kernels():
                want = torch.ops.fastgen.reparameterize(
                    mu.cpu(), logvar.cpu(), None if given_eps is None else given_eps.cpu(),
                    None if key is None else key.cpu(), compute_kl,
                )  # fmt: skip
            assert_close(out[0].cpu(), want[0], dtype)
            if compute_kl:
                assert_close(out[1].cpu(), want[1], dtype, scale=8.0)
            assert torch.equal(out[2].cpu(), want[2])


def test_cuda_kl_is_deterministic(cuda_device, monkeypatch):
    mu, logvar, eps = inputs((64, 4099), torch.float32, cuda_device, seed=18)
    first = ops.reparameterize_kl(mu, logvar, eps)[1]
    for seed in ("1", "2", "3"):
        monkeypatch.setenv("FASTGEN_SIMT_SCHEDULE", seed)  # another schedule under emulation
        assert torch.equal(ops.reparameterize_kl(mu, logvar, eps)[1], first)


def test_cuda_noise_statistics(cuda_device):
    emulated = cuda_device == "cpu"
    shape = (1000, 1000) if emulated else (10_000, 1000)
    noise = op_noise(shape, 77, 0, device=cuda_device)
    check_normal(noise)
    flat = noise.flatten()
    check_uncorrelated(flat[:-1], flat[1:])
    check_uncorrelated(flat[:-4], flat[4:])
    torch.manual_seed(1)
    zeros = torch.zeros(300 if emulated else 1000, 1000, device=cuda_device)
    check_uncorrelated(ops.reparameterize(zeros, zeros), ops.reparameterize(zeros, zeros))


def test_cuda_default_generator_is_seeded_and_advances(cuda_device):
    mu, logvar, _ = inputs((16, 32), torch.float32, cuda_device, seed=19)
    torch.manual_seed(9)
    a, b = ops.reparameterize(mu, logvar), ops.reparameterize(mu, logvar)
    torch.manual_seed(9)
    assert torch.equal(ops.reparameterize(mu, logvar), a)
    assert not torch.equal(a, b)


def test_cuda_empty_input_returns_and_consumes_the_key(cuda_device):
    # R3: an empty input returns the key it was given (the CPU kernel's contract) and, with no
    # key, still takes one from the generator, so the calls after it see the same state.
    empty = torch.zeros(0, 5, device=cuda_device)
    state = torch.tensor([5, 8], device=cuda_device)
    for kernels, device in ((cpu_kernels, "cpu"), (contextlib.nullcontext, cuda_device)):
        with kernels():
            e, s = empty.to(device), state.to(device)
            z, kl, used = torch.ops.fastgen.reparameterize(e, e, None, s, True)
            assert z.shape == (0, 5) and kl.shape == (0,)
            assert torch.equal(used.cpu(), state.cpu()), kernels
            mu = torch.zeros(4, 5, device=device)
            torch.manual_seed(4)
            torch.ops.fastgen.reparameterize(e, e, None, None, False)
            after_empty = torch.ops.fastgen.reparameterize(mu, mu, None, None, False)[0]
            torch.manual_seed(4)
            torch.ops.fastgen.reparameterize(mu, mu, None, None, False)
            after_full = torch.ops.fastgen.reparameterize(mu, mu, None, None, False)[0]
            assert torch.equal(after_empty, after_full), kernels


def test_cuda_gradients_regenerate_noise_and_match_cpu(cuda_device):
    mu, logvar, _ = inputs((7, 45), torch.float32, seed=20)
    state = torch.tensor([31, 4])
    grads = []
    for kernels, device in ((cpu_kernels, "cpu"), (contextlib.nullcontext, cuda_device)):
        with kernels():
            m = mu.to(device).requires_grad_()
            v = logvar.to(device).requires_grad_()
            z, kl, _ = torch.ops.fastgen.reparameterize(m, v, None, state.to(device), True)
            grads.append(torch.autograd.grad((z.sum() + kl.sum()), (m, v)))
    for a, b in zip(*grads):
        assert_close(b.cpu(), a)


@cuda_only
def test_cuda_graph_capture_replays_fresh_noise():
    mu = torch.zeros(64, 128, device="cuda")
    logvar = torch.zeros(64, 128, device="cuda")
    stream = torch.cuda.Stream()
    stream.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(stream):
        for _ in range(2):  # warm up outside the graph
            ops.reparameterize_kl(mu, logvar)
    torch.cuda.current_stream().wait_stream(stream)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        z, kl = ops.reparameterize_kl(mu, logvar)
    samples = []
    for _ in range(3):
        graph.replay()
        torch.cuda.synchronize()
        samples.append(z.clone())
    assert not torch.equal(samples[0], samples[1]) and not torch.equal(samples[1], samples[2])
    check_normal(torch.stack(samples), sigmas=6.0)
