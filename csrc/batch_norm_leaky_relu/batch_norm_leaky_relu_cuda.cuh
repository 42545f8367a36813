#pragma once
// CUDA kernels of fastgen::batch_norm_leaky_relu and its backward (math in the header), with
// their launchers: compiled by nvcc (batch_norm_leaky_relu_cuda.cu) and against the SIMT
// emulator (batch_norm_leaky_relu_emulated.cpp) from this one source.
//
// Launches per call (the launch budget of issue 3):
//   training forward  2: reduce_stats (partial Welford per block; the last block of each
//                        channel group merges them and writes mean, var, scale, shift), then
//                        normalize;
//   eval forward      1: normalize with coefficients computed from the running statistics
//                        (its first threads also write the returned mean/var copies);
//   backward          2: reduce_grads (partial sums; the last block per channel group writes
//                        grad_weight, grad_bias and the grad-input coefficients), then
//                        grad_input.
// Determinism: every reduction runs in a fixed order. Within a block, values are merged by a
// fixed shuffle/shared-memory tree; across blocks, partials go to their own slots and the last
// block to finish (found with an integer atomic counter, not a float atomic) merges all slots
// in slot order. Which block is last changes from run to run; the merge order does not.
//
// Layouts: NCHW and NHWC (channels_last) each have their own reduction indexing and an
// elementwise pass; other strides were copied to NCHW on the host (choose_layout).

#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/empty_like.h>

#include <algorithm>
#include <type_traits>

#include "batch_norm_leaky_relu/batch_norm_leaky_relu.h"
#include "common/dispatch.h"
#include "simt/simt.h"

