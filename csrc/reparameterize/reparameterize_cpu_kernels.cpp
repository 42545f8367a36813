// CPU kernels of fastgen::reparameterize / reparameterize_backward (math in
// reparameterize.h), compiled once per CPU capability (FASTGEN_CPU_NS: baseline, avx2,
// avx512; common/cpu_capability.h) so the loops vectorize at the CPU's width; each entry
// point checks its arguments first, and reparameterize_cpu.cpp registers the copy for the CPU.
// One pass over memory each way: forward reads mu and logvar and writes z and the per-sample
// KL; backward regenerates the noise instead of reading a saved copy.
//
// Work is split by rows (samples) across threads, so each KL sum is made by one thread in
// a fixed order: the result does not depend on the thread count. Inside a row the noise is
// made a block of 16 Philox groups (64 elements) at a time, in structure-of-arrays form so
// that the compiler vectorizes the 32-bit multiplies and the Box-Muller arithmetic.

#include "common/parallel.h"
#include "reparameterize/reparameterize.h"

#include <ATen/Parallel.h>
#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/randint.h>
#include <ATen/ops/zeros.h>

#include <algorithm>
#include <cmath>
#include <limits>
#include <type_traits>

#include "common/dispatch.h"
#include "common/philox.h"

#if defined(__SSE2__)
#include <immintrin.h>
#endif

// With AVX2 or AVX-512 the compiler's own vectorization of the plain loops (8 or 16 lanes)
// beats the 4-lane SSE2 intrinsics below; the results are the same.
#if defined(__AVX512F__) || defined(__AVX2__)
#define FASTGEN_WIDE_AUTOVEC 1
#endif

