// CPU kernels of fastgen::batch_norm_leaky_relu and its backward (math in the header),
// compiled once per CPU capability (FASTGEN_CPU_NS: baseline, avx2, avx512; see
// common/cpu_capability.h) so the loops vectorize at the width of the CPU they run on;
// each entry point checks its arguments first, and batch_norm_leaky_relu_cpu.cpp registers
// the copy for the CPU.
//
// Passes over memory (the stock BatchNorm2d + LeakyReLU pair needs about twice as many):
//   training forward   1 statistics pass (read x) + 1 normalise-and-activate pass (read x,
//                      write out);
//   eval forward       the second pass only;
//   backward           1 reduction pass (read x, grad_out) + 1 grad-input pass (read x,
//                      grad_out, write grad_x); eval without weight gradients skips the first.
// Work is cut into fixed blocks (a plane of H*W values in NCHW, a group of rows of C values
// in NHWC); each block writes its partial statistics to its own slot and the slots are
// merged in block order, so results are identical for any number of threads.

#include "common/bfloat16_chunks.h"
#include "common/parallel.h"
#include "batch_norm_leaky_relu/batch_norm_leaky_relu.h"

#include <ATen/Parallel.h>
#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/empty_like.h>
#include <ATen/ops/zeros_like.h>

#include <algorithm>
#include <bit>
#include <cstdint>
#include <type_traits>
#include <cmath>
#include <vector>

#include "common/dispatch.h"

