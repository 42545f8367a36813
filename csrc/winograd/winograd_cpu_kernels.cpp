// Winograd F(4x4, 2x2) convolutions on CPU; the math and shapes are in winograd_cpu.h.
// Compiled once per CPU capability (FASTGEN_CPU_NS: baseline, avx2, avx512;
// common/cpu_capability.h), with that capability's GEMM micro-kernel and transforms
// (winograd_kernels.cpp); winograd_cpu.cpp picks the copy for the CPU.
//
// The convolution is a 2x2 valid correlation of the input's four phases (sources read with
// zero padding and a stride of 2, channels concatenated):
//   1. input transform:  V[pos, t, c] = (B^T d B)[pos] for each 5x5 input tile d,
//   2. one GEMM per position: M[pos] = V[pos] @ U[pos]   ([T, C] x [C, Cout]),
//   3. output transform: each 4x4 output tile = A^T m A, written through the output's strides.
// The transposed convolution runs the transposed algorithm (see conv_transpose2d below) and
// the weight gradient its own transform (run_weight_grad). The transforms run over channels
// in the innermost loop (contiguous in V, M and the gathered bands), so they vectorise;
// tile rows are split across threads.

#include "common/parallel.h"
#include "winograd/winograd_cpu.h"

#include "winograd/winograd_kernels.h"

#include <ATen/ATen.h>
#include <ATen/Parallel.h>

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <vector>