namespace fastgen::reparameterize::FASTGEN_CPU_NS {
namespace {

constexpr int kGroupsPerBlock = 16;
constexpr int kBlockElements = 4 * kGroupsPerBlock;
// Elements per thread task: parallel::kNoiseGrainElements (a [256, 128] latent batch uses two
// threads).

// In-place IEEE sqrt of n (a multiple of 4) floats: SSE's sqrtps where there is one, since
// GCC will not vectorize sqrtf itself (it may set errno); the results are the same.
template <int n>
inline void sqrt_block(float* values) {
#if defined(__AVX512F__)
  static_assert(n % 16 == 0);
  for (int j = 0; j < n; j += 16) {
    _mm512_storeu_ps(values + j, _mm512_sqrt_ps(_mm512_loadu_ps(values + j)));
  }
#elif defined(__AVX2__)
  static_assert(n % 8 == 0);
  for (int j = 0; j < n; j += 8) {
    _mm256_storeu_ps(values + j, _mm256_sqrt_ps(_mm256_loadu_ps(values + j)));
  }
#elif defined(__SSE2__)
  for (int j = 0; j < n; j += 4) _mm_storeu_ps(values + j, _mm_sqrt_ps(_mm_loadu_ps(values + j)));
#else
  for (int j = 0; j < n; ++j) values[j] = std::sqrt(values[j]);
#endif
}

// The normals of groups first .. first + kGroupsPerBlock - 1 into out[0 .. 64).
void normal_block(NoiseKey key, uint64_t first_group, float* out) {
  namespace px = fastgen::philox;
  uint32_t w0[kGroupsPerBlock], w1[kGroupsPerBlock], w2[kGroupsPerBlock], w3[kGroupsPerBlock];
  const px::Uint4 base = px::group_counter(key.offset, first_group);
  for (int j = 0; j < kGroupsPerBlock; ++j) {
    const uint64_t group = first_group + j;
    w0[j] = base.x;
    w1[j] = base.y;
    w2[j] = static_cast<uint32_t>(group);
    w3[j] = static_cast<uint32_t>(group >> 32);
  }
  uint32_t key0 = static_cast<uint32_t>(key.seed), key1 = static_cast<uint32_t>(key.seed >> 32);
  for (int round = 0; round < px::kRounds; ++round) {
#pragma omp simd
    for (int j = 0; j < kGroupsPerBlock; ++j) {
      const uint64_t p0 = static_cast<uint64_t>(px::kMul0) * w0[j];
      const uint64_t p1 = static_cast<uint64_t>(px::kMul1) * w2[j];
      const uint32_t n0 = static_cast<uint32_t>(p1 >> 32) ^ w1[j] ^ key0;
      const uint32_t n2 = static_cast<uint32_t>(p0 >> 32) ^ w3[j] ^ key1;
      w1[j] = static_cast<uint32_t>(p1);
      w3[j] = static_cast<uint32_t>(p0);
      w0[j] = n0;
      w2[j] = n2;
    }
    key0 += px::kWeyl0;
    key1 += px::kWeyl1;
  }
  // Box-Muller on the 32 (radius, angle) word pairs: (w0, w1) and (w2, w3) of each group.
  constexpr int kPairs = 2 * kGroupsPerBlock;
  float radius[kPairs], cos_theta[kPairs], sin_theta[kPairs];
  for (int j = 0; j < kGroupsPerBlock; ++j) {
    radius[j] = px::radius_squared(w0[j]);
    radius[kGroupsPerBlock + j] = px::radius_squared(w2[j]);
  }
  sqrt_block<kPairs>(radius);
  for (int j = 0; j < kGroupsPerBlock; ++j) {
    const px::SinCos first = px::sincos_turn(w1[j]);
    const px::SinCos second = px::sincos_turn(w3[j]);
    cos_theta[j] = first.cos;
    sin_theta[j] = first.sin;
    cos_theta[kGroupsPerBlock + j] = second.cos;
    sin_theta[kGroupsPerBlock + j] = second.sin;
  }
  for (int j = 0; j < kGroupsPerBlock; ++j) {
    out[4 * j] = radius[j] * cos_theta[j];
    out[4 * j + 1] = radius[j] * sin_theta[j];
    out[4 * j + 2] = radius[kGroupsPerBlock + j] * cos_theta[kGroupsPerBlock + j];
    out[4 * j + 3] = radius[kGroupsPerBlock + j] * sin_theta[kGroupsPerBlock + j];
  }
}

// exp for float32 that the compiler can vectorize (libm's expf is a call per element):
// 2^k * p(r), r = x - k ln2 in [-ln2/2, ln2/2], degree-7 Taylor p (error ~1 ulp). 2^k is
// applied as 2^(k - k/2) * 2^(k/2), two normal scales, so the result overflows exactly where
// expf's does (x > 88.72; one scale would overflow from k = 128, x > 88.4) and goes through
// the denormals to 0 as expf does (x < -103.97) instead of flushing early: 0 * inf = NaN
// where stock's denormal * inf = inf (issue 24.8). Inputs are clamped to [-104, 89], NaN
// stays NaN. The clamps work on the bit patterns with integer selects because GCC does not
// if-convert float compares (they may trap) and then leaves the loop scalar.
inline float exp_float(float x) {
  const uint32_t in_bits = __builtin_bit_cast(uint32_t, x);
  // As unsigned, every float below -104.0f (0xC2D00000) has larger bits: clamp them.
  uint32_t bits = in_bits > 0xC2D00000u ? 0xC2D00000u : in_bits;
  // As signed, positive floats above 89.0f (0x42B20000; NaN and inf too) have larger bits.
  int32_t signed_bits = static_cast<int32_t>(bits);
  signed_bits = signed_bits > 0x42B20000 ? 0x42B20000 : signed_bits;
  x = __builtin_bit_cast(float, signed_bits);
  const float shift = 0x1.8p23f;  // adding it rounds to an integer
  const float k = (x * 0x1.715476p+0f + shift) - shift;
  const float r = (x - k * 0x1.62e4p-1f) - k * 0x1.7f7d1cp-20f;
  float p = 0x1.a01a02p-13f;  // 1/5040
  p = p * r + 0x1.6c16c2p-10f;
  p = p * r + 0x1.111112p-7f;
  p = p * r + 0x1.555556p-5f;
  p = p * r + 0x1.555556p-3f;
  p = p * r + 0.5f;
  p = p * r + 1.0f;
  p = p * r + 1.0f;
  // k in [-150, 129]: both halves' exponent fields stay in [52, 192].
  const int32_t k_int = static_cast<int32_t>(k);
  const int32_t k_low = k_int >> 1;
  const float scale_low = __builtin_bit_cast(float, static_cast<uint32_t>(k_low + 127) << 23);
  const float scale_high =
      __builtin_bit_cast(float, static_cast<uint32_t>(k_int - k_low + 127) << 23);
  const uint32_t result = __builtin_bit_cast(uint32_t, (p * scale_low) * scale_high);
  const uint32_t nan_mask = 0u - static_cast<uint32_t>((in_bits & 0x7FFFFFFFu) > 0x7F800000u);
  return __builtin_bit_cast(float, (in_bits & nan_mask) | (result & ~nan_mask));
}

#if defined(__SSE2__)
// exp_float on 4 lanes with SSE2 intrinsics: the same steps and the same results (float
// min/max here instead of the bit-pattern clamps, cvtps2dq rounds to nearest-even like the
// shift trick), in about half the instructions of the auto-vectorized version.
inline __m128 exp_float4(__m128 x) {
  const __m128 clamped = _mm_min_ps(_mm_max_ps(x, _mm_set1_ps(-104.0f)), _mm_set1_ps(89.0f));
  const __m128i k_int = _mm_cvtps_epi32(_mm_mul_ps(clamped, _mm_set1_ps(0x1.715476p+0f)));
  const __m128 k = _mm_cvtepi32_ps(k_int);
  const __m128 r = _mm_sub_ps(_mm_sub_ps(clamped, _mm_mul_ps(k, _mm_set1_ps(0x1.62e4p-1f))),
                              _mm_mul_ps(k, _mm_set1_ps(0x1.7f7d1cp-20f)));
  __m128 p = _mm_set1_ps(0x1.a01a02p-13f);
  p = _mm_add_ps(_mm_mul_ps(p, r), _mm_set1_ps(0x1.6c16c2p-10f));
  p = _mm_add_ps(_mm_mul_ps(p, r), _mm_set1_ps(0x1.111112p-7f));
  p = _mm_add_ps(_mm_mul_ps(p, r), _mm_set1_ps(0x1.555556p-5f));
  p = _mm_add_ps(_mm_mul_ps(p, r), _mm_set1_ps(0x1.555556p-3f));
  p = _mm_add_ps(_mm_mul_ps(p, r), _mm_set1_ps(0.5f));
  p = _mm_add_ps(_mm_mul_ps(p, r), _mm_set1_ps(1.0f));
  p = _mm_add_ps(_mm_mul_ps(p, r), _mm_set1_ps(1.0f));
  const __m128i bias = _mm_set1_epi32(127);
  const __m128i k_low = _mm_srai_epi32(k_int, 1);
  const __m128 scale_low = _mm_castsi128_ps(_mm_slli_epi32(_mm_add_epi32(k_low, bias), 23));
  const __m128 scale_high =
      _mm_castsi128_ps(_mm_slli_epi32(_mm_add_epi32(_mm_sub_epi32(k_int, k_low), bias), 23));
  const __m128 result = _mm_mul_ps(_mm_mul_ps(p, scale_low), scale_high);
  const __m128 nan = _mm_cmpunord_ps(x, x);
  return _mm_or_ps(_mm_and_ps(nan, x), _mm_andnot_ps(nan, result));
}
#endif

inline float exp_acc(float x) {
  return exp_float(x);
}
inline double exp_acc(double x) {
  return std::exp(x);
}

// Streams the noise of elements [begin, end) (global indices) a block at a time: calls
// body(first, last, noise) with noise[i - first] the normal of element i in [first, last).
// Blocks start at group boundaries.
template <typename Body>
inline void for_each_noise(NoiseKey key, int64_t begin, int64_t end, Body&& body) {
  float noise[kBlockElements];
  int64_t block_start = begin & ~int64_t{3};
  while (block_start < end) {
    normal_block(key, static_cast<uint64_t>(block_start) >> 2, noise);
    const int64_t first = std::max(begin, block_start);
    const int64_t last = std::min(end, block_start + kBlockElements);
    body(first, last, noise + (first - block_start));
    block_start += kBlockElements;
  }
}

// Visits [begin, end) in chunks of at most kBlockElements: body(first, last).
template <typename Body>
inline void for_each_chunk(int64_t begin, int64_t end, Body&& body) {
  for (int64_t first = begin; first < end; first += kBlockElements) {
    body(first, std::min(end, first + kBlockElements));
  }
}

// Converts src[0 .. n) into dst and zero-fills the rest of the block, so that the compute
// loops always run kBlockElements iterations: a fixed trip count the compiler vectorizes
// without remainder code. Zero inputs give exactly zero KL terms (1 + 0 - 0 - exp(0) = 0).
template <typename acc, typename scalar_t>
inline void load_block(const scalar_t* src, int64_t n, acc* dst) {
  for (int64_t j = 0; j < n; ++j) dst[j] = static_cast<acc>(src[j]);
  for (int64_t j = n; j < kBlockElements; ++j) dst[j] = acc(0);
}

// Sums a block in a fixed order (8 interleaved partial sums, then those in order), so the
// result is the same whatever vector width the compiler picked.
template <typename acc>
inline acc sum_block(const acc* terms) {
  acc partial[8] = {};
  for (int j = 0; j < kBlockElements; j += 8) {
    for (int k = 0; k < 8; ++k) partial[k] += terms[j + k];
  }
  return ((partial[0] + partial[1]) + (partial[2] + partial[3])) +
         ((partial[4] + partial[5]) + (partial[6] + partial[7]));
}

template <typename scalar_t>
struct RowForward {
  using acc = acc_t<scalar_t>;
  const scalar_t* mu;
  const scalar_t* logvar;
  const scalar_t* eps;  // nullptr: Philox noise
  scalar_t* z;
  NoiseKey key;

