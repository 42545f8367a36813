#pragma once
// CUDA kernels of fastgen::batch_norm_leaky_relu and its backward (math in the header), with
// their launchers: compiled by nvcc (batch_norm_leaky_relu_cuda.cu) and against the SIMT
// emulator (batch_norm_leaky_relu_emulated.cpp) from this one source.
//
// Launches per call:
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
// Accuracy: each thread's Welford state is shifted by a per-channel pivot, the channel's first
// value, which every block reads for itself: float32 input with mean 1000 and std 0.01 keeps
// its variance to ~1e-7 relative instead of losing three digits to the mean.
//
// Grids: channels (NCHW) or groups of 32 channels (NHWC) on gridDim.x, which takes 2^31 - 1,
// and the partial slots of a channel on gridDim.y (at most kMaxSlices). An NCHW input with one
// pixel per image (H = W = 1) has NHWC's memory order too and is reduced by the NHWC kernel,
// one warp across 32 channels instead of a 256-thread block per channel.
//
// Layouts: NCHW and NHWC (channels_last) each have their own reduction indexing and an
// elementwise pass; other strides were copied to NCHW on the host (choose_layout).

#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/empty_like.h>
#include <ATen/ops/zeros.h>

#include <algorithm>
#include <array>

#include "batch_norm_leaky_relu/batch_norm_leaky_relu.h"
#include "common/dispatch.h"
#include "simt/simt.h"

