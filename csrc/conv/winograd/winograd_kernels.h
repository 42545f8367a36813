#pragma once
// The hot loops of the Winograd convolutions (winograd_*_kernels.cpp), compiled once per
// instruction set (winograd_kernels.cpp; common/cpu_capability.h): the float32 GEMM panels and the
// tile transforms. The kernel files use their own capability's table (kKernels); kernels() is the
// copy for this CPU.
//
// Why our own GEMM panels and not at::bmm: the Winograd products are many small ones (25 or
// 100 of, e.g., [256 x 128] @ [128 x 64]), where MKL's sgemm reached 60-80 GFLOP/s on the
// 2-core CI CPU while oneDNN's direct convolution of the same layer ran at ~110; at that rate
// Winograd's 2.56x fewer multiplications barely paid. Panels also let the callers build each
// panel of b on the fly (the weight transform) and fold each panel of c away at once (the
// weight gradient's inverse transform) instead of materialising 25 full matrices.

#include <cstdint>

namespace fastgen::winograd {

constexpr int64_t kGemmPanel = 32;
constexpr int64_t kTile = 4;   // outputs per tile side
constexpr int64_t kAlpha = 5;  // inputs per tile side (kTile + kernel - 1)

struct Kernels {
  // c[m, width] = a[m, k] @ b[k, width] with width <= kGemmPanel. a is row-major with row
  // stride lda, or (a_transposed) stored as [k, m] with row stride lda; b and c are
  // row-major with row strides ldb and ldc. c is overwritten. Null in the baseline table:
  // call gemm_panel() below, which then takes at::mm.
  void (*gemm_panel)(const float* a, int64_t lda, bool a_transposed, const float* b, int64_t ldb,
                     float* c, int64_t ldc, int64_t m, int64_t k, int64_t width);
  // The same product on bfloat16 operands with float32 sums (AVX-512 BF16's `vdpbf16ps`):
  // a is row-major bfloat16 bits [m, k] with row stride lda (both even), b a panel packed in
  // pairs of rows, b[(i / 2) * 2 * kGemmPanel + 2 * j + i % 2] = b[i, j] for j < kGemmPanel
  // (columns from `width` on zero). Only in the AVX-512 table, and called only where
  // cpu::bf16_dot_products() says the CPU has the instruction; null elsewhere.
  void (*gemm_panel_bf16)(const uint16_t* a, int64_t lda, const uint16_t* b, float* c, int64_t ldc,
                          int64_t m, int64_t k, int64_t width);
  // The tile transforms, each over `count` channels (see winograd_kernels.cpp).
  void (*input_rows)(const float* const x[kAlpha], float* const y[kAlpha], int64_t count);
  void (*scatter_rows)(const float* const x[kAlpha], float* const y[kAlpha], int64_t count);
  void (*output_rows)(const float* const m[kAlpha], float* const y[kTile], int64_t count);
  void (*grad_rows)(const float* const f[kTile], float* const g[kAlpha], int64_t count);
  // `iterations` steps of independent FMA chains at this capability's vector width (the
  // machine's FMA peak, measured); returns the flops run.
  double (*fma_loop)(int64_t iterations);
  // The same with `vdpbf16ps` (bfloat16 pairs into float32 lanes): the peak gemm_panel_bf16
  // is measured against. Only in the AVX-512 table; call only where cpu::bf16_dot_products().
  double (*bf16_dot_loop)(int64_t iterations);
};

// One table per compiled capability (x86-64 builds all three, others only the baseline).
namespace baseline {
extern const Kernels kKernels;
}
namespace avx2 {
extern const Kernels kKernels;
}
namespace avx512 {
extern const Kernels kKernels;
}

// The table for the CPU this runs on (FASTGEN_CPU_CAPABILITY forces one).
const Kernels& kernels();

}  // namespace fastgen::winograd
