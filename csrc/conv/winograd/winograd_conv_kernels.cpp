// Winograd F(4x4, 2x2) conv2d and conv_transpose2d (4x4 kernel, stride 2, padding 1) and
// their data gradients on CPU, compiled once per CPU capability (FASTGEN_CPU_NS: baseline,
// avx2, avx512; common/cpu_capability.h) with that capability's GEMM micro-kernel and
// transforms; winograd_cpu.cpp picks the copy for the CPU. The math and shapes are in
// winograd_cpu.h; the shared steps in winograd_tiles.h.
//
// The convolution is a 2x2 valid correlation of the input's four phases (sources read with
// zero padding and a stride of 2, channels concatenated):
//   1. input transform:  V[pos, t, c] = (B^T d B)[pos] for each 5x5 input tile d,
//   2. one GEMM per position: M[pos] = V[pos] @ U[pos]   ([T, C] x [C, Cout]),
//   3. output transform: each 4x4 output tile = A^T m A, written through the output's strides.
// The transposed convolution runs the transposed algorithm (see conv_transpose2d below).

#include "conv/winograd/winograd_tiles.h"

#include <ATen/ATen.h>
#include <ATen/Parallel.h>

#include <algorithm>
#include <cstring>
#include <vector>

namespace fastgen::winograd::FASTGEN_CPU_NS {

namespace {

// M[pos] = V[pos] @ U[pos] for the V that `transform(v, v_bf16)` writes ([25, count, depth]),
// with float32 or bfloat16 products; V lives in workspace slot 0 (bfloat16 bits in half the
// floats), M in slot 1.
template <typename Transform>
at::Tensor transformed_products(Transform&& transform, const at::Tensor& taps, int64_t count,
                                int64_t depth, int64_t columns, Products products) {
  auto m = workspace(1, {kPositions, count, columns});
  if (products == Products::BFloat16 && kKernels.gemm_panel_bf16 != nullptr && depth % 2 == 0) {
    auto v = workspace(0, {kPositions, count, depth / 2});
    auto* v_bf16 = reinterpret_cast<uint16_t*>(v.mutable_data_ptr<float>());
    transform(nullptr, v_bf16);
    gemm_with_weight_panels_bf16(v_bf16, taps, m.mutable_data_ptr<float>(), count);
  } else {
    auto v = workspace(0, {kPositions, count, depth});
    transform(v.mutable_data_ptr<float>(), nullptr);
    gemm_with_weight_panels(v.const_data_ptr<float>(), taps, m.mutable_data_ptr<float>(), count);
  }
  return m;
}

}  // namespace

at::Tensor conv2d(const at::Tensor& input, const at::Tensor& weight, Products products) {
  const int64_t batch = input.size(0), in_ch = input.size(1), out_ch = weight.size(0);
  const int64_t out_h = input.size(2) / 2, out_w = input.size(3) / 2;
  auto out = at::empty({batch, out_ch, out_h, out_w},
                       input.options().memory_format(conv_memory_format(input)));
  const Tiling tiles = tiling(batch, out_h, out_w);
  const int64_t count = tiles.count(), depth = 4 * in_ch;
  const auto sources = phase_sources(input);
  const at::Tensor m = transformed_products(
      [&](float* v, uint16_t* v_bf16) {
        input_transform(sources, tiles, v, count * depth, v_bf16);
      },
      gather_taps(weight, /*transposed=*/false), count, depth, out_ch, products);
  output_transform(m.const_data_ptr<float>(), tiles, out_ch, count * out_ch, make_target(out));
  return out;
}

// The transposed convolution by the transposed algorithm: each 4x4 INPUT tile x is scattered
// into a 5x5 window of every output phase (r, s),
//   window = B [ (G g_rs G^T) ⊙ (A x A^T) ] B^T,   g_rs[a][b] = weight[:, :, 2a + 1 - r, 2b + 1 -
//   s],
// at phase rows 4 * tile_row - r + (0..4) (columns likewise), neighbouring windows
// overlapping by one row/column (overlap-add). A x A^T does not depend on the phase, so the
// input is transformed once and one GEMM with 4 * Cout columns serves all four phases;
// splitting the output into phases first (four 2x2 convolutions) transformed the input
// four times.
at::Tensor conv_transpose2d(const at::Tensor& input, const at::Tensor& weight, Products products) {
  const Kernels& loops = kKernels;  // this capability's micro-kernel and transforms
  const int64_t batch = input.size(0), in_ch = input.size(1), out_ch = weight.size(1);
  const int64_t height = input.size(2), width = input.size(3);
  auto out = at::empty({batch, out_ch, 2 * height, 2 * width},
                       input.options().memory_format(conv_memory_format(input)));
  const Tiling tiles = tiling(batch, height, width);
  const int64_t count = tiles.count(), columns = 4 * out_ch;
  const Source source = make_source(input, 1, 0, 0);
  const at::Tensor m = transformed_products(
      [&](float* v, uint16_t* v_bf16) { grad_transform(source, tiles, v, count * in_ch, v_bf16); },
      gather_taps(weight, /*transposed=*/true), count, in_ch, columns, products);

  // Output: one task per (phase, tile row) owns phase rows 4*ty - r .. +3 (the last tile row
  // also its window's fifth row) and adds the fifth row of the tile row above into its first.
  const float* m_data = m.const_data_ptr<float>();
  const int64_t pos_stride = count * columns;
  const int64_t band_cols = tiles.tiles_w * kTile + 1;  // phase columns -s .. 4*tiles_w - s
  at::parallel_for(
      0, 4 * tiles.bands(), std::max<int64_t>(1, band_grain(tiles, out_ch) / 4),
      [&](int64_t begin, int64_t end) {
        std::vector<float> band(kAlpha * band_cols * out_ch), scratch(kPositions * out_ch),
            result(kPositions * out_ch);
        for (int64_t task = begin; task < end; ++task) {
          const int64_t phase = task / tiles.bands(), b = task % tiles.bands();
          const int64_t r = phase / 2, s = phase % 2;
          const int64_t n = b / tiles.tiles_h, ty = b % tiles.tiles_h;
          const bool last = ty == tiles.tiles_h - 1;
          std::fill(band.begin(), band.end(), 0.0f);
          // The 5x5 window of tile (row_b, tx) for this phase, into result[i][j][o]; with
          // only_last_row just its row 4 (B's last row is e4, so (B M)[4] = M[4]).
          const auto window = [&](int64_t row_b, int64_t tx, bool only_last_row) {
            const int64_t t = row_b * tiles.tiles_w + tx;
            const float* base = m_data + t * columns + phase * out_ch;
            for (int64_t l = 0; l < kAlpha; ++l) {  // columns: scratch[i][l] = (B M)[i][l]
              const float* column[kAlpha];
              float* dst[kAlpha];
              for (int64_t k = 0; k < kAlpha; ++k) {
                column[k] = base + (k * kAlpha + l) * pos_stride;
                dst[k] = scratch.data() + (k * kAlpha + l) * out_ch;
              }
              if (only_last_row) {
                std::copy_n(column[4], out_ch, dst[4]);
              } else {
                loops.scatter_rows(column, dst, out_ch);
              }
            }
            for (int64_t i = only_last_row ? 4 : 0; i < kAlpha;
                 ++i) {  // rows: result = scratch B^T
              const float* row[kAlpha];
              float* dst[kAlpha];
              for (int64_t l = 0; l < kAlpha; ++l) {
                row[l] = scratch.data() + (i * kAlpha + l) * out_ch;
                dst[l] = result.data() + (i * kAlpha + l) * out_ch;
              }
              loops.scatter_rows(row, dst, out_ch);
            }
          };
          const auto accumulate = [&](int64_t band_row, int64_t window_row, int64_t tx) {
            float* __restrict__ dst = band.data() + (band_row * band_cols + tx * kTile) * out_ch;
            const float* __restrict__ src = result.data() + window_row * kAlpha * out_ch;
#pragma omp simd
            for (int64_t i = 0; i < kAlpha * out_ch; ++i) dst[i] += src[i];
          };
          for (int64_t tx = 0; tx < tiles.tiles_w; ++tx) {
            window(b, tx, false);
            for (int64_t i = 0; i < (last ? kAlpha : kTile); ++i) accumulate(i, i, tx);
            if (ty > 0) {
              window(b - 1, tx, true);
              accumulate(0, 4, tx);
            }
          }
          // band row i, column j -> phase row 4*ty - r + i, phase column j - s.
          const int64_t rows = last ? kAlpha : kTile;
          for (int64_t i = 0; i < rows; ++i) {
            const int64_t prow = 4 * ty - r + i;
            if (prow < 0 || prow >= height) continue;
            float* dst_row = out.mutable_data_ptr<float>() + n * out.stride(0) +
                             (2 * prow + r) * out.stride(2) + s * out.stride(3);
            const float* src_row = band.data() + (i * band_cols + s) * out_ch;  // phase column 0
            const int64_t stride_c = out.stride(1), stride_col = 2 * out.stride(3);
            if (stride_c == 1) {  // channels_last: whole pixels
              for (int64_t col = 0; col < width; ++col) {
                std::copy_n(src_row + col * out_ch, out_ch, dst_row + col * stride_col);
              }
            } else {  // NCHW: along each channel's row
              for (int64_t o = 0; o < out_ch; ++o) {
                float* dst = dst_row + o * stride_c;
                for (int64_t col = 0; col < width; ++col)
                  dst[col * stride_col] = src_row[col * out_ch + o];
              }
            }
          }
        }
      });
  return out;
}

std::tuple<at::Tensor, at::Tensor> conv2d_backward(const at::Tensor& grad_out,
                                                   const at::Tensor& input,
                                                   const at::Tensor& weight,
                                                   std::array<bool, 2> mask, Products products) {
  at::Tensor grad_input, grad_weight;
  // The data gradient of a stride-2 convolution is the transposed convolution of grad_out
  // with the same weight ([Cout, Cin, 4, 4] read as [in, out, 4, 4]).
  if (mask[0]) grad_input = winograd::conv_transpose2d(grad_out, weight, products);
  if (mask[1]) grad_weight = conv2d_weight_grad(input, grad_out);
  return {grad_input, grad_weight};
}

std::tuple<at::Tensor, at::Tensor> conv_transpose2d_backward(const at::Tensor& grad_out,
                                                             const at::Tensor& input,
                                                             const at::Tensor& weight,
                                                             std::array<bool, 2> mask,
                                                             Products products) {
  at::Tensor grad_input, grad_weight;
  // ... and the other way round; the transposed convolution's weight gradient is the
  // convolution's with the roles of input and grad_out swapped.
  if (mask[0]) grad_input = winograd::conv2d(grad_out, weight, products);
  if (mask[1]) grad_weight = conv2d_weight_grad(grad_out, input);
  return {grad_input, grad_weight};
}

}  // namespace fastgen::winograd::FASTGEN_CPU_NS
