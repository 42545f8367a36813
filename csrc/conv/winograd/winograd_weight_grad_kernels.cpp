// The Winograd weight gradient of the 4x4 stride-2 convolution (winograd_cpu.h), compiled
// once per CPU capability: its own transform of grad_out, GEMMs against the input's
// transform, and the inverse weight transform folded into each GEMM panel.

#include "conv/winograd/winograd_tiles.h"

#include <ATen/ATen.h>
#include <ATen/Parallel.h>

#include <algorithm>
#include <cstring>
#include <vector>

namespace fastgen::winograd::FASTGEN_CPU_NS {

namespace {

// The weight gradient dK[a*2 + b, o, c] = sum over (n, i, j) of grad[n, o, i, j] *
// x[n, c, i + a, j + b], x the concatenated sources: dU[pos] = G[pos]^T @ V[pos] one
// 32-column panel at a time, each panel folded straight into dK (G^T dU G: 4 FMAs per
// element) instead of keeping the 25 matrices of dU.
at::Tensor run_weight_grad(const std::vector<Source>& sources, const Source& grad,
                           const Tiling& tiles) {
  const Kernels& loops = kKernels;  // this capability's micro-kernel and transforms
  int64_t in_ch = 0;
  for (const Source& s : sources) in_ch += s.channels;
  const int64_t out_ch = grad.channels, count = tiles.count();
  auto v = workspace(0, {kPositions, count, in_ch});
  input_transform(sources, tiles, v.mutable_data_ptr<float>(), count * in_ch);
  auto g = workspace(2, {kPositions, count, out_ch});
  grad_transform(grad, tiles, g.mutable_data_ptr<float>(), count * out_ch);
  auto dk = at::empty({4, out_ch, in_ch}, at::TensorOptions().dtype(at::kFloat));
  const float* v_data = v.const_data_ptr<float>();
  const float* g_data = g.const_data_ptr<float>();
  float* dk_data = dk.mutable_data_ptr<float>();
  const int64_t panels = (in_ch + kGemmPanel - 1) / kGemmPanel;
  at::parallel_for(0, panels, 1, [&](int64_t begin, int64_t end) {
    const int64_t block_size = out_ch * kGemmPanel;
    std::vector<float> block(block_size), acc(4 * block_size);
    for (int64_t task = begin; task < end; ++task) {
      const int64_t column = task * kGemmPanel, width = std::min(kGemmPanel, in_ch - column);
      std::fill(acc.begin(), acc.end(), 0.0f);
      for (int64_t pos = 0; pos < kPositions; ++pos) {
        // block[o, :] = sum_t G[pos][t][o] * V[pos][t][column + :]
        gemm_panel(loops, g_data + pos * count * out_ch, out_ch, true,
                   v_data + pos * count * in_ch + column, in_ch, block.data(), kGemmPanel, out_ch,
                   count, width);
        for (int64_t tap = 0; tap < 4; ++tap) {
          const float weight = position_weight(pos, tap);
          if (weight == 0.0f) continue;
          float* __restrict__ dst = acc.data() + tap * block_size;
          const float* __restrict__ src = block.data();
#pragma omp simd
          for (int64_t i = 0; i < block_size; ++i) dst[i] += weight * src[i];
        }
      }
      for (int64_t tap = 0; tap < 4; ++tap)
        for (int64_t o = 0; o < out_ch; ++o) {
          std::copy_n(acc.data() + tap * block_size + o * kGemmPanel, width,
                      dk_data + (tap * out_ch + o) * in_ch + column);
        }
    }
  });
  return dk;
}

// grad_weight[o, c, 2a + p, 2b + q] = dK[a*2 + b, o, (p*2 + q) * Cin + c]: the four phases
// 2x2 taps cover the 4x4 weight exactly once.
at::Tensor scatter_phase_weight_grad(const at::Tensor& dk, const at::TensorOptions& options) {
  const int64_t out_ch = dk.size(1), channels = dk.size(2), in_ch = channels / 4;
  auto out = at::empty({out_ch, in_ch, 4, 4}, options);
  const float* src = dk.const_data_ptr<float>();
  float* data = out.mutable_data_ptr<float>();
  at::parallel_for(0, out_ch, parallel::grain(channels, parallel::kTransformGrainElements),
                   [&](int64_t begin, int64_t end) {
                     for (int64_t o = begin; o < end; ++o)
                       for (int64_t cc = 0; cc < channels; ++cc) {
                         const int64_t phase = cc / in_ch, p = phase / 2, q = phase % 2;
                         float* base = data + (o * in_ch + cc % in_ch) * 16;
                         for (int64_t tap = 0; tap < 4; ++tap) {
                           base[(2 * (tap / 2) + p) * 4 + 2 * (tap % 2) + q] =
                               src[(tap * out_ch + o) * channels + cc];
                         }
                       }
                   });
  return out;
}

}  // namespace

at::Tensor conv2d_weight_grad(const at::Tensor& input, const at::Tensor& grad_out) {
  const int64_t out_h = grad_out.size(2), out_w = grad_out.size(3);
  auto dk = run_weight_grad(phase_sources(input), make_source(grad_out, 1, 0, 0),
                            tiling(input.size(0), out_h, out_w));
  return scatter_phase_weight_grad(dk, input.options());
}

}  // namespace fastgen::winograd::FASTGEN_CPU_NS