namespace fastgen::batch_norm_leaky_relu::FASTGEN_DEVICE_NS {
namespace {

constexpr int kThreads = 256;       // 1-D kernels
constexpr int kChannelTile = 32;    // NHWC: channels per block (one warp's worth, coalesced)
constexpr int kRowLanes = 8;        // NHWC: rows walked in parallel per block
constexpr int kMaxSlices = 128;     // partial slots per channel (bounds the final merge)
constexpr int kValuesPerBlock = 4096;

// Welford state; count is kept in acc (exact up to 2^24 values per partial in float32).
template <typename acc>
struct Moments {
  acc count, mean, m2;
};

template <typename acc>
__device__ __forceinline__ void add_value(Moments<acc>& m, acc x) {
  m.count += acc(1);
  const acc delta = x - m.mean;
  m.mean += delta / m.count;
  m.m2 += delta * (x - m.mean);
}

// Chan et al.'s pairwise merge of b into a.
template <typename acc>
__device__ __forceinline__ Moments<acc> merge(Moments<acc> a, Moments<acc> b) {
  const acc total = a.count + b.count;
  if (total == acc(0)) return a;
  const acc delta = b.mean - a.mean;
  const acc fraction = b.count / total;
  return {total, a.mean + delta * fraction, a.m2 + b.m2 + delta * delta * a.count * fraction};
}

template <typename acc>
__device__ __forceinline__ Moments<acc> shuffle_down(Moments<acc> m, int offset) {
  return {__shfl_down_sync(0xffffffffu, m.count, offset), __shfl_down_sync(0xffffffffu, m.mean, offset),
          __shfl_down_sync(0xffffffffu, m.m2, offset)};
}

// Fixed-tree merge over a 1-D block; the result is valid in thread 0.
template <typename acc>
__device__ Moments<acc> block_merge(Moments<acc> m) {
  FASTGEN_SHARED(warp_results, Moments<acc>[kThreads / 32]);
  for (int offset = 16; offset > 0; offset /= 2) m = merge(m, shuffle_down(m, offset));
  const int lane = threadIdx.x % 32, warp = threadIdx.x / 32;
  if (lane == 0) warp_results[warp] = m;
  __syncthreads();
  if (warp == 0) {
    m = lane < int(blockDim.x / 32) ? warp_results[lane] : Moments<acc>{0, 0, 0};
    for (int offset = 16; offset > 0; offset /= 2) m = merge(m, shuffle_down(m, offset));
  }
  __syncthreads();
  return m;
}

template <typename acc>
struct Sums {
  acc g, gx;
};

template <typename acc>
__device__ Sums<acc> block_sum(Sums<acc> s) {
  FASTGEN_SHARED(warp_results, Sums<acc>[kThreads / 32]);
  for (int offset = 16; offset > 0; offset /= 2) {
    s.g += __shfl_down_sync(0xffffffffu, s.g, offset);
    s.gx += __shfl_down_sync(0xffffffffu, s.gx, offset);
  }
  const int lane = threadIdx.x % 32, warp = threadIdx.x / 32;
  if (lane == 0) warp_results[warp] = s;
  __syncthreads();
  if (warp == 0) {
    s = lane < int(blockDim.x / 32) ? warp_results[lane] : Sums<acc>{0, 0};
    for (int offset = 16; offset > 0; offset /= 2) {
      s.g += __shfl_down_sync(0xffffffffu, s.g, offset);
      s.gx += __shfl_down_sync(0xffffffffu, s.gx, offset);
    }
  }
  __syncthreads();
  return s;
}

template <typename acc>
__device__ __forceinline__ acc leaky(acc v, acc slope) {
  return v > acc(0) ? v : v * slope;
}

template <typename acc>
__device__ __forceinline__ acc leaky_grad(acc v, acc slope) {
  return v > acc(0) ? acc(1) : slope;
}

// Everything a kernel needs; pointers to absent tensors are null.
template <typename scalar_t, typename param_t, typename acc>
struct Params {
  const scalar_t* x = nullptr;
  const scalar_t* grad_out = nullptr;
  scalar_t* out = nullptr;  // forward output or grad_input
  const param_t* weight = nullptr;
  const param_t* bias = nullptr;
  const param_t* running_mean = nullptr;
  const param_t* running_var = nullptr;
  acc* mean = nullptr;  // [C] statistics used (returned by forward, read by backward)
  acc* var = nullptr;
  acc* coef = nullptr;  // [5, C] workspace: scale, shift, a, k, d
  Moments<acc>* partial_moments = nullptr;
  Sums<acc>* partial_sums = nullptr;
  int* counters = nullptr;  // one per channel group, zeroed before the launch
  param_t* grad_weight = nullptr;
  param_t* grad_bias = nullptr;
  int64_t batch = 0, channels = 0, spatial = 0, numel = 0;
  int slices = 1;  // partial slots per channel
  acc eps = 0, slope = 0;
  bool training = true;
};

template <typename P>
__device__ __forceinline__ int64_t count_of(const P& p) {
  return p.batch * p.spatial;
}

// Value j in [0, M) of channel c.
template <bool nhwc, typename P>
__device__ __forceinline__ int64_t offset_of(const P& p, int64_t c, int64_t j) {
  if constexpr (nhwc) {
    return j * p.channels + c;
  } else {
    const int64_t n = j / p.spatial, i = j - n * p.spatial;
    return (n * p.channels + c) * p.spatial + i;
  }
}

// The slice [begin, end) of channel values that block slice s handles.
template <typename P>
__device__ __forceinline__ void slice_range(const P& p, int s, int64_t& begin, int64_t& end) {
  const int64_t m = count_of(p);
  const int64_t per = (m + p.slices - 1) / p.slices;
  begin = int64_t(s) * per < m ? int64_t(s) * per : m;
  end = begin + per < m ? begin + per : m;
}

// Writes scale/shift for channel c from mean/var.
template <typename P, typename acc>
__device__ __forceinline__ void write_affine(const P& p, int64_t c, acc mean, acc var) {
  const acc invstd = acc(1) / sqrt(var + p.eps);
  const acc w = p.weight ? acc(p.weight[c]) : acc(1);
  const acc b = p.bias ? acc(p.bias[c]) : acc(0);
  p.coef[c] = w * invstd;
  p.coef[p.channels + c] = b - mean * w * invstd;
}

// --- forward ------------------------------------------------------------------------------

// NCHW statistics: grid (slices, C), 1-D block. NHWC: grid (slices, ceil(C / 32)), block
// (32, 8): threadIdx.x walks channels (coalesced), threadIdx.y rows.
template <bool nhwc, typename scalar_t, typename param_t, typename acc>
__global__ void reduce_stats(Params<scalar_t, param_t, acc> p) {
  const int s = blockIdx.x;
  int64_t begin, end;
  slice_range(p, s, begin, end);
  FASTGEN_SHARED(is_last, bool);
  if constexpr (!nhwc) {
    const int64_t c = blockIdx.y;
    Moments<acc> m{0, 0, 0};
    for (int64_t j = begin + threadIdx.x; j < end; j += blockDim.x) add_value(m, acc(p.x[offset_of<false>(p, c, j)]));
    m = block_merge(m);
    if (threadIdx.x == 0) {
      p.partial_moments[c * p.slices + s] = m;
      __threadfence();
      is_last = atomicAdd(&p.counters[c], 1) == p.slices - 1;
    }
    __syncthreads();
    if (!is_last) return;
    __threadfence();
    Moments<acc> total{0, 0, 0};
    for (int slot = threadIdx.x; slot < p.slices; slot += blockDim.x) total = merge(total, p.partial_moments[c * p.slices + slot]);
    total = block_merge(total);
    if (threadIdx.x == 0) {
      const acc var = total.m2 / total.count;
      p.mean[c] = total.mean;
      p.var[c] = var;
      write_affine(p, c, total.mean, var);
      p.counters[c] = 0;
    }
  } else {
    FASTGEN_SHARED(lanes, Moments<acc>[kRowLanes][kChannelTile]);
    const int64_t c = int64_t(blockIdx.y) * kChannelTile + threadIdx.x;
    Moments<acc> m{0, 0, 0};
    if (c < p.channels) {
      for (int64_t j = begin + threadIdx.y; j < end; j += kRowLanes) add_value(m, acc(p.x[offset_of<true>(p, c, j)]));
    }
    lanes[threadIdx.y][threadIdx.x] = m;
    __syncthreads();
    if (threadIdx.y == 0) {
      for (int r = 1; r < kRowLanes; ++r) m = merge(m, lanes[r][threadIdx.x]);
      if (c < p.channels) p.partial_moments[int64_t(s) * p.channels + c] = m;
    }
    __syncthreads();
    if (threadIdx.x == 0 && threadIdx.y == 0) {
      __threadfence();
      is_last = atomicAdd(&p.counters[blockIdx.y], 1) == p.slices - 1;
    }
    __syncthreads();
    if (!is_last) return;
    __threadfence();
    Moments<acc> total{0, 0, 0};
    if (c < p.channels) {
      for (int slot = threadIdx.y; slot < p.slices; slot += kRowLanes) total = merge(total, p.partial_moments[int64_t(slot) * p.channels + c]);
    }
    lanes[threadIdx.y][threadIdx.x] = total;
    __syncthreads();
    if (threadIdx.y == 0 && c < p.channels) {
      for (int r = 1; r < kRowLanes; ++r) total = merge(total, lanes[r][threadIdx.x]);
      const acc var = total.m2 / total.count;
      p.mean[c] = total.mean;
      p.var[c] = var;
      write_affine(p, c, total.mean, var);
    }
    if (threadIdx.x == 0 && threadIdx.y == 0) p.counters[blockIdx.y] = 0;
  }
}

template <bool nhwc, typename P>
__device__ __forceinline__ int64_t channel_of(const P& p, int64_t index) {
  if constexpr (nhwc) {
    return index % p.channels;
  } else {
    return (index / p.spatial) % p.channels;
  }
}

// out = leaky(x * scale + shift). Training reads scale/shift from reduce_stats; eval computes
// them from the running statistics and also writes the returned mean/var copies.
template <bool nhwc, typename scalar_t, typename param_t, typename acc>
__global__ void normalize(Params<scalar_t, param_t, acc> p) {
  const int64_t stride = int64_t(gridDim.x) * blockDim.x;
  const int64_t first = int64_t(blockIdx.x) * blockDim.x + threadIdx.x;
  if (!p.training && first < p.channels) {
    p.mean[first] = acc(p.running_mean[first]);
    p.var[first] = acc(p.running_var[first]);
  }
  for (int64_t index = first; index < p.numel; index += stride) {
    const int64_t c = channel_of<nhwc>(p, index);
    acc scale, shift;
    if (p.training) {
      scale = p.coef[c];
      shift = p.coef[p.channels + c];
    } else {
      const acc invstd = acc(1) / sqrt(acc(p.running_var[c]) + p.eps);
      scale = (p.weight ? acc(p.weight[c]) : acc(1)) * invstd;
      shift = (p.bias ? acc(p.bias[c]) : acc(0)) - acc(p.running_mean[c]) * scale;
    }
    p.out[index] = scalar_t(leaky(acc(p.x[index]) * scale + shift, p.slope));
  }
}

// --- backward -----------------------------------------------------------------------------

template <typename P, typename acc>
__device__ __forceinline__ void finish_grads(const P& p, int64_t c, Sums<acc> total) {
  const acc mean = p.mean[c];
  const acc invstd = acc(1) / sqrt(p.var[c] + p.eps);
  if (p.grad_weight) p.grad_weight[c] = total.gx * invstd;
  if (p.grad_bias) p.grad_bias[c] = total.g;
  const acc a = p.coef[c];  // scale
  const acc inv_count = acc(1) / acc(count_of(p));
  p.coef[2 * p.channels + c] = a;
  p.coef[3 * p.channels + c] = p.training ? -a * invstd * invstd * total.gx * inv_count : acc(0);
  p.coef[4 * p.channels + c] = p.training ? -a * total.g * inv_count : acc(0);
  (void)mean;
}

// Per channel sum(g) and sum(g * (x - mean)), g = grad_out * leaky'(x * scale + shift); the
// last block also writes the weight/bias gradients and the grad-input coefficients.
template <bool nhwc, typename scalar_t, typename param_t, typename acc>
__global__ void reduce_grads(Params<scalar_t, param_t, acc> p) {
  const int s = blockIdx.x;
  int64_t begin, end;
  slice_range(p, s, begin, end);
  FASTGEN_SHARED(is_last, bool);
  auto coefficients = [&](int64_t c, acc& scale, acc& shift) {
    const acc invstd = acc(1) / sqrt(p.var[c] + p.eps);
    scale = (p.weight ? acc(p.weight[c]) : acc(1)) * invstd;
    shift = (p.bias ? acc(p.bias[c]) : acc(0)) - p.mean[c] * scale;
  };
  if constexpr (!nhwc) {
    const int64_t c = blockIdx.y;
    acc scale, shift;
    coefficients(c, scale, shift);
    const acc mean = p.mean[c];
    Sums<acc> sum{0, 0};
    for (int64_t j = begin + threadIdx.x; j < end; j += blockDim.x) {
      const int64_t o = offset_of<false>(p, c, j);
      const acc x = acc(p.x[o]);
      const acc g = acc(p.grad_out[o]) * leaky_grad(x * scale + shift, p.slope);
      sum.g += g;
      sum.gx += g * (x - mean);
    }
    sum = block_sum(sum);
    if (threadIdx.x == 0) {
      p.partial_sums[c * p.slices + s] = sum;
      __threadfence();
      is_last = atomicAdd(&p.counters[c], 1) == p.slices - 1;
    }
    __syncthreads();
    if (!is_last) return;
    __threadfence();
    Sums<acc> total{0, 0};
    for (int slot = threadIdx.x; slot < p.slices; slot += blockDim.x) {
      const Sums<acc> part = p.partial_sums[c * p.slices + slot];
      total.g += part.g;
      total.gx += part.gx;
    }
    total = block_sum(total);
    if (threadIdx.x == 0) {
      p.coef[c] = scale;
      p.coef[p.channels + c] = shift;
      finish_grads(p, c, total);
      p.counters[c] = 0;
    }
  } else {
    FASTGEN_SHARED(lanes, Sums<acc>[kRowLanes][kChannelTile]);
    const int64_t c = int64_t(blockIdx.y) * kChannelTile + threadIdx.x;
    Sums<acc> sum{0, 0};
    acc scale = 0, shift = 0;
    if (c < p.channels) {
      coefficients(c, scale, shift);
      const acc mean = p.mean[c];
      for (int64_t j = begin + threadIdx.y; j < end; j += kRowLanes) {
        const int64_t o = offset_of<true>(p, c, j);
        const acc x = acc(p.x[o]);
        const acc g = acc(p.grad_out[o]) * leaky_grad(x * scale + shift, p.slope);
        sum.g += g;
        sum.gx += g * (x - mean);
      }
    }
    lanes[threadIdx.y][threadIdx.x] = sum;
    __syncthreads();
    if (threadIdx.y == 0) {
      for (int r = 1; r < kRowLanes; ++r) {
        sum.g += lanes[r][threadIdx.x].g;
        sum.gx += lanes[r][threadIdx.x].gx;
      }
      if (c < p.channels) p.partial_sums[int64_t(s) * p.channels + c] = sum;
    }
    __syncthreads();
    if (threadIdx.x == 0 && threadIdx.y == 0) {
      __threadfence();
      is_last = atomicAdd(&p.counters[blockIdx.y], 1) == p.slices - 1;
    }
    __syncthreads();
    if (!is_last) return;
    __threadfence();
    Sums<acc> total{0, 0};
    if (c < p.channels) {
      for (int slot = threadIdx.y; slot < p.slices; slot += kRowLanes) {
        const Sums<acc> part = p.partial_sums[int64_t(slot) * p.channels + c];
        total.g += part.g;
        total.gx += part.gx;
      }
    }
    lanes[threadIdx.y][threadIdx.x] = total;
    __syncthreads();
    if (threadIdx.y == 0 && c < p.channels) {
      for (int r = 1; r < kRowLanes; ++r) {
        total.g += lanes[r][threadIdx.x].g;
        total.gx += lanes[r][threadIdx.x].gx;
      }
      p.coef[c] = scale;
      p.coef[p.channels + c] = shift;
      finish_grads(p, c, total);
    }
    if (threadIdx.x == 0 && threadIdx.y == 0) p.counters[blockIdx.y] = 0;
  }
}

// grad_x = a * g + k * (x - mean) + d.
template <bool nhwc, typename scalar_t, typename param_t, typename acc>
__global__ void grad_input(Params<scalar_t, param_t, acc> p) {
  const int64_t stride = int64_t(gridDim.x) * blockDim.x;
  const int64_t C = p.channels;
  for (int64_t index = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; index < p.numel; index += stride) {
    const int64_t c = channel_of<nhwc>(p, index);
    const acc x = acc(p.x[index]);
    const acc g = acc(p.grad_out[index]) * leaky_grad(x * p.coef[c] + p.coef[C + c], p.slope);
    p.out[index] = scalar_t(p.coef[2 * C + c] * g + p.coef[3 * C + c] * (x - p.mean[c]) + p.coef[4 * C + c]);
  }
}

// --- launchers ----------------------------------------------------------------------------

int slice_count(int64_t values_per_channel) {
  return int(std::clamp<int64_t>((values_per_channel + kValuesPerBlock - 1) / kValuesPerBlock, 1, kMaxSlices));
}

int elementwise_blocks(int64_t numel) {
  const int64_t sms = simt::multiprocessor_count();
  return int(std::clamp<int64_t>((numel + kThreads - 1) / kThreads, 1, sms * 16));
}

template <typename scalar_t, typename param_t>
void launch_forward(const at::Tensor& x, at::Tensor& out, at::Tensor& mean, at::Tensor& var,
                    const at::Tensor& weight, const at::Tensor& bias, const at::Tensor& running_mean,
                    const at::Tensor& running_var, bool training, double eps, double slope, Layout layout) {
  using acc = acc_t<scalar_t>;
  Params<scalar_t, param_t, acc> p;
  const Shape s = shape_of(x);
  p.x = x.const_data_ptr<scalar_t>();
  p.out = out.data_ptr<scalar_t>();
  p.weight = weight.defined() ? weight.const_data_ptr<param_t>() : nullptr;
  p.bias = bias.defined() ? bias.const_data_ptr<param_t>() : nullptr;
  p.mean = mean.data_ptr<acc>();
  p.var = var.data_ptr<acc>();
  p.batch = s.batch;
  p.channels = s.channels;
  p.spatial = s.spatial;
  p.numel = x.numel();
  p.eps = static_cast<acc>(eps);
  p.slope = static_cast<acc>(slope);
  p.training = training;
  const simt::Stream stream = simt::current_stream();
  const bool nhwc = layout == Layout::NHWC;
  at::Tensor coef, partial, counters;
  if (training) {
    p.slices = slice_count(s.count());
    const int64_t groups = nhwc ? (s.channels + kChannelTile - 1) / kChannelTile : s.channels;
    coef = at::empty({2 * s.channels}, mean.options());
    partial = at::empty({int64_t(p.slices) * s.channels * 3}, mean.options());
    counters = at::empty({groups}, x.options().dtype(at::kInt));
    simt::memset_async(counters.data_ptr<int>(), 0, groups * sizeof(int), stream);
    p.coef = coef.data_ptr<acc>();
    p.partial_moments = reinterpret_cast<Moments<acc>*>(partial.data_ptr<acc>());
    p.counters = counters.data_ptr<int>();
    if (nhwc) {
      simt::launch<reduce_stats<true, scalar_t, param_t, acc>>(
          {dim3(p.slices, groups), dim3(kChannelTile, kRowLanes), 0, stream}, p);
    } else {
      simt::launch<reduce_stats<false, scalar_t, param_t, acc>>(
          {dim3(p.slices, groups), dim3(kThreads), 0, stream}, p);
    }
  } else {
    p.running_mean = running_mean.const_data_ptr<param_t>();
    p.running_var = running_var.const_data_ptr<param_t>();
  }
  const int64_t launched = std::max<int64_t>(p.numel, training ? 0 : s.channels);
  if (launched == 0) return;
  const int blocks = std::max(elementwise_blocks(launched), training ? 1 : int((s.channels + kThreads - 1) / kThreads));
  if (nhwc) {
    simt::launch<normalize<true, scalar_t, param_t, acc>>({dim3(blocks), dim3(kThreads), 0, stream}, p);
  } else {
    simt::launch<normalize<false, scalar_t, param_t, acc>>({dim3(blocks), dim3(kThreads), 0, stream}, p);
  }
}

template <typename scalar_t, typename param_t>
void launch_backward(const at::Tensor& dy, const at::Tensor& x, at::Tensor& grad_input_t,
                     at::Tensor& grad_weight, at::Tensor& grad_bias, const at::Tensor& weight,
                     const at::Tensor& bias, const at::Tensor& mean, const at::Tensor& var, bool training,
                     double eps, double slope, Layout layout) {
  using acc = acc_t<scalar_t>;
  Params<scalar_t, param_t, acc> p;
  const Shape s = shape_of(x);
  p.x = x.const_data_ptr<scalar_t>();
  p.grad_out = dy.const_data_ptr<scalar_t>();
  p.out = grad_input_t.defined() && grad_input_t.numel() == x.numel() ? grad_input_t.data_ptr<scalar_t>() : nullptr;
  p.weight = weight.defined() ? weight.const_data_ptr<param_t>() : nullptr;
  p.bias = bias.defined() ? bias.const_data_ptr<param_t>() : nullptr;
  p.mean = const_cast<acc*>(mean.const_data_ptr<acc>());
  p.var = const_cast<acc*>(var.const_data_ptr<acc>());
  p.grad_weight = grad_weight.numel() == s.channels ? grad_weight.data_ptr<param_t>() : nullptr;
  p.grad_bias = grad_bias.numel() == s.channels ? grad_bias.data_ptr<param_t>() : nullptr;
  p.batch = s.batch;
  p.channels = s.channels;
  p.spatial = s.spatial;
  p.numel = x.numel();
  p.eps = static_cast<acc>(eps);
  p.slope = static_cast<acc>(slope);
  p.training = training;
  p.slices = slice_count(s.count());
  const simt::Stream stream = simt::current_stream();
  const bool nhwc = layout == Layout::NHWC;
  const int64_t groups = nhwc ? (s.channels + kChannelTile - 1) / kChannelTile : s.channels;
  at::Tensor coef = at::empty({5 * s.channels}, mean.options());
  at::Tensor partial = at::empty({int64_t(p.slices) * s.channels * 2}, mean.options());
  at::Tensor counters = at::empty({groups}, x.options().dtype(at::kInt));
  simt::memset_async(counters.data_ptr<int>(), 0, groups * sizeof(int), stream);
  p.coef = coef.data_ptr<acc>();
  p.partial_sums = reinterpret_cast<Sums<acc>*>(partial.data_ptr<acc>());
  p.counters = counters.data_ptr<int>();
  if (nhwc) {
    simt::launch<reduce_grads<true, scalar_t, param_t, acc>>(
        {dim3(p.slices, groups), dim3(kChannelTile, kRowLanes), 0, stream}, p);
  } else {
    simt::launch<reduce_grads<false, scalar_t, param_t, acc>>(
        {dim3(p.slices, groups), dim3(kThreads), 0, stream}, p);
  }
  if (p.out == nullptr || p.numel == 0) return;
  const dim3 grid(elementwise_blocks(p.numel));
  if (nhwc) {
    simt::launch<grad_input<true, scalar_t, param_t, acc>>({grid, dim3(kThreads), 0, stream}, p);
  } else {
    simt::launch<grad_input<false, scalar_t, param_t, acc>>({grid, dim3(kThreads), 0, stream}, p);
  }
}

at::ScalarType acc_dtype(at::ScalarType dtype) {
  return (dtype == at::kHalf || dtype == at::kBFloat16) ? at::kFloat : dtype;
}

at::Tensor contiguous_or_undefined(const std::optional<at::Tensor>& t) {
  return t.has_value() && t->defined() ? t->contiguous() : at::Tensor();
}

// Parameters come in the input's dtype or, for half inputs, in float32 (autocast).
bool params_are_acc(const at::Tensor& x, const at::Tensor& a, const at::Tensor& b) {
  const at::Tensor& any = a.defined() ? a : b;
  return any.defined() && any.scalar_type() != x.scalar_type();
}

}  // namespace

std::tuple<at::Tensor, at::Tensor, at::Tensor> forward(
    const at::Tensor& input, const std::optional<at::Tensor>& weight,
    const std::optional<at::Tensor>& bias, const std::optional<at::Tensor>& running_mean,
    const std::optional<at::Tensor>& running_var, bool training, double eps,
    double negative_slope) {
  const simt::DeviceGuard guard(input.device());
  const Layout layout = choose_layout(input);
  const at::Tensor x = input.contiguous(memory_format(layout));
  const at::ScalarType acc = acc_dtype(x.scalar_type());
  at::Tensor out = at::empty_like(x, x.options(), memory_format(layout));
  at::Tensor mean = at::empty({x.size(1)}, x.options().dtype(acc));
  at::Tensor var = at::empty({x.size(1)}, x.options().dtype(acc));
  TORCH_CHECK(training || (running_mean.has_value() && running_var.has_value()),
              "fastgen::batch_norm_leaky_relu: eval needs running statistics");
  const at::Tensor w = contiguous_or_undefined(weight), b = contiguous_or_undefined(bias);
  const at::Tensor rm = training ? at::Tensor() : running_mean->contiguous();
  const at::Tensor rv = training ? at::Tensor() : running_var->contiguous();
  // Running stats follow the same dtype rule as weight/bias; they must agree with them.
  const bool acc_params = params_are_acc(x, w, b) || (!training && rm.scalar_type() != x.scalar_type());
  FASTGEN_DISPATCH_FLOATING_TYPES(x.scalar_type(), "batch_norm_leaky_relu_cuda", [&] {
    using acc_scalar = acc_t<scalar_t>;
    if (acc_params && !std::is_same_v<scalar_t, acc_scalar>) {
      TORCH_CHECK((!w.defined() || w.scalar_type() == acc) && (training || rm.scalar_type() == acc),
                  "fastgen::batch_norm_leaky_relu: weight, bias and running stats must share a dtype");
      launch_forward<scalar_t, acc_scalar>(x, out, mean, var, w, b, rm, rv, training, eps, negative_slope, layout);
    } else {
      launch_forward<scalar_t, scalar_t>(x, out, mean, var, w, b, rm, rv, training, eps, negative_slope, layout);
    }
  });
  return {out, mean, var};
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> backward(
    const at::Tensor& grad_out, const at::Tensor& input, const std::optional<at::Tensor>& weight,
    const std::optional<at::Tensor>& bias, const at::Tensor& mean, const at::Tensor& var,
    bool training, double eps, double negative_slope, std::array<bool, 3> output_mask) {
  const simt::DeviceGuard guard(input.device());
  const Layout layout = choose_layout(input);
  const at::MemoryFormat format = memory_format(layout);
  const at::Tensor x = input.contiguous(format);
  const at::Tensor dy = grad_out.contiguous(format);
  const at::ScalarType acc = acc_dtype(x.scalar_type());
  const at::Tensor w = contiguous_or_undefined(weight), b = contiguous_or_undefined(bias);
  const at::Tensor mean_acc = mean.to(acc).contiguous(), var_acc = var.to(acc).contiguous();
  const int64_t C = x.size(1);
  at::Tensor grad_input_t = output_mask[0] ? at::empty_like(x, x.options(), format) : at::empty({0}, x.options());
  at::Tensor grad_weight = output_mask[1] && w.defined() ? at::empty({C}, w.options()) : at::empty({0}, x.options());
  at::Tensor grad_bias = output_mask[2] && b.defined() ? at::empty({C}, b.options()) : at::empty({0}, x.options());
  const bool acc_params = params_are_acc(x, w, b);
  FASTGEN_DISPATCH_FLOATING_TYPES(x.scalar_type(), "batch_norm_leaky_relu_backward_cuda", [&] {
    using acc_scalar = acc_t<scalar_t>;
    if (acc_params && !std::is_same_v<scalar_t, acc_scalar>) {
      launch_backward<scalar_t, acc_scalar>(dy, x, grad_input_t, grad_weight, grad_bias, w, b, mean_acc, var_acc,
                                            training, eps, negative_slope, layout);
    } else {
      launch_backward<scalar_t, scalar_t>(dy, x, grad_input_t, grad_weight, grad_bias, w, b, mean_acc, var_acc,
                                          training, eps, negative_slope, layout);
    }
  });
  return {grad_input_t, grad_weight, grad_bias};
}

}  // namespace fastgen::batch_norm_leaky_relu::FASTGEN_DEVICE_NS