namespace fastgen::winograd::FASTGEN_CPU_NS {

namespace {

constexpr int64_t kPositions = 25;  // kAlpha * kAlpha

// G (5x2) with its rows scaled by the inverse of B^T's row scales (see input_rows in
// winograd_kernels.cpp).
constexpr double kG[kAlpha][2] = {
    {1.0 / 2, 0.0}, {1.0 / 2, 1.0 / 2}, {1.0 / 6, -1.0 / 6}, {1.0 / 6, 1.0 / 3}, {0.0, 1.0}};

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

Source make_source(const at::Tensor& t, int64_t step, int64_t offset_h, int64_t offset_w) {
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

Target make_target(at::Tensor& t) {
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

Tiling tiling(int64_t batch, int64_t out_h, int64_t out_w) {
  return {batch, (out_h + kTile - 1) / kTile, (out_w + kTile - 1) / kTile};
}

// Bands per parallel chunk: enough work per chunk to amortise scheduling.
int64_t band_grain(const Tiling& tiles, int64_t channels) {
  return parallel::grain(tiles.tiles_w * channels * kPositions);
}

// rows x cols pixels of `source` starting at virtual (row0, 0), channels innermost:
// band[(k * cols + j) * C + c]. This is where any input layout (NCHW, channels_last,
// strided, phase views) becomes channel-contiguous, one small cache-resident band at a time
// instead of a full-tensor layout copy.
void gather_band(const Source& source, int64_t n, int64_t row0, int64_t rows, int64_t cols,
                 float* band) {
  const int64_t channels = source.channels;
  for (int64_t k = 0; k < rows; ++k) {
    float* dst_row = band + k * cols * channels;
    const int64_t row = source.step * (row0 + k) + source.offset_h;
    if (row < 0 || row >= source.height) {
      std::memset(dst_row, 0, sizeof(float) * cols * channels);
      continue;
    }
    const float* src_row = source.data + n * source.stride_n + row * source.stride_h;
    int64_t j_begin = 0, j_end = cols;  // columns inside the source
    while (j_begin < cols && source.step * j_begin + source.offset_w < 0) ++j_begin;
    while (j_end > j_begin && source.step * (j_end - 1) + source.offset_w >= source.width) --j_end;
    std::memset(dst_row, 0, sizeof(float) * j_begin * channels);
    std::memset(dst_row + j_end * channels, 0, sizeof(float) * (cols - j_end) * channels);
    const int64_t col_stride = source.step * source.stride_w;
    const float* src = src_row + (source.step * j_begin + source.offset_w) * source.stride_w;
    if (source.stride_c == 1 || channels == 1) {
      for (int64_t j = j_begin; j < j_end; ++j, src += col_stride) {
        std::memcpy(dst_row + j * channels, src, sizeof(float) * channels);
      }
    } else {
      // Channels innermost: contiguous stores of whole pixels, strided loads that stay in the
      // same few cache lines from one column to the next.
      const int64_t stride_c = source.stride_c;
      for (int64_t j = j_begin; j < j_end; ++j, src += col_stride) {
        float* __restrict__ d = dst_row + j * channels;
        const float* __restrict__ s = src;
#pragma omp simd
        for (int64_t c = 0; c < channels; ++c) d[c] = s[c * stride_c];
      }
    }
  }
}

// Scratch memory reused across calls on one thread. V and M are written and read once per
// call, and fresh multi-megabyte allocations are returned to the OS on free, so every call
// paid for page faults again: that cost more than the transforms themselves (DCGAN
// 64->128 layer: input transform 3.5 ms -> 0.7 ms). Requests above kCachedBytes are not
// kept.
constexpr size_t kCachedBytes = size_t(256) << 20;

at::Tensor workspace(int slot, at::IntArrayRef sizes) {
  thread_local std::vector<float> buffers[3];
  int64_t numel = 1;
  for (auto s : sizes) numel *= s;
  if (static_cast<size_t>(numel) * sizeof(float) > kCachedBytes) {
    return at::empty(sizes, at::TensorOptions().dtype(at::kFloat));
  }
  auto& buffer = buffers[slot];
  if (buffer.size() < static_cast<size_t>(numel)) buffer.resize(numel);
  return at::from_blob(buffer.data(), sizes, at::TensorOptions().dtype(at::kFloat));
}

// V[pos, t, :] for every tile t, from the 5x5 input tiles at (4 * tile_row, 4 * tile_col)
// of the sources, whose channels are concatenated in order. The sources (the four phases of
// an input) share their rows, so each band of rows is gathered for all of them while it is
// in cache.
void input_transform(const std::vector<Source>& sources, const Tiling& tiles, float* v,
                     int64_t pos_stride) {
  const Kernels& loops = kKernels;  // this capability's micro-kernel and transforms
  int64_t channels = 0, widest = 0;
  for (const Source& source : sources) {
    channels += source.channels;
    widest = std::max(widest, source.channels);
  }
  const int64_t cols = tiles.tiles_w * kTile + 1;
  at::parallel_for(0, tiles.bands(), band_grain(tiles, channels), [&](int64_t begin, int64_t end) {
    std::vector<float> band(kAlpha * cols * widest), scratch(kPositions * widest);
    for (int64_t b = begin; b < end; ++b) {
      const int64_t n = b / tiles.tiles_h, i0 = b % tiles.tiles_h * kTile;
      int64_t offset = 0;
      for (const Source& source : sources) {
        const int64_t width = source.channels;
        gather_band(source, n, i0, kAlpha, cols, band.data());
        for (int64_t tx = 0; tx < tiles.tiles_w; ++tx) {
          const int64_t t = b * tiles.tiles_w + tx;
          // Columns first: scratch[k][l] = (B^T d)[k][l] ...
          for (int64_t l = 0; l < kAlpha; ++l) {
            const float* column[kAlpha];
            float* out[kAlpha];
            for (int64_t k = 0; k < kAlpha; ++k) {
              column[k] = band.data() + (k * cols + tx * kTile + l) * width;
              out[k] = scratch.data() + (k * kAlpha + l) * width;
            }
            loops.input_rows(column, out, width);
          }
          // ... then rows: V[k*5 + l'] = sum_l scratch[k][l] B[l][l'].
          for (int64_t k = 0; k < kAlpha; ++k) {
            const float* row[kAlpha];
            float* out[kAlpha];
            for (int64_t l = 0; l < kAlpha; ++l) {
              row[l] = scratch.data() + (k * kAlpha + l) * width;
              out[l] = v + (k * kAlpha + l) * pos_stride + t * channels + offset;
            }
            loops.input_rows(row, out, width);
          }
        }
        offset += width;
      }
    }
  });
}

// Writes band[(i * cols + j) * C + c] (rows x cols, channels innermost) into the target at
// (row0, 0), clipped to the target.
void scatter_band(const float* band, int64_t n, int64_t row0, int64_t rows, int64_t cols,
                  int64_t channels, const Target& target) {
  const int64_t valid_rows = std::min(rows, target.height - row0);
  const int64_t valid_cols = std::min(cols, target.width);
  const int64_t col_stride = target.stride_w;
  for (int64_t i = 0; i < valid_rows; ++i) {
    float* dst_row = target.data + n * target.stride_n + (row0 + i) * target.stride_h;
    const float* src_row = band + i * cols * channels;
    if (target.stride_c == 1 || channels == 1) {
      for (int64_t j = 0; j < valid_cols; ++j) {
        std::memcpy(dst_row + j * col_stride, src_row + j * channels, sizeof(float) * channels);
      }
    } else {
      for (int64_t c = 0; c < channels; ++c) {
        float* d = dst_row + c * target.stride_c;
        const float* s = src_row + c;
        for (int64_t j = 0; j < valid_cols; ++j, d += col_stride, s += channels) *d = *s;
      }
    }
  }
}

// The 4x4 output tiles from M[pos, t, :] into the target.
void output_transform(const float* m, const Tiling& tiles, int64_t channels, int64_t pos_stride,
                      const Target& target) {
  const Kernels& loops = kKernels;  // this capability's micro-kernel and transforms
  const int64_t cols = tiles.tiles_w * kTile;
  at::parallel_for(0, tiles.bands(), band_grain(tiles, channels), [&](int64_t begin, int64_t end) {
    std::vector<float> band(kTile * cols * channels), scratch(kTile * kAlpha * channels);
    for (int64_t b = begin; b < end; ++b) {
      const int64_t n = b / tiles.tiles_h, i0 = b % tiles.tiles_h * kTile;
      for (int64_t tx = 0; tx < tiles.tiles_w; ++tx) {
        const int64_t t = b * tiles.tiles_w + tx;
        // Columns: scratch[i][l] = (A^T m)[i][l] ...
        for (int64_t l = 0; l < kAlpha; ++l) {
          const float* column[kAlpha];
          float* out[kTile];
          for (int64_t k = 0; k < kAlpha; ++k) {
            column[k] = m + (k * kAlpha + l) * pos_stride + t * channels;
          }
          for (int64_t i = 0; i < kTile; ++i) out[i] = scratch.data() + (i * kAlpha + l) * channels;
          loops.output_rows(column, out, channels);
        }
        // ... then rows, into the band.
        for (int64_t i = 0; i < kTile; ++i) {
          const float* row[kAlpha];
          float* out[kTile];
          for (int64_t l = 0; l < kAlpha; ++l)
            row[l] = scratch.data() + (i * kAlpha + l) * channels;
          for (int64_t j = 0; j < kTile; ++j) {
            out[j] = band.data() + (i * cols + tx * kTile + j) * channels;
          }
          loops.output_rows(row, out, channels);
        }
      }
      scatter_band(band.data(), n, i0, kTile, cols, channels, target);
    }
  });
}

// Ghat[pos, t, :] = (A g A^T)[pos] for the 4x4 gradient tiles (zero outside the output).
void grad_transform(const Source& grad, const Tiling& tiles, float* out, int64_t pos_stride) {
  const Kernels& loops = kKernels;  // this capability's micro-kernel and transforms
  const int64_t channels = grad.channels, cols = tiles.tiles_w * kTile;
  at::parallel_for(0, tiles.bands(), band_grain(tiles, channels), [&](int64_t begin, int64_t end) {
    std::vector<float> band(kTile * cols * channels), scratch(kAlpha * kTile * channels);
    for (int64_t b = begin; b < end; ++b) {
      const int64_t n = b / tiles.tiles_h, i0 = b % tiles.tiles_h * kTile;
      gather_band(grad, n, i0, kTile, cols, band.data());
      for (int64_t tx = 0; tx < tiles.tiles_w; ++tx) {
        const int64_t t = b * tiles.tiles_w + tx;
        for (int64_t l = 0; l < kTile; ++l) {
          const float* column[kTile];
          float* dst[kAlpha];
          for (int64_t k = 0; k < kTile; ++k) {
            column[k] = band.data() + (k * cols + tx * kTile + l) * channels;
          }
          for (int64_t k = 0; k < kAlpha; ++k) dst[k] = scratch.data() + (k * kTile + l) * channels;
          loops.grad_rows(column, dst, channels);
        }
        for (int64_t k = 0; k < kAlpha; ++k) {
          const float* row[kTile];
          float* dst[kAlpha];
          for (int64_t l = 0; l < kTile; ++l) row[l] = scratch.data() + (k * kTile + l) * channels;
          for (int64_t l = 0; l < kAlpha; ++l) {
            dst[l] = out + (k * kAlpha + l) * pos_stride + t * channels;
          }
          loops.grad_rows(row, dst, channels);
        }
      }
    }
  });
}

// taps[a*2 + b, (p*2 + q) * Cin + c, o] = weight[o, c, 2a + p, 2b + q]: the 2x2 kernel each
// input phase (p, q) meets, laid out for the panels of the GEMM (Cout innermost).
at::Tensor gather_phase_taps(const at::Tensor& weight) {
  const int64_t out_ch = weight.size(0), in_ch = weight.size(1), channels = 4 * in_ch;
  auto out = at::empty({4, channels, out_ch}, at::TensorOptions().dtype(at::kFloat));
  float* data = out.mutable_data_ptr<float>();
  const float* w = weight.const_data_ptr<float>();
  const int64_t s0 = weight.stride(0), s1 = weight.stride(1), s2 = weight.stride(2),
                s3 = weight.stride(3);
  // Small work: a chunk of >= 64K elements, so small layers run on the calling thread alone
  // instead of waking (and waiting for) the others.
  at::parallel_for(
      0, channels, parallel::grain(out_ch, parallel::kTransformGrainElements),
      [&](int64_t begin, int64_t end) {
        for (int64_t cc = begin; cc < end; ++cc) {
          const int64_t phase = cc / in_ch, c = cc % in_ch, p = phase / 2, q = phase % 2;
          for (int64_t tap = 0; tap < 4; ++tap) {
            const float* src = w + c * s1 + (2 * (tap / 2) + p) * s2 + (2 * (tap % 2) + q) * s3;
            float* dst = data + (tap * channels + cc) * out_ch;
            for (int64_t o = 0; o < out_ch; ++o) dst[o] = src[o * s0];
          }
        }
      });
  return out;
}

// (G[k][a] * G[l][b]) for position k*5 + l and tap a*2 + b.
inline float position_weight(int64_t position, int64_t tap) {
  return static_cast<float>(kG[position / kAlpha][tap / 2] * kG[position % kAlpha][tap % 2]);
}

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
          float* __restrict__ dst = panel.data() + c * kGemmPanel;
          const float* t0 = taps_data + c * out_ch + column;
          const float* t1 = t0 + in_ch * out_ch;
          const float* t2 = t1 + in_ch * out_ch;
          const float* t3 = t2 + in_ch * out_ch;
#pragma omp simd
          for (int64_t o = 0; o < width; ++o) {
            dst[o] = (weights[0] * t0[o] + weights[1] * t1[o]) +
                     (weights[2] * t2[o] + weights[3] * t3[o]);
          }
        }
        gemm_panel(loops, v_data + pos * count * in_ch, in_ch, false, panel.data(), kGemmPanel,
                   m_data + pos * count * out_ch + column, out_ch, count, in_ch, width);
      }
    }
  });
}

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

