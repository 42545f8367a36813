"""Reparameterize: the stock PyTorch code, and a pure-PyTorch copy of the kernels' noise.

The stock code (what fastgen.ops.reparameterize_kl replaces, the tests' oracle and the
benchmarks' baseline)::

    z     = mu + exp(0.5 * logvar) * eps
    kl[n] = -0.5 * sum over non-batch dims of (1 + logvar - mu**2 - exp(logvar))

``philox_normal`` makes, with int64 tensor arithmetic, exactly the float32 noise the
native kernels make for a (seed, offset) pair (the contract is in csrc/common/philox.h):
element i takes lane i % 4 of Philox4x32-10(key=seed, counter=(offset // 4, i // 4)),
turned into normals by Box-Muller with the same float32 operations in the same order. It
is bit-identical to the kernels, so the reference path reproduces their noise and the
tests can check it. It is slow (tens of tensor ops per element): a fallback and an oracle.
"""

from __future__ import annotations

import torch

# --- the stock code ------------------------------------------------------------------------


def reparameterize(mu: torch.Tensor, logvar: torch.Tensor, eps: torch.Tensor) -> torch.Tensor:
    """z = mu + exp(0.5 * logvar) * eps."""
    return mu + torch.exp(0.5 * logvar) * eps


def kl_divergence(mu: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
    """KL(N(mu, exp(logvar)) || N(0, I)) per sample: shape [N]."""
    terms = 1 + logvar - mu**2 - logvar.exp()
    return -0.5 * terms.reshape(terms.shape[0], -1).sum(1)


def reparameterize_kl(
    mu: torch.Tensor, logvar: torch.Tensor, eps: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    return reparameterize(mu, logvar, eps), kl_divergence(mu, logvar)


def stock_reparameterize_kl(
    mu: torch.Tensor, logvar: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """What people write today (the benchmarks' eager baseline): torch.randn_like noise."""
    z = mu + torch.exp(0.5 * logvar) * torch.randn_like(mu)
    return z, kl_divergence(mu, logvar)


# --- Philox4x32-10 + Box-Muller, bit-identical to csrc/common/philox.h ---------------------

MASK32 = 0xFFFFFFFF
PHILOX_MUL = (0xD2511F53, 0xCD9E8D57)
PHILOX_WEYL = (0x9E3779B9, 0xBB67AE85)
PHILOX_ROUNDS = 10

# The float32 coefficients of philox.h, as the same hex literals.
_F = {
    name: float.fromhex(value)
    for name, value in {
        "third": "0x1.555556p-2",
        "fifth": "0x1.99999ap-3",
        "seventh": "0x1.24924ap-3",
        "ninth": "0x1.c71c72p-4",
        "ln2_hi": "0x1.62e4p-1",
        "ln2_lo": "0x1.7f7d1cp-20",
        "sin3": "-0x1.555556p-3",
        "sin5": "0x1.111112p-7",
        "sin7": "-0x1.a01a02p-13",
        "sin9": "0x1.71de3ap-19",
        "cos2": "-0x1.0p-1",
        "cos4": "0x1.555556p-5",
        "cos6": "-0x1.6c16c2p-10",
        "cos8": "0x1.a01a02p-16",
        "cos10": "-0x1.27e4fcp-22",
        "octant_step": "0x1.921fb6p-25",
        "two_pow_m24": "0x1.0p-24",
        "two_pow_m25": "0x1.0p-25",
    }.items()
}


def _mul32(a: int, b: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(hi, lo) 32-bit halves of the 64-bit product of the constant a and uint32 values b,
    in int64 without overflow: b is split into 16-bit halves."""
    low_product = a * (b & 0xFFFF)  # < 2^48
    high_product = a * (b >> 16)  # < 2^48
    middle = low_product + ((high_product & 0xFFFF) << 16)  # < 2^49
    return (high_product >> 16) + (middle >> 32), middle & MASK32


def philox4x32_10(counter: list[torch.Tensor], key: tuple[int, int]) -> list[torch.Tensor]:
    """Philox4x32-10 of uint32 counters held in int64 tensors; key is two uint32 ints."""
    x0, x1, x2, x3 = counter
    key0, key1 = key
    for _ in range(PHILOX_ROUNDS):
        hi0, lo0 = _mul32(PHILOX_MUL[0], x0)
        hi1, lo1 = _mul32(PHILOX_MUL[1], x2)
        x0, x1, x2, x3 = hi1 ^ x1 ^ key0, lo1, hi0 ^ x3 ^ key1, lo0
        key0 = (key0 + PHILOX_WEYL[0]) & MASK32
        key1 = (key1 + PHILOX_WEYL[1]) & MASK32
    return [x0, x1, x2, x3]


def _f32(value: float, like: torch.Tensor) -> torch.Tensor:
    return torch.tensor(value, dtype=torch.float32, device=like.device)


def _exact(fn, *args: torch.Tensor) -> torch.Tensor:
    """fn (division or sqrt) correctly rounded to float32: computed in float64 and rounded
    once, which is exact for these ops (53 >= 2 * 24 + 2 bits); torch's float32 CPU sqrt is
    not always correctly rounded."""
    return fn(*(a.double() for a in args)).float()


def _log_unit(u: torch.Tensor) -> torch.Tensor:
    """philox.h's log_unit: log of u in (0, 1] from its exponent and an atanh series."""
    bits = u.view(torch.int32).to(torch.int64)
    mantissa = bits & 0x7FFFFF
    upper = (mantissa > 0x3504F3).to(torch.int64)
    exponent = (bits >> 23) - 127 + upper
    f_bits = mantissa | torch.where(upper.bool(), 0x3F000000, 0x3F800000)
    f = f_bits.to(torch.int32).view(torch.float32)
    one = _f32(1.0, u)
    s = _exact(torch.div, f - one, f + one)
    s2 = s * s
    p = _f32(_F["ninth"], u).expand_as(s2)
    for name in ("seventh", "fifth", "third"):
        p = p * s2 + _f32(_F[name], u)
    p = p * s2 + one
    log_f = (_f32(2.0, u) * s) * p
    e = exponent.to(torch.float32)
    return e * _f32(_F["ln2_hi"], u) + (log_f + e * _f32(_F["ln2_lo"], u))


def _sincos_turn(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """philox.h's sincos_turn: (sin, cos) of 2 pi x / 2^32 for uint32 x."""
    octant = x >> 29
    step = (x >> 5) & 0xFFFFFF
    odd = (octant & 1).bool()
    step = torch.where(odd, 0x1000000 - step, step)
    a = step.to(torch.float32) * _f32(_F["octant_step"], x)
    a2 = a * a
    ps = _f32(_F["sin9"], x).expand_as(a2)
    for name in ("sin7", "sin5", "sin3"):
        ps = ps * a2 + _f32(_F[name], x)
    sin_a = a + (a * a2) * ps
    pc = _f32(_F["cos10"], x).expand_as(a2)
    for name in ("cos8", "cos6", "cos4", "cos2"):
        pc = pc * a2 + _f32(_F[name], x)
    cos_a = _f32(1.0, x) + a2 * pc
    swap = (((octant + 1) >> 1) & 1).bool()
    s = torch.where(swap, cos_a, sin_a)
    c = torch.where(swap, sin_a, cos_a)
    s = torch.where(octant >= 4, -s, s)
    c = torch.where((((octant + 2) >> 2) & 1).bool(), -c, c)
    return s, c


def _box_muller(radius_bits: torch.Tensor, angle_bits: torch.Tensor):
    u = (radius_bits >> 8).to(torch.float32) * _f32(_F["two_pow_m24"], radius_bits)
    u = u + _f32(_F["two_pow_m25"], radius_bits)
    r = _exact(torch.sqrt, _f32(-2.0, u) * _log_unit(u))
    sin, cos = _sincos_turn(angle_bits)
    return r * cos, r * sin


def philox_normal(
    shape, seed: int, offset: int, device: torch.device | str = "cpu"
) -> torch.Tensor:
    """float32 standard normals of `shape`, bit-identical to the kernels' noise for
    (seed, offset): element i (row-major) is lane i % 4 of the Box-Muller'd
    Philox4x32-10(key=seed, counter=(offset // 4, i // 4))."""
    shape = tuple(shape)
    numel = 1
    for size in shape:
        numel *= size
    seed &= (1 << 64) - 1
    block = (offset & ((1 << 64) - 1)) >> 2
    groups = torch.arange((numel + 3) // 4, dtype=torch.int64, device=device)
    counter = [
        torch.full_like(groups, block & MASK32),
        torch.full_like(groups, block >> 32),
        groups & MASK32,
        groups >> 32,
    ]
    x0, x1, x2, x3 = philox4x32_10(counter, (seed & MASK32, seed >> 32))
    n0, n1 = _box_muller(x0, x1)
    n2, n3 = _box_muller(x2, x3)
    return torch.stack([n0, n1, n2, n3], dim=1).reshape(-1)[:numel].reshape(shape)
