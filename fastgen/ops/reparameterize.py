"""fastgen.ops.reparameterize / reparameterize_kl: the VAE sampling step with its KL term.

Native op: ``torch.ops.fastgen.reparameterize(mu, logvar, eps, rng_state, compute_kl)
-> (z, kl, rng_state_used)`` and ``reparameterize_backward`` (schemas in csrc/fastgen.cpp).
Without ``eps`` the kernel makes Philox4x32-10 + Box-Muller noise keyed by a (seed, offset)
pair, which it returns; autograd saves that pair, never the noise, and the backward kernel
regenerates the noise from it.
"""

from __future__ import annotations

import torch

from fastgen import _extension
from fastgen._backend import registry
from fastgen.ops._checks import FLOAT_DTYPES, check_like, check_tensor
from fastgen.reference import reparameterize as reference

OP = "reparameterize"
registry.register(OP, FLOAT_DTYPES)


def reparameterize(
    mu: torch.Tensor,
    logvar: torch.Tensor,
    eps: torch.Tensor | None = None,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    r"""Draws ``z ~ N(mu, exp(logvar))`` differentiably::

        z = mu + exp(0.5 * logvar) * eps,   eps ~ N(0, 1) unless given

    ``mu``, ``logvar`` (and ``eps``): the same shape ``[N, ...]``, device and dtype (float32,
    float64, float16, bfloat16; half types compute in float32); any strides. ``z`` is a
    contiguous tensor of mu's shape and dtype.

    Noise: with ``eps=None`` the kernel makes it with Philox4x32-10 + Box-Muller keyed by a
    (seed, offset) pair drawn from ``generator`` or, by default, from torch's default
    generator for the device (on CUDA its Philox seed and offset, taken in the kernel as
    PyTorch's own CUDA kernels take them, so CUDA graphs replay fresh noise); either way
    ``torch.manual_seed`` reproduces a run, and ``FASTGEN_BACKEND=reference`` reproduces
    the native noise. The same pair gives
    bit-identical noise on CPU and CUDA; ``fastgen.reference.reparameterize.philox_normal``
    reproduces it in PyTorch. Backward regenerates the noise from the pair instead of saving
    it. Same behaviour in training and eval.

    Args:
        mu: mean, [N, ...] (at least 1-D), float32/float64/float16/bfloat16, any strides.
        logvar: log-variance, mu's shape, dtype and device.
        eps: standard-normal noise, mu's shape, dtype and device; None to draw it.
        generator: a torch.Generator on mu's device type to draw the noise's (seed, offset)
            from; None for torch's default generator. Unused when eps is given.
    Returns:
        z, a tensor of mu's shape and dtype (contiguous from the native kernels).
        Differentiable with respect to mu, logvar and eps.
    """
    return _forward("fastgen.ops.reparameterize", mu, logvar, eps, generator, False)[0]


def reparameterize_kl(
    mu: torch.Tensor,
    logvar: torch.Tensor,
    eps: torch.Tensor | None = None,
    generator: torch.Generator | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    r"""``reparameterize`` plus the per-sample KL term, in one pass::

        z     = mu + exp(0.5 * logvar) * eps
        kl[n] = -0.5 * sum_i (1 + logvar[n, i] - mu[n, i]^2 - exp(logvar[n, i]))

    i.e. KL(N(mu, exp(logvar)) || N(0, I)) summed over all non-batch dims, accumulated in
    float32 for half inputs, in a fixed order (deterministic). Noise as for
    ``reparameterize``.

    Args:
        mu: mean, [N, ...] (at least 1-D), float32/float64/float16/bfloat16, any strides.
        logvar: log-variance, mu's shape, dtype and device.
        eps: standard-normal noise, mu's shape, dtype and device; None to draw it.
        generator: a torch.Generator on mu's device type to draw the noise's (seed, offset)
            from; None for torch's default generator. Unused when eps is given.
    Returns:
        (z, kl): z of mu's shape and dtype as ``reparameterize`` returns it; kl [N] of mu's
        dtype, the per-sample KL term (average it over the batch for the usual loss). Both
        differentiable.
    """
    z, kl = _forward("fastgen.ops.reparameterize_kl", mu, logvar, eps, generator, True)[:2]
    return z, kl


def _valid(mu, other) -> bool:
    """The common case, checked cheaply (this op is small: the checks are a visible part
    of its cost); anything else goes through the checks that explain what is wrong."""
    return (
        isinstance(other, torch.Tensor)
        and other.shape == mu.shape
        and other.dtype == mu.dtype
        and other.device == mu.device
    )


def _forward(fn, mu, logvar, eps, generator, compute_kl):
    if not (
        isinstance(mu, torch.Tensor)
        and mu.dtype in FLOAT_DTYPES
        and mu.dim() > 0
        and _valid(mu, logvar)
        and (eps is None or _valid(mu, eps))
    ):
        check_tensor(fn, "mu", mu, min_dim=1)
        check_like(fn, "logvar", logvar, mu, "mu", shape=mu.shape)
        if eps is not None:
            check_like(fn, "eps", eps, mu, "mu", shape=mu.shape)
    rng_state = None
    if eps is None and generator is not None:
        rng_state = draw_rng_state(fn, generator, mu.device)
    if registry.use_native(OP, mu):
        # Autograd is the C++ kernel in csrc/reparameterize/reparameterize_autograd.cpp.
        return torch.ops.fastgen.reparameterize.default(mu, logvar, eps, rng_state, compute_kl)
    if eps is None:
        if rng_state is None:
            rng_state = default_rng_state(fn, mu.device)
        seed, offset = rng_state.tolist()
        eps = reference.philox_normal(mu.shape, seed, offset, mu.device).to(mu.dtype)
    if mu.dtype in (torch.float16, torch.bfloat16):
        z, kl = reference.reparameterize_kl(mu.float(), logvar.float(), eps.float())
        return z.to(mu.dtype), kl.to(mu.dtype)
    return reference.reparameterize_kl(mu, logvar, eps)


def draw_rng_state(fn: str, generator: torch.Generator | None, device) -> torch.Tensor:
    """A fresh int64 [2] (seed, offset) on `device`, drawn from `generator` (default: the
    device's default generator); offset is a multiple of 4, as PyTorch's Philox offsets are."""
    device = torch.device(device)
    if generator is not None:
        if not isinstance(generator, torch.Generator):
            raise TypeError(
                f"{fn}: generator must be a torch.Generator, got {type(generator).__name__}"
            )
        if generator.device.type != device.type:
            raise ValueError(
                f"{fn}: generator is on {generator.device.type} but mu is on {device.type}"
            )
    state = torch.randint(
        -(2**63), 2**63 - 1, (2,), generator=generator, dtype=torch.int64, device=device
    )
    state[1:].bitwise_and_(-4)  # in place, no host tensor: safe under CUDA-graph capture
    return state


def default_rng_state(fn: str, device) -> torch.Tensor:
    """The (seed, offset) the native kernel takes when neither eps nor a generator is given, so
    that the reference path (FASTGEN_BACKEND=reference) reproduces native noise under
    torch.manual_seed: on CPU a draw from the CPU generator (draw_rng_state, as the CPU kernel
    draws); on CUDA the default CUDA generator's Philox seed and offset, advanced by 4 as the
    kernel's philox_cuda_state(4) advances it (csrc/simt/philox_state.h)."""
    device = torch.device(device)
    if device.type != "cuda":
        return draw_rng_state(fn, None, device)
    index = device.index if device.index is not None else torch.cuda.current_device()
    generator = torch.cuda.default_generators[index]
    offset = generator.get_offset()
    generator.set_offset(offset + 4)
    seed = generator.initial_seed()
    seed = seed - 2**64 if seed >= 2**63 else seed  # the same 64 bits, as int64
    return torch.tensor([seed, offset], dtype=torch.int64, device=device)


def regenerate_noise(rng_state: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """The noise a call with `rng_state` used, recomputed (for double backward)."""
    zeros = torch.zeros_like(like)
    return torch.ops.fastgen.reparameterize.default(zeros, zeros, None, rng_state, False)[0]


# --- registration: fake kernels, double backward --------------------------------------------

if _extension.LOADED:

    @torch.library.register_fake("fastgen::reparameterize")
    def _reparameterize_fake(mu, logvar, eps, rng_state, compute_kl):
        rows = mu.shape[0] if compute_kl else 0
        return (
            mu.new_empty(mu.shape),
            mu.new_empty((rows,)),
            mu.new_empty((2,), dtype=torch.int64),
        )

    @torch.library.register_fake("fastgen::reparameterize_backward")
    def _reparameterize_backward_fake(grad_z, grad_kl, mu, logvar, eps, rng_state):
        return mu.new_empty(mu.shape), mu.new_empty(mu.shape)

    def _setup_backward_context(ctx, inputs, output):
        grad_z, grad_kl, mu, logvar, eps, rng_state = inputs
        ctx.save_for_backward(grad_z, grad_kl, mu, logvar, eps, rng_state)

    def _double_backward(ctx, grad_grad_mu, grad_grad_logvar):
        # d mu = g + k mu, d logvar = 0.5 (g s e + k (s^2 - 1)), s = exp(logvar / 2), k the
        # sample's grad_kl: differentiated here in plain PyTorch (double backward is rare:
        # gradient penalties on a VAE), with the noise regenerated from rng_state.
        grad_z, grad_kl, mu, logvar, eps, rng_state = ctx.saved_tensors
        if grad_grad_mu is None:
            grad_grad_mu = torch.zeros_like(mu)
        if grad_grad_logvar is None:
            grad_grad_logvar = torch.zeros_like(mu)
        noise = eps if eps is not None else regenerate_noise(rng_state, mu)
        std = torch.exp(0.5 * logvar)
        shape = (-1,) + (1,) * (mu.dim() - 1)
        k = grad_kl.reshape(shape) if grad_kl.numel() else torch.zeros_like(mu[:1])
        d_grad_z = grad_grad_mu + grad_grad_logvar * 0.5 * std * noise
        d_grad_kl = None
        if grad_kl.numel():
            terms = grad_grad_mu * mu + grad_grad_logvar * 0.5 * (std * std - 1)
            d_grad_kl = terms.reshape(terms.shape[0], -1).sum(1)
        d_mu = grad_grad_mu * k
        d_logvar = grad_grad_logvar * (0.25 * grad_z * std * noise + 0.5 * k * std * std)
        d_eps = grad_grad_logvar * 0.5 * grad_z * std if eps is not None else None
        return d_grad_z, d_grad_kl, d_mu, d_logvar, d_eps, None

    torch.library.register_autograd(
        "fastgen::reparameterize_backward",
        _double_backward,
        setup_context=_setup_backward_context,
    )
