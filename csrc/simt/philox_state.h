#pragma once
// The noise key of a kernel that draws from the device's default generator, for both builds.
//
//   simt::PhiloxState state = simt::default_philox_state(increment);  // host, per call
//   auto [seed, offset] = simt::unpack(state);                         // in the kernel
//
// CUDA: the CUDA generator's at::PhiloxCudaState, advanced by `increment` under the
// generator's lock and unpacked in the kernel (so a CUDA graph replay reads the generator's
// current offset), as PyTorch's own dropout does. Emulated: there is no CUDA generator on CPU
// tensors, so the key is drawn from the CPU default generator exactly as the CPU kernels
// draw theirs (draw_key in csrc/reparameterize/reparameterize_cpu_kernels.cpp: a randint
// over int64, offset rounded down to a multiple of 4); the emulated kernel and the CPU
// kernel then make the same noise under the same torch.manual_seed.

#include <cstdint>
#include <utility>

#include "simt/simt.h"

#if defined(__CUDACC__)

#include <ATen/cuda/CUDAGeneratorImpl.h>
#include <ATen/cuda/PhiloxUtils.cuh>

#include <mutex>

namespace fastgen::simt {

using PhiloxState = at::PhiloxCudaState;

inline PhiloxState default_philox_state(uint64_t increment) {
  auto* generator = at::get_generator_or_default<at::CUDAGeneratorImpl>(
      std::nullopt, at::cuda::detail::getDefaultCUDAGenerator());
  std::lock_guard<std::mutex> lock(generator->mutex_);
  return generator->philox_cuda_state(increment);
}

__device__ __forceinline__ std::pair<uint64_t, uint64_t> unpack(const PhiloxState& state) {
  const auto [seed, offset] = at::cuda::philox::unpack(state);
  return {seed, offset};
}

}  // namespace fastgen::simt

#else

#include <ATen/ops/randint.h>

#include <limits>

namespace fastgen::simt {

struct PhiloxState {
  uint64_t seed = 0, offset = 0;
};

inline PhiloxState default_philox_state(uint64_t /*increment*/) {
  const at::Tensor state =
      at::randint(std::numeric_limits<int64_t>::min(), std::numeric_limits<int64_t>::max(), {2},
                  at::TensorOptions().dtype(at::kLong));
  const int64_t* values = state.const_data_ptr<int64_t>();
  return {static_cast<uint64_t>(values[0]), static_cast<uint64_t>(values[1]) & ~uint64_t{3}};
}

inline std::pair<uint64_t, uint64_t> unpack(const PhiloxState& state) {
  return {state.seed, state.offset};
}

}  // namespace fastgen::simt

#endif