namespace fastgen::batch_norm_leaky_relu::FASTGEN_CPU_NS {
namespace {

// A block holds about this many values: small enough that the second look at a block
// (the centred sum of squares) hits L2, large enough that per-block bookkeeping is noise.
constexpr int64_t kBlockValues = 8192;
// Independent partial sums per reduction: lets the compiler vectorise a sum without
// reordering floating-point additions it is not allowed to reorder (-ffp-contract=off,
// no -ffast-math).
constexpr int kLanes = 16;

// (count, mean, M2) of a set of values; merge() is Chan et al.'s pairwise update, in double
// so that merging many blocks adds no error of its own.
struct Moments {
  double count = 0, mean = 0, m2 = 0;
  void merge(double count_b, double mean_b, double m2_b) {
    if (count_b == 0) return;
    const double total = count + count_b;
    const double delta = mean_b - mean;
    mean += delta * (count_b / total);
    m2 += m2_b + delta * delta * (count * count_b / total);
    count = total;
  }
};

at::ScalarType acc_dtype(at::ScalarType dtype) {
  return (dtype == at::kHalf || dtype == at::kBFloat16) ? at::kFloat : dtype;
}

// weight/bias as contiguous acc-dtype tensors (undefined when absent).
at::Tensor as_acc(const std::optional<at::Tensor>& t, at::ScalarType acc) {
  if (!t.has_value() || !t->defined()) return at::Tensor();
  return t->to(acc).contiguous();
}

// Per-channel coefficients of v = x * scale + shift (see the header).
template <typename acc>
struct Affine {
  std::vector<acc> invstd, scale, shift;
  Affine(const acc* mean, const acc* var, const at::Tensor& weight, const at::Tensor& bias,
         int64_t channels, double eps)
      : invstd(channels), scale(channels), shift(channels) {
    const acc* w = weight.defined() ? weight.const_data_ptr<acc>() : nullptr;
    const acc* b = bias.defined() ? bias.const_data_ptr<acc>() : nullptr;
    for (int64_t c = 0; c < channels; ++c) {
      invstd[c] = acc(1) / std::sqrt(var[c] + static_cast<acc>(eps));
      scale[c] = w ? w[c] * invstd[c] : invstd[c];
      shift[c] = (b ? b[c] : acc(0)) - mean[c] * scale[c];
    }
  }
};

// --- inner loops --------------------------------------------------------------------------
// Written over __restrict pointers with scalars passed by value, so the compiler knows the
// stores alias nothing it reads and vectorises them. "span" loops walk contiguous values of
// one channel (NCHW); "row" loops walk the C channels of one pixel (NHWC), where every
// channel has its own accumulator and vectorising needs no reassociation.

// Written without a branch or a select of computed values: with trapping math (the
// default) the compiler will not speculate `v * slope`, keeps a data-dependent branch that is
// mispredicted half the time, and does not vectorise. max/min vectorise. For v > 0 this is
// v + slope * 0 = v, else 0 + slope * v: the same values as the select, up to the sign of 0.
// leaky(v) = v > 0 ? v : v * slope, as stock leaky_relu (a NaN or inf slope leaves positive
// values alone; NaN stays NaN). The choice is made on the bits, as in leaky_grad below, so
// the loop vectorises.
template <typename acc>
inline acc leaky(acc v, acc slope) {
  using bits_t = std::conditional_t<sizeof(acc) == 4, int32_t, int64_t>;
  const bits_t positive = -static_cast<bits_t>(std::bit_cast<bits_t>(v) > 0);  // all ones or 0
  const bits_t scaled = std::bit_cast<bits_t>(v * slope);
  return std::bit_cast<acc>((std::bit_cast<bits_t>(v) & positive) | (scaled & ~positive));
}

// d leaky(v)/dv: 1 if v > 0, else slope, picked with integer bit operations. A float is > 0
// exactly when its bits, read as a signed integer, are > 0 (NaN aside). Written with a float
// `>` or a select, the compiler turns `dy * factor` into a conditional multiply, which may
// trap, so it stays a branch (mispredicted half the time) and the loop does not vectorise.
template <typename acc>
inline acc leaky_grad(acc v, acc slope) {
  using bits_t = std::conditional_t<sizeof(acc) == 4, int32_t, int64_t>;
  const bits_t positive = -static_cast<bits_t>(std::bit_cast<bits_t>(v) > 0);  // all ones or 0
  const bits_t one = std::bit_cast<bits_t>(acc(1)), slope_bits = std::bit_cast<bits_t>(slope);
  return std::bit_cast<acc>((one & positive) | (slope_bits & ~positive));
}

// acc -> scalar_t for the stores; bfloat16 through bfloat16_chunks::round_to_bits (the value
// c10::BFloat16 gives, without the `isnan` branch that kept every bfloat16 store scalar).
template <typename scalar_t, typename acc>
inline scalar_t to_scalar(acc v) {
  if constexpr (std::is_same_v<scalar_t, c10::BFloat16>) {
    return c10::BFloat16(bfloat16_chunks::round_to_bits(static_cast<float>(v)),
                         c10::BFloat16::from_bits());
  } else {
    return scalar_t(v);
  }
}

template <typename acc>
inline acc sum_lanes(const acc (&lanes)[kLanes]) {
  acc total = 0;
  for (int l = 0; l < kLanes; ++l) total += lanes[l];
  return total;
}

// Mean and M2 of `planes` spans of n values each, `stride` apart (one span: a piece of a plane;
// several: small planes of one channel in NCHW, a 4x4 map being 16 values, grouped so that one
// reduction and one merge serve about kBlockValues values instead of each plane paying for its
// own), by the corrected two-pass method: a sum shifted by the first value (so a large mean
// does not swamp it), then centred squares plus the residual sum(x - mean) that corrects the
// rounding of the mean (else it would leak into Chan's merge).
template <typename scalar_t, typename acc>
void planes_moments(const scalar_t* __restrict x, int64_t planes, int64_t n, int64_t stride,
                    double& mean, double& m2) {
  const acc first = acc(x[0]);
  acc lanes[kLanes] = {};
  acc tail = 0;
  for (int64_t p = 0; p < planes; ++p) {
    const scalar_t* __restrict span = x + p * stride;
    int64_t i = 0;
    for (; i + kLanes <= n; i += kLanes)
      for (int l = 0; l < kLanes; ++l) lanes[l] += acc(span[i + l]) - first;
    for (; i < n; ++i) tail += acc(span[i]) - first;
  }
  const int64_t count = planes * n;
  const acc mu = first + (sum_lanes(lanes) + tail) / acc(count);
  acc squares[kLanes] = {}, residuals[kLanes] = {};
  acc square_tail = 0, residual_tail = 0;
  for (int64_t p = 0; p < planes; ++p) {
    const scalar_t* __restrict span = x + p * stride;
    int64_t i = 0;
    for (; i + kLanes <= n; i += kLanes) {
      for (int l = 0; l < kLanes; ++l) {
        const acc d = acc(span[i + l]) - mu;
        squares[l] += d * d;
        residuals[l] += d;
      }
    }
    for (; i < n; ++i) {
      const acc d = acc(span[i]) - mu;
      square_tail += d * d;
      residual_tail += d;
    }
  }
  const double residual = double(sum_lanes(residuals) + residual_tail);
  mean = double(mu) + residual / double(count);
  m2 = double(sum_lanes(squares) + square_tail) - residual * residual / double(count);
}

// The same for a block of rows, per channel, into mean[C] and m2[C]; `work` holds 3*C acc.
template <typename scalar_t, typename acc>
void rows_moments(const scalar_t* __restrict x, int64_t rows, int64_t C, acc* __restrict work,
                  double* __restrict mean, double* __restrict m2) {
  acc* __restrict sum = work;
  acc* __restrict squares = work + C;
  acc* __restrict residuals = work + 2 * C;
  const scalar_t* __restrict first = x;
  for (int64_t c = 0; c < C; ++c) sum[c] = 0;
  for (int64_t r = 0; r < rows; ++r) {
    const scalar_t* __restrict row = x + r * C;
    for (int64_t c = 0; c < C; ++c) sum[c] += acc(row[c]) - acc(first[c]);
  }
  const acc inv_n = acc(1) / acc(rows);
  for (int64_t c = 0; c < C; ++c) {
    sum[c] = acc(first[c]) + sum[c] * inv_n;  // now the (rounded) mean
    squares[c] = 0;
    residuals[c] = 0;
  }
  for (int64_t r = 0; r < rows; ++r) {
    const scalar_t* __restrict row = x + r * C;
    for (int64_t c = 0; c < C; ++c) {
      const acc d = acc(row[c]) - sum[c];
      squares[c] += d * d;
      residuals[c] += d;
    }
  }
  for (int64_t c = 0; c < C; ++c) {
    const double residual = double(residuals[c]);
    mean[c] = double(sum[c]) + residual / double(rows);
    m2[c] = double(squares[c]) - residual * residual / double(rows);
  }
}

template <typename scalar_t, typename acc>
void span_normalize(const scalar_t* __restrict x, scalar_t* __restrict out, int64_t n, acc scale,
                    acc shift, acc slope) {
  for (int64_t i = 0; i < n; ++i) {
    out[i] = to_scalar<scalar_t>(leaky(acc(x[i]) * scale + shift, slope));
  }
}

template <typename scalar_t, typename acc>
void row_normalize(const scalar_t* __restrict x, scalar_t* __restrict out, int64_t C,
                   const acc* __restrict scale, const acc* __restrict shift, acc slope) {
  for (int64_t c = 0; c < C; ++c) {
    out[c] = to_scalar<scalar_t>(leaky(acc(x[c]) * scale[c] + shift[c], slope));
  }
}

// Backward terms of one value, per channel coefficients (p0, p1, p2):
//   from the input x:   v = x * scale + shift, g = dy * leaky'(v), h = x - mean
//                       (p0, p1, p2) = (scale, shift, mean)
//   from the output y:  (memory-saving mode) y > 0 exactly when v > 0 (slope > 0), so
//                       g = dy * leaky'(y), v = y or y / slope, h = xhat = (v - bias) / weight
//                       (p0, p1, p2) = (bias, 1 / weight, unused)
// The reductions need sum(g) and sum(g * h); grad_x = a * g + k * h + d per channel.
template <bool from_output, typename acc>
inline void backward_terms(acc dy, acc in, acc p0, acc p1, acc p2, acc slope, acc inv_slope, acc& g,
                           acc& h) {
  if constexpr (from_output) {
    g = dy * leaky_grad(in, slope);
    h = (in * leaky_grad(in, inv_slope) - p0) * p1;
  } else {
    g = dy * leaky_grad(in * p0 + p1, slope);
    h = in - p2;
  }
}

// Per-channel coefficients of backward_terms and of grad_x = a * g + k * h + d.
template <typename acc>
struct BackwardCoefficients {
  std::vector<acc> p0, p1, p2, a, k, d;
  explicit BackwardCoefficients(int64_t channels)
      : p0(channels), p1(channels), p2(channels), a(channels), k(channels), d(channels) {}
};

// sum(g) and sum(g * h) over `planes` spans of n values each, `stride` apart (one plane, or a
// group of small planes of one channel, as planes_moments reads them).
template <bool from_output, typename scalar_t, typename acc>
void planes_grad_sums(const scalar_t* __restrict dy, const scalar_t* __restrict in, int64_t planes,
                      int64_t n, int64_t stride, acc p0, acc p1, acc p2, acc slope, acc inv_slope,
                      double& sum_g, double& sum_gh) {
  acc lanes_g[kLanes] = {}, lanes_gh[kLanes] = {};
  acc tail_g = 0, tail_gh = 0;
  for (int64_t p = 0; p < planes; ++p) {
    const scalar_t* __restrict dy_span = dy + p * stride;
    const scalar_t* __restrict in_span = in + p * stride;
    int64_t i = 0;
    for (; i + kLanes <= n; i += kLanes) {
      for (int l = 0; l < kLanes; ++l) {
        acc g, h;
        backward_terms<from_output>(acc(dy_span[i + l]), acc(in_span[i + l]), p0, p1, p2, slope,
                                    inv_slope, g, h);
        lanes_g[l] += g;
        lanes_gh[l] += g * h;
      }
    }
    for (; i < n; ++i) {
      acc g, h;
      backward_terms<from_output>(acc(dy_span[i]), acc(in_span[i]), p0, p1, p2, slope, inv_slope, g,
                                  h);
      tail_g += g;
      tail_gh += g * h;
    }
  }
  sum_g = double(sum_lanes(lanes_g) + tail_g);
  sum_gh = double(sum_lanes(lanes_gh) + tail_gh);
}

template <bool from_output, typename scalar_t, typename acc>
void row_grad_sums(const scalar_t* __restrict dy, const scalar_t* __restrict in, int64_t C,
                   const acc* __restrict p0, const acc* __restrict p1, const acc* __restrict p2,
                   acc slope, acc inv_slope, acc* __restrict sum_g, acc* __restrict sum_gh) {
  for (int64_t c = 0; c < C; ++c) {
    acc g, h;
    backward_terms<from_output>(acc(dy[c]), acc(in[c]), p0[c], p1[c], p2[c], slope, inv_slope, g,
                                h);
    sum_g[c] += g;
    sum_gh[c] += g * h;
  }
}

template <bool from_output, typename scalar_t, typename acc>
void span_grad_input(const scalar_t* __restrict dy, const scalar_t* __restrict in,
                     scalar_t* __restrict dx, int64_t n, acc p0, acc p1, acc p2, acc a, acc k,
                     acc d, acc slope, acc inv_slope) {
  for (int64_t i = 0; i < n; ++i) {
    acc g, h;
    backward_terms<from_output>(acc(dy[i]), acc(in[i]), p0, p1, p2, slope, inv_slope, g, h);
    dx[i] = to_scalar<scalar_t>(a * g + k * h + d);
  }
}

template <bool from_output, typename scalar_t, typename acc>
void row_grad_input(const scalar_t* __restrict dy, const scalar_t* __restrict in,
                    scalar_t* __restrict dx, int64_t C, const BackwardCoefficients<acc>& coef,
                    acc slope, acc inv_slope) {
  const acc* __restrict p0 = coef.p0.data();
  const acc* __restrict p1 = coef.p1.data();
  const acc* __restrict p2 = coef.p2.data();
  const acc* __restrict a = coef.a.data();
  const acc* __restrict k = coef.k.data();
  const acc* __restrict d = coef.d.data();
  for (int64_t c = 0; c < C; ++c) {
    acc g, h;
    backward_terms<from_output>(acc(dy[c]), acc(in[c]), p0[c], p1[c], p2[c], slope, inv_slope, g,
                                h);
    dx[c] = to_scalar<scalar_t>(a[c] * g + k[c] * h + d[c]);
  }
}

// --- passes -------------------------------------------------------------------------------

// Grain sizes: about 32K values per task, so that thread start-up is amortised.
inline int64_t plane_grain(Shape s) {
  return parallel::grain(s.spatial);
}
inline int64_t row_grain(Shape s) {
  return parallel::grain(s.channels);
}

// NHWC blocks: groups of rows of about kBlockValues values.
struct RowBlocks {
  int64_t rows, rows_per_block, count;
  explicit RowBlocks(Shape s)
      : rows(s.count()),
        rows_per_block(std::max<int64_t>(1, kBlockValues / std::max<int64_t>(s.channels, 1))),
        count((rows + rows_per_block - 1) / rows_per_block) {}
  int64_t begin(int64_t b) const { return b * rows_per_block; }
  int64_t size(int64_t b) const { return std::min(rows, begin(b) + rows_per_block) - begin(b); }
};

// NCHW planes smaller than a block are grouped per channel: this many consecutive planes of
// one channel make a block (fixed by the shape, so results do not depend on the threads).
inline int64_t plane_group(Shape s) {
  return std::max<int64_t>(1, kBlockValues / std::max<int64_t>(s.spatial, 1));
}
inline int64_t group_grain(Shape s) {
  return parallel::grain(std::min(plane_group(s), s.batch) * s.spatial);
}

// sum(x) / count of channel c, in double.
template <typename scalar_t>
double plain_mean(const scalar_t* x, Layout layout, Shape s, int64_t c) {
  double sum = 0;
  for (int64_t n = 0; n < s.batch; ++n) {
    for (int64_t i = 0; i < s.spatial; ++i) {
      const int64_t offset = layout == Layout::NCHW ? (n * s.channels + c) * s.spatial + i
                                                    : (n * s.spatial + i) * s.channels + c;
      sum += double(x[offset]);
    }
  }
  return sum / double(s.count());
}

// Batch mean and biased variance per channel into mean/var (acc dtype, [C]).
template <typename scalar_t>
void batch_stats(const scalar_t* x, Layout layout, Shape s, at::Tensor& mean, at::Tensor& var) {
  using acc = acc_t<scalar_t>;
  const int64_t C = s.channels;
  // Partial (mean, M2) per block, merged per channel in block order below.
  int64_t blocks;
  std::vector<double> block_mean, block_m2;
  std::vector<int64_t> block_count;
  if (layout == Layout::NCHW && s.spatial < kBlockValues) {
    // Block = `group` consecutive planes of one channel (planes_moments).
    const int64_t hw = s.spatial, group = plane_group(s);
    blocks = (s.batch + group - 1) / group;
    block_mean.resize(blocks * C);
    block_m2.resize(blocks * C);
    block_count.resize(blocks);
    for (int64_t b = 0; b < blocks; ++b) {
      block_count[b] = (std::min(s.batch, (b + 1) * group) - b * group) * hw;
    }
    at::parallel_for(0, blocks * C, group_grain(s), [&](int64_t begin, int64_t end) {
      for (int64_t task = begin; task < end; ++task) {
        const int64_t b = task / C, c = task % C;
        const int64_t planes = block_count[b] / hw;
        planes_moments<scalar_t, acc>(x + (b * group * C + c) * hw, planes, hw, C * hw,
                                      block_mean[task], block_m2[task]);
      }
    });
  } else if (layout == Layout::NCHW) {
    // Block = one (n, c) plane, itself cut into kBlockValues pieces merged in order.
    const int64_t hw = s.spatial;
    blocks = s.batch;
    block_mean.resize(s.batch * C);
    block_m2.resize(s.batch * C);
    block_count.assign(s.batch, hw);
    at::parallel_for(0, s.batch * C, plane_grain(s), [&](int64_t begin, int64_t end) {
      for (int64_t p = begin; p < end; ++p) {
        Moments m;
        for (int64_t start = 0; start < hw; start += kBlockValues) {
          double piece_mean, piece_m2;
          const int64_t n = std::min(kBlockValues, hw - start);
          planes_moments<scalar_t, acc>(x + p * hw + start, 1, n, n, piece_mean, piece_m2);
          m.merge(double(n), piece_mean, piece_m2);
        }
        block_mean[p] = m.mean;
        block_m2[p] = m.m2;
      }
    });
  } else {
    const RowBlocks rb(s);
    blocks = rb.count;
    block_mean.resize(blocks * C);
    block_m2.resize(blocks * C);
    block_count.resize(blocks);
    for (int64_t b = 0; b < blocks; ++b) block_count[b] = rb.size(b);
    at::parallel_for(0, blocks, 1, [&](int64_t begin, int64_t end) {
      std::vector<acc> work(3 * C);
      for (int64_t b = begin; b < end; ++b) {
        rows_moments<scalar_t, acc>(x + rb.begin(b) * C, rb.size(b), C, work.data(),
                                    block_mean.data() + b * C, block_m2.data() + b * C);
      }
    });
  }
  acc* out_mean = mean.data_ptr<acc>();
  acc* out_var = var.data_ptr<acc>();
  // Serial on purpose: it is C * blocks tiny merges, and on a busy machine every extra
  // parallel region costs a thread hand-off that can dwarf them.
  for (int64_t c = 0; c < C; ++c) {
    Moments m;
    for (int64_t b = 0; b < blocks; ++b)
      m.merge(double(block_count[b]), block_mean[b * C + c], block_m2[b * C + c]);
    out_mean[c] = acc(m.mean);
    out_var[c] = acc(m.m2 / m.count);
    // An inf in the channel makes the shifted sums NaN; stock's plain mean is then +-inf
    // (NaN only for inf - inf or a NaN input), and running_mean follows it. Rare: one more
    // pass over that channel only.
    if (!std::isfinite(m.mean)) out_mean[c] = acc(plain_mean(x, layout, s, c));
  }
}

// out = leaky(x * scale + shift).
template <typename scalar_t>
void normalize(const scalar_t* x, scalar_t* out, Layout layout, Shape s,
               const Affine<acc_t<scalar_t>>& affine, double negative_slope) {
  using acc = acc_t<scalar_t>;
  const acc slope = static_cast<acc>(negative_slope);
  const int64_t C = s.channels;
  if (layout == Layout::NCHW) {
    const int64_t hw = s.spatial;
    at::parallel_for(0, s.batch * C, plane_grain(s), [&](int64_t begin, int64_t end) {
      for (int64_t p = begin; p < end; ++p) {
        span_normalize<scalar_t, acc>(x + p * hw, out + p * hw, hw, affine.scale[p % C],
                                      affine.shift[p % C], slope);
      }
    });
    return;
  }
  at::parallel_for(0, s.count(), row_grain(s), [&](int64_t begin, int64_t end) {
    for (int64_t r = begin; r < end; ++r) {
      row_normalize<scalar_t, acc>(x + r * C, out + r * C, C, affine.scale.data(),
                                   affine.shift.data(), slope);
    }
  });
}

// Per-channel sum(g) and sum(g * h) into sum_g/sum_gh ([C], double).
template <bool from_output, typename scalar_t>
void grad_sums(const scalar_t* dy, const scalar_t* in, Layout layout, Shape s,
               const BackwardCoefficients<acc_t<scalar_t>>& coef, double negative_slope,
               std::vector<double>& sum_g, std::vector<double>& sum_gh) {
  using acc = acc_t<scalar_t>;
  const acc slope = static_cast<acc>(negative_slope);
  const acc inv_slope = from_output ? static_cast<acc>(1.0 / negative_slope) : acc(0);
  const int64_t C = s.channels;
  std::fill(sum_g.begin(), sum_g.end(), 0.0);
  std::fill(sum_gh.begin(), sum_gh.end(), 0.0);
  if (layout == Layout::NCHW) {
    // Blocks of plane_group planes of one channel, as batch_stats cuts small planes (a plane
    // of kBlockValues or more is a block of its own).
    const int64_t hw = s.spatial, group = plane_group(s);
    const int64_t blocks = (s.batch + group - 1) / group;
    std::vector<double> block_g(blocks * C), block_gh(blocks * C);
    at::parallel_for(0, blocks * C, group_grain(s), [&](int64_t begin, int64_t end) {
      for (int64_t task = begin; task < end; ++task) {
        const int64_t b = task / C, c = task % C;
        const int64_t planes = std::min(s.batch, (b + 1) * group) - b * group;
        const int64_t offset = (b * group * C + c) * hw;
        planes_grad_sums<from_output, scalar_t, acc>(dy + offset, in + offset, planes, hw, C * hw,
                                                     coef.p0[c], coef.p1[c], coef.p2[c], slope,
                                                     inv_slope, block_g[task], block_gh[task]);
      }
    });
    for (int64_t task = 0; task < blocks * C; ++task) {
      sum_g[task % C] += block_g[task];
      sum_gh[task % C] += block_gh[task];
    }
    return;
  }
  const RowBlocks rb(s);
  std::vector<acc> block_g(rb.count * C), block_gh(rb.count * C);
  at::parallel_for(0, rb.count, 1, [&](int64_t begin, int64_t end) {
    for (int64_t b = begin; b < end; ++b) {
      for (int64_t r = rb.begin(b); r < rb.begin(b) + rb.size(b); ++r) {
        row_grad_sums<from_output, scalar_t, acc>(dy + r * C, in + r * C, C, coef.p0.data(),
                                                  coef.p1.data(), coef.p2.data(), slope, inv_slope,
                                                  block_g.data() + b * C, block_gh.data() + b * C);
      }
    }
  });
  for (int64_t b = 0; b < rb.count; ++b) {
    for (int64_t c = 0; c < C; ++c) {
      sum_g[c] += double(block_g[b * C + c]);
      sum_gh[c] += double(block_gh[b * C + c]);
    }
  }
}

template <bool from_output, typename scalar_t>
void grad_input_pass(const scalar_t* dy, const scalar_t* in, scalar_t* dx, Layout layout, Shape s,
                     const BackwardCoefficients<acc_t<scalar_t>>& coef, double negative_slope) {
  using acc = acc_t<scalar_t>;
  const acc slope = static_cast<acc>(negative_slope);
  const acc inv_slope = from_output ? static_cast<acc>(1.0 / negative_slope) : acc(0);
  const int64_t C = s.channels;
  if (layout == Layout::NCHW) {
    const int64_t hw = s.spatial;
    at::parallel_for(0, s.batch * C, plane_grain(s), [&](int64_t begin, int64_t end) {
      for (int64_t p = begin; p < end; ++p) {
        const int64_t c = p % C;
        span_grad_input<from_output, scalar_t, acc>(dy + p * hw, in + p * hw, dx + p * hw, hw,
                                                    coef.p0[c], coef.p1[c], coef.p2[c], coef.a[c],
                                                    coef.k[c], coef.d[c], slope, inv_slope);
      }
    });
    return;
  }
  at::parallel_for(0, s.count(), row_grain(s), [&](int64_t begin, int64_t end) {
    for (int64_t r = begin; r < end; ++r) {
      row_grad_input<from_output, scalar_t, acc>(dy + r * C, in + r * C, dx + r * C, C, coef, slope,
                                                 inv_slope);
    }
  });
}

// The shared backward: `in` is the input (from_output=false) or the output (true).
template <bool from_output>
std::tuple<at::Tensor, at::Tensor, at::Tensor> backward_impl(
    const at::Tensor& grad_out, const at::Tensor& saved, const std::optional<at::Tensor>& weight,
    const std::optional<at::Tensor>& bias, const at::Tensor& mean, const at::Tensor& var,
    bool training, double eps, double negative_slope, std::array<bool, 3> output_mask) {
  const Layout layout = choose_layout(saved);
  const at::MemoryFormat format = memory_format(layout);
  const at::Tensor in = saved.contiguous(format);
  const at::Tensor dy = grad_out.contiguous(format);
  const Shape s = shape_of(in);
  const at::ScalarType acc = acc_dtype(in.scalar_type());
  const at::Tensor w = as_acc(weight, acc), b = as_acc(bias, acc);
  const at::Tensor mean_acc = mean.to(acc).contiguous(), var_acc = var.to(acc).contiguous();
  const bool want_input = output_mask[0];
  const bool want_weight = output_mask[1] && w.defined();
  const bool want_bias = output_mask[2] && b.defined();
  at::Tensor grad_input =
      want_input ? at::empty_like(in, in.options(), format) : at::empty({0}, in.options());
  at::Tensor grad_weight =
      want_weight ? at::empty({s.channels}, weight->options()) : at::empty({0}, in.options());
  at::Tensor grad_bias =
      want_bias ? at::empty({s.channels}, bias->options()) : at::empty({0}, in.options());
  const bool need_sums = want_weight || want_bias || (want_input && training);

  FASTGEN_DISPATCH_FLOATING_TYPES(in.scalar_type(), "batch_norm_leaky_relu_backward_cpu", [&] {
    using acc_scalar = acc_t<scalar_t>;
    const acc_scalar* mu = mean_acc.const_data_ptr<acc_scalar>();
    const Affine<acc_scalar> affine(mu, var_acc.const_data_ptr<acc_scalar>(), w, b, s.channels,
                                    eps);
    const acc_scalar* w_p = w.defined() ? w.const_data_ptr<acc_scalar>() : nullptr;
    const acc_scalar* b_p = b.defined() ? b.const_data_ptr<acc_scalar>() : nullptr;
    BackwardCoefficients<acc_scalar> coef(s.channels);
    for (int64_t c = 0; c < s.channels; ++c) {
      if constexpr (from_output) {
        coef.p0[c] = b_p ? b_p[c] : acc_scalar(0);
        coef.p1[c] = w_p ? acc_scalar(1) / w_p[c] : acc_scalar(1);
      } else {
        coef.p0[c] = affine.scale[c];
        coef.p1[c] = affine.shift[c];
        coef.p2[c] = mu[c];
      }
    }
    std::vector<double> sum_g(s.channels, 0.0), sum_gh(s.channels, 0.0);
    if (need_sums && s.count() > 0) {
      grad_sums<from_output, scalar_t>(dy.const_data_ptr<scalar_t>(), in.const_data_ptr<scalar_t>(),
                                       layout, s, coef, negative_slope, sum_g, sum_gh);
    }
    // h is x - mean (from the input) or xhat (from the output): sum(g * xhat) is
    // invstd * sum(g * (x - mean)).
    const auto h_to_xhat = [&](int64_t c) { return from_output ? 1.0 : double(affine.invstd[c]); };
    if (want_weight || want_bias) {
      at::Tensor gw = at::empty({s.channels}, in.options().dtype(at::kDouble));
      at::Tensor gb = at::empty({s.channels}, in.options().dtype(at::kDouble));
      double* gw_p = gw.data_ptr<double>();
      double* gb_p = gb.data_ptr<double>();
      for (int64_t c = 0; c < s.channels; ++c) {
        gw_p[c] = sum_gh[c] * h_to_xhat(c);
        gb_p[c] = sum_g[c];
      }
      if (want_weight) grad_weight.copy_(gw);
      if (want_bias) grad_bias.copy_(gb);
    }
    if (want_input) {
      const double inv_count = s.count() > 0 ? 1.0 / double(s.count()) : 0.0;
      for (int64_t c = 0; c < s.channels; ++c) {
        const double a = double(affine.scale[c]), to_xhat = h_to_xhat(c);
        coef.a[c] = acc_scalar(a);
        coef.k[c] =
            training ? acc_scalar(-a * to_xhat * to_xhat * sum_gh[c] * inv_count) : acc_scalar(0);
        coef.d[c] = training ? acc_scalar(-a * sum_g[c] * inv_count) : acc_scalar(0);
      }
      grad_input_pass<from_output, scalar_t>(
          dy.const_data_ptr<scalar_t>(), in.const_data_ptr<scalar_t>(),
          grad_input.data_ptr<scalar_t>(), layout, s, coef, negative_slope);
    }
  });
  return {grad_input, grad_weight, grad_bias};
}

}  // namespace

// --- schema entry points ------------------------------------------------------------------

std::tuple<at::Tensor, at::Tensor, at::Tensor> forward_cpu(
    const at::Tensor& input, const std::optional<at::Tensor>& weight,
    const std::optional<at::Tensor>& bias, const std::optional<at::Tensor>& running_mean,
    const std::optional<at::Tensor>& running_var, bool training, double eps,
    double negative_slope) {
  check_forward("fastgen::batch_norm_leaky_relu", input, weight, bias, running_mean, running_var,
                training);
  const Layout layout = choose_layout(input);
  const at::Tensor x = input.contiguous(memory_format(layout));
  const Shape s = shape_of(x);
  const at::ScalarType acc = acc_dtype(x.scalar_type());
  at::Tensor out = at::empty_like(x, x.options(), memory_format(layout));
  at::Tensor mean, var;
  if (training) {
    TORCH_CHECK(s.count() > 0, "fastgen::batch_norm_leaky_relu: empty input in training");
    mean = at::empty({s.channels}, x.options().dtype(acc));
    var = at::empty({s.channels}, x.options().dtype(acc));
  } else {  // check_forward saw both running statistics
    mean = running_mean->to(acc, /*non_blocking=*/false, /*copy=*/true).contiguous();
    var = running_var->to(acc, /*non_blocking=*/false, /*copy=*/true).contiguous();
  }
  const at::Tensor w = as_acc(weight, acc), b = as_acc(bias, acc);
  FASTGEN_DISPATCH_FLOATING_TYPES(x.scalar_type(), "batch_norm_leaky_relu_cpu", [&] {
    using acc_scalar = acc_t<scalar_t>;
    if (training) batch_stats<scalar_t>(x.const_data_ptr<scalar_t>(), layout, s, mean, var);
    const Affine<acc_scalar> affine(mean.const_data_ptr<acc_scalar>(),
                                    var.const_data_ptr<acc_scalar>(), w, b, s.channels, eps);
    normalize<scalar_t>(x.const_data_ptr<scalar_t>(), out.data_ptr<scalar_t>(), layout, s, affine,
                        negative_slope);
  });
  return {out, mean, var};
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> backward_cpu(
    const at::Tensor& grad_out, const at::Tensor& input, const std::optional<at::Tensor>& weight,
    const std::optional<at::Tensor>& bias, const at::Tensor& mean, const at::Tensor& var,
    bool training, double eps, double negative_slope, std::array<bool, 3> output_mask) {
  check_backward("fastgen::batch_norm_leaky_relu_backward", grad_out, input, "input", weight, bias,
                 mean, var);
  return backward_impl<false>(grad_out, input, weight, bias, mean, var, training, eps,
                              negative_slope, output_mask);
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> backward_from_output_cpu(
    const at::Tensor& grad_out, const at::Tensor& output, const std::optional<at::Tensor>& weight,
    const std::optional<at::Tensor>& bias, const at::Tensor& var, bool training, double eps,
    double negative_slope, std::array<bool, 3> output_mask) {
  constexpr const char* op = "fastgen::batch_norm_leaky_relu_backward_from_output";
  check_backward(op, grad_out, output, "output", weight, bias, var, var);
  TORCH_CHECK_VALUE(negative_slope > 0, op, ": negative_slope must be > 0, got ", negative_slope);
  // mean only enters through shift, which the output-based terms do not use.
  return backward_impl<true>(grad_out, output, weight, bias, at::zeros_like(var), var, training,
                             eps, negative_slope, output_mask);
}

}  // namespace fastgen::batch_norm_leaky_relu::FASTGEN_CPU_NS
