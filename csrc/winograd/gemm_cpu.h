#pragma once
// The float32 GEMM panels of the Winograd convolutions: c = a @ b for one panel of at most
// kGemmPanel columns of b and c.
//
// Why not at::bmm: the Winograd products are many small ones (25 or 100 of, e.g.,
// [256 x 128] @ [128 x 64]), where MKL's sgemm reached 60-80 GFLOP/s on the 2-core CI CPU
// while oneDNN's direct convolution of the same layer ran at ~110; at that rate Winograd's
// 2.56x fewer multiplications barely paid. Panels also let the callers build each panel of
// b on the fly (the weight transform) and fold each panel of c away at once (the weight
// gradient's inverse transform) instead of materialising 25 full matrices. With AVX-512
// (the build's -march=native) a register-blocked kernel does the work; without it, at::mm.

#include <cstdint>

namespace fastgen::winograd {

constexpr int64_t kGemmPanel = 32;

// c[m, width] = a[m, k] @ b[k, width] with width <= kGemmPanel. a is row-major with row
// stride lda, or (a_transposed) stored as [k, m] with row stride lda; b and c are row-major
// with row strides ldb and ldc. c is overwritten.
void gemm_panel(const float* a, int64_t lda, bool a_transposed, const float* b, int64_t ldb,
                float* c, int64_t ldc, int64_t m, int64_t k, int64_t width);

}  // namespace fastgen::winograd
