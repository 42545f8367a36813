#pragma once
// Counter-based Gaussian noise shared by the CPU and CUDA kernels: Philox4x32-10
// (Salmon et al., "Parallel random numbers: as easy as 1, 2, 3", SC'11) followed by a
// Box-Muller transform written out in float32 +, -, *, / and sqrt only. It compiles as
// host C++ and as CUDA device code and gives BIT-IDENTICAL floats on both for the same
// (seed, offset, element index), which the tests check against the pure-PyTorch copy in
// fastgen/reference/reparameterize.py.
//
// Element -> counter mapping (the contract every implementation follows):
//   element i of a tensor (its linear index in row-major order of the logical shape,
//   whatever the strides) belongs to group g = i / 4 and takes lane i % 4 of
//       philox4x32_10(key = (lo32(seed), hi32(seed)),
//                     counter = (lo32(offset / 4), hi32(offset / 4), lo32(g), hi32(g)))
//   This is the counter layout of curand_init(seed, subsequence = g, offset) with the
//   offset a multiple of 4, as PyTorch's Philox offsets always are: a call that advances
//   the CUDA generator's offset by 4 owns every counter with that offset, so its noise
//   never overlaps another PyTorch kernel's. Offsets 4k..4k+3 give the same noise.
// Lanes -> normals: (x0, x1) give normals 0 and 1, (x2, x3) give normals 2 and 3:
//   u     = float(x0 >> 8) * 2^-24 + 2^-25              in [2^-25, 1]  (never 0: log is finite)
//   r     = sqrt(-2 * log(u))                            (log below; r <= 5.9)
//   theta = 2 * pi * x1 / 2^32                          (octant from the top 3 bits, below)
//   n0 = r * cos(theta),  n1 = r * sin(theta)
//
// Why it is bit-identical: every float operation is a single IEEE-754 round-to-nearest
// +, -, *, / or sqrt, done in the same order on both sides. Host code is compiled with
// -ffp-contract=off (setup.py) so no multiply-add is fused; device code uses the
// __f*_rn intrinsics, which nvcc never contracts into FMAs. Integer -> float conversions
// only ever see values below 2^24 + 1, so they are exact. log and sincos are our own
// polynomials (not the libm / CUDA math library, whose results differ by an ulp between
// the two), accurate to a few float32 ulps, which is far below what Box-Muller needs.

#include <cstdint>

#if defined(__CUDACC__)
#define FASTGEN_HD __host__ __device__ __forceinline__
#else
#define FASTGEN_HD inline
#endif

// Each operation below has a device branch, for nvcc's device pass and the SIMT emulator
// (whose __f*_rn intrinsics are the same IEEE operations, csrc/simt/emulator.h), and a host
// branch with the plain operators: FASTGEN_PHILOX_DEVICE_OR_HOST(device, host) picks one.
#if defined(__CUDA_ARCH__) || defined(FASTGEN_SIMT_EMULATION)
#define FASTGEN_PHILOX_DEVICE_OR_HOST(device, host) device
#else
#define FASTGEN_PHILOX_DEVICE_OR_HOST(device, host) host
#endif
#if defined(FASTGEN_SIMT_EMULATION)
#include "simt/simt.h"
#endif

