#pragma once
// CUDA kernels of fastgen::reparameterize / reparameterize_backward (math in
// reparameterize.h), with their launchers: compiled by nvcc (reparameterize_cuda.cu) and
// against the SIMT emulator (reparameterize_emulated.cpp) from this one source. Forward is one
// launch: Philox noise in registers, z, and the per-sample KL reduced in the same launch in a fixed
// order (shuffle tree, then shared memory in warp order; no atomics), so kl is bit-reproducible.
// Backward is one launch that regenerates the noise from rng_state; no noise tensor is ever stored.
//
// Noise keys: with neither eps nor rng_state, (seed, offset) come from the CUDA generator
// as at::PhiloxCudaState (advanced by 4 per call) and are unpacked in the kernel, the way
// PyTorch's own dropout does it, so the op can be captured in a CUDA graph and every replay
// reads the generator's current offset: fresh noise. The kernel writes the (seed, offset)
// it used into rng_state_used (a device tensor), which the backward reads in its kernel;
// nothing is read back to the host. The noise is philox::normal4, bit-identical to the CPU
// kernel's for the same (seed, offset).
//
// Non-contiguous inputs are made contiguous first (one copy kernel each); contiguous inputs
// get exactly one launch per direction.

#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/zeros.h>

#include <algorithm>

#include "common/dispatch.h"
#include "common/philox.h"
#include "reparameterize/reparameterize.h"
#include "simt/philox_state.h"
#include "simt/simt.h"