namespace fastgen::batch_norm_leaky_relu::FASTGEN_DEVICE_NS {
namespace {

constexpr int kThreads = 256;     // 1-D kernels
constexpr int kChannelTile = 32;  // NHWC: channels per block (one warp's worth, coalesced)
constexpr int kRowLanes = 8;      // NHWC: rows walked in parallel per block
constexpr int kMaxSlices = 128;   // partial slots per channel (bounds the final merge)
constexpr int kValuesPerBlock = 4096;

// Welford state of values shifted by the channel's pivot; count is kept in acc (exact up to
// 2^24 values per partial in float32). `sum` is the plain sum, for the channels whose shifted
// mean is not finite (an inf input): stock's mean is then sum / count (+-inf, or NaN).
template <typename acc>
struct Moments {
  acc count, mean, m2, sum;
};

template <typename acc>
__device__ __forceinline__ void add_value(Moments<acc>& m, acc value, acc pivot) {
  const acc shifted = value - pivot;
  m.count += acc(1);
  const acc delta = shifted - m.mean;
  m.mean += delta / m.count;
  m.m2 += delta * (shifted - m.mean);
  m.sum += value;
}

// Chan et al.'s pairwise merge of b into a. An empty side is skipped, not merged: with a huge
// mean, delta^2 overflows and inf * 0 would make the variance NaN where stock's is inf.
template <typename acc>
__device__ __forceinline__ Moments<acc> merge(Moments<acc> a, Moments<acc> b) {
  if (b.count == acc(0)) return a;
  if (a.count == acc(0)) return b;
  const acc total = a.count + b.count;
  const acc delta = b.mean - a.mean;
  const acc fraction = b.count / total;
  return {total, a.mean + delta * fraction, a.m2 + b.m2 + delta * delta * a.count * fraction,
          a.sum + b.sum};
}

template <typename acc>
__device__ __forceinline__ Moments<acc> shuffle_down(Moments<acc> m, int offset) {
  return {
      __shfl_down_sync(0xffffffffu, m.count, offset), __shfl_down_sync(0xffffffffu, m.mean, offset),
      __shfl_down_sync(0xffffffffu, m.m2, offset), __shfl_down_sync(0xffffffffu, m.sum, offset)};
}

template <typename acc>
struct Sums {
  acc g, gx;
};

template <typename acc>
__device__ __forceinline__ Sums<acc> merge(Sums<acc> a, Sums<acc> b) {
  return {a.g + b.g, a.gx + b.gx};
}

template <typename acc>
__device__ __forceinline__ Sums<acc> shuffle_down(Sums<acc> s, int offset) {
  return {__shfl_down_sync(0xffffffffu, s.g, offset), __shfl_down_sync(0xffffffffu, s.gx, offset)};
}

// Fixed-tree merge of a Moments or Sums over a 1-D block; the result is valid in thread 0.
template <typename State>
__device__ State block_merge(State m) {
  FASTGEN_SHARED(warp_results, State[kThreads / 32]);
  for (int offset = 16; offset > 0; offset /= 2) m = merge(m, shuffle_down(m, offset));
  const int lane = threadIdx.x % 32, warp = threadIdx.x / 32;
  if (lane == 0) warp_results[warp] = m;
  __syncthreads();
  if (warp == 0) {
    m = lane < int(blockDim.x / 32) ? warp_results[lane] : State{};
    for (int offset = 16; offset > 0; offset /= 2) m = merge(m, shuffle_down(m, offset));
  }
  __syncthreads();
  return m;
}

// The same over an NHWC block (32, 8): each channel column's kRowLanes states, in row order; the
// result is valid in row 0. Two calls need a __syncthreads between them.
template <typename State>
__device__ __forceinline__ State column_merge(State m) {
  FASTGEN_SHARED(lanes, State[kRowLanes][kChannelTile]);
  lanes[threadIdx.y][threadIdx.x] = m;
  __syncthreads();
  if (threadIdx.y == 0) {
    for (int r = 1; r < kRowLanes; ++r) m = merge(m, lanes[r][threadIdx.x]);
  }
  return m;
}

template <typename acc>
__device__ __forceinline__ acc leaky(acc v, acc slope) {
  return v > acc(0) ? v : v * slope;
}

template <typename acc>
__device__ __forceinline__ acc leaky_grad(acc v, acc slope) {
  return v > acc(0) ? acc(1) : slope;
}

// Everything a kernel needs; pointers to absent tensors are null. Every [C] tensor is in acc
// (the host converts them), whatever dtype each came in.
template <typename scalar_t, typename acc>
struct Params {
  const scalar_t* x = nullptr;
  const scalar_t* grad_out = nullptr;
  scalar_t* out = nullptr;  // forward output or grad_input
  const acc* weight = nullptr;
  const acc* bias = nullptr;
  const acc* running_mean = nullptr;
  const acc* running_var = nullptr;
  acc* mean = nullptr;  // [C] statistics used (returned by forward, read by backward)
  acc* var = nullptr;
  acc* coef = nullptr;  // [5, C] workspace: scale, shift, a, k, d
  Moments<acc>* partial_moments = nullptr;
  Sums<acc>* partial_sums = nullptr;
  int* counters = nullptr;  // one per channel group, zeroed before the launch
  acc* grad_weight = nullptr;
  acc* grad_bias = nullptr;
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

// The one formula for v = x * scale + shift, used by the training forward, the eval forward
// and the backward alike, so the backward takes the forward's activation branch bit for bit.
template <typename P, typename acc>
__device__ __forceinline__ void affine_of(const P& p, int64_t c, acc mean, acc var, acc& scale,
                                          acc& shift) {
  const acc invstd = acc(1) / sqrt(var + p.eps);
  scale = (p.weight ? p.weight[c] : acc(1)) * invstd;
  shift = (p.bias ? p.bias[c] : acc(0)) - mean * scale;
}

// Writes mean, var, scale and shift of channel c from its merged moments.
template <typename P, typename acc>
__device__ __forceinline__ void finish_stats(const P& p, int64_t c, acc pivot, Moments<acc> total) {
  acc mean = pivot + total.mean;
  if (!isfinite(mean)) mean = total.sum / total.count;
  const acc var = total.m2 / total.count;
  p.mean[c] = mean;
  p.var[c] = var;
  affine_of(p, c, mean, var, p.coef[c], p.coef[p.channels + c]);
}

// --- the split reduction of reduce_stats and reduce_grads ----------------------------------

// The channel a thread reduces: its block's (NCHW), or its column's of the block's 32 (NHWC).
template <bool nhwc>
__device__ __forceinline__ int64_t reduced_channel() {
  return nhwc ? int64_t(blockIdx.x) * kChannelTile + threadIdx.x : int64_t(blockIdx.x);
}

// Counts the block in on its channel group's counter, once its partials are in their slots:
// true in every thread of the block that counts in last, which then sees every slot.
__device__ __forceinline__ bool last_block_of_group(int* counter, int slices) {
  FASTGEN_SHARED(is_last, bool);
  if (threadIdx.x == 0 && threadIdx.y == 0) {
    __threadfence();
    is_last = atomicAdd(counter, 1) == slices - 1;
  }
  __syncthreads();
  if (!is_last) return false;
  __threadfence();
  return true;
}

// Block (g, s) reduces slice s of each channel c of group g into a State (Moments or Sums) with
// add(state, j) for the channel's values j, and puts it in the channel's slot s of partials. The
// last block of the group to finish merges each channel's slots in slot order and calls
// finish(total) in one thread per channel. NCHW: a 1-D block per channel; NHWC: a (32, 8) block
// per 32 channels, threadIdx.x the channel and threadIdx.y the row lane.
template <bool nhwc, typename State, typename P, typename Add, typename Finish>
__device__ __forceinline__ void split_reduce(const P& p, int64_t c, State* partials, const Add& add,
                                             const Finish& finish) {
  const int s = blockIdx.y;
  int64_t begin, end;
  slice_range(p, s, begin, end);
  const bool valid = c < p.channels;  // false in the NHWC columns past the last channel
  // The threads that walk a channel's slice together, and this thread's place among them.
  const int lane = nhwc ? int(threadIdx.y) : int(threadIdx.x);
  const int lanes = nhwc ? kRowLanes : int(blockDim.x);
  // Slots are per channel in NCHW, per slice in NHWC (so that a warp's writes coalesce).
  const auto slot_of = [&](int slot) {
    return nhwc ? int64_t(slot) * p.channels + c : c * p.slices + slot;
  };
  const auto merge_block = [](State m) {
    if constexpr (nhwc) {
      return column_merge(m);
    } else {
      return block_merge(m);
    }
  };
  const bool holder = (nhwc ? threadIdx.y : threadIdx.x) == 0;  // of the merged state

  State m{};
  if (valid) {
    for (int64_t j = begin + lane; j < end; j += lanes) add(m, j);
  }
  m = merge_block(m);
  if (holder && valid) partials[slot_of(s)] = m;
  // Every slot is written before the fence of last_block_of_group: in NHWC by row 0, in NCHW by
  // the thread that fences.
  if constexpr (nhwc) __syncthreads();
  if (!last_block_of_group(&p.counters[blockIdx.x], p.slices)) return;
  State total{};
  if (valid) {
    for (int slot = lane; slot < p.slices; slot += lanes)
      total = merge(total, partials[slot_of(slot)]);
  }
  total = merge_block(total);
  if (holder && valid) finish(total);
  if (threadIdx.x == 0 && threadIdx.y == 0) p.counters[blockIdx.x] = 0;
}

// --- forward ------------------------------------------------------------------------------

// NCHW statistics: grid (C, slices), 1-D block. NHWC: grid (ceil(C / 32), slices), block
// (32, 8): threadIdx.x walks channels (coalesced), threadIdx.y rows.
template <bool nhwc, typename scalar_t, typename acc>
__global__ void reduce_stats(Params<scalar_t, acc> p) {
  const int64_t c = reduced_channel<nhwc>();
  const acc pivot = c < p.channels ? acc(p.x[offset_of<nhwc>(p, c, 0)]) : acc(0);
  split_reduce<nhwc>(
      p, c, p.partial_moments,
      [&](Moments<acc>& m, int64_t j) { add_value(m, acc(p.x[offset_of<nhwc>(p, c, j)]), pivot); },
      [&](Moments<acc> total) { finish_stats(p, c, pivot, total); });
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
template <bool nhwc, typename scalar_t, typename acc>
__global__ void normalize(Params<scalar_t, acc> p) {
  const int64_t stride = int64_t(gridDim.x) * blockDim.x;
  const int64_t first = int64_t(blockIdx.x) * blockDim.x + threadIdx.x;
  if (!p.training) {
    for (int64_t c = first; c < p.channels; c += stride) {
      p.mean[c] = p.running_mean[c];
      p.var[c] = p.running_var[c];
    }
  }
  for (int64_t index = first; index < p.numel; index += stride) {
    const int64_t c = channel_of<nhwc>(p, index);
    acc scale, shift;
    if (p.training) {
      scale = p.coef[c];
      shift = p.coef[p.channels + c];
    } else {
      affine_of(p, c, p.running_mean[c], p.running_var[c], scale, shift);
    }
    p.out[index] = scalar_t(leaky(acc(p.x[index]) * scale + shift, p.slope));
  }
}

// --- backward -----------------------------------------------------------------------------

template <typename P, typename acc>
__device__ __forceinline__ void finish_grads(const P& p, int64_t c, acc scale, acc shift,
                                             Sums<acc> total) {
  const acc invstd = acc(1) / sqrt(p.var[c] + p.eps);
  if (p.grad_weight) p.grad_weight[c] = total.gx * invstd;
  if (p.grad_bias) p.grad_bias[c] = total.g;
  const acc inv_count = acc(1) / acc(count_of(p));
  p.coef[c] = scale;
  p.coef[p.channels + c] = shift;
  p.coef[2 * p.channels + c] = scale;
  p.coef[3 * p.channels + c] =
      p.training ? -scale * invstd * invstd * total.gx * inv_count : acc(0);
  p.coef[4 * p.channels + c] = p.training ? -scale * total.g * inv_count : acc(0);
}

// Per channel sum(g) and sum(g * (x - mean)), g = grad_out * leaky'(x * scale + shift); the
// last block also writes the weight/bias gradients and the grad-input coefficients.
template <bool nhwc, typename scalar_t, typename acc>
__global__ void reduce_grads(Params<scalar_t, acc> p) {
  const int64_t c = reduced_channel<nhwc>();
  acc mean = 0, scale = 0, shift = 0;
  if (c < p.channels) {
    mean = p.mean[c];
    affine_of(p, c, mean, p.var[c], scale, shift);
  }
  split_reduce<nhwc>(
      p, c, p.partial_sums,
      [&](Sums<acc>& sum, int64_t j) {
        const int64_t o = offset_of<nhwc>(p, c, j);
        const acc x = acc(p.x[o]);
        const acc g = acc(p.grad_out[o]) * leaky_grad(x * scale + shift, p.slope);
        sum.g += g;
        sum.gx += g * (x - mean);
      },
      [&](Sums<acc> total) { finish_grads(p, c, scale, shift, total); });
}

// grad_x = a * g + k * (x - mean) + d.
template <bool nhwc, typename scalar_t, typename acc>
__global__ void grad_input(Params<scalar_t, acc> p) {
  const int64_t stride = int64_t(gridDim.x) * blockDim.x;
  const int64_t C = p.channels;
  for (int64_t index = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; index < p.numel;
       index += stride) {
    const int64_t c = channel_of<nhwc>(p, index);
    const acc x = acc(p.x[index]);
    const acc g = acc(p.grad_out[index]) * leaky_grad(x * p.coef[c] + p.coef[C + c], p.slope);
    p.out[index] =
        scalar_t(p.coef[2 * C + c] * g + p.coef[3 * C + c] * (x - p.mean[c]) + p.coef[4 * C + c]);
  }
}

// --- launchers ----------------------------------------------------------------------------

int slice_count(int64_t values_per_channel) {
  return int(std::clamp<int64_t>((values_per_channel + kValuesPerBlock - 1) / kValuesPerBlock, 1,
                                 kMaxSlices));
}

int elementwise_blocks(int64_t work) {
  const int64_t sms = simt::multiprocessor_count();
  return int(std::clamp<int64_t>((work + kThreads - 1) / kThreads, 1, sms * 16));
}

// The reduction's grid and block: channel groups on x, slices on y.
struct ReductionGrid {
  bool nhwc;  // reduce with the NHWC indexing (channels_last, or one pixel per image)
  int64_t groups;
  dim3 grid, block;
};

ReductionGrid reduction_grid(const Shape& s, Layout layout, int slices) {
  const bool nhwc = layout == Layout::NHWC || s.spatial == 1;
  const int64_t groups = nhwc ? (s.channels + kChannelTile - 1) / kChannelTile : s.channels;
  return {nhwc, groups, dim3(unsigned(groups), unsigned(slices)),
          nhwc ? dim3(kChannelTile, kRowLanes) : dim3(kThreads)};
}

// Params with what both launchers fill alike: x, the affine parameters, shape and scalars.
template <typename scalar_t, typename acc = acc_t<scalar_t>>
Params<scalar_t, acc> params_of(const at::Tensor& x, const at::Tensor& weight,
                                const at::Tensor& bias, bool training, double eps, double slope) {
  Params<scalar_t, acc> p;
  const Shape s = shape_of(x);
  p.x = x.const_data_ptr<scalar_t>();
  p.weight = weight.defined() ? weight.const_data_ptr<acc>() : nullptr;
  p.bias = bias.defined() ? bias.const_data_ptr<acc>() : nullptr;
  p.batch = s.batch;
  p.channels = s.channels;
  p.spatial = s.spatial;
  p.numel = x.numel();
  p.eps = static_cast<acc>(eps);
  p.slope = static_cast<acc>(slope);
  p.training = training;
  return p;
}

// The split reduction's workspace, which p then points to: coef_rows x C coefficients (in
// mean's dtype), one State per (slice, channel) slot at partials, and one counter per channel
// group, zeroed on the stream. The returned tensors hold it.
template <typename State, typename scalar_t, typename acc>
std::array<at::Tensor, 3> reduction_workspace(Params<scalar_t, acc>& p, State*& partials,
                                              int64_t coef_rows, const ReductionGrid& r,
                                              const at::Tensor& x, const at::Tensor& mean,
                                              simt::Stream stream) {
  static_assert(sizeof(State) % sizeof(acc) == 0, "a State is a whole number of acc values");
  constexpr int64_t values_per_slot = sizeof(State) / sizeof(acc);
  at::Tensor coef = at::empty({coef_rows * p.channels}, mean.options());
  at::Tensor partial =
      at::empty({int64_t(p.slices) * p.channels * values_per_slot}, mean.options());
  at::Tensor counters = at::empty({r.groups}, x.options().dtype(at::kInt));
  simt::memset_async(counters.data_ptr<int>(), 0, r.groups * sizeof(int), stream);
  p.coef = coef.data_ptr<acc>();
  partials = reinterpret_cast<State*>(partial.data_ptr<acc>());
  p.counters = counters.data_ptr<int>();
  return {coef, partial, counters};
}

template <typename scalar_t>
void launch_forward(const at::Tensor& x, at::Tensor& out, at::Tensor& mean, at::Tensor& var,
                    const at::Tensor& weight, const at::Tensor& bias,
                    const at::Tensor& running_mean, const at::Tensor& running_var, bool training,
                    double eps, double slope, Layout layout) {
  using acc = acc_t<scalar_t>;
  Params<scalar_t, acc> p = params_of<scalar_t>(x, weight, bias, training, eps, slope);
  const Shape s = shape_of(x);
  p.out = out.data_ptr<scalar_t>();
  p.mean = mean.data_ptr<acc>();
  p.var = var.data_ptr<acc>();
  const simt::Stream stream = simt::current_stream();
  std::array<at::Tensor, 3> workspace;
  if (training) {
    p.slices = slice_count(s.count());
    const ReductionGrid r = reduction_grid(s, layout, p.slices);
    workspace = reduction_workspace(p, p.partial_moments, 2, r, x, mean, stream);
    if (r.nhwc) {
      simt::launch<reduce_stats<true, scalar_t, acc>>({r.grid, r.block, 0, stream}, p);
    } else {
      simt::launch<reduce_stats<false, scalar_t, acc>>({r.grid, r.block, 0, stream}, p);
    }
  } else {
    p.running_mean = running_mean.const_data_ptr<acc>();
    p.running_var = running_var.const_data_ptr<acc>();
  }
  // Eval also writes the [C] copies of the running statistics, even for an empty batch.
  const int64_t work = std::max<int64_t>(p.numel, training ? 0 : s.channels);
  if (work == 0) return;
  const dim3 grid(elementwise_blocks(work));
  if (layout == Layout::NHWC) {
    simt::launch<normalize<true, scalar_t, acc>>({grid, dim3(kThreads), 0, stream}, p);
  } else {
    simt::launch<normalize<false, scalar_t, acc>>({grid, dim3(kThreads), 0, stream}, p);
  }
}

template <typename scalar_t>
void launch_backward(const at::Tensor& dy, const at::Tensor& x, at::Tensor& grad_input_t,
                     at::Tensor& grad_weight, at::Tensor& grad_bias, const at::Tensor& weight,
                     const at::Tensor& bias, const at::Tensor& mean, const at::Tensor& var,
                     bool training, double eps, double slope, Layout layout) {
  using acc = acc_t<scalar_t>;
  Params<scalar_t, acc> p = params_of<scalar_t>(x, weight, bias, training, eps, slope);
  const Shape s = shape_of(x);
  p.grad_out = dy.const_data_ptr<scalar_t>();
  p.out = grad_input_t.defined() && grad_input_t.numel() == x.numel()
              ? grad_input_t.data_ptr<scalar_t>()
              : nullptr;
  p.mean = const_cast<acc*>(mean.const_data_ptr<acc>());
  p.var = const_cast<acc*>(var.const_data_ptr<acc>());
  p.grad_weight = grad_weight.defined() ? grad_weight.data_ptr<acc>() : nullptr;
  p.grad_bias = grad_bias.defined() ? grad_bias.data_ptr<acc>() : nullptr;
  p.slices = slice_count(s.count());
  const simt::Stream stream = simt::current_stream();
  const ReductionGrid r = reduction_grid(s, layout, p.slices);
  const auto workspace = reduction_workspace(p, p.partial_sums, 5, r, x, mean, stream);
  if (r.nhwc) {
    simt::launch<reduce_grads<true, scalar_t, acc>>({r.grid, r.block, 0, stream}, p);
  } else {
    simt::launch<reduce_grads<false, scalar_t, acc>>({r.grid, r.block, 0, stream}, p);
  }
  if (p.out == nullptr || p.numel == 0) return;
  const dim3 grid(elementwise_blocks(p.numel));
  if (layout == Layout::NHWC) {
    simt::launch<grad_input<true, scalar_t, acc>>({grid, dim3(kThreads), 0, stream}, p);
  } else {
    simt::launch<grad_input<false, scalar_t, acc>>({grid, dim3(kThreads), 0, stream}, p);
  }
}

at::ScalarType acc_dtype(at::ScalarType dtype) {
  return (dtype == at::kHalf || dtype == at::kBFloat16) ? at::kFloat : dtype;
}

// A [C] tensor in the accumulation dtype, contiguous (undefined stays undefined): each of
// weight, bias and the running statistics may come in the input's dtype or float32.
at::Tensor as_acc(const std::optional<at::Tensor>& t, at::ScalarType acc) {
  return t.has_value() && t->defined() ? t->to(acc).contiguous() : at::Tensor();
}

}  // namespace

std::tuple<at::Tensor, at::Tensor, at::Tensor> forward(
    const at::Tensor& input, const std::optional<at::Tensor>& weight,
    const std::optional<at::Tensor>& bias, const std::optional<at::Tensor>& running_mean,
    const std::optional<at::Tensor>& running_var, bool training, double eps,
    double negative_slope) {
  check_forward("fastgen::batch_norm_leaky_relu", input, weight, bias, running_mean, running_var,
                training);
  const simt::DeviceGuard guard(input.device());
  const Layout layout = choose_layout(input);
  const at::Tensor x = input.contiguous(memory_format(layout));
  const Shape s = shape_of(x);
  TORCH_CHECK(!training || s.count() > 0,
              "fastgen::batch_norm_leaky_relu: empty input in training");
  const at::ScalarType acc = acc_dtype(x.scalar_type());
  at::Tensor out = at::empty_like(x, x.options(), memory_format(layout));
  at::Tensor mean = at::empty({s.channels}, x.options().dtype(acc));
  at::Tensor var = at::empty({s.channels}, x.options().dtype(acc));
  if (s.channels == 0) return {out, mean, var};
  const at::Tensor w = as_acc(weight, acc), b = as_acc(bias, acc);
  const at::Tensor rm = training ? at::Tensor() : as_acc(running_mean, acc);
  const at::Tensor rv = training ? at::Tensor() : as_acc(running_var, acc);
  FASTGEN_DISPATCH_FLOATING_TYPES(x.scalar_type(), "batch_norm_leaky_relu_cuda", [&] {
    launch_forward<scalar_t>(x, out, mean, var, w, b, rm, rv, training, eps, negative_slope,
                             layout);
  });
  return {out, mean, var};
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> backward(
    const at::Tensor& grad_out, const at::Tensor& input, const std::optional<at::Tensor>& weight,
    const std::optional<at::Tensor>& bias, const at::Tensor& mean, const at::Tensor& var,
    bool training, double eps, double negative_slope, std::array<bool, 3> output_mask) {
  check_backward("fastgen::batch_norm_leaky_relu_backward", grad_out, input, "input", weight, bias,
                 mean, var);
  const simt::DeviceGuard guard(input.device());
  const Layout layout = choose_layout(input);
  const at::MemoryFormat format = memory_format(layout);
  const at::Tensor x = input.contiguous(format);
  const at::Tensor dy = grad_out.contiguous(format);
  const at::ScalarType acc = acc_dtype(x.scalar_type());
  const at::Tensor w = as_acc(weight, acc), b = as_acc(bias, acc);
  const at::Tensor mean_acc = mean.to(acc).contiguous(), var_acc = var.to(acc).contiguous();
  const int64_t C = x.size(1);
  const bool want_weight = output_mask[1] && weight.has_value() && weight->defined();
  const bool want_bias = output_mask[2] && bias.has_value() && bias->defined();
  at::Tensor grad_input_t =
      output_mask[0] ? at::empty_like(x, x.options(), format) : at::empty({0}, x.options());
  // The parameter gradients are reduced in acc and handed back in each parameter's dtype.
  at::Tensor grad_weight_acc = want_weight ? at::empty({C}, x.options().dtype(acc)) : at::Tensor();
  at::Tensor grad_bias_acc = want_bias ? at::empty({C}, x.options().dtype(acc)) : at::Tensor();
  if (C > 0) {
    FASTGEN_DISPATCH_FLOATING_TYPES(x.scalar_type(), "batch_norm_leaky_relu_backward_cuda", [&] {
      launch_backward<scalar_t>(dy, x, grad_input_t, grad_weight_acc, grad_bias_acc, w, b, mean_acc,
                                var_acc, training, eps, negative_slope, layout);
    });
  }
  at::Tensor grad_weight =
      want_weight ? grad_weight_acc.to(weight->scalar_type()) : at::empty({0}, x.options());
  at::Tensor grad_bias =
      want_bias ? grad_bias_acc.to(bias->scalar_type()) : at::empty({0}, x.options());
  return {grad_input_t, grad_weight, grad_bias};
}

}  // namespace fastgen::batch_norm_leaky_relu::FASTGEN_DEVICE_NS
