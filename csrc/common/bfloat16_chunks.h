#pragma once
// bfloat16 <-> float32 over short runs of values, in loops the compiler vectorizes, for the
// CPU kernels' elementwise passes (*_kernels.cpp, compiled once per capability).
//
// Why: a loop that reads c10::BFloat16 and writes it back through c10's conversions stays
// scalar (GCC 12 does not vectorize c10::BFloat16's struct loads with the NaN branch of its
// rounding), which made fastgen's bf16 epilogues 2-3x slower than aten's vectorized ones. Here
// a run of values is widened into a float buffer (a 16-bit shift), computed there by the same
// float loop as float32 tensors, and rounded back with integer selects (round_to_bits).

#include <c10/util/BFloat16.h>

#include <algorithm>
#include <bit>
#include <cstdint>

namespace fastgen::bfloat16_chunks {

// Values per run: a few KiB of float buffer, which stays in L1.
constexpr int64_t kChunk = 512;

// The bits of c10::BFloat16(value): round to nearest even, NaN to 0x7FC0, with integer selects
// instead of c10's `isnan` branch, so a loop of them vectorizes.
inline uint16_t round_to_bits(float value) {
  const uint32_t u = std::bit_cast<uint32_t>(value);
  const uint32_t rounded = (u + ((u >> 16) & 1u) + 0x7FFFu) >> 16;
  const uint32_t is_nan = -static_cast<uint32_t>((u & 0x7FFFFFFFu) > 0x7F800000u);
  return static_cast<uint16_t>((rounded & ~is_nan) | (0x7FC0u & is_nan));
}

inline void widen(const c10::BFloat16* __restrict src, float* __restrict dst, int64_t n) {
  const uint16_t* __restrict bits = reinterpret_cast<const uint16_t*>(src);
  for (int64_t i = 0; i < n; ++i) dst[i] = std::bit_cast<float>(uint32_t(bits[i]) << 16);
}

inline void narrow(const float* __restrict src, c10::BFloat16* __restrict dst, int64_t n) {
  uint16_t* __restrict out = reinterpret_cast<uint16_t*>(dst);
  for (int64_t i = 0; i < n; ++i) out[i] = round_to_bits(src[i]);
}

// Updates data[0, n) in place through float runs: body(values, first, count) rewrites
// values[0, count), which hold data[first, first + count) widened.
template <typename Body>
inline void update_in_float(c10::BFloat16* data, int64_t n, Body&& body) {
  float values[kChunk];
  for (int64_t first = 0; first < n; first += kChunk) {
    const int64_t count = std::min(kChunk, n - first);
    widen(data + first, values, count);
    body(values, first, count);
    narrow(values, data + first, count);
  }
}

}  // namespace fastgen::bfloat16_chunks
