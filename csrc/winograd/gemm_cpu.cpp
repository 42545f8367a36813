// One GEMM panel for the Winograd convolutions; see gemm_cpu.h for why.
//
// The micro-kernel keeps an 8 x 32 block of c in 16 zmm accumulators: per step of k it
// loads two vectors of b and broadcasts 8 values of a (16 FMAs per 2 loads + 8 broadcasts),
// which keeps the FMA units busy. The k x 32 panel of b (64 KB at k = 512) is reused by
// every 8-row block of a, so it stays in L1/L2 while a's rows stream through.

#include "winograd/gemm_cpu.h"

#include <ATen/ATen.h>

#if defined(__AVX512F__)
#include <immintrin.h>
#endif

namespace fastgen::winograd {

namespace {

#if defined(__AVX512F__)

constexpr int64_t kBlockRows = 8;

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
      const __m512 x = _mm512_set1_ps(kTransposed ? a[k * lda + r] : a[r * lda + k]);
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
  const __mmask16 low = width >= 16 ? __mmask16(0xFFFF) : __mmask16((1u << width) - 1);
  const __mmask16 high = width >= 32   ? __mmask16(0xFFFF)
                         : width <= 16 ? __mmask16(0)
                                       : __mmask16((1u << (width - 16)) - 1);
  // Row r of a starts at a + r * lda (plain) or at a + r (transposed: column r of [k, m]).
  const int64_t row_step = kTransposed ? 1 : lda;
  int64_t row = 0;
  for (; row + kBlockRows <= m; row += kBlockRows) {
    micro_kernel<kBlockRows, kTransposed>(a + row * row_step, lda, b, ldb, c + row * ldc, ldc, k,
                                          low, high);
  }
  for (; row < m; ++row) {  // the last rows, one at a time
    micro_kernel<1, kTransposed>(a + row * row_step, lda, b, ldb, c + row * ldc, ldc, k, low,
                                 high);
  }
}

#endif  // __AVX512F__

}  // namespace

void gemm_panel(const float* a, int64_t lda, bool a_transposed, const float* b, int64_t ldb,
                float* c, int64_t ldc, int64_t m, int64_t k, int64_t width) {
#if defined(__AVX512F__)
  if (a_transposed) {
    rows<true>(a, lda, b, ldb, c, ldc, m, k, width);
  } else {
    rows<false>(a, lda, b, ldb, c, ldc, m, k, width);
  }
#else
  const auto options = at::TensorOptions().dtype(at::kFloat);
  const at::Tensor a_view =
      a_transposed ? at::from_blob(const_cast<float*>(a), {m, k}, {1, lda}, options)
                   : at::from_blob(const_cast<float*>(a), {m, k}, {lda, 1}, options);
  const at::Tensor b_view = at::from_blob(const_cast<float*>(b), {k, width}, {ldb, 1}, options);
  at::Tensor c_view = at::from_blob(c, {m, width}, {ldc, 1}, options);
  at::mm_out(c_view, a_view, b_view);
#endif
}

}  // namespace fastgen::winograd