namespace fastgen::philox {

// Philox4x32 round multipliers and Weyl key increments (Random123's values).
constexpr uint32_t kMul0 = 0xD2511F53u;
constexpr uint32_t kMul1 = 0xCD9E8D57u;
constexpr uint32_t kWeyl0 = 0x9E3779B9u;
constexpr uint32_t kWeyl1 = 0xBB67AE85u;
constexpr int kRounds = 10;

struct Uint4 {
  uint32_t x, y, z, w;
};

FASTGEN_HD uint32_t mulhi(uint32_t a, uint32_t b) {
  return FASTGEN_PHILOX_DEVICE_OR_HOST(__umulhi(a, b),
                                       static_cast<uint32_t>((static_cast<uint64_t>(a) * b) >> 32));
}

FASTGEN_HD Uint4 philox4x32_10(Uint4 counter, uint32_t key0, uint32_t key1) {
#if defined(__CUDACC__)
#pragma unroll
#endif
  for (int round = 0; round < kRounds; ++round) {
    const uint32_t hi0 = mulhi(kMul0, counter.x), lo0 = kMul0 * counter.x;
    const uint32_t hi1 = mulhi(kMul1, counter.z), lo1 = kMul1 * counter.z;
    counter = {hi1 ^ counter.y ^ key0, lo1, hi0 ^ counter.w ^ key1, lo0};
    key0 += kWeyl0;
    key1 += kWeyl1;
  }
  return counter;
}

// The counter of element group `group` for a (seed, offset) pair: see the header comment.
FASTGEN_HD Uint4 group_counter(uint64_t offset, uint64_t group) {
  const uint64_t block = offset >> 2;
  return {static_cast<uint32_t>(block), static_cast<uint32_t>(block >> 32),
          static_cast<uint32_t>(group), static_cast<uint32_t>(group >> 32)};
}

// --- float32 arithmetic that is the same on host and device ------------------------------
FASTGEN_HD float fmul(float a, float b) {
  return FASTGEN_PHILOX_DEVICE_OR_HOST(__fmul_rn(a, b), a * b);
}
FASTGEN_HD float fadd(float a, float b) {
  return FASTGEN_PHILOX_DEVICE_OR_HOST(__fadd_rn(a, b), a + b);
}
FASTGEN_HD float fsub(float a, float b) {
  return FASTGEN_PHILOX_DEVICE_OR_HOST(__fsub_rn(a, b), a - b);
}
FASTGEN_HD float fdiv(float a, float b) {
  return FASTGEN_PHILOX_DEVICE_OR_HOST(__fdiv_rn(a, b), a / b);
}
FASTGEN_HD float fsqrt(float a) {
  return FASTGEN_PHILOX_DEVICE_OR_HOST(__fsqrt_rn(a), __builtin_sqrtf(a));
}
FASTGEN_HD uint32_t float_bits(float a) {
  return FASTGEN_PHILOX_DEVICE_OR_HOST(__float_as_uint(a), __builtin_bit_cast(uint32_t, a));
}
FASTGEN_HD float bits_float(uint32_t a) {
  return FASTGEN_PHILOX_DEVICE_OR_HOST(__uint_as_float(a), __builtin_bit_cast(float, a));
}
// Exact for the values used here (< 2^24 + 1).
FASTGEN_HD float small_uint_to_float(uint32_t a) {
  return FASTGEN_PHILOX_DEVICE_OR_HOST(__uint2float_rn(a),
                                       static_cast<float>(static_cast<int32_t>(a)));
}

// Coefficients as hex floats so every implementation (C++, CUDA, the PyTorch reference)
// uses the same float32 values.
namespace coef {
// log: atanh series, log(f) = 2 s (1 + s^2/3 + s^4/5 + s^6/7 + s^8/9), s = (f-1)/(f+1).
constexpr float kThird = 0x1.555556p-2f;
constexpr float kFifth = 0x1.99999ap-3f;
constexpr float kSeventh = 0x1.24924ap-3f;
constexpr float kNinth = 0x1.c71c72p-4f;
// ln 2 split so that e * kLn2Hi is exact for the exponents that occur (|e| <= 25).
constexpr float kLn2Hi = 0x1.62e4p-1f;
constexpr float kLn2Lo = 0x1.7f7d1cp-20f;
// sin / cos Taylor coefficients on [0, pi/4] (truncation error < 2e-9).
constexpr float kSin3 = -0x1.555556p-3f;
constexpr float kSin5 = 0x1.111112p-7f;
constexpr float kSin7 = -0x1.a01a02p-13f;
constexpr float kSin9 = 0x1.71de3ap-19f;
constexpr float kCos2 = -0x1.0p-1f;
constexpr float kCos4 = 0x1.555556p-5f;
constexpr float kCos6 = -0x1.6c16c2p-10f;
constexpr float kCos8 = 0x1.a01a02p-16f;
constexpr float kCos10 = -0x1.27e4fcp-22f;
// (pi / 4) / 2^24: one step of the 24-bit angle within an octant.
constexpr float kOctantStep = 0x1.921fb6p-25f;
constexpr float kTwoPowMinus24 = 0x1.0p-24f;
constexpr float kTwoPowMinus25 = 0x1.0p-25f;
}  // namespace coef

// Natural log of u in (0, 1]: u = 2^e * f with f in [sqrt(1/2), sqrt(2)).
FASTGEN_HD float log_unit(float u) {
  const uint32_t bits = float_bits(u);
  const uint32_t mantissa = bits & 0x7FFFFFu;
  // 0x3504F3 is sqrt(2)'s mantissa: above it, halve f and bump the exponent. Branch-free
  // (integer arithmetic instead of selects) so that CPU loops vectorize.
  const uint32_t upper = static_cast<uint32_t>(mantissa > 0x3504F3u);
  const int exponent = static_cast<int>(bits >> 23) - 127 + static_cast<int>(upper);
  const float f = bits_float(mantissa | (0x3F800000u - (upper << 23)));
  const float s = fdiv(fsub(f, 1.0f), fadd(f, 1.0f));
  const float s2 = fmul(s, s);
  float p = coef::kNinth;
  p = fadd(fmul(p, s2), coef::kSeventh);
  p = fadd(fmul(p, s2), coef::kFifth);
  p = fadd(fmul(p, s2), coef::kThird);
  p = fadd(fmul(p, s2), 1.0f);
  const float log_f = fmul(fmul(2.0f, s), p);
  const float e = small_uint_to_float(static_cast<uint32_t>(exponent + 64)) - 64.0f;
  return fadd(fmul(e, coef::kLn2Hi), fadd(log_f, fmul(e, coef::kLn2Lo)));
}

struct SinCos {
  float sin, cos;
};

// sin and cos of 2 pi x / 2^32 from the 32-bit x: the octant is x's top 3 bits, the
// angle inside it the next 24 bits (mirrored in odd octants so the polynomials only see
// [0, pi/4]); the octant's symmetry then swaps and negates, exactly.
FASTGEN_HD SinCos sincos_turn(uint32_t x) {
  const uint32_t octant = x >> 29;
  const uint32_t odd = octant & 1u;
  // step, or 2^24 - step in odd octants: (step ^ -1) + 1 = -step.
  const uint32_t step = (((x >> 5) & 0xFFFFFFu) ^ (0u - odd)) + odd + (odd << 24);
  const float a = fmul(small_uint_to_float(step), coef::kOctantStep);
  const float a2 = fmul(a, a);
  float ps = coef::kSin9;
  ps = fadd(fmul(ps, a2), coef::kSin7);
  ps = fadd(fmul(ps, a2), coef::kSin5);
  ps = fadd(fmul(ps, a2), coef::kSin3);
  const float sin_a = fadd(a, fmul(fmul(a, a2), ps));
  float pc = coef::kCos10;
  pc = fadd(fmul(pc, a2), coef::kCos8);
  pc = fadd(fmul(pc, a2), coef::kCos6);
  pc = fadd(fmul(pc, a2), coef::kCos4);
  pc = fadd(fmul(pc, a2), coef::kCos2);
  const float cos_a = fadd(1.0f, fmul(a2, pc));
  // theta = octant * pi/4 + a (even octants) or (octant + 1) * pi/4 - a (odd ones):
  // swap sin and cos in octants 1, 2, 5, 6, negate sin in 4..7 and cos in 2..5. Done on the
  // bits (masks and sign flips), so it is exact and branch-free.
  const uint32_t swap = 0u - (((octant + 1u) >> 1) & 1u);
  const uint32_t sin_bits = float_bits(sin_a), cos_bits = float_bits(cos_a);
  const uint32_t s = (sin_bits & ~swap) | (cos_bits & swap);
  const uint32_t c = (cos_bits & ~swap) | (sin_bits & swap);
  const uint32_t sin_sign = (octant >> 2) << 31;
  const uint32_t cos_sign = (((octant + 2u) >> 2) & 1u) << 31;
  return {bits_float(s ^ sin_sign), bits_float(c ^ cos_sign)};
}

// Box-Muller in two halves, so a CPU loop can take the sqrt in between with vector
// instructions (a scalar sqrtf keeps GCC from vectorizing: it may set errno).
// radius_squared = -2 log(u) of the radius word; the normals are sqrt(that) * (cos, sin).
FASTGEN_HD float radius_squared(uint32_t radius_bits) {
  const float u =
      fadd(fmul(small_uint_to_float(radius_bits >> 8), coef::kTwoPowMinus24), coef::kTwoPowMinus25);
  return fmul(-2.0f, log_unit(u));
}

// Two standard normals from two 32-bit words (Box-Muller).
FASTGEN_HD void box_muller(uint32_t radius_bits, uint32_t angle_bits, float& n0, float& n1) {
  const float r = fsqrt(radius_squared(radius_bits));
  const SinCos sc = sincos_turn(angle_bits);
  n0 = fmul(r, sc.cos);
  n1 = fmul(r, sc.sin);
}

// The four normals of element group `group` (elements 4 * group .. 4 * group + 3).
FASTGEN_HD void normal4(uint64_t seed, uint64_t offset, uint64_t group, float out[4]) {
  const Uint4 bits = philox4x32_10(group_counter(offset, group), static_cast<uint32_t>(seed),
                                   static_cast<uint32_t>(seed >> 32));
  box_muller(bits.x, bits.y, out[0], out[1]);
  box_muller(bits.z, bits.w, out[2], out[3]);
}

}  // namespace fastgen::philox

#undef FASTGEN_PHILOX_DEVICE_OR_HOST