c10::MemoryFormat output_format(const at::Tensor& input) {
  return (!input.is_contiguous() && input.is_contiguous(c10::MemoryFormat::ChannelsLast))
             ? c10::MemoryFormat::ChannelsLast
             : c10::MemoryFormat::Contiguous;
}

// The four even/odd phases of a stride-2, padding-1 input: phase (p, q) element (i, j) is
// input[2i + p - 1, 2j + q - 1], so the 4x4 kernel's taps (2a + p, 2b + q) become a 2x2
// kernel (a, b) per phase.
std::vector<Source> phase_sources(const at::Tensor& input) {
  std::vector<Source> sources;
  for (int64_t p = 0; p < 2; ++p)
    for (int64_t q = 0; q < 2; ++q) sources.push_back(make_source(input, 2, p - 1, q - 1));
  return sources;
}

}  // namespace

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

at::Tensor conv2d(const at::Tensor& input, const at::Tensor& weight) {
  const int64_t batch = input.size(0), in_ch = input.size(1), out_ch = weight.size(0);
  const int64_t out_h = input.size(2) / 2, out_w = input.size(3) / 2;
  auto out =
      at::empty({batch, out_ch, out_h, out_w}, input.options().memory_format(output_format(input)));
  const Tiling tiles = tiling(batch, out_h, out_w);
  const int64_t count = tiles.count();
  auto v = workspace(0, {kPositions, count, 4 * in_ch});
  input_transform(phase_sources(input), tiles, v.mutable_data_ptr<float>(), count * 4 * in_ch);
  auto m = workspace(1, {kPositions, count, out_ch});
  gemm_with_weight_panels(v.const_data_ptr<float>(), gather_phase_taps(weight),
                          m.mutable_data_ptr<float>(), count);
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
at::Tensor conv_transpose2d(const at::Tensor& input, const at::Tensor& weight) {
  const Kernels& loops = kKernels;  // this capability's micro-kernel and transforms
  const int64_t batch = input.size(0), in_ch = input.size(1), out_ch = weight.size(1);
  const int64_t height = input.size(2), width = input.size(3);
  auto out = at::empty({batch, out_ch, 2 * height, 2 * width},
                       input.options().memory_format(output_format(input)));
  const Tiling tiles = tiling(batch, height, width);
  const int64_t count = tiles.count(), columns = 4 * out_ch;
  auto v = workspace(0, {kPositions, count, in_ch});
  grad_transform(make_source(input, 1, 0, 0), tiles, v.mutable_data_ptr<float>(), count * in_ch);
  // taps[a*2 + b, c, phase * Cout + o] = weight[c, o, 2a + 1 - r, 2b + 1 - s]
  auto taps = at::empty({4, in_ch, columns}, at::TensorOptions().dtype(at::kFloat));
  {
    float* data = taps.mutable_data_ptr<float>();
    const float* w = weight.const_data_ptr<float>();
    const int64_t s0 = weight.stride(0), s1 = weight.stride(1), s2 = weight.stride(2),
                  s3 = weight.stride(3);
    at::parallel_for(0, in_ch, parallel::grain(4 * columns, parallel::kTransformGrainElements),
                     [&](int64_t begin, int64_t end) {
                       for (int64_t c = begin; c < end; ++c)
                         for (int64_t tap = 0; tap < 4; ++tap)
                           for (int64_t phase = 0; phase < 4; ++phase) {
                             const int64_t y = 2 * (tap / 2) + 1 - phase / 2,
                                           x = 2 * (tap % 2) + 1 - phase % 2;
                             float* dst = data + (tap * in_ch + c) * columns + phase * out_ch;
                             const float* src = w + c * s0 + y * s2 + x * s3;
                             for (int64_t o = 0; o < out_ch; ++o) dst[o] = src[o * s1];
                           }
                     });
  }
  auto m = workspace(1, {kPositions, count, columns});
  gemm_with_weight_panels(v.const_data_ptr<float>(), taps, m.mutable_data_ptr<float>(), count);

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

at::Tensor conv2d_weight_grad(const at::Tensor& input, const at::Tensor& grad_out) {
  const int64_t out_h = grad_out.size(2), out_w = grad_out.size(3);
  auto dk = run_weight_grad(phase_sources(input), make_source(grad_out, 1, 0, 0),
                            tiling(input.size(0), out_h, out_w));
  return scatter_phase_weight_grad(dk, input.options());
}

std::tuple<at::Tensor, at::Tensor> conv2d_backward(const at::Tensor& grad_out,
                                                   const at::Tensor& input,
                                                   const at::Tensor& weight,
                                                   std::array<bool, 2> mask) {
  at::Tensor grad_input, grad_weight;
  // The data gradient of a stride-2 convolution is the transposed convolution of grad_out
  // with the same weight ([Cout, Cin, 4, 4] read as [in, out, 4, 4]).
  if (mask[0]) grad_input = winograd::conv_transpose2d(grad_out, weight);
  if (mask[1]) grad_weight = conv2d_weight_grad(input, grad_out);
  return {grad_input, grad_weight};
}

std::tuple<at::Tensor, at::Tensor> conv_transpose2d_backward(const at::Tensor& grad_out,
                                                             const at::Tensor& input,
                                                             const at::Tensor& weight,
                                                             std::array<bool, 2> mask) {
  at::Tensor grad_input, grad_weight;
  // ... and the other way round; the transposed convolution's weight gradient is the
  // convolution's with the roles of input and grad_out swapped.
  if (mask[0]) grad_input = winograd::conv2d(grad_out, weight);
  if (mask[1]) grad_weight = conv2d_weight_grad(grad_out, input);
  return {grad_input, grad_weight};
}

}  // namespace fastgen::winograd::FASTGEN_CPU_NS
