#pragma once
// What the Winograd kernel files (winograd_*_kernels.cpp, each compiled once per CPU
// capability into namespace FASTGEN_CPU_NS) share: the virtual input maps and output
// targets the transforms read and write, the tiling, and the steps of the algorithm
// (winograd_cpu.h has the math). Included only by those files.
//
//   winograd_transforms_kernels.cpp   the input, output and gradient tile transforms
//   winograd_taps_kernels.cpp         the weight taps' gather and the GEMMs with the weight
//                                     transform built panel by panel
//   winograd_conv_kernels.cpp         conv2d, conv_transpose2d and their data gradients
//   winograd_weight_grad_kernels.cpp  the weight gradient

#include <ATen/core/Tensor.h>

#include <cstdint>
#include <vector>

#include "common/parallel.h"
#include "conv/conv_common.h"
#include "conv/winograd/winograd_cpu.h"
#include "conv/winograd/winograd_kernels.h"

namespace fastgen::winograd::FASTGEN_CPU_NS {

constexpr int64_t kPositions = 25;  // kAlpha * kAlpha

// G (5x2) with its rows scaled by the inverse of B^T's row scales (see input_rows in
// winograd_kernels.cpp).
constexpr double kG[kAlpha][2] = {
    {1.0 / 2, 0.0}, {1.0 / 2, 1.0 / 2}, {1.0 / 6, -1.0 / 6}, {1.0 / 6, 1.0 / 3}, {0.0, 1.0}};

// (G[k][a] * G[l][b]) for position k*5 + l and tap a*2 + b.
inline float position_weight(int64_t position, int64_t tap) {
  return static_cast<float>(kG[position / kAlpha][tap / 2] * kG[position % kAlpha][tap % 2]);
}

// A virtual [N, channels, *, *] map read from a float tensor of any strides: element
// (n, c, i, j) is the pixel at row step * i + offset_h, column step * j + offset_w of `data`,
// or 0 outside [0, height) x [0, width).
struct Source {
  const float* data;
  int64_t stride_n, stride_c, stride_h, stride_w;
  int64_t height, width;
  int64_t step, offset_h, offset_w;
  int64_t channels;
};

inline Source make_source(const at::Tensor& t, int64_t step, int64_t offset_h, int64_t offset_w) {
  return Source{t.const_data_ptr<float>(),
                t.stride(0),
                t.stride(1),
                t.stride(2),
                t.stride(3),
                t.size(2),
                t.size(3),
                step,
                offset_h,
                offset_w,
                t.size(1)};
}

// An output tensor of any strides: element (n, c, i, j) with i < height, j < width.
struct Target {
  float* data;
  int64_t stride_n, stride_c, stride_h, stride_w;
  int64_t height, width;
};

inline Target make_target(at::Tensor& t) {
  return Target{t.mutable_data_ptr<float>(),
                t.stride(0),
                t.stride(1),
                t.stride(2),
                t.stride(3),
                t.size(2),
                t.size(3)};
}

struct Tiling {
  int64_t batch, tiles_h, tiles_w;
  int64_t count() const { return batch * tiles_h * tiles_w; }
  int64_t bands() const { return batch * tiles_h; }  // one band = one row of tiles
};

inline Tiling tiling(int64_t batch, int64_t out_h, int64_t out_w) {
  return {batch, (out_h + kTile - 1) / kTile, (out_w + kTile - 1) / kTile};
}

// Bands per parallel chunk: enough work per chunk to amortise scheduling.
inline int64_t band_grain(const Tiling& tiles, int64_t channels) {
  return parallel::grain(tiles.tiles_w * channels * kPositions);
}

// The four even/odd phases of a stride-2, padding-1 input: phase (p, q) element (i, j) is
// input[2i + p - 1, 2j + q - 1], so the 4x4 kernel's taps (2a + p, 2b + q) become a 2x2
// kernel (a, b) per phase.
inline std::vector<Source> phase_sources(const at::Tensor& input) {
  std::vector<Source> sources;
  for (int64_t p = 0; p < 2; ++p)
    for (int64_t q = 0; q < 2; ++q) sources.push_back(make_source(input, 2, p - 1, q - 1));
  return sources;
}

// Thread-local scratch tensor `slot` (0-2) of the given sizes (winograd_transforms_kernels.cpp).
at::Tensor workspace(int slot, at::IntArrayRef sizes);

// V[pos, t, :] (pos_stride apart) of the 5x5 input tiles of the sources, channels
// concatenated in order; with v_bf16, computed in float32 and written there rounded to
// bfloat16 instead (v unused).
void input_transform(const std::vector<Source>& sources, const Tiling& tiles, float* v,
                     int64_t pos_stride, uint16_t* v_bf16 = nullptr);
// The 4x4 output tiles from M[pos, t, :] into the target.
void output_transform(const float* m, const Tiling& tiles, int64_t channels, int64_t pos_stride,
                      const Target& target);
// Ghat[pos, t, :] = (A g A^T)[pos] for the 4x4 gradient tiles (zero outside the output); with
// out_bf16, rounded to bfloat16 there instead (out unused).
void grad_transform(const Source& grad, const Tiling& tiles, float* out, int64_t pos_stride,
                    uint16_t* out_bf16 = nullptr);

// The weight's 2x2 taps laid out for the GEMM panels (winograd_taps_kernels.cpp).
at::Tensor gather_taps(const at::Tensor& weight, bool transposed);
// M[pos] = V[pos] @ U[pos], U built from the taps one panel at a time.
void gemm_with_weight_panels(const float* v_data, const at::Tensor& taps, float* m_data,
                             int64_t count);
// The same with bfloat16 products (Products::BFloat16): V in bfloat16 bits, each panel of U
// computed in float32 and rounded, float32 sums (Kernels::gemm_panel_bf16). C must be even.
void gemm_with_weight_panels_bf16(const uint16_t* v_data, const at::Tensor& taps, float* m_data,
                                  int64_t count);

}  // namespace fastgen::winograd::FASTGEN_CPU_NS
