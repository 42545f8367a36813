#pragma once
// The one header a CUDA kernel file includes for everything that differs between nvcc and
// fastgen's SIMT emulator (csrc/simt/emulator.h), so that each op's kernels AND launchers
// compile from one source twice: with nvcc for the GPU, and with the host compiler against
// the emulator, which runs them on CPU tensors in every build (FASTGEN_BACKEND=emulated-cuda).
//
// What kernel code may use, on both sides:
//   kernels and device functions: __global__, __device__, __forceinline__, __launch_bounds__,
//     threadIdx / blockIdx / blockDim / gridDim, __syncthreads, __shfl(_up/_down/_xor)_sync,
//     __ballot_sync / __any_sync / __all_sync / __activemask, atomicAdd / CAS / Exch / Max /
//     Min, __threadfence(_block), __ldg / __ldcg, the __f*_rn / __d*_rn intrinsics and bit
//     casts, <cmath>, c10::Half / c10::BFloat16, and nvcuda::wmma (csrc/simt/wmma.h);
//   shared memory: FASTGEN_SHARED(name, type) and FASTGEN_DYNAMIC_SHARED(name, type) instead
//     of __shared__ (the emulator gives every variable its own bounds and race shadow);
//   launchers: simt::launch<kernel>(config, args...) instead of <<<...>>>, simt::Stream,
//     simt::current_stream(), simt::DeviceGuard, simt::memset_async,
//     simt::multiprocessor_count(), simt::set_max_dynamic_shared<kernel>(bytes).
// Anything else a kernel needs is added to the emulator first.
//
// FASTGEN_DEVICE_NS names the namespace the shared code lands in (cuda or emulated_cuda), so
// both copies can live in one process without clashing.

#include <cstddef>
#include <cstdint>
#include <type_traits>

#if defined(__CUDACC__)

#include <ATen/cuda/CUDAContext.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <cuda_runtime.h>

#define FASTGEN_DEVICE_NS cuda
// Device-code branches of shared headers (philox.h): nvcc's device pass, or the emulator.
#if defined(__CUDA_ARCH__)
#define FASTGEN_DEVICE_CODE 1
#endif

#define FASTGEN_SHARED(name, ...) __shared__ ::std::type_identity_t<__VA_ARGS__> name
#define FASTGEN_DYNAMIC_SHARED(name, ...)                                  \
  extern __shared__ __align__(16) unsigned char fastgen_dynamic_shared_[]; \
  auto* name = reinterpret_cast<__VA_ARGS__*>(fastgen_dynamic_shared_)

namespace fastgen::simt {

using Stream = cudaStream_t;
using DeviceGuard = c10::cuda::CUDAGuard;

inline Stream current_stream() {
  return at::cuda::getCurrentCUDAStream();
}

inline int multiprocessor_count() {
  return at::cuda::getCurrentDeviceProperties()->multiProcessorCount;
}

inline void memset_async(void* data, int value, size_t bytes, Stream stream) {
  C10_CUDA_CHECK(cudaMemsetAsync(data, value, bytes, stream));
}

struct LaunchConfig {
  dim3 grid;
  dim3 block;
  size_t shared_bytes = 0;  // dynamic shared memory
  Stream stream = nullptr;
};

// kernel<<<grid, block, shared_bytes, stream>>>(args...), then the launch-error check.
template <auto kernel, typename... Args>
void launch(const LaunchConfig& config, Args&&... args) {
  kernel<<<config.grid, config.block, config.shared_bytes, config.stream>>>(
      std::forward<Args>(args)...);
  C10_CUDA_KERNEL_LAUNCH_CHECK();
}

// The opt-in a kernel needs for more than 48 KiB of dynamic shared memory.
template <auto kernel>
void set_max_dynamic_shared(int bytes) {
  C10_CUDA_CHECK(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, bytes));
}

}  // namespace fastgen::simt

#elif defined(FASTGEN_SIMT_EMULATION)

#define FASTGEN_DEVICE_NS emulated_cuda
#define FASTGEN_DEVICE_CODE 1
#include "simt/emulator.h"

#else
#error "csrc/simt/simt.h is for CUDA sources (nvcc) and the emulated build (FASTGEN_SIMT_EMULATION)"
#endif