  // z over [first, last) (at most one block) with noise[i - first] the noise of element i;
  // returns the sum of the KL terms.
  template <typename noise_t>
  acc chunk(int64_t first, int64_t last, const noise_t* noise) const {
    const int64_t n = last - first;
    if constexpr (std::is_same_v<scalar_t, float> && std::is_same_v<noise_t, float>) {
      if (n == kBlockElements) return full_chunk(mu + first, logvar + first, noise, z + first);
    }
    acc m[kBlockElements], lv[kBlockElements], e[kBlockElements];
    acc out[kBlockElements], terms[kBlockElements];
    load_block(mu + first, n, m);
    load_block(logvar + first, n, lv);
    load_block(noise, n, e);
    for (int j = 0; j < kBlockElements; ++j) {
      const acc std = exp_acc(acc(0.5) * lv[j]);
      out[j] = m[j] + std * e[j];
      terms[j] = (acc(1) + lv[j]) - m[j] * m[j] - std * std;
    }
    for (int64_t j = 0; j < n; ++j) z[first + j] = static_cast<scalar_t>(out[j]);
    return sum_block(terms);
  }

  // A whole float block straight from and to memory (no staging copies), in SSE2 where
  // there is SSE2: this loop is most of the op's time after the noise.
  static float full_chunk(const float* __restrict m, const float* __restrict lv,
                          const float* __restrict e, float* __restrict out) {
    float terms[kBlockElements];
#if defined(__SSE2__) && !defined(FASTGEN_WIDE_AUTOVEC)
    for (int j = 0; j < kBlockElements; j += 4) {
      const __m128 m4 = _mm_loadu_ps(m + j), lv4 = _mm_loadu_ps(lv + j);
      const __m128 std = exp_float4(_mm_mul_ps(_mm_set1_ps(0.5f), lv4));
      _mm_storeu_ps(out + j, _mm_add_ps(m4, _mm_mul_ps(std, _mm_loadu_ps(e + j))));
      const __m128 term = _mm_sub_ps(
          _mm_sub_ps(_mm_add_ps(_mm_set1_ps(1.0f), lv4), _mm_mul_ps(m4, m4)), _mm_mul_ps(std, std));
      _mm_storeu_ps(terms + j, term);
    }
#else
    for (int j = 0; j < kBlockElements; ++j) {
      const float std = exp_float(0.5f * lv[j]);
      out[j] = m[j] + std * e[j];
      terms[j] = (1.0f + lv[j]) - m[j] * m[j] - std * std;
    }
#endif
    return sum_block(terms);
  }

