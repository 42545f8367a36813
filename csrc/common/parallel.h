#pragma once
// How the kernels split their work, named once: the at::parallel_for grains of the CPU
// kernels and the CUDA grid limits the launchers stay within.

#include <algorithm>
#include <cstdint>

namespace fastgen::parallel {

// Elements (values read or written) one at::parallel_for task should cover: ATen's own grain
// (at::internal::GRAIN_SIZE). Below it, handing work to another thread costs more than the
// thread saves, so small tensors stay on the calling thread.
constexpr int64_t kGrainElements = 32768;
// For loops whose elements cost several times a plain elementwise op (a Winograd channel
// row feeds a 16-position transform; a reparameterize element draws Philox noise and runs
// Box-Muller), a smaller grain already pays for the hand-off.
constexpr int64_t kTransformGrainElements = 16384;
constexpr int64_t kNoiseGrainElements = 8192;

// The grain, in items, of a loop over items of `elements_per_item` elements each.
inline int64_t grain(int64_t elements_per_item, int64_t grain_elements = kGrainElements) {
  return std::max<int64_t>(1, grain_elements / std::max<int64_t>(elements_per_item, 1));
}

// CUDA launch limits (every architecture fastgen builds for): gridDim.x up to 2^31 - 1,
// gridDim.y and gridDim.z up to 65535. Launchers put their long dimension on x, or loop when
// a y/z extent could exceed the cap.
constexpr int64_t kMaxGridX = 2147483647;
constexpr int64_t kMaxGridYZ = 65535;

}  // namespace fastgen::parallel
