#pragma once
// fastgen::reparameterize and its backward (schemas in csrc/fastgen.cpp).
//
//   z[n, i]  = mu[n, i] + exp(0.5 * logvar[n, i]) * eps[n, i]
//   kl[n]    = -0.5 * sum_i (1 + logvar[n, i] - mu[n, i]^2 - exp(logvar[n, i]))
//   d mu     = grad_z + grad_kl[n] * mu
//   d logvar = grad_z * 0.5 * exp(0.5 * logvar) * eps + grad_kl[n] * 0.5 * (exp(logvar) - 1)
//
// The kernels evaluate these with stock autograd's operations in its order (with
// q = -0.5 * grad_kl[n], s = exp(0.5 * logvar): d mu = grad_z + (-q) * (2 * mu), d logvar =
// 0.5 * ((grad_z * eps) * s) + (q - q * (s * s))), and the float exp keeps expf's overflow
// and denormal range, so that NaN and inf land where stock's do (issue 24.8;
// tests/ops/test_nonfinite.py).
//
// Tensors are viewed as [N, M] (M = numel / N) in row-major order of their logical shape;
// eps, when not given, is philox::normal4 noise of element n * M + i (csrc/common/philox.h)
// for the (seed, offset) in rng_state. Half inputs compute in float32; kl has the input
// dtype and is accumulated in acc_t (float32 or float64) in a fixed order, so it is
// deterministic. The kernels assume the checks of fastgen/ops/reparameterize.py passed.

#include <ATen/core/Tensor.h>

#include <cstdint>
#include <optional>
#include <tuple>

#include "common/checks.h"

namespace fastgen::reparameterize {

// The noise key of one call: element group g uses Philox counter (offset / 4, g).
struct NoiseKey {
  uint64_t seed = 0;
  uint64_t offset = 0;
};

// The [N, M] view every kernel works on.
struct RowShape {
  int64_t rows = 0;     // N = mu.size(0)
  int64_t columns = 0;  // M = numel / N
};

inline RowShape row_shape(const at::Tensor& mu) {
  const int64_t rows = mu.size(0);
  return {rows, rows == 0 ? 0 : mu.numel() / rows};
}

// The checks every entry point runs first (common/checks.h).
inline void check_key(const char* op, const at::Tensor& rng_state) {
  TORCH_CHECK_VALUE(rng_state.defined(), op, ": rng_state is an undefined tensor");
  TORCH_CHECK_TYPE(rng_state.scalar_type() == at::kLong, op,
                   ": rng_state must be int64 (seed, offset), got ", rng_state.scalar_type());
  TORCH_CHECK_VALUE(rng_state.numel() == 2, op,
                    ": rng_state must hold 2 values (seed, offset), got shape ", rng_state.sizes());
}

inline void check_forward(const at::Tensor& mu, const at::Tensor& logvar,
                          const std::optional<at::Tensor>& eps,
                          const std::optional<at::Tensor>& rng_state) {
  constexpr const char* op = "fastgen::reparameterize";
  checks::floating(op, "mu", mu);
  TORCH_CHECK_VALUE(mu.dim() >= 1, op, ": mu must have at least 1 dim, got a 0-d tensor");
  checks::like(op, "logvar", logvar, "mu", mu, mu.sizes());
  if (eps.has_value()) checks::like(op, "eps", *eps, "mu", mu, mu.sizes());
  if (rng_state.has_value()) check_key(op, *rng_state);
}

inline void check_backward(const at::Tensor& grad_z, const at::Tensor& grad_kl,
                           const at::Tensor& mu, const at::Tensor& logvar,
                           const std::optional<at::Tensor>& eps, const at::Tensor& rng_state) {
  constexpr const char* op = "fastgen::reparameterize_backward";
  checks::floating(op, "mu", mu);
  TORCH_CHECK_VALUE(mu.dim() >= 1, op, ": mu must have at least 1 dim, got a 0-d tensor");
  checks::like(op, "logvar", logvar, "mu", mu, mu.sizes());
  checks::like(op, "grad_z", grad_z, "mu", mu, mu.sizes());
  checks::like(op, "grad_kl", grad_kl, "mu", mu);
  TORCH_CHECK_VALUE(grad_kl.numel() == 0 || grad_kl.sizes() == at::IntArrayRef{mu.size(0)}, op,
                    ": grad_kl must be empty or of shape [", mu.size(0), "], got ",
                    grad_kl.sizes());
  if (eps.has_value()) {
    checks::like(op, "eps", *eps, "mu", mu, mu.sizes());
  } else {
    check_key(op, rng_state);
  }
}

// The CPU entry points: reparameterize_cpu returns (z, kl, rng_state_used), kl empty when
// !compute_kl, rng_state_used int64 [2] on mu's device (zeros when eps was given);
// reparameterize_backward_cpu returns (grad_mu, grad_logvar), grad_kl may be empty (no KL
// term). They check their arguments first (reparameterize_cpu_kernels.cpp, compiled once per
// capability with these signatures; the op runs the copy for this CPU).
#define FASTGEN_REPARAMETERIZE_CPU(ns)                                                      \
  namespace ns {                                                                            \
  std::tuple<at::Tensor, at::Tensor, at::Tensor> reparameterize_cpu(                        \
      const at::Tensor& mu, const at::Tensor& logvar, const std::optional<at::Tensor>& eps, \
      const std::optional<at::Tensor>& rng_state, bool compute_kl);                         \
  std::tuple<at::Tensor, at::Tensor> reparameterize_backward_cpu(                           \
      const at::Tensor& grad_z, const at::Tensor& grad_kl, const at::Tensor& mu,            \
      const at::Tensor& logvar, const std::optional<at::Tensor>& eps,                       \
      const at::Tensor& rng_state);                                                         \
  }
FASTGEN_REPARAMETERIZE_CPU(baseline)
FASTGEN_REPARAMETERIZE_CPU(avx2)
FASTGEN_REPARAMETERIZE_CPU(avx512)
#undef FASTGEN_REPARAMETERIZE_CPU

// The same, as the CUDA launchers (reparameterize_cuda.cuh) compiled for the emulated build
// (FASTGEN_BACKEND=emulated-cuda); nvcc builds the same code as cuda::forward / backward. One
// launch each way; the key comes from the device generator's Philox state when rng_state is
// absent (simt/philox_state.h).
namespace emulated_cuda {
std::tuple<at::Tensor, at::Tensor, at::Tensor> forward(const at::Tensor& mu,
                                                       const at::Tensor& logvar,
                                                       const std::optional<at::Tensor>& eps,
                                                       const std::optional<at::Tensor>& rng_state,
                                                       bool compute_kl);
std::tuple<at::Tensor, at::Tensor> backward(const at::Tensor& grad_z, const at::Tensor& grad_kl,
                                            const at::Tensor& mu, const at::Tensor& logvar,
                                            const std::optional<at::Tensor>& eps,
                                            const at::Tensor& rng_state);
}  // namespace emulated_cuda

}  // namespace fastgen::reparameterize