  acc row(int64_t begin, int64_t end) const {
    acc kl_terms = 0;
    if (eps != nullptr) {
      for_each_chunk(begin, end, [&](int64_t first, int64_t last) {
        kl_terms += chunk(first, last, eps + first);
      });
    } else {
      for_each_noise(key, begin, end, [&](int64_t first, int64_t last, const float* noise) {
        kl_terms += chunk(first, last, noise);
      });
    }
    return kl_terms;
  }
};

template <typename scalar_t>
struct RowBackward {
  using acc = acc_t<scalar_t>;
  const scalar_t* grad_z;
  const scalar_t* mu;
  const scalar_t* logvar;
  const scalar_t* eps;
  scalar_t* grad_mu;
  scalar_t* grad_logvar;
  NoiseKey key;
  // Without a KL term its gradient is absent, not zero: 0 * inf would make NaN where stock
  // autograd, which has no such term, gives a finite or infinite gradient.
  bool has_kl;

  template <typename noise_t>
  void chunk(int64_t first, int64_t last, const noise_t* noise, acc grad_kl) const {
    const int64_t n = last - first;
    if constexpr (std::is_same_v<scalar_t, float> && std::is_same_v<noise_t, float>) {
      if (n == kBlockElements) {
        return full_chunk(grad_z + first, mu + first, logvar + first, noise, grad_kl, has_kl,
                          grad_mu + first, grad_logvar + first);
      }
    }
    acc g[kBlockElements], m[kBlockElements], lv[kBlockElements], e[kBlockElements];
    acc d_mu[kBlockElements], d_logvar[kBlockElements];
    load_block(grad_z + first, n, g);
    load_block(mu + first, n, m);
    load_block(logvar + first, n, lv);
    load_block(noise, n, e);
    if (has_kl) {
      const acc q = acc(-0.5) * grad_kl;  // d kl / d term
      for (int j = 0; j < kBlockElements; ++j) {
        const acc std = exp_acc(acc(0.5) * lv[j]);
        d_mu[j] = g[j] + (-q) * (acc(2) * m[j]);
        d_logvar[j] = acc(0.5) * ((g[j] * e[j]) * std) + (q - q * (std * std));
      }
    } else {
      for (int j = 0; j < kBlockElements; ++j) {
        d_mu[j] = g[j];
        d_logvar[j] = acc(0.5) * ((g[j] * e[j]) * exp_acc(acc(0.5) * lv[j]));
      }
    }
    for (int64_t j = 0; j < n; ++j) {
      grad_mu[first + j] = static_cast<scalar_t>(d_mu[j]);
      grad_logvar[first + j] = static_cast<scalar_t>(d_logvar[j]);
    }
  }

