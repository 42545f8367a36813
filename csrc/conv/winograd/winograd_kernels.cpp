// The Winograd hot loops (winograd_kernels.h), compiled once per capability: setup.py builds
// this file with FASTGEN_CPU_NS = baseline (no flags), avx2 (-mavx2 -mfma) and avx512
// (-mavx512f/bw/dq/vl), and each Winograd kernel file uses its own copy's table. No torch headers:
// plain loops the compiler vectorizes for the target, plus a register-blocked GEMM
// micro-kernel per vector width.

#include <cstdint>

#include "conv/winograd/winograd_kernels.h"

#if defined(FASTGEN_CPU_AVX2) || defined(FASTGEN_CPU_AVX512)
#include <immintrin.h>
#endif

#include <cstring>

namespace fastgen::winograd::FASTGEN_CPU_NS {
namespace {

// --- tile transforms -----------------------------------------------------------------------

// y = B^T x for one column of a tile, over `count` channels. B^T for the points
// {0, 1, -1, 2, inf} has rows (1, -1/2, -1, 1/2, 0), (0, 1, 1/2, -1/2, 0),
// (0, -1/3, 1/2, -1/6, 0), (0, -1/6, 0, 1/6, 0), (0, 2, -1, -2, 1); scaled by 2, 2, 6, 6, 1
// they become the small integers below (G's rows carry the inverse scales).
void input_rows(const float* const x[kAlpha], float* const y[kAlpha], int64_t count) {
  const float* __restrict__ x0 = x[0], * __restrict__ x1 = x[1], * __restrict__ x2 = x[2], * __restrict__ x3 = x[3], * __restrict__ x4 = x[4];
  float* __restrict__ y0 = y[0], * __restrict__ y1 = y[1], * __restrict__ y2 = y[2], * __restrict__ y3 = y[3], * __restrict__ y4 = y[4];
#pragma omp simd
  for (int64_t c = 0; c < count; ++c) {
    const float a0 = x0[c], a1 = x1[c], a2 = x2[c], a3 = x3[c], a4 = x4[c];
    y0[c] = 2.0f * (a0 - a2) + (a3 - a1);
    y1[c] = 2.0f * a1 + (a2 - a3);
    y2[c] = 3.0f * a2 - (2.0f * a1 + a3);
    y3[c] = a3 - a1;
    y4[c] = 2.0f * (a1 - a3) + (a4 - a2);
  }
}

// y = B x, the transpose of input_rows' (scaled) B^T: the output transform of the
// transposed algorithm (a 4x4 input tile scattered into a 5x5 output window).
void scatter_rows(const float* const x[kAlpha], float* const y[kAlpha], int64_t count) {
  const float* __restrict__ x0 = x[0], * __restrict__ x1 = x[1], * __restrict__ x2 = x[2], * __restrict__ x3 = x[3], * __restrict__ x4 = x[4];
  float* __restrict__ y0 = y[0], * __restrict__ y1 = y[1], * __restrict__ y2 = y[2], * __restrict__ y3 = y[3], * __restrict__ y4 = y[4];
#pragma omp simd
  for (int64_t c = 0; c < count; ++c) {
    const float a0 = x0[c], a1 = x1[c], a2 = x2[c], a3 = x3[c], a4 = x4[c];
    y0[c] = 2.0f * a0;
    y1[c] = 2.0f * (a1 - a2 + a4) - (a0 + a3);
    y2[c] = (a1 + 3.0f * a2) - (2.0f * a0 + a4);
    y3[c] = (a0 + a3) - (a1 + a2) - 2.0f * a4;
    y4[c] = a4;
  }
}

// y = A^T m (4 outputs from 5), A^T rows (1,1,1,1,0), (0,1,-1,2,0), (0,1,1,4,0), (0,1,-1,8,1).
void output_rows(const float* const m[kAlpha], float* const y[kTile], int64_t count) {
  const float* __restrict__ m0 = m[0], * __restrict__ m1 = m[1], * __restrict__ m2 = m[2], * __restrict__ m3 = m[3], * __restrict__ m4 = m[4];
  float* __restrict__ y0 = y[0], * __restrict__ y1 = y[1], * __restrict__ y2 = y[2], * __restrict__ y3 = y[3];
#pragma omp simd
  for (int64_t c = 0; c < count; ++c) {
    const float a1 = m1[c], a2 = m2[c], a3 = m3[c];
    const float sum = a1 + a2, diff = a1 - a2;
    y0[c] = m0[c] + sum + a3;
    y1[c] = diff + 2.0f * a3;
    y2[c] = sum + 4.0f * a3;
    y3[c] = diff + 8.0f * a3 + m4[c];
  }
}

// g = A f (5 values from a 4-long gradient column): the weight gradient's transform.
void grad_rows(const float* const f[kTile], float* const g[kAlpha], int64_t count) {
  const float* __restrict__ f0 = f[0], * __restrict__ f1 = f[1], * __restrict__ f2 = f[2], * __restrict__ f3 = f[3];
  float* __restrict__ g0 = g[0], * __restrict__ g1 = g[1], * __restrict__ g2 = g[2], * __restrict__ g3 = g[3], * __restrict__ g4 = g[4];
#pragma omp simd
  for (int64_t c = 0; c < count; ++c) {
    const float a0 = f0[c], a1 = f1[c], a2 = f2[c], a3 = f3[c];
    g0[c] = a0;
    g1[c] = (a0 + a2) + (a1 + a3);
    g2[c] = (a0 + a2) - (a1 + a3);
    g3[c] = (a0 + 4.0f * a2) + 2.0f * (a1 + 4.0f * a3);
    g4[c] = a3;
  }
}

// --- GEMM panels -----------------------------------------------------------------------------

[[maybe_unused]] inline float a_value(const float* a, int64_t lda, bool transposed, int64_t row,
                                      int64_t k) {
  return transposed ? a[k * lda + row] : a[row * lda + k];
}

#if defined(FASTGEN_CPU_AVX512)

// An 8 x 32 block of c in 16 zmm accumulators: per step of k two vectors of b and 8
// broadcasts of a feed 16 FMAs, which keeps both FMA ports busy. The k x 32 panel of b (64 KB
// at k = 512) is reused by every 8-row block of a, so it stays in L1/L2 while a streams.
// `low`/`high` mask the two 16-column halves of a panel narrower than 32.
template <int kRows, bool kTransposed>
inline void micro_kernel(const float* a, int64_t lda, const float* b, int64_t ldb, float* c,
                         int64_t ldc, int64_t depth, __mmask16 low, __mmask16 high) {
  __m512 acc[kRows][2];
#pragma GCC unroll 8
  for (int r = 0; r < kRows; ++r) acc[r][0] = acc[r][1] = _mm512_setzero_ps();
  for (int64_t k = 0; k < depth; ++k) {
    const __m512 b0 = _mm512_maskz_loadu_ps(low, b + k * ldb);
    const __m512 b1 = _mm512_maskz_loadu_ps(high, b + k * ldb + 16);
#pragma GCC unroll 8
    for (int r = 0; r < kRows; ++r) {
      const __m512 x = _mm512_set1_ps(a_value(a, lda, kTransposed, r, k));
      acc[r][0] = _mm512_fmadd_ps(x, b0, acc[r][0]);
      acc[r][1] = _mm512_fmadd_ps(x, b1, acc[r][1]);
    }
  }
#pragma GCC unroll 8
  for (int r = 0; r < kRows; ++r) {
    _mm512_mask_storeu_ps(c + r * ldc, low, acc[r][0]);
    _mm512_mask_storeu_ps(c + r * ldc + 16, high, acc[r][1]);
  }
}

template <bool kTransposed>
void rows(const float* a, int64_t lda, const float* b, int64_t ldb, float* c, int64_t ldc,
          int64_t m, int64_t k, int64_t width) {
  constexpr int64_t kBlockRows = 8;
  const __mmask16 low = width >= 16 ? __mmask16(0xFFFF) : __mmask16((1u << width) - 1);
  const __mmask16 high = width >= 32   ? __mmask16(0xFFFF)
                         : width <= 16 ? __mmask16(0)
                                       : __mmask16((1u << (width - 16)) - 1);
  const int64_t row_step = kTransposed ? 1 : lda;  // row r of a starts at a + r * row_step
  int64_t row = 0;
  for (; row + kBlockRows <= m; row += kBlockRows) {
    micro_kernel<kBlockRows, kTransposed>(a + row * row_step, lda, b, ldb, c + row * ldc, ldc, k,
                                          low, high);
  }
  for (; row < m; ++row) {
    micro_kernel<1, kTransposed>(a + row * row_step, lda, b, ldb, c + row * ldc, ldc, k, low, high);
  }
}

// The bfloat16 panel (Kernels::gemm_panel_bf16): the float32 kernel's 8 x 32 block of c, fed
// by `vdpbf16ps`, which multiplies a pair of bfloat16 values in each 32-bit lane by another
// pair and adds both products to a float32 lane: per pair of k, one 32-bit broadcast of a's
// two values per row and two 64-byte rows of the packed b feed 16 instructions, twice the
// multiplications of the float32 FMAs at the same instruction rate (measured on Zen 4: 498
// against 271 GFLOP/s on one core). Compiled for the instruction with a target attribute, so
// the rest of this copy stays runnable on AVX-512 CPUs without it; callers check
// cpu::bf16_dot_products() first.
#define FASTGEN_BF16_TARGET __attribute__((target("avx512f,avx512bf16")))

template <int kRows>
FASTGEN_BF16_TARGET inline void bf16_micro_kernel(const uint16_t* a, int64_t lda, const uint16_t* b,
                                                  float* c, int64_t ldc, int64_t pairs,
                                                  __mmask16 low, __mmask16 high) {
  __m512 acc[kRows][2];
#pragma GCC unroll 8
  for (int r = 0; r < kRows; ++r) acc[r][0] = acc[r][1] = _mm512_setzero_ps();
  for (int64_t p = 0; p < pairs; ++p) {
    const __m512bh b0 = (__m512bh)_mm512_loadu_si512(b + p * 2 * kGemmPanel);
    const __m512bh b1 = (__m512bh)_mm512_loadu_si512(b + p * 2 * kGemmPanel + kGemmPanel);
#pragma GCC unroll 8
    for (int r = 0; r < kRows; ++r) {
      int32_t pair;
      std::memcpy(&pair, a + r * lda + 2 * p, sizeof pair);
      const __m512bh x = (__m512bh)_mm512_set1_epi32(pair);
      acc[r][0] = _mm512_dpbf16_ps(acc[r][0], x, b0);
      acc[r][1] = _mm512_dpbf16_ps(acc[r][1], x, b1);
    }
  }
#pragma GCC unroll 8
  for (int r = 0; r < kRows; ++r) {
    _mm512_mask_storeu_ps(c + r * ldc, low, acc[r][0]);
    _mm512_mask_storeu_ps(c + r * ldc + 16, high, acc[r][1]);
  }
}

FASTGEN_BF16_TARGET void gemm_panel_bf16(const uint16_t* a, int64_t lda, const uint16_t* b,
                                         float* c, int64_t ldc, int64_t m, int64_t k,
                                         int64_t width) {
  constexpr int64_t kBlockRows = 8;
  const __mmask16 low = width >= 16 ? __mmask16(0xFFFF) : __mmask16((1u << width) - 1);
  const __mmask16 high = width >= 32   ? __mmask16(0xFFFF)
                         : width <= 16 ? __mmask16(0)
                                       : __mmask16((1u << (width - 16)) - 1);
  const int64_t pairs = k / 2;
  int64_t row = 0;
  for (; row + kBlockRows <= m; row += kBlockRows) {
    bf16_micro_kernel<kBlockRows>(a + row * lda, lda, b, c + row * ldc, ldc, pairs, low, high);
  }
  for (; row < m; ++row) {
    bf16_micro_kernel<1>(a + row * lda, lda, b, c + row * ldc, ldc, pairs, low, high);
  }
}

// 12 independent accumulators, as fma_loop below.
FASTGEN_BF16_TARGET double bf16_dot_loop(int64_t iterations) {
  __m512 acc[12];
  for (auto& v : acc) v = _mm512_setzero_ps();
  const __m512bh x = (__m512bh)_mm512_set1_epi32(0x3F803F80);  // (1, 1)
  const __m512bh y = (__m512bh)_mm512_set1_epi32(0x3F813F81);  // (1.0078125, 1.0078125)
  for (int64_t i = 0; i < iterations; ++i) {
#pragma GCC unroll 12
    for (auto& v : acc) v = _mm512_dpbf16_ps(v, x, y);
  }
  float sink = 0;
  for (auto& v : acc) sink += _mm512_reduce_add_ps(v);
  volatile float keep = sink;
  (void)keep;
  return double(iterations) * 12 * 32 * 2;  // 32 products and 32 additions per instruction
}
#undef FASTGEN_BF16_TARGET

#elif defined(FASTGEN_CPU_AVX2)

// A 6 x 16 block of c in 12 ymm accumulators, for the 16 ymm registers AVX2 has: per step of
// k two vectors of b and 6 broadcasts of a feed 12 FMAs (12 + 2 + 1 live registers). A
// 32-column panel is two passes of 16 columns over the same rows of a, so the 16-column
// slice of b (32 KB at k = 512) stays in L1/L2 while a streams. Narrow panels use masked
// loads and stores (`low`/`high` lanes of the 16 columns).
template <int kRows, bool kTransposed>
inline void micro_kernel(const float* a, int64_t lda, const float* b, int64_t ldb, float* c,
                         int64_t ldc, int64_t depth, __m256i low, __m256i high) {
  __m256 acc[kRows][2];
#pragma GCC unroll 6
  for (int r = 0; r < kRows; ++r) acc[r][0] = acc[r][1] = _mm256_setzero_ps();
  for (int64_t k = 0; k < depth; ++k) {
    const __m256 b0 = _mm256_maskload_ps(b + k * ldb, low);
    const __m256 b1 = _mm256_maskload_ps(b + k * ldb + 8, high);
#pragma GCC unroll 6
    for (int r = 0; r < kRows; ++r) {
      const __m256 x = _mm256_broadcast_ss(kTransposed ? a + k * lda + r : a + r * lda + k);
      acc[r][0] = _mm256_fmadd_ps(x, b0, acc[r][0]);
      acc[r][1] = _mm256_fmadd_ps(x, b1, acc[r][1]);
    }
  }
#pragma GCC unroll 6
  for (int r = 0; r < kRows; ++r) {
    _mm256_maskstore_ps(c + r * ldc, low, acc[r][0]);
    _mm256_maskstore_ps(c + r * ldc + 8, high, acc[r][1]);
  }
}

inline __m256i lane_mask(int64_t lanes) {  // the first `lanes` of 8 (clamped to 0..8)
  const __m256i index = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
  const int n = lanes < 0 ? 0 : (lanes > 8 ? 8 : int(lanes));
  return _mm256_cmpgt_epi32(_mm256_set1_epi32(n), index);
}

template <bool kTransposed>
void rows(const float* a, int64_t lda, const float* b, int64_t ldb, float* c, int64_t ldc,
          int64_t m, int64_t k, int64_t width) {
  constexpr int64_t kBlockRows = 6;
  const int64_t row_step = kTransposed ? 1 : lda;
  for (int64_t column = 0; column < width; column += 16) {
    const int64_t columns = width - column < 16 ? width - column : 16;
    const __m256i low = lane_mask(columns), high = lane_mask(columns - 8);
    int64_t row = 0;
    for (; row + kBlockRows <= m; row += kBlockRows) {
      micro_kernel<kBlockRows, kTransposed>(a + row * row_step, lda, b + column, ldb,
                                            c + row * ldc + column, ldc, k, low, high);
    }
    for (; row < m; ++row) {
      micro_kernel<1, kTransposed>(a + row * row_step, lda, b + column, ldb, c + row * ldc + column,
                                   ldc, k, low, high);
    }
  }
}

#endif

#if defined(FASTGEN_CPU_AVX512) || defined(FASTGEN_CPU_AVX2)
void gemm_panel(const float* a, int64_t lda, bool a_transposed, const float* b, int64_t ldb,
                float* c, int64_t ldc, int64_t m, int64_t k, int64_t width) {
  if (a_transposed) {
    rows<true>(a, lda, b, ldb, c, ldc, m, k, width);
  } else {
    rows<false>(a, lda, b, ldb, c, ldc, m, k, width);
  }
}
#else
// The baseline has no micro-kernel: its table leaves gemm_panel null and gemm_panel()
// calls at::mm, whose BLAS picks its own kernels for the CPU at run time (on an x86-64 CPU
// without AVX2, or NEON on aarch64), which a portable loop here would not beat.
constexpr auto gemm_panel = nullptr;
#endif
#if !defined(FASTGEN_CPU_AVX512)
constexpr auto gemm_panel_bf16 = nullptr;  // no bfloat16 dot product below AVX-512
constexpr auto bf16_dot_loop = nullptr;
#endif

// 12 independent accumulators hide the FMA latency (4 cycles x 2 ports needs 8+).
double fma_loop(int64_t iterations) {
#if defined(FASTGEN_CPU_AVX512)
  using Vec = __m512;
  constexpr int kLanes = 16;
  Vec acc[12], x = _mm512_set1_ps(1.0000001f), y = _mm512_set1_ps(0.9999999f);
  for (auto& v : acc) v = _mm512_setzero_ps();
  for (int64_t i = 0; i < iterations; ++i) {
#pragma GCC unroll 12
    for (auto& v : acc) v = _mm512_fmadd_ps(v, x, y);
  }
  float sink = 0;
  for (auto& v : acc) sink += _mm512_reduce_add_ps(v);
#elif defined(FASTGEN_CPU_AVX2)
  using Vec = __m256;
  constexpr int kLanes = 8;
  Vec acc[12], x = _mm256_set1_ps(1.0000001f), y = _mm256_set1_ps(0.9999999f);
  for (auto& v : acc) v = _mm256_setzero_ps();
  for (int64_t i = 0; i < iterations; ++i) {
#pragma GCC unroll 12
    for (auto& v : acc) v = _mm256_fmadd_ps(v, x, y);
  }
  float lanes[8], sink = 0;
  for (auto& v : acc) {
    _mm256_storeu_ps(lanes, v);
    for (float f : lanes) sink += f;
  }
#else
  // Multiply and add (no FMA in the baseline), four lanes wide on SSE2.
  constexpr int kLanes = 4;
  float acc[12][kLanes] = {}, sink = 0;
  for (int64_t i = 0; i < iterations; ++i) {
    for (auto& v : acc) {
#pragma omp simd
      for (int l = 0; l < kLanes; ++l) v[l] = v[l] * 1.0000001f + 0.9999999f;
    }
  }
  for (auto& v : acc) {
    for (float f : v) sink += f;
  }
#endif
  volatile float keep = sink;  // keeps the loop from being optimised away
  (void)keep;
  return double(iterations) * 12 * kLanes * 2;
}

}  // namespace

const Kernels kKernels{gemm_panel,  gemm_panel_bf16, input_rows, scatter_rows,
                       output_rows, grad_rows,       fma_loop,   bf16_dot_loop};

}  // namespace fastgen::winograd::FASTGEN_CPU_NS