namespace fastgen::reparameterize::FASTGEN_DEVICE_NS {
namespace {

constexpr int kThreads = 256;
constexpr int kWarp = 32;
// Rows up to this many elements get one warp each (8 rows per block); longer rows get a
// whole block, so a row's reduction never crosses blocks.
constexpr int64_t kWarpRowLimit = 4 * kWarp * 8;

__device__ __forceinline__ float exp_acc(float x) {
  return expf(x);
}
__device__ __forceinline__ double exp_acc(double x) {
  return exp(x);
}

template <typename acc>
__device__ __forceinline__ acc warp_sum(acc value) {
  // Butterfly: every lane ends with the same sum, made in the same order on every run.
#pragma unroll
  for (int stride = kWarp / 2; stride > 0; stride /= 2) {
    value += __shfl_xor_sync(0xFFFFFFFFu, value, stride);
  }
  return value;
}

// Where the noise key comes from: the given rng_state (device int64 [2]), or the CUDA
// generator's Philox state (graph-safe: unpacked here, in the kernel).
struct KeySource {
  const int64_t* given = nullptr;
  simt::PhiloxState philox;
  int64_t* used = nullptr;  // written by one thread: the key this call used
};

__device__ __forceinline__ NoiseKey resolve_key(const KeySource& source) {
  if (source.given != nullptr) {
    return {static_cast<uint64_t>(source.given[0]), static_cast<uint64_t>(source.given[1])};
  }
  const auto [seed, offset] = simt::unpack(source.philox);
  return {seed, offset};
}

// The key of a call with nothing to draw (an empty input): zeros when eps was given.
__global__ void write_key_kernel(KeySource key, bool generated) {
  const NoiseKey resolved = generated ? resolve_key(key) : NoiseKey{};
  key.used[0] = static_cast<int64_t>(resolved.seed);
  key.used[1] = static_cast<int64_t>(resolved.offset);
}

template <typename scalar_t>
struct ForwardArgs {
  const scalar_t* mu;
  const scalar_t* logvar;
  const scalar_t* eps;  // nullptr: Philox noise
  scalar_t* z;
  scalar_t* kl;  // nullptr: no KL
  int64_t rows;
  int64_t columns;
  KeySource key;
};

// kRowThreads threads (a warp or the block) own one row: they walk the Philox groups that
// overlap it (a group of 4 elements may straddle two rows; each row uses its own lanes),
// write z and sum the KL terms, then reduce them in a fixed order.
template <typename scalar_t, int kRowThreads>
__global__ void __launch_bounds__(kThreads) forward_kernel(ForwardArgs<scalar_t> args) {
  using acc = acc_t<scalar_t>;
  constexpr int kRowsPerBlock = kThreads / kRowThreads;
  FASTGEN_SHARED(warp_partials, acc[kThreads / kWarp]);

  const bool generated = args.eps == nullptr;
  NoiseKey key;
  if (generated) {
    key = resolve_key(args.key);
  }
  if (blockIdx.x == 0 && threadIdx.x == 0 && args.key.used != nullptr) {
    args.key.used[0] = static_cast<int64_t>(key.seed);
    args.key.used[1] = static_cast<int64_t>(key.offset);
  }

  const int lane = threadIdx.x % kRowThreads;
  for (int64_t row_base = static_cast<int64_t>(blockIdx.x) * kRowsPerBlock; row_base < args.rows;
       row_base += static_cast<int64_t>(gridDim.x) * kRowsPerBlock) {
    const int64_t row = row_base + threadIdx.x / kRowThreads;
    acc terms = 0;
    if (row < args.rows) {
      const int64_t begin = row * args.columns, end = begin + args.columns;
      for (int64_t group = (begin >> 2) + lane; group <= ((end - 1) >> 2); group += kRowThreads) {
        float noise[4];
        if (generated) philox::normal4(key.seed, key.offset, static_cast<uint64_t>(group), noise);
#pragma unroll
        for (int k = 0; k < 4; ++k) {
          const int64_t i = 4 * group + k;
          if (i < begin || i >= end) continue;
          const acc m = static_cast<acc>(args.mu[i]);
          const acc lv = static_cast<acc>(args.logvar[i]);
          const acc e = generated ? static_cast<acc>(noise[k]) : static_cast<acc>(args.eps[i]);
          const acc std = exp_acc(acc(0.5) * lv);
          args.z[i] = static_cast<scalar_t>(m + std * e);
          terms += (acc(1) + lv) - m * m - std * std;
        }
      }
    }
    if (args.kl == nullptr) continue;
    terms = warp_sum(terms);
    if constexpr (kRowThreads == kWarp) {
      if (lane == 0 && row < args.rows) args.kl[row] = static_cast<scalar_t>(acc(-0.5) * terms);
    } else {
      // The whole block is one row: warp sums, then warp 0 adds them in warp order.
      const int warp = threadIdx.x / kWarp;
      if (threadIdx.x % kWarp == 0) warp_partials[warp] = terms;
      __syncthreads();
      if (threadIdx.x == 0) {
        acc total = 0;
#pragma unroll
        for (int w = 0; w < kThreads / kWarp; ++w) total += warp_partials[w];
        args.kl[row] = static_cast<scalar_t>(acc(-0.5) * total);
      }
      __syncthreads();  // warp_partials is reused by the next row
    }
  }
}

template <typename scalar_t>
struct BackwardArgs {
  const scalar_t* grad_z;
  const scalar_t* grad_kl;  // nullptr: no KL term
  const scalar_t* mu;
  const scalar_t* logvar;
  const scalar_t* eps;  // nullptr: regenerate the Philox noise
  scalar_t* grad_mu;
  scalar_t* grad_logvar;
  int64_t numel;
  int64_t columns;
  const int64_t* rng_state;  // device int64 [2]
};

// Elementwise: one thread per Philox group (4 elements), grid-stride.
template <typename scalar_t>
__global__ void __launch_bounds__(kThreads) backward_kernel(BackwardArgs<scalar_t> args) {
  using acc = acc_t<scalar_t>;
  const bool generated = args.eps == nullptr;
  NoiseKey key;
  if (generated) {
    key = {static_cast<uint64_t>(args.rng_state[0]), static_cast<uint64_t>(args.rng_state[1])};
  }
  const int64_t groups = (args.numel + 3) >> 2;
  for (int64_t group = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; group < groups;
       group += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    float noise[4];
    if (generated) philox::normal4(key.seed, key.offset, static_cast<uint64_t>(group), noise);
#pragma unroll
    for (int k = 0; k < 4; ++k) {
      const int64_t i = 4 * group + k;
      if (i >= args.numel) break;
      const acc g = static_cast<acc>(args.grad_z[i]);
      const acc m = static_cast<acc>(args.mu[i]);
      const acc lv = static_cast<acc>(args.logvar[i]);
      const acc e = generated ? static_cast<acc>(noise[k]) : static_cast<acc>(args.eps[i]);
      const acc std = exp_acc(acc(0.5) * lv);
      // Stock autograd's operations in its order, so that NaN and inf land where stock's do
      // (issue 24.8): (g * eps) * std for z's path; q = -grad_kl / 2 (d kl / d term), then
      // q - q * var for logvar and -q * (2 mu) for mu.
      const acc z_path = acc(0.5) * ((g * e) * std);
      if (args.grad_kl != nullptr) {
        const acc q = acc(-0.5) * static_cast<acc>(args.grad_kl[i / args.columns]);
        args.grad_mu[i] = static_cast<scalar_t>(g + (-q) * (acc(2) * m));
        args.grad_logvar[i] = static_cast<scalar_t>(z_path + (q - q * (std * std)));
      } else {
        // No KL term: its gradient is absent, not zero (0 * inf would make NaN).
        args.grad_mu[i] = static_cast<scalar_t>(g);
        args.grad_logvar[i] = static_cast<scalar_t>(z_path);
      }
    }
  }
}

int max_blocks() {
  return simt::multiprocessor_count() * 8;
}

}  // namespace

std::tuple<at::Tensor, at::Tensor, at::Tensor> forward(const at::Tensor& mu,
                                                       const at::Tensor& logvar,
                                                       const std::optional<at::Tensor>& eps,
                                                       const std::optional<at::Tensor>& rng_state,
                                                       bool compute_kl) {
  check_forward(mu, logvar, eps, rng_state);
  const simt::DeviceGuard guard(mu.device());
  const RowShape shape = row_shape(mu);
  const at::Tensor mu_c = mu.contiguous();
  const at::Tensor logvar_c = logvar.contiguous();
  const at::Tensor eps_c = eps.has_value() ? eps->contiguous() : at::Tensor();
  at::Tensor z = at::empty(mu.sizes(), mu.options());
  at::Tensor kl = at::empty({compute_kl ? shape.rows : 0}, mu.options());
  const auto long_options = mu.options().dtype(at::kLong);
  at::Tensor used = at::empty({2}, long_options);

  KeySource key;
  key.used = used.mutable_data_ptr<int64_t>();
  at::Tensor given;
  if (!eps.has_value()) {
    if (rng_state.has_value()) {
      given = rng_state->to(mu.device(), at::kLong).contiguous();
      key.given = given.const_data_ptr<int64_t>();
    } else {
      // Our counters use offset / 4, so an increment of 4 reserves one full counter block.
      key.philox = simt::default_philox_state(4);
    }
  }
  const simt::Stream stream = simt::current_stream();
  if (mu.numel() == 0) {
    // Nothing to draw, but the call still takes its key (the generator advances) and returns
    // it, as the CPU kernel does: one thread writes it (in the kernel, so graph-safe).
    if (compute_kl) kl.zero_();
    simt::launch<write_key_kernel>({dim3(1), dim3(1), 0, stream}, key, !eps.has_value());
    return {z, kl, used};
  }

  FASTGEN_DISPATCH_FLOATING_TYPES(mu.scalar_type(), "reparameterize_cuda", [&] {
    ForwardArgs<scalar_t> args{mu_c.const_data_ptr<scalar_t>(),
                               logvar_c.const_data_ptr<scalar_t>(),
                               eps_c.defined() ? eps_c.const_data_ptr<scalar_t>() : nullptr,
                               z.mutable_data_ptr<scalar_t>(),
                               compute_kl ? kl.mutable_data_ptr<scalar_t>() : nullptr,
                               shape.rows,
                               shape.columns,
                               key};
    if (shape.columns <= kWarpRowLimit) {
      constexpr int rows_per_block = kThreads / kWarp;
      const int64_t blocks =
          std::min<int64_t>((shape.rows + rows_per_block - 1) / rows_per_block, max_blocks());
      simt::launch<forward_kernel<scalar_t, kWarp>>({dim3(blocks), dim3(kThreads), 0, stream},
                                                    args);
    } else {
      const int64_t blocks = std::min<int64_t>(shape.rows, max_blocks());
      simt::launch<forward_kernel<scalar_t, kThreads>>({dim3(blocks), dim3(kThreads), 0, stream},
                                                       args);
    }
  });
  return {z, kl, used};
}

std::tuple<at::Tensor, at::Tensor> backward(const at::Tensor& grad_z, const at::Tensor& grad_kl,
                                            const at::Tensor& mu, const at::Tensor& logvar,
                                            const std::optional<at::Tensor>& eps,
                                            const at::Tensor& rng_state) {
  check_backward(grad_z, grad_kl, mu, logvar, eps, rng_state);
  const simt::DeviceGuard guard(mu.device());
  const RowShape shape = row_shape(mu);
  at::Tensor grad_mu = at::empty(mu.sizes(), mu.options());
  at::Tensor grad_logvar = at::empty(mu.sizes(), mu.options());
  if (mu.numel() == 0) return {grad_mu, grad_logvar};
  const at::Tensor grad_z_c = grad_z.contiguous();
  const at::Tensor grad_kl_c = grad_kl.contiguous();
  const at::Tensor mu_c = mu.contiguous();
  const at::Tensor logvar_c = logvar.contiguous();
  const at::Tensor eps_c = eps.has_value() ? eps->contiguous() : at::Tensor();
  const at::Tensor state = rng_state.to(mu.device(), at::kLong).contiguous();

  const simt::Stream stream = simt::current_stream();
  FASTGEN_DISPATCH_FLOATING_TYPES(mu.scalar_type(), "reparameterize_backward_cuda", [&] {
    BackwardArgs<scalar_t> args{
        grad_z_c.const_data_ptr<scalar_t>(),
        grad_kl.numel() > 0 ? grad_kl_c.const_data_ptr<scalar_t>() : nullptr,
        mu_c.const_data_ptr<scalar_t>(),
        logvar_c.const_data_ptr<scalar_t>(),
        eps_c.defined() ? eps_c.const_data_ptr<scalar_t>() : nullptr,
        grad_mu.mutable_data_ptr<scalar_t>(),
        grad_logvar.mutable_data_ptr<scalar_t>(),
        mu.numel(),
        shape.columns,
        state.const_data_ptr<int64_t>()};
    const int64_t groups = (mu.numel() + 3) / 4;
    const int64_t blocks = std::min<int64_t>((groups + kThreads - 1) / kThreads, max_blocks());
    simt::launch<backward_kernel<scalar_t>>({dim3(blocks), dim3(kThreads), 0, stream}, args);
  });
  return {grad_mu, grad_logvar};
}

}  // namespace fastgen::reparameterize::FASTGEN_DEVICE_NS