  static void full_chunk(const float* __restrict g, const float* __restrict m,
                         const float* __restrict lv, const float* __restrict e, float grad_kl,
                         bool has_kl, float* __restrict d_mu, float* __restrict d_logvar) {
    if (!has_kl) {
      for (int j = 0; j < kBlockElements; ++j) {
        d_mu[j] = g[j];
        d_logvar[j] = 0.5f * ((g[j] * e[j]) * exp_float(0.5f * lv[j]));
      }
      return;
    }
    const float q = -0.5f * grad_kl;  // d kl / d term
#if defined(__SSE2__) && !defined(FASTGEN_WIDE_AUTOVEC)
    const __m128 q4 = _mm_set1_ps(q), minus_q = _mm_set1_ps(-q), half = _mm_set1_ps(0.5f);
    for (int j = 0; j < kBlockElements; j += 4) {
      const __m128 g4 = _mm_loadu_ps(g + j), m4 = _mm_loadu_ps(m + j);
      const __m128 std = exp_float4(_mm_mul_ps(half, _mm_loadu_ps(lv + j)));
      _mm_storeu_ps(d_mu + j, _mm_add_ps(g4, _mm_mul_ps(minus_q, _mm_add_ps(m4, m4))));
      const __m128 noise_term =
          _mm_mul_ps(half, _mm_mul_ps(_mm_mul_ps(g4, _mm_loadu_ps(e + j)), std));
      const __m128 kl_term = _mm_sub_ps(q4, _mm_mul_ps(q4, _mm_mul_ps(std, std)));
      _mm_storeu_ps(d_logvar + j, _mm_add_ps(noise_term, kl_term));
    }
#else
    for (int j = 0; j < kBlockElements; ++j) {
      const float std = exp_float(0.5f * lv[j]);
      d_mu[j] = g[j] + (-q) * (2.0f * m[j]);
      d_logvar[j] = 0.5f * ((g[j] * e[j]) * std) + (q - q * (std * std));
    }
#endif
  }

