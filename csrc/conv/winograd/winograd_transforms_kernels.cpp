// The Winograd tile transforms over bands of tiles (winograd_tiles.h), compiled once per CPU
// capability with that capability's row transforms (winograd_kernels.cpp). The transforms
// run over channels in the innermost loop (contiguous in V, M and the gathered bands), so
// they vectorise; tile rows are split across threads.

#include "conv/winograd/winograd_tiles.h"

#include "common/bfloat16_chunks.h"

#include <ATen/ATen.h>
#include <ATen/Parallel.h>

#include <algorithm>
#include <cstring>
#include <vector>

namespace fastgen::winograd::FASTGEN_CPU_NS {

namespace {

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

// dst[0, n) = the bfloat16 bits of src[0, n), rounded to nearest even (a loop that vectorizes).
void round_to_bfloat16(const float* __restrict__ src, uint16_t* __restrict__ dst, int64_t n) {
#pragma omp simd
  for (int64_t i = 0; i < n; ++i) dst[i] = bfloat16_chunks::round_to_bits(src[i]);
}

}  // namespace

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
                     int64_t pos_stride, uint16_t* v_bf16) {
  const Kernels& loops = kKernels;  // this capability's micro-kernel and transforms
  int64_t channels = 0, widest = 0;
  for (const Source& source : sources) {
    channels += source.channels;
    widest = std::max(widest, source.channels);
  }
  const int64_t cols = tiles.tiles_w * kTile + 1;
  at::parallel_for(0, tiles.bands(), band_grain(tiles, channels), [&](int64_t begin, int64_t end) {
    std::vector<float> band(kAlpha * cols * widest), scratch(kPositions * widest);
    std::vector<float> rounding(v_bf16 != nullptr ? kAlpha * widest : 0);
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
              out[l] = v_bf16 != nullptr
                           ? rounding.data() + l * width
                           : v + (k * kAlpha + l) * pos_stride + t * channels + offset;
            }
            loops.input_rows(row, out, width);
            if (v_bf16 == nullptr) continue;
            for (int64_t l = 0; l < kAlpha; ++l) {
              round_to_bfloat16(
                  out[l], v_bf16 + (k * kAlpha + l) * pos_stride + t * channels + offset, width);
            }
          }
        }
        offset += width;
      }
    }
  });
}

namespace {

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

}  // namespace

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
void grad_transform(const Source& grad, const Tiling& tiles, float* out, int64_t pos_stride,
                    uint16_t* out_bf16) {
  const Kernels& loops = kKernels;  // this capability's micro-kernel and transforms
  const int64_t channels = grad.channels, cols = tiles.tiles_w * kTile;
  at::parallel_for(0, tiles.bands(), band_grain(tiles, channels), [&](int64_t begin, int64_t end) {
    std::vector<float> band(kTile * cols * channels), scratch(kAlpha * kTile * channels);
    std::vector<float> rounding(out_bf16 != nullptr ? kAlpha * channels : 0);
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
            dst[l] = out_bf16 != nullptr ? rounding.data() + l * channels
                                         : out + (k * kAlpha + l) * pos_stride + t * channels;
          }
          loops.grad_rows(row, dst, channels);
          if (out_bf16 == nullptr) continue;
          for (int64_t l = 0; l < kAlpha; ++l) {
            round_to_bfloat16(dst[l], out_bf16 + (k * kAlpha + l) * pos_stride + t * channels,
                              channels);
          }
        }
      }
    }
  });
}

}  // namespace fastgen::winograd::FASTGEN_CPU_NS
