// The weight side of the Winograd products, compiled once per CPU capability: the taps'
// gather (one for both directions), the GEMMs with the weight transform built panel by
// panel, and the GEMM panel itself (the capability's micro-kernel, or at::mm).

#include "conv/winograd/winograd_tiles.h"

#include "common/bfloat16_chunks.h"

#include <ATen/ATen.h>
#include <ATen/Parallel.h>

#include <algorithm>
#include <cstring>
#include <vector>

namespace fastgen::winograd::FASTGEN_CPU_NS {

// The weight's 2x2 taps for the GEMM panels, taps[a*2 + b, row, col] (columns innermost):
//   conv2d, weight [Cout, Cin, 4, 4]: row = phase * Cin + c, col = o,
//     taps = weight[o, c, 2a + p, 2b + q], the 2x2 kernel input phase (p, q) meets;
//   transposed, weight [Cin, Cout, 4, 4]: row = c, col = phase * Cout + o,
//     taps = weight[c, o, 2a + 1 - r, 2b + 1 - s], the kernel of output phase (r, s).
at::Tensor gather_taps(const at::Tensor& weight, bool transposed) {
  const int64_t in_ch = weight.size(transposed ? 0 : 1), out_ch = weight.size(transposed ? 1 : 0);
  const int64_t rows = transposed ? in_ch : 4 * in_ch, cols = transposed ? 4 * out_ch : out_ch;
  auto taps = at::empty({4, rows, cols}, at::TensorOptions().dtype(at::kFloat));
  float* data = taps.mutable_data_ptr<float>();
  const float* w = weight.const_data_ptr<float>();
  const int64_t stride_c = weight.stride(transposed ? 0 : 1),
                stride_o = weight.stride(transposed ? 1 : 0), stride_y = weight.stride(2),
                stride_x = weight.stride(3);
  // Small work: a chunk of >= 16K elements, so small layers run on the calling thread alone
  // instead of waking (and waiting for) the others.
  at::parallel_for(
      0, in_ch, parallel::grain(16 * out_ch, parallel::kTransformGrainElements),
      [&](int64_t begin, int64_t end) {
        for (int64_t c = begin; c < end; ++c)
          for (int64_t tap = 0; tap < 4; ++tap)
            for (int64_t phase = 0; phase < 4; ++phase) {
              const int64_t p = phase / 2, q = phase % 2;
              const int64_t y = 2 * (tap / 2) + (transposed ? 1 - p : p),
                            x = 2 * (tap % 2) + (transposed ? 1 - q : q);
              float* dst = data + tap * rows * cols +
                           (transposed ? c * cols + phase * out_ch : (phase * in_ch + c) * cols);
              const float* src = w + c * stride_c + y * stride_y + x * stride_x;
              for (int64_t o = 0; o < out_ch; ++o) dst[o] = src[o * stride_o];
            }
      });
  return taps;
}

namespace {

// One row of a panel of U: dst[o] = sum over the four taps of weights[tap] * taps[tap][o],
// for o < width; `taps` points at the row's first column in tap 0, the taps `tap_stride`
// apart.
inline void weight_row(const float* taps, int64_t tap_stride, const float weights[4], int64_t width,
                       float* __restrict__ dst) {
  const float* t0 = taps;
  const float* t1 = t0 + tap_stride;
  const float* t2 = t1 + tap_stride;
  const float* t3 = t2 + tap_stride;
#pragma omp simd
  for (int64_t o = 0; o < width; ++o) {
    dst[o] = (weights[0] * t0[o] + weights[1] * t1[o]) + (weights[2] * t2[o] + weights[3] * t3[o]);
  }
}

}  // namespace

// M[pos] = V[pos] @ U[pos] (V [25, T, C], M [25, T, Cout]) with U[pos] = sum over the four
// taps of (G G^T weights) * taps[tap] (taps [4, C, Cout]). U is built one 32-column panel at
// a time right before its GEMM (4 FMAs per element, in L1/L2), never as 25 full matrices: at
// DCGAN sizes those were 13 MB written and read back per call, more than the GEMM's own
// traffic.
void gemm_with_weight_panels(const float* v_data, const at::Tensor& taps, float* m_data,
                             int64_t count) {
  const Kernels& loops = kKernels;  // this capability's micro-kernel and transforms
  const int64_t in_ch = taps.size(1), out_ch = taps.size(2);
  const float* taps_data = taps.const_data_ptr<float>();
  const int64_t panels = (out_ch + kGemmPanel - 1) / kGemmPanel;
  at::parallel_for(0, panels, 1, [&](int64_t begin, int64_t end) {
    std::vector<float> panel(in_ch * kGemmPanel);
    for (int64_t task = begin; task < end; ++task) {
      const int64_t column = task * kGemmPanel, width = std::min(kGemmPanel, out_ch - column);
      for (int64_t pos = 0; pos < kPositions; ++pos) {
        float weights[4];
        for (int64_t tap = 0; tap < 4; ++tap) weights[tap] = position_weight(pos, tap);
        for (int64_t c = 0; c < in_ch; ++c) {
          weight_row(taps_data + c * out_ch + column, in_ch * out_ch, weights, width,
                     panel.data() + c * kGemmPanel);
        }
        gemm_panel(loops, v_data + pos * count * in_ch, in_ch, false, panel.data(), kGemmPanel,
                   m_data + pos * count * out_ch + column, out_ch, count, in_ch, width);
      }
    }
  });
}

// gemm_with_weight_panels with bfloat16 products: each panel of U is computed in float32 as
// above, two rows at a time, and rounded into the pair-interleaved layout the bfloat16
// micro-kernel reads (Kernels::gemm_panel_bf16; columns past the panel's width are zero).
void gemm_with_weight_panels_bf16(const uint16_t* v_data, const at::Tensor& taps, float* m_data,
                                  int64_t count) {
  const Kernels& loops = kKernels;
  TORCH_INTERNAL_ASSERT(loops.gemm_panel_bf16 != nullptr && taps.size(1) % 2 == 0);
  const int64_t in_ch = taps.size(1), out_ch = taps.size(2);
  const float* taps_data = taps.const_data_ptr<float>();
  const int64_t panels = (out_ch + kGemmPanel - 1) / kGemmPanel;
  at::parallel_for(0, panels, 1, [&](int64_t begin, int64_t end) {
    std::vector<uint16_t> panel(in_ch * kGemmPanel);
    float rows[2][kGemmPanel];
    for (int64_t task = begin; task < end; ++task) {
      const int64_t column = task * kGemmPanel, width = std::min(kGemmPanel, out_ch - column);
      for (int64_t pos = 0; pos < kPositions; ++pos) {
        float weights[4];
        for (int64_t tap = 0; tap < 4; ++tap) weights[tap] = position_weight(pos, tap);
        for (int64_t c = 0; c < in_ch; c += 2) {
          for (int64_t half = 0; half < 2; ++half) {
            weight_row(taps_data + (c + half) * out_ch + column, in_ch * out_ch, weights, width,
                       rows[half]);
            std::fill(rows[half] + width, rows[half] + kGemmPanel, 0.0f);
          }
          uint16_t* __restrict__ packed = panel.data() + c * kGemmPanel;
#pragma omp simd
          for (int64_t o = 0; o < kGemmPanel; ++o) {
            packed[2 * o] = bfloat16_chunks::round_to_bits(rows[0][o]);
            packed[2 * o + 1] = bfloat16_chunks::round_to_bits(rows[1][o]);
          }
        }
        loops.gemm_panel_bf16(v_data + pos * count * in_ch, in_ch, panel.data(),
                              m_data + pos * count * out_ch + column, out_ch, count, in_ch, width);
      }
    }
  });
}

// loops.gemm_panel, or at::mm where the table has none (the baseline: its BLAS picks its own
// kernels for the CPU at run time).
void gemm_panel(const Kernels& loops, const float* a, int64_t lda, bool a_transposed,
                const float* b, int64_t ldb, float* c, int64_t ldc, int64_t m, int64_t k,
                int64_t width) {
  if (loops.gemm_panel != nullptr) {
    return loops.gemm_panel(a, lda, a_transposed, b, ldb, c, ldc, m, k, width);
  }
  const auto options = at::TensorOptions().dtype(at::kFloat);
  const at::Tensor a_view = a_transposed
                                ? at::from_blob(const_cast<float*>(a), {m, k}, {1, lda}, options)
                                : at::from_blob(const_cast<float*>(a), {m, k}, {lda, 1}, options);
  const at::Tensor b_view = at::from_blob(const_cast<float*>(b), {k, width}, {ldb, 1}, options);
  at::Tensor c_view = at::from_blob(c, {m, width}, {ldc, 1}, options);
  at::mm_out(c_view, a_view, b_view);
}

}  // namespace fastgen::winograd::FASTGEN_CPU_NS