  void row(int64_t begin, int64_t end, acc grad_kl) const {
    if (eps != nullptr) {
      for_each_chunk(begin, end, [&](int64_t first, int64_t last) {
        chunk(first, last, eps + first, grad_kl);
      });
    } else {
      for_each_noise(key, begin, end, [&](int64_t first, int64_t last, const float* noise) {
        chunk(first, last, noise, grad_kl);
      });
    }
  }
};

NoiseKey read_key(const at::Tensor& rng_state) {
  TORCH_CHECK(rng_state.numel() == 2 && rng_state.scalar_type() == at::kLong,
              "fastgen::reparameterize: rng_state must be int64 [2]");
  const at::Tensor cpu = rng_state.cpu();
  const int64_t* values = cpu.const_data_ptr<int64_t>();
  return {static_cast<uint64_t>(values[0]), static_cast<uint64_t>(values[1])};
}

// A fresh (seed, offset) from the default CPU generator, drawn exactly as the Python side
// draws one for the reference path (fastgen.ops.reparameterize.draw_rng_state: randint over
// all int64, offset rounded down to a multiple of 4), so that under torch.manual_seed the
// native kernel and FASTGEN_BACKEND=reference make the same noise.
NoiseKey draw_key() {
  const at::Tensor state =
      at::randint(std::numeric_limits<int64_t>::min(), std::numeric_limits<int64_t>::max(), {2},
                  at::TensorOptions().dtype(at::kLong));
  const int64_t* values = state.const_data_ptr<int64_t>();
  return {static_cast<uint64_t>(values[0]), static_cast<uint64_t>(values[1]) & ~uint64_t{3}};
}

at::Tensor key_tensor(NoiseKey key) {
  at::Tensor state = at::empty({2}, at::TensorOptions().dtype(at::kLong));
  int64_t* values = state.mutable_data_ptr<int64_t>();
  values[0] = static_cast<int64_t>(key.seed);
  values[1] = static_cast<int64_t>(key.offset);
  return state;
}

int64_t grain_rows(RowShape shape) {
  return parallel::grain(shape.columns, parallel::kNoiseGrainElements);
}

}  // namespace

std::tuple<at::Tensor, at::Tensor, at::Tensor> reparameterize_cpu(
    const at::Tensor& mu, const at::Tensor& logvar, const std::optional<at::Tensor>& eps,
    const std::optional<at::Tensor>& rng_state, bool compute_kl) {
  check_forward(mu, logvar, eps, rng_state);
  const RowShape shape = row_shape(mu);
  const at::Tensor mu_c = mu.contiguous();
  const at::Tensor logvar_c = logvar.contiguous();
  const at::Tensor eps_c = eps.has_value() ? eps->contiguous() : at::Tensor();
  NoiseKey key;
  if (!eps.has_value()) key = rng_state.has_value() ? read_key(*rng_state) : draw_key();

  at::Tensor z = at::empty(mu.sizes(), mu.options());
  at::Tensor kl = at::empty({compute_kl ? shape.rows : 0}, mu.options());
  FASTGEN_DISPATCH_FLOATING_TYPES(mu.scalar_type(), "reparameterize_cpu", [&] {
    using acc = acc_t<scalar_t>;
    const RowForward<scalar_t> forward{mu_c.const_data_ptr<scalar_t>(),
                                       logvar_c.const_data_ptr<scalar_t>(),
                                       eps_c.defined() ? eps_c.const_data_ptr<scalar_t>() : nullptr,
                                       z.mutable_data_ptr<scalar_t>(), key};
    scalar_t* kl_out = compute_kl ? kl.mutable_data_ptr<scalar_t>() : nullptr;
    at::parallel_for(0, shape.rows, grain_rows(shape), [&](int64_t first, int64_t last) {
      for (int64_t n = first; n < last; ++n) {
        const acc terms = forward.row(n * shape.columns, (n + 1) * shape.columns);
        if (kl_out != nullptr) kl_out[n] = static_cast<scalar_t>(acc(-0.5) * terms);
      }
    });
  });
  return {z, kl, key_tensor(key)};
}

std::tuple<at::Tensor, at::Tensor> reparameterize_backward_cpu(
    const at::Tensor& grad_z, const at::Tensor& grad_kl, const at::Tensor& mu,
    const at::Tensor& logvar, const std::optional<at::Tensor>& eps, const at::Tensor& rng_state) {
  check_backward(grad_z, grad_kl, mu, logvar, eps, rng_state);
  const RowShape shape = row_shape(mu);
  const at::Tensor grad_z_c = grad_z.contiguous();
  const at::Tensor grad_kl_c = grad_kl.contiguous();
  const at::Tensor mu_c = mu.contiguous();
  const at::Tensor logvar_c = logvar.contiguous();
  const at::Tensor eps_c = eps.has_value() ? eps->contiguous() : at::Tensor();
  const NoiseKey key = eps.has_value() ? NoiseKey{} : read_key(rng_state);
  const bool has_kl = grad_kl.numel() > 0;

  at::Tensor grad_mu = at::empty(mu.sizes(), mu.options());
  at::Tensor grad_logvar = at::empty(mu.sizes(), mu.options());
  FASTGEN_DISPATCH_FLOATING_TYPES(mu.scalar_type(), "reparameterize_backward_cpu", [&] {
    using acc = acc_t<scalar_t>;
    const RowBackward<scalar_t> backward{
        grad_z_c.const_data_ptr<scalar_t>(),
        mu_c.const_data_ptr<scalar_t>(),
        logvar_c.const_data_ptr<scalar_t>(),
        eps_c.defined() ? eps_c.const_data_ptr<scalar_t>() : nullptr,
        grad_mu.mutable_data_ptr<scalar_t>(),
        grad_logvar.mutable_data_ptr<scalar_t>(),
        key,
        has_kl};
    const scalar_t* grad_kl_in = has_kl ? grad_kl_c.const_data_ptr<scalar_t>() : nullptr;
    at::parallel_for(0, shape.rows, grain_rows(shape), [&](int64_t first, int64_t last) {
      for (int64_t n = first; n < last; ++n) {
        const acc g_kl = grad_kl_in ? static_cast<acc>(grad_kl_in[n]) : acc(0);
        backward.row(n * shape.columns, (n + 1) * shape.columns, g_kl);
      }
    });
  });
  return {grad_mu, grad_logvar};
}

}  // namespace fastgen::reparameterize::FASTGEN_CPU_NS
