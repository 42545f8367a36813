#pragma once
// fastgen's CUDA convolution engine: one implicit GEMM that runs conv2d and conv_transpose2d
// forward, both data gradients and both weight gradients, with the epilogue (bias,
// activation, dtype cast, batch-norm partial statistics) fused. Compiled by nvcc for the GPU
// and against the SIMT emulator (csrc/simt) for the emulated-cuda backend, from this source.
//
// ## The convolution as GEMMs, without zero insertion
// Every convolution here is written as a set of "phases", each an ordinary GEMM
//   D[m, co] = epilogue( sum_k A[m, k] * B[k, co] )
// whose rows m are output pixels (n, ty, tx) of the phase, whose columns are output channels
// and whose reduction k runs over (input channel, kernel tap) pairs. Along each image axis a
// phase is described by an Axis (below): the output coordinate of row index t, and for tap j
// the input coordinate it reads and the kernel tap it uses, all affine in (t, j):
//   conv2d (stride s, padding p, dilation d): one phase; o = t, i = s t - p + d j, tap j.
//   conv_transpose2d (stride s, padding p): s_h * s_w phases, one per output residue
//     r = o mod s; a phase only uses the taps kk = r + p (mod s), kk = kk0 + s j, and reads
//     i = t + q - j with q = (r + p - kk0) / s. So each phase is a stride-1 convolution with
//     ceil(k / s) taps: no zero is inserted into the input and no multiplication by zero is
//     done (a naive transposed convolution does s_h * s_w times the work).
// The data gradient of conv2d is the transposed convolution of grad_out with the same weight,
// and the data gradient of conv_transpose2d is conv2d of grad_out with it, so the forward
// kernel computes those too. Operands are gathered from global memory into shared memory on
// the fly (the address of A[m, k] from a row table and a column table built once per tile);
// nothing is materialised: no im2col buffer, no dilated input.
//
// Weight gradients are GEMMs of their own (weight_grad_kernel): for conv2d
//   dW[co, ci, ky, kx] = sum_{n, oy, ox} G[n, co, oy, ox] X[n, ci, s oy - p + d ky, ...],
// and for conv_transpose2d the same with the roles of G and X swapped. Rows are the first
// channel, columns (tap, second channel), the reduction (n, u, v) runs over whole images, so it
// is split over several CTAs (split-K) that write float partials, summed in a fixed order by a
// second kernel: deterministic.
//
// Backward passes take grad_out and the saved output y, and scale grad_out by act'(y) as the
// operand is loaded, so grad_out * act'(y) is never written to memory.
//
// ## Math
//   bfloat16 / float16: tensor cores through WMMA m16n16k16, float accumulators;
//   float32: TF32 WMMA m16n16k8 when torch allows TF32 for convolutions (cuDNN's convolution
//     setting, torch.backends.cudnn.conv.fp32_precision or the legacy
//     torch.backends.cudnn.allow_tf32, on by default as for stock convolutions), else an
//     exact FMA path in float32;
//   float64: the FMA path in float64.
// On sm_70/sm_75 (no bfloat16 or TF32 WMMA) bfloat16 and float32 take the FMA path whatever
// the setting, and float16 keeps WMMA (math_for_arch below).
// ## Tiles (chosen for sm_90)
// A CTA computes a 64 x 64 tile of D with 4 warps (128 threads) and steps k by 32.
// Occupancy, from ptxas (nvcc 13.0; `make cuda-build` prints every kernel's registers, shared
// memory and spills, scripts/ptxas_report.py): registers, not threads, bound it. On sm_90
// most kernels take 89-98 registers per thread, so an H100/H200 SM (64K registers) holds 5
// CTAs (20 warps) of a kernel at once; 4 for the TF32 weight-gradient kernels at 128; 3 for
// float64 at 164-166. sm_80: 94-96, TF32 124 (4 CTAs), float64 164-166 (3 CTAs);
// sm_75 (FMA for float32/bfloat16): 104-115, float64 185-187. Shared memory is 21-37.5 KiB
// per CTA (of 228 KiB per SM on sm_90), which alone would allow 6 to 10. Nothing spills but
// the float16 tanh and sigmoid forward kernels on sm_90 (4 bytes per thread). Whether 12-20
// resident warps hide the gather latency without cp.async pipelining is unmeasured (no GPU
// run yet).
// Each warp owns a 32 x 32 sub-tile (2 x 2 WMMA tiles); on the FMA path each thread owns 8 x 4
// outputs. 64 x 64 keeps the grid large on the DCGAN generator's small early layers (a 4x4 ->
// 8x8 layer at batch 128 has 2048 rows per phase); larger tiles would leave SMs idle there.
// While a tile is multiplied, the next one is loaded from global memory into registers (one
// stage of software pipelining).
// One launch covers every phase (blockIdx.z), each CTA one 64-row block of one phase.
// ## Layouts
// channels_last is native: the channel is the fastest part of k, so consecutive threads
// gather consecutive channels. NCHW input is read by a transposing gather (consecutive threads
// take consecutive rows m, i.e. consecutive x of one channel), not by a layout conversion:
// that costs no extra pass or memory, and the lines it reads are shared by the neighbouring
// taps through L1/L2. Which is faster on a GPU has not been measured (no GPU run yet).
// The output is written channel-fastest for channels_last and row-fastest for NCHW.

#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>

#include <algorithm>
#include <array>
#include <cstdint>
#include <vector>

#include <ATen/Context.h>
#include <ATen/OpMathType.h>

#include "common/parallel.h"
#include "common/activation.h"
#include "common/dispatch.h"
#include "conv/conv_engine.h"
#include "conv/conv_common.h"  // dispatch_activation
#include "simt/simt.h"
#include "simt/wmma.h"

namespace fastgen::FASTGEN_DEVICE_NS::implicit_gemm {

constexpr int kBlockM = 64;
constexpr int kBlockN = 64;
constexpr int kBlockK = 32;
constexpr int kThreads = 128;
constexpr int kMaxPhases = 16;  // stride up to 4 x 4 on the transposed path

// One image axis of one phase: output coordinate out0 + out_step * t for t < count; tap j < taps
// uses kernel index tap0 + tap_step * j and reads input coordinate in_scale * t + in_offset +
// in_tap * j (bounds-checked: outside the input it reads zero padding).
struct Axis {
  int32_t out0, out_step, count;
  int32_t tap0, tap_step, taps;
  int32_t in_scale, in_offset, in_tap;
  int32_t unused;
};

struct Phase {
  Axis y, x;
  int32_t m_blocks;      // 64-row blocks of this phase
  int32_t block_offset;  // blocks of the phases before it (the statistics partials' index)
};

// D[n, co, oy, ox] = epilogue(sum over (c, taps) of X[n, c, iy, ix] * W(c, co, ky, kx)).
struct Problem {
  int32_t batch, channels, height, width;  // X
  int32_t out_channels, phases, total_m_blocks, unused;
  int64_t x_n, x_c, x_h, x_w;     // X's element strides (also those of the saved output y)
  int64_t w_c, w_co, w_ky, w_kx;  // the weight's, per (reduction channel, output channel, tap)
  int64_t d_n, d_c, d_h, d_w;     // D's
  Phase phase[kMaxPhases];
};

// Per row of a CTA's tile and per k of a k-tile: precomputed parts of the gather addresses,
// so the inner loops do no division. All fields are written (no padding bytes).
struct Row {
  int64_t x_off;   // n * x_n
  int64_t d_off;   // D's offset of the pixel
  int32_t iy, ix;  // input coordinate of tap 0
  int32_t valid, unused;
};
struct Col {
  int64_t x_off;   // c * x_c
  int64_t w_off;   // the weight's offset of (c, tap)
  int32_t dy, dx;  // input coordinate step of the tap
  int32_t valid, unused;
};

// --- the three ways of multiplying a tile ----------------------------------------------------

// smem<T>: what a tile element is stored as in shared memory.
struct FmaMath {
  static constexpr bool tensor_cores = false;
  template <typename T>
  using smem = acc_t<T>;
};
struct HalfMath {  // float16 / bfloat16 on tensor cores; stored as their 16 bits
  static constexpr bool tensor_cores = true;
  static constexpr int k_step = 16;
  template <typename T>
  using smem = uint16_t;
};
struct Tf32Math {  // float32 on tensor cores, rounded to TF32 as fragments are loaded
  static constexpr bool tensor_cores = true;
  static constexpr int k_step = 8;
  template <typename T>
  using smem = float;
};

// --- which math each architecture has ---------------------------------------------------------
// <mma.h> declares the float16 WMMA shapes from sm_70 and the bfloat16 and TF32 ones from sm_80
// on (its device pass for sm_75 has no precision::tf32, no __float_to_tf32 and no bfloat16
// fragments). The host names the same kernel instantiations for every architecture the build
// targets (dispatch_math), so a device pass compiles an instantiation whose math its
// architecture lacks with the FMA path instead (math_for_arch): the CUDA runtime loads the
// image of the device's own architecture, and that image holds tensor-core bodies only where
// the device has them. So an sm_70/sm_75 build works (FMA for bfloat16 and TF32-allowed
// float32, WMMA for float16 on both; an older architecture takes FMA for every dtype), and an
// sm_80+ device takes WMMA as before. nvcc's host pass and the emulator (which stands for
// sm_90) see every shape.
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ < 800
#define FASTGEN_WMMA_SM80 0
#else
#define FASTGEN_WMMA_SM80 1
#endif
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ < 700
#define FASTGEN_WMMA_SM70 0
#else
#define FASTGEN_WMMA_SM70 1
#endif

template <typename Math, typename scalar_t>
constexpr bool math_compiled_here() {
  if constexpr (!Math::tensor_cores) {
    return true;
  } else if constexpr (std::is_same_v<Math, HalfMath> && std::is_same_v<scalar_t, c10::Half>) {
    return FASTGEN_WMMA_SM70;
  } else {
    return FASTGEN_WMMA_SM80;  // bfloat16 on HalfMath, float32 on Tf32Math
  }
}

// The math a kernel instantiated for Math runs in this compilation pass.
template <typename Math, typename scalar_t>
using math_for_arch = std::conditional_t<math_compiled_here<Math, scalar_t>(), Math, FmaMath>;

template <typename T>
struct wmma_type {
  using type = float;  // Tf32Math: loaded from float
};
template <>
struct wmma_type<c10::Half> {
  using type = __half;
};
template <>
struct wmma_type<c10::BFloat16> {
  using type = __nv_bfloat16;
};

template <typename Math, typename scalar_t>
__device__ __forceinline__ typename Math::template smem<scalar_t> to_smem(acc_t<scalar_t> v) {
  if constexpr (std::is_same_v<Math, HalfMath>) {
    return scalar_t(v).x;  // rounded to the storage type once, as a stored tensor would be
  } else {
    return v;
  }
}

template <typename T>
constexpr int pad_of() {
  return int(16 / sizeof(T));  // rows stay 16-byte multiples (WMMA's ldm rule), banks shift
}

template <typename smem_t, typename acc>
struct alignas(32) Tiles {
  smem_t a[kBlockK][kBlockM + pad_of<smem_t>()];  // A^T: a[k][m] (column-major A)
  smem_t b[kBlockK][kBlockN + pad_of<smem_t>()];  // b[k][n]
};

template <typename smem_t, typename acc>
struct alignas(32) Shared {
  union Stage {
    Tiles<smem_t, acc> ab;
    acc c[kBlockM][kBlockN + pad_of<acc>()];  // the accumulators, for the epilogue
  } stage;
  Row rows[kBlockM];
  Col cols[2][kBlockK];
};

// acc += a * b over one k-tile. FMA path: thread (tr, tc) owns rows tr + 8 i and columns
// tc + 16 j; tensor cores: warp (wm, wn) owns the 32 x 32 sub-tile at (32 wm, 32 wn).
template <typename Math, typename scalar_t>
struct Accumulators;

template <typename scalar_t>
struct Accumulators<FmaMath, scalar_t> {
  using acc = acc_t<scalar_t>;
  acc v[8][4];
  __device__ __forceinline__ void zero() {
    for (int i = 0; i < 8; ++i)
      for (int j = 0; j < 4; ++j) v[i][j] = acc(0);
  }
  template <typename S>
  __device__ __forceinline__ void multiply(const S& s) {
    const int tr = threadIdx.x / 16, tc = threadIdx.x % 16;
    for (int k = 0; k < kBlockK; ++k) {
      acc a[8], b[4];
      for (int i = 0; i < 8; ++i) a[i] = s.stage.ab.a[k][tr + 8 * i];
      for (int j = 0; j < 4; ++j) b[j] = s.stage.ab.b[k][tc + 16 * j];
      for (int i = 0; i < 8; ++i)
        for (int j = 0; j < 4; ++j) v[i][j] = fma_of(a[i], b[j], v[i][j]);
    }
  }
  template <typename S>
  __device__ __forceinline__ void store(S& s) const {
    const int tr = threadIdx.x / 16, tc = threadIdx.x % 16;
    for (int i = 0; i < 8; ++i)
      for (int j = 0; j < 4; ++j) s.stage.c[tr + 8 * i][tc + 16 * j] = v[i][j];
  }
  static __device__ __forceinline__ float fma_of(float a, float b, float c) {
    return __fmaf_rn(a, b, c);
  }
  static __device__ __forceinline__ double fma_of(double a, double b, double c) {
    return __fma_rn(a, b, c);
  }
};

#if FASTGEN_WMMA_SM70  // before sm_70 <mma.h> declares no nvcuda::wmma at all
template <typename Math, typename scalar_t>
struct TensorCoreAccumulators {
  using element = typename wmma_type<scalar_t>::type;
#if FASTGEN_WMMA_SM80
  using input =
      std::conditional_t<std::is_same_v<Math, Tf32Math>, nvcuda::wmma::precision::tf32, element>;
#else  // only float16 is instantiated here (math_for_arch)
  using input = element;
#endif
  static constexpr int K = Math::k_step;
  nvcuda::wmma::fragment<nvcuda::wmma::accumulator, 16, 16, K, float> v[2][2];
  __device__ __forceinline__ void zero() {
    for (int i = 0; i < 2; ++i)
      for (int j = 0; j < 2; ++j) nvcuda::wmma::fill_fragment(v[i][j], 0.0f);
  }
  template <typename S>
  __device__ __forceinline__ void multiply(const S& s) {
    namespace wmma = nvcuda::wmma;
    const int warp = threadIdx.x / 32, wm = warp / 2, wn = warp % 2;
    constexpr unsigned lda = kBlockM + pad_of<typename Math::template smem<scalar_t>>();
    constexpr unsigned ldb = kBlockN + pad_of<typename Math::template smem<scalar_t>>();
    for (int k = 0; k < kBlockK; k += K) {
      wmma::fragment<wmma::matrix_a, 16, 16, K, input, wmma::col_major> a[2];
      wmma::fragment<wmma::matrix_b, 16, 16, K, input, wmma::row_major> b[2];
      for (int i = 0; i < 2; ++i) {
        wmma::load_matrix_sync(
            a[i], reinterpret_cast<const element*>(&s.stage.ab.a[k][32 * wm + 16 * i]), lda);
        wmma::load_matrix_sync(
            b[i], reinterpret_cast<const element*>(&s.stage.ab.b[k][32 * wn + 16 * i]), ldb);
#if FASTGEN_WMMA_SM80
        if constexpr (std::is_same_v<Math, Tf32Math>) {
          for (int e = 0; e < a[i].num_elements; ++e) a[i].x[e] = wmma::__float_to_tf32(a[i].x[e]);
          for (int e = 0; e < b[i].num_elements; ++e) b[i].x[e] = wmma::__float_to_tf32(b[i].x[e]);
        }
#endif
      }
      for (int i = 0; i < 2; ++i)
        for (int j = 0; j < 2; ++j) wmma::mma_sync(v[i][j], a[i], b[j], v[i][j]);
    }
  }
  template <typename S>
  __device__ __forceinline__ void store(S& s) const {
    const int warp = threadIdx.x / 32, wm = warp / 2, wn = warp % 2;
    constexpr unsigned ldc = kBlockN + pad_of<float>();
    for (int i = 0; i < 2; ++i)
      for (int j = 0; j < 2; ++j)
        nvcuda::wmma::store_matrix_sync(&s.stage.c[32 * wm + 16 * i][32 * wn + 16 * j], v[i][j],
                                        ldc, nvcuda::wmma::mem_row_major);
  }
};
template <typename scalar_t>
struct Accumulators<HalfMath, scalar_t> : TensorCoreAccumulators<HalfMath, scalar_t> {};
template <typename scalar_t>
struct Accumulators<Tf32Math, scalar_t> : TensorCoreAccumulators<Tf32Math, scalar_t> {};
#endif

// The gathered operand value, scaled by act'(y) when the operand is a gradient.
template <Activation grad_act, typename scalar_t>
__device__ __forceinline__ acc_t<scalar_t> gathered(const scalar_t* __restrict__ x,
                                                    const scalar_t* __restrict__ y, int64_t off,
                                                    acc_t<scalar_t> slope) {
  using acc = acc_t<scalar_t>;
  acc v = static_cast<acc>(x[off]);
  if constexpr (grad_act != Activation::Identity) {
    v = v * activation_grad_from_output<grad_act>(static_cast<acc>(y[off]), slope);
  }
  return v;
}

// The k loop of both kernels, k_tiles tiles of kBlockK, with one stage of software pipelining.
// fill_table(buffer, tile) builds the per-k table (the kernel's cols or steps) of a tile in one
// of two buffers; load(buffer) gathers the tile whose table is in buffer into registers and
// store() puts them into shared memory. While tile t is multiplied, tile t + 1 is loaded; then
// the table of tile t + 2 takes tile t's buffer. The first __syncthreads also publishes the
// tables the kernel wrote before the call; on return the products are in s.stage.c.
template <typename Math, typename scalar_t, typename S, typename Fill, typename Load,
          typename Store>
__device__ __forceinline__ void multiply_tiles(S& s, int k_tiles, const Fill& fill_table,
                                               const Load& load, const Store& store) {
  if (k_tiles > 0) fill_table(0, 0);
  __syncthreads();
  Accumulators<Math, scalar_t> accumulators;
  accumulators.zero();
  if (k_tiles > 0) {
    load(0);
    if (k_tiles > 1) fill_table(1, 1);
    store();
    __syncthreads();
  }
  for (int tile = 0; tile < k_tiles; ++tile) {
    if (tile + 1 < k_tiles) load((tile + 1) & 1);  // the next tile, while this one multiplies
    accumulators.multiply(s);
    __syncthreads();
    if (tile + 1 < k_tiles) {
      store();
      if (tile + 2 < k_tiles) fill_table(tile & 1, tile + 2);
    }
    __syncthreads();
  }
  accumulators.store(s);
  __syncthreads();
}

// --- forward-shaped kernel (conv2d / conv_transpose2d forward, both data gradients) -----------

template <typename scalar_t, typename HostMath, Activation act, Activation grad_act>
__global__ void __launch_bounds__(kThreads)
    conv_kernel(const scalar_t* __restrict__ x, const scalar_t* __restrict__ x_output,
                const scalar_t* __restrict__ weight, const scalar_t* __restrict__ bias,
                scalar_t* __restrict__ out, acc_t<scalar_t>* __restrict__ stats, Problem p,
                acc_t<scalar_t> slope) {
  using acc = acc_t<scalar_t>;
  using Math = math_for_arch<HostMath, scalar_t>;
  using smem_t = typename Math::template smem<scalar_t>;
  FASTGEN_SHARED(s, Shared<smem_t, acc>);
  const Phase& ph = p.phase[blockIdx.z];
  if (int32_t(blockIdx.x) >= ph.m_blocks) return;  // the whole CTA: phases differ in size
  const int tid = threadIdx.x;
  const int64_t rows_per_image = int64_t(ph.y.count) * ph.x.count;
  const int64_t m_count = rows_per_image * p.batch;
  const int64_t m_base = int64_t(blockIdx.x) * kBlockM;
  const int n_base = int(blockIdx.y) * kBlockN;
  const int taps = ph.y.taps * ph.x.taps;
  const int k_count = p.channels * taps;
  const int k_tiles = (k_count + kBlockK - 1) / kBlockK;

  if (tid < kBlockM) {
    Row row{};
    const int64_t m = m_base + tid;
    if (m < m_count) {
      const int64_t n = m / rows_per_image, pixel = m % rows_per_image;
      const int32_t ty = int32_t(pixel / ph.x.count), tx = int32_t(pixel % ph.x.count);
      row.x_off = n * p.x_n;
      row.iy = ph.y.in_scale * ty + ph.y.in_offset;
      row.ix = ph.x.in_scale * tx + ph.x.in_offset;
      row.d_off = n * p.d_n + int64_t(ph.y.out0 + ph.y.out_step * ty) * p.d_h +
                  int64_t(ph.x.out0 + ph.x.out_step * tx) * p.d_w;
      row.valid = 1;
    }
    s.rows[tid] = row;
  }
  const auto fill_cols = [&](int buffer, int tile) {
    if (tid < kBlockK) {
      Col col{};
      const int k = tile * kBlockK + tid;
      if (k < k_count) {
        const int c = k % p.channels, tap = k / p.channels;  // channel fastest
        const int jy = tap / ph.x.taps, jx = tap % ph.x.taps;
        col.x_off = c * p.x_c;
        col.w_off = c * p.w_c + int64_t(ph.y.tap0 + ph.y.tap_step * jy) * p.w_ky +
                    int64_t(ph.x.tap0 + ph.x.tap_step * jx) * p.w_kx;
        col.dy = ph.y.in_tap * jy;
        col.dx = ph.x.in_tap * jx;
        col.valid = 1;
      }
      s.cols[buffer][tid] = col;
    }
  };

  // Which element each thread gathers: channel-fastest when X's channels are contiguous
  // (channels_last), row-fastest otherwise (NCHW: consecutive x). Uniform across the CTA.
  const bool k_fast = p.x_c == 1;
  smem_t a_reg[kBlockM * kBlockK / kThreads];
  smem_t b_reg[kBlockK * kBlockN / kThreads];
  const auto load = [&](int buffer) {
    for (int i = 0; i < kBlockM * kBlockK / kThreads; ++i) {
      const int r = k_fast ? tid / kBlockK + (kThreads / kBlockK) * i : tid % kBlockM;
      const int kk = k_fast ? tid % kBlockK : tid / kBlockM + (kThreads / kBlockM) * i;
      const Row& row = s.rows[r];
      const Col& col = s.cols[buffer][kk];
      acc v = acc(0);
      if (row.valid && col.valid) {
        const int32_t iy = row.iy + col.dy, ix = row.ix + col.dx;
        if (iy >= 0 && iy < p.height && ix >= 0 && ix < p.width) {
          v = gathered<grad_act>(x, x_output, row.x_off + col.x_off + iy * p.x_h + ix * p.x_w,
                                 slope);
        }
      }
      a_reg[i] = to_smem<Math, scalar_t>(v);
    }
    for (int i = 0; i < kBlockK * kBlockN / kThreads; ++i) {
      const int nn = tid % kBlockN, kk = tid / kBlockN + (kThreads / kBlockN) * i;
      const Col& col = s.cols[buffer][kk];
      const int co = n_base + nn;
      acc v = acc(0);
      if (col.valid && co < p.out_channels) v = static_cast<acc>(weight[col.w_off + co * p.w_co]);
      b_reg[i] = to_smem<Math, scalar_t>(v);
    }
  };
  const auto store = [&]() {
    for (int i = 0; i < kBlockM * kBlockK / kThreads; ++i) {
      const int r = k_fast ? tid / kBlockK + (kThreads / kBlockK) * i : tid % kBlockM;
      const int kk = k_fast ? tid % kBlockK : tid / kBlockM + (kThreads / kBlockM) * i;
      s.stage.ab.a[kk][r] = a_reg[i];
    }
    for (int i = 0; i < kBlockK * kBlockN / kThreads; ++i) {
      const int nn = tid % kBlockN, kk = tid / kBlockN + (kThreads / kBlockN) * i;
      s.stage.ab.b[kk][nn] = b_reg[i];
    }
  };

  multiply_tiles<Math, scalar_t>(s, k_tiles, fill_cols, load, store);

  // Epilogue: bias, activation, cast; channel-fastest writes for channels_last output.
  const bool c_fast = p.d_c == 1;
  for (int i = 0; i < kBlockM * kBlockN / kThreads; ++i) {
    const int r = c_fast ? tid / kBlockN + (kThreads / kBlockN) * i : tid % kBlockM;
    const int nn = c_fast ? tid % kBlockN : tid / kBlockM + (kThreads / kBlockM) * i;
    const int co = n_base + nn;
    const Row& row = s.rows[r];
    if (!row.valid || co >= p.out_channels) continue;
    const acc b = bias != nullptr ? static_cast<acc>(bias[co]) : acc(0);
    out[row.d_off + co * p.d_c] =
        static_cast<scalar_t>(apply_activation<act>(s.stage.c[r][nn] + b, slope));
  }
  // Batch-norm partial statistics of this tile's rows, per channel: count, mean and M2 of the
  // values as stored (rounded to scalar_t), two passes over the tile. Merged in a fixed order
  // by finalize_stats_kernel.
  if (stats != nullptr && tid < kBlockN && n_base + tid < p.out_channels) {
    const int co = n_base + tid;
    const acc b = bias != nullptr ? static_cast<acc>(bias[co]) : acc(0);
    const auto value = [&](int r) {
      return static_cast<acc>(
          static_cast<scalar_t>(apply_activation<act>(s.stage.c[r][tid] + b, slope)));
    };
    const int rows = int(std::min<int64_t>(kBlockM, m_count - m_base));
    acc sum = acc(0);
    for (int r = 0; r < rows; ++r) sum += value(r);
    const acc mean = sum / acc(rows);
    acc m2 = acc(0);
    for (int r = 0; r < rows; ++r) {
      const acc d = value(r) - mean;
      m2 += d * d;
    }
    const int64_t partials = int64_t(p.total_m_blocks) * p.out_channels;
    const int64_t at = int64_t(ph.block_offset + int32_t(blockIdx.x)) * p.out_channels + co;
    stats[at] = acc(rows);
    stats[partials + at] = mean;
    stats[2 * partials + at] = m2;
  }
}

// Merges the (count, mean, M2) partials of channel blockIdx.x in a fixed order (Chan et al.):
// each thread a strided subset in order, then a tree over the threads. mean and var (biased).
constexpr int kStatsThreads = 256;

template <typename acc>
__device__ __forceinline__ void merge(acc& n, acc& mean, acc& m2, acc n_b, acc mean_b, acc m2_b) {
  if (n_b == acc(0)) return;
  if (n == acc(0)) {
    n = n_b, mean = mean_b, m2 = m2_b;
    return;
  }
  const acc total = n + n_b, delta = mean_b - mean;
  mean = mean + delta * (n_b / total);
  m2 = m2 + m2_b + delta * delta * (n * (n_b / total));
  n = total;
}

template <typename acc>
__global__ void __launch_bounds__(kStatsThreads)
    finalize_stats_kernel(const acc* __restrict__ stats, int64_t blocks, int64_t channels,
                          acc* __restrict__ mean_out, acc* __restrict__ var_out) {
  FASTGEN_SHARED(s_n, acc[kStatsThreads]);
  FASTGEN_SHARED(s_mean, acc[kStatsThreads]);
  FASTGEN_SHARED(s_m2, acc[kStatsThreads]);
  const int64_t c = blockIdx.x;
  const int tid = threadIdx.x;
  const int64_t partials = blocks * channels;
  acc n = acc(0), mean = acc(0), m2 = acc(0);
  for (int64_t b = tid; b < blocks; b += kStatsThreads) {
    const int64_t at = b * channels + c;
    merge(n, mean, m2, stats[at], stats[partials + at], stats[2 * partials + at]);
  }
  s_n[tid] = n, s_mean[tid] = mean, s_m2[tid] = m2;
  __syncthreads();
  for (int stride = kStatsThreads / 2; stride > 0; stride /= 2) {
    if (tid < stride) {
      acc n_a = s_n[tid], mean_a = s_mean[tid], m2_a = s_m2[tid];
      merge(n_a, mean_a, m2_a, s_n[tid + stride], s_mean[tid + stride], s_m2[tid + stride]);
      s_n[tid] = n_a, s_mean[tid] = mean_a, s_m2[tid] = m2_a;
    }
    __syncthreads();
  }
  if (tid == 0) {
    mean_out[c] = s_mean[0];
    var_out[c] = s_n[0] > acc(0) ? s_m2[0] / s_n[0] : acc(0);
  }
}

// --- weight gradient --------------------------------------------------------------------------

// dW[a, b, ky, kx] = sum over (n, u, v) of P[n, a, u, v] * Q[n, b, s u - p + d ky, s v - p + d kx]
// (conv2d: P = grad, Q = input; conv_transpose2d: P = input, Q = grad). One of P and Q is the
// gradient, scaled by act'(y) as it is loaded (y: the saved output, the gradient's strides).
struct WeightGradProblem {
  int32_t batch, a_channels, b_channels, unused0;
  int32_t u_size, v_size, q_height, q_width;
  int32_t kernel_h, kernel_w, stride_h, stride_w;
  int32_t pad_h, pad_w, dilation_h, dilation_w;
  int64_t k_per_split, splits;  // int64: the reduction (n, u, v) can pass 2^31 rows
  int64_t p_n, p_c, p_h, p_w;
  int64_t q_n, q_c, q_h, q_w;
};

struct ReductionStep {  // one k = (n, u, v) of the reduction
  int64_t p_off, q_off;
  int32_t qy, qx;  // s u - p, s v - p
  int32_t valid, unused;
};
struct WeightColumn {  // one column = (tap, b), channel fastest
  int64_t q_off;       // b * q_c
  int64_t out;         // the column's index into the [a, b * taps] workspace row
  int32_t dy, dx;      // d ky, d kx
  int32_t valid, unused;
};

template <typename smem_t, typename acc>
struct alignas(32) WeightShared {
  union Stage {
    Tiles<smem_t, acc> ab;
    acc c[kBlockM][kBlockN + pad_of<acc>()];
  } stage;
  int64_t row_off[kBlockM];  // a * p_c, or -1 past the last row
  WeightColumn cols[kBlockN];
  ReductionStep steps[2][kBlockK];
};

template <typename scalar_t, typename HostMath, Activation grad_act, bool p_is_grad>
__global__ void __launch_bounds__(kThreads)
    weight_grad_kernel(const scalar_t* __restrict__ p_data, const scalar_t* __restrict__ q_data,
                       const scalar_t* __restrict__ grad_output, acc_t<scalar_t>* __restrict__ work,
                       WeightGradProblem p, acc_t<scalar_t> slope) {
  using acc = acc_t<scalar_t>;
  using Math = math_for_arch<HostMath, scalar_t>;
  using smem_t = typename Math::template smem<scalar_t>;
  FASTGEN_SHARED(s, WeightShared<smem_t, acc>);
  const int tid = threadIdx.x;
  const int taps = p.kernel_h * p.kernel_w;
  const int64_t n_count = int64_t(p.b_channels) * taps;
  const int m_base = int(blockIdx.x) * kBlockM;
  const int64_t n_base = int64_t(blockIdx.y) * kBlockN;
  const int64_t pixels = int64_t(p.u_size) * p.v_size;
  const int64_t k_count = pixels * p.batch;
  const int64_t k_begin = int64_t(blockIdx.z) * p.k_per_split;
  const int64_t k_end = std::min<int64_t>(k_count, k_begin + p.k_per_split);
  const int k_tiles = k_end > k_begin ? int((k_end - k_begin + kBlockK - 1) / kBlockK) : 0;

  if (tid < kBlockM) {
    const int a = m_base + tid;
    s.row_off[tid] = a < p.a_channels ? a * p.p_c : -1;
  }
  if (tid < kBlockN) {
    WeightColumn col{};
    const int64_t column = n_base + tid;
    if (column < n_count) {
      const int b = int(column % p.b_channels), tap = int(column / p.b_channels);
      col.q_off = b * p.q_c;
      col.out = int64_t(b) * taps + tap;
      col.dy = p.dilation_h * (tap / p.kernel_w);
      col.dx = p.dilation_w * (tap % p.kernel_w);
      col.valid = 1;
    }
    s.cols[tid] = col;
  }
  const auto fill_steps = [&](int buffer, int tile) {
    if (tid < kBlockK) {
      ReductionStep step{};
      const int64_t k = k_begin + int64_t(tile) * kBlockK + tid;
      if (k < k_end) {
        const int64_t n = k / pixels, pixel = k % pixels;
        const int32_t u = int32_t(pixel / p.v_size), v = int32_t(pixel % p.v_size);
        step.p_off = n * p.p_n + u * p.p_h + v * p.p_w;
        step.q_off = n * p.q_n;
        step.qy = p.stride_h * u - p.pad_h;
        step.qx = p.stride_w * v - p.pad_w;
        step.valid = 1;
      }
      s.steps[buffer][tid] = step;
    }
  };

  // P is read a-fastest when its channels are contiguous, else k-fastest (consecutive v);
  // Q likewise by b or by k.
  const bool p_rows_fast = p.p_c == 1;
  const bool q_cols_fast = p.q_c == 1;
  smem_t a_reg[kBlockM * kBlockK / kThreads];
  smem_t b_reg[kBlockK * kBlockN / kThreads];
  const auto load = [&](int buffer) {
    for (int i = 0; i < kBlockM * kBlockK / kThreads; ++i) {
      const int r = p_rows_fast ? tid % kBlockM : tid / kBlockK + (kThreads / kBlockK) * i;
      const int kk = p_rows_fast ? tid / kBlockM + (kThreads / kBlockM) * i : tid % kBlockK;
      const ReductionStep& step = s.steps[buffer][kk];
      const int64_t row = s.row_off[r];
      acc value = acc(0);
      if (step.valid && row >= 0) {
        value = p_is_grad ? gathered<grad_act>(p_data, grad_output, step.p_off + row, slope)
                          : static_cast<acc>(p_data[step.p_off + row]);
      }
      a_reg[i] = to_smem<Math, scalar_t>(value);
    }
    for (int i = 0; i < kBlockK * kBlockN / kThreads; ++i) {
      const int nn = q_cols_fast ? tid % kBlockN : tid / kBlockK + (kThreads / kBlockK) * i;
      const int kk = q_cols_fast ? tid / kBlockN + (kThreads / kBlockN) * i : tid % kBlockK;
      const ReductionStep& step = s.steps[buffer][kk];
      const WeightColumn& col = s.cols[nn];
      acc value = acc(0);
      if (step.valid && col.valid) {
        const int32_t qy = step.qy + col.dy, qx = step.qx + col.dx;
        if (qy >= 0 && qy < p.q_height && qx >= 0 && qx < p.q_width) {
          const int64_t off = step.q_off + col.q_off + qy * p.q_h + qx * p.q_w;
          value = p_is_grad ? static_cast<acc>(q_data[off])
                            : gathered<grad_act>(q_data, grad_output, off, slope);
        }
      }
      b_reg[i] = to_smem<Math, scalar_t>(value);
    }
  };
  const auto store = [&]() {
    for (int i = 0; i < kBlockM * kBlockK / kThreads; ++i) {
      const int r = p_rows_fast ? tid % kBlockM : tid / kBlockK + (kThreads / kBlockK) * i;
      const int kk = p_rows_fast ? tid / kBlockM + (kThreads / kBlockM) * i : tid % kBlockK;
      s.stage.ab.a[kk][r] = a_reg[i];
    }
    for (int i = 0; i < kBlockK * kBlockN / kThreads; ++i) {
      const int nn = q_cols_fast ? tid % kBlockN : tid / kBlockK + (kThreads / kBlockK) * i;
      const int kk = q_cols_fast ? tid / kBlockN + (kThreads / kBlockN) * i : tid % kBlockK;
      s.stage.ab.b[kk][nn] = b_reg[i];
    }
  };

  multiply_tiles<Math, scalar_t>(s, k_tiles, fill_steps, load, store);
  // work[split][a][b * taps + tap]: this split's partial sums, column-fastest writes.
  const int64_t row_size = n_count;
  acc* split = work + int64_t(blockIdx.z) * p.a_channels * row_size;
  for (int i = 0; i < kBlockM * kBlockN / kThreads; ++i) {
    const int r = tid / kBlockN + (kThreads / kBlockN) * i, nn = tid % kBlockN;
    const WeightColumn& col = s.cols[nn];
    if (s.row_off[r] < 0 || !col.valid) continue;
    split[int64_t(m_base + r) * row_size + col.out] = s.stage.c[r][nn];
  }
}

// grad_weight[a, b, ky, kx] (any strides) = the sum of the splits' partials, in split order.
template <typename scalar_t>
__global__ void sum_splits_kernel(const acc_t<scalar_t>* __restrict__ work, int64_t splits,
                                  int64_t a_channels, int64_t b_channels, int64_t kernel_h,
                                  int64_t kernel_w, int64_t g_a, int64_t g_b, int64_t g_ky,
                                  int64_t g_kx, scalar_t* __restrict__ grad_weight) {
  using acc = acc_t<scalar_t>;
  const int64_t per_split = a_channels * b_channels * kernel_h * kernel_w;
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < per_split;
       i += int64_t(gridDim.x) * blockDim.x) {
    acc sum = acc(0);
    for (int64_t split = 0; split < splits; ++split) sum += work[split * per_split + i];
    const int64_t kx = i % kernel_w, ky = (i / kernel_w) % kernel_h;
    const int64_t b = (i / (kernel_w * kernel_h)) % b_channels,
                  a = i / (kernel_w * kernel_h * b_channels);
    grad_weight[a * g_a + b * g_b + ky * g_ky + kx * g_kx] = static_cast<scalar_t>(sum);
  }
}

// grad_bias[c] = sum over (n, h, w) of grad_out * act'(y), in a fixed order: per channel a
// block, each thread a strided subset in order, then a tree. h and w are addressed by their
// own strides: a dense grad_out may carry any stride on a size-1 dim (W == 1 with
// stride(3) != 1 is still contiguous), so (h, w) cannot be flattened with stride(3).
constexpr int kBiasThreads = 256;

template <typename scalar_t, Activation grad_act>
__global__ void __launch_bounds__(kBiasThreads)
    bias_grad_kernel(const scalar_t* __restrict__ grad, const scalar_t* __restrict__ output,
                     int64_t batch, int64_t height, int64_t width, int64_t g_n, int64_t g_c,
                     int64_t g_h, int64_t g_w, acc_t<scalar_t> slope,
                     scalar_t* __restrict__ grad_bias) {
  using acc = acc_t<scalar_t>;
  FASTGEN_SHARED(partial, acc[kBiasThreads]);
  const int64_t c = blockIdx.x;
  const int tid = threadIdx.x;
  const int64_t pixels = height * width;
  acc sum = acc(0);
  for (int64_t i = tid; i < batch * pixels; i += kBiasThreads) {
    const int64_t pixel = i % pixels;
    const int64_t off =
        (i / pixels) * g_n + c * g_c + (pixel / width) * g_h + (pixel % width) * g_w;
    sum += gathered<grad_act>(grad, output, off, slope);
  }
  partial[tid] = sum;
  __syncthreads();
  for (int stride = kBiasThreads / 2; stride > 0; stride /= 2) {
    if (tid < stride) partial[tid] = partial[tid] + partial[tid + stride];
    __syncthreads();
  }
  if (tid == 0) grad_bias[c] = static_cast<scalar_t>(partial[0]);
}

// --- launchers (host) -------------------------------------------------------------------------

namespace host {

// torch's TF32 switch for convolutions, asked for the convolution operator as aten's cuDNN
// convolution asks: torch.backends.cudnn.conv.fp32_precision ("tf32" / "ieee", torch >= 2.9)
// or the legacy torch.backends.cudnn.allow_tf32, whichever the user set. Without the operator
// torch raises once the two APIs disagree for conv and RNN ("a mix of the legacy and new
// APIs"). allowTF32CuDNN(Float32Op) exists in every torch pyproject.toml admits (>= 2.13), so
// no version guard.
inline bool tf32_allowed() {
  return at::globalContext().allowTF32CuDNN(at::Float32Op::CONV);
}

// Calls body.template operator()<scalar_t, Math>() for the dtype and torch's TF32 setting.
template <typename Body>
void dispatch_math(at::ScalarType dtype, Body&& body) {
  FASTGEN_DISPATCH_FLOATING_TYPES(dtype, "fastgen::implicit_gemm", [&] {
    if constexpr (std::is_same_v<scalar_t, c10::Half> || std::is_same_v<scalar_t, c10::BFloat16>) {
      body.template operator()<scalar_t, HalfMath>();
    } else if constexpr (std::is_same_v<scalar_t, float>) {
      if (tf32_allowed()) {
        body.template operator()<scalar_t, Tf32Math>();
      } else {
        body.template operator()<scalar_t, FmaMath>();
      }
    } else {
      body.template operator()<scalar_t, FmaMath>();
    }
  });
}

// transposed_op, here and in the launchers below: whether the op running is conv_transpose2d
// (else conv2d), for the errors' names; the data gradient of one runs the kernel of the other.
//
// A launch grid of the engine, checked against CUDA's limits (gridDim.x < 2^31, gridDim.y and
// gridDim.z <= 65535): a shape beyond them is an error naming the op and the way around it,
// not a refused launch naming a kernel (or, past 2^32, a silently wrapped count).
inline dim3 checked_grid(bool transposed_op, const char* what, int64_t x, int64_t y, int64_t z) {
  if (x <= parallel::kMaxGridX && y <= parallel::kMaxGridYZ && z <= parallel::kMaxGridYZ) {
    return dim3(unsigned(x), unsigned(y), unsigned(z));
  }
  TORCH_CHECK(false, transposed_op ? "fastgen::conv_transpose2d" : "fastgen::conv2d",
              ": this shape is too large for the implicit-GEMM engine: its ", what,
              " would need a grid of (", x, ", ", y, ", ", z,
              ") blocks, beyond CUDA's limits (x < 2^31, y and z <= 65535); set ",
              transposed_op ? "FASTGEN_CONV_TRANSPOSE" : "FASTGEN_CONV2D",
              "=cudnn to run it through cuDNN");
}
inline dim3 checked_grid(bool transposed_op, const char* what, int64_t x) {
  return checked_grid(transposed_op, what, x, 1, 1);
}

// The weight gradient's split-K plan for p (its sizes set): p.splits and p.k_per_split, and
// the grid (a-channel blocks, column blocks, splits). The reduction is split until the grid
// fills the GPU about four times, keeping at least eight k-tiles per split, the float
// workspace under 2^26 values and the splits within gridDim.z.
inline dim3 plan_weight_grad(bool transposed_op, WeightGradProblem& p, int multiprocessors) {
  const int64_t columns = int64_t(p.b_channels) * p.kernel_h * p.kernel_w;
  const int64_t k_count = int64_t(p.batch) * p.u_size * p.v_size;
  const int64_t m_blocks = (p.a_channels + kBlockM - 1) / kBlockM;
  const int64_t n_blocks = (columns + kBlockN - 1) / kBlockN;
  const int64_t target = 4 * int64_t(multiprocessors);
  const int64_t per_split_values = int64_t(p.a_channels) * columns;
  int64_t splits = std::max<int64_t>(1, target / std::max<int64_t>(1, m_blocks * n_blocks));
  splits = std::min(splits, std::max<int64_t>(1, k_count / (8 * kBlockK)));
  splits = std::min(
      splits, std::max<int64_t>(1, (int64_t(1) << 26) / std::max<int64_t>(1, per_split_values)));
  splits = std::min<int64_t>(splits, parallel::kMaxGridYZ);
  int64_t k_per_split = (k_count + splits - 1) / splits;
  k_per_split = (k_per_split + kBlockK - 1) / kBlockK * kBlockK;
  splits = std::max<int64_t>(1, (k_count + k_per_split - 1) / std::max<int64_t>(1, k_per_split));
  p.k_per_split = std::max<int64_t>(k_per_split, kBlockK);
  p.splits = splits;
  return checked_grid(transposed_op, "weight gradient", std::max<int64_t>(1, m_blocks),
                      std::max<int64_t>(1, n_blocks), splits);
}

// One output axis of a convolution (stride, padding, dilation): a single phase.
inline Axis conv_axis(int64_t out_size, int64_t kernel, int64_t stride, int64_t padding,
                      int64_t dilation) {
  return Axis{0,
              1,
              int32_t(out_size),
              0,
              1,
              int32_t(kernel),
              int32_t(stride),
              int32_t(-padding),
              int32_t(dilation),
              0};
}

// Phase r (output coordinates r, r + s, ...) of a transposed convolution's axis.
inline Axis transposed_axis(int64_t out_size, int64_t kernel, int64_t stride, int64_t padding,
                            int64_t r) {
  const int64_t count = r < out_size ? (out_size - r + stride - 1) / stride : 0;
  const int64_t tap0 = (r + padding) % stride;
  const int64_t taps = tap0 < kernel ? (kernel - tap0 + stride - 1) / stride : 0;
  const int64_t q = (r + padding - tap0) / stride;
  return Axis{int32_t(r),
              int32_t(stride),
              int32_t(count),
              int32_t(tap0),
              int32_t(stride),
              int32_t(taps),
              1,
              int32_t(q),
              -1,
              0};
}

// The phases of D = X (*) W: conv2d-shaped (one) or transposed (one per output residue, those
// with no output pixel left out).
inline std::vector<std::pair<Axis, Axis>> phases_of(bool transposed, std::array<int64_t, 2> out,
                                                    std::array<int64_t, 2> kernel,
                                                    std::array<int64_t, 2> stride,
                                                    std::array<int64_t, 2> padding,
                                                    std::array<int64_t, 2> dilation) {
  std::vector<std::pair<Axis, Axis>> phases;
  if (!transposed) {
    phases.emplace_back(conv_axis(out[0], kernel[0], stride[0], padding[0], dilation[0]),
                        conv_axis(out[1], kernel[1], stride[1], padding[1], dilation[1]));
    return phases;
  }
  for (int64_t ry = 0; ry < stride[0]; ++ry) {
    for (int64_t rx = 0; rx < stride[1]; ++rx) {
      const Axis y = transposed_axis(out[0], kernel[0], stride[0], padding[0], ry);
      const Axis x = transposed_axis(out[1], kernel[1], stride[1], padding[1], rx);
      if (y.count > 0 && x.count > 0) phases.emplace_back(y, x);
    }
  }
  return phases;
}

// D = act(X (*) W + bias) over `phases`, into `out` (allocated, any dense strides); X scaled
// by act'(x_output) as it is loaded when grad_activation is not identity; with `stats`, also
// the (count, mean, M2) partials of D per 64-row block and channel, merged into mean/var.
inline void run_conv(bool transposed_op, const at::Tensor& x, const at::Tensor& x_output,
                     Activation grad_activation, const at::Tensor& weight,
                     std::array<int64_t, 4> weight_strides, const at::Tensor& bias, at::Tensor& out,
                     const std::vector<std::pair<Axis, Axis>>& phases, Activation activation,
                     double negative_slope, at::Tensor* mean, at::Tensor* var) {
  TORCH_CHECK(phases.size() <= size_t(kMaxPhases), "fastgen: internal: too many phases");
  Problem p{};
  p.batch = int32_t(x.size(0)), p.channels = int32_t(x.size(1));
  p.height = int32_t(x.size(2)), p.width = int32_t(x.size(3));
  p.out_channels = int32_t(out.size(1));
  p.x_n = x.stride(0), p.x_c = x.stride(1), p.x_h = x.stride(2), p.x_w = x.stride(3);
  p.w_c = weight_strides[0], p.w_co = weight_strides[1];
  p.w_ky = weight_strides[2], p.w_kx = weight_strides[3];
  p.d_n = out.stride(0), p.d_c = out.stride(1), p.d_h = out.stride(2), p.d_w = out.stride(3);
  // Row blocks in int64 until checked: every phase's and their total (the statistics
  // partials' index) fit gridDim.x's 2^31 - 1, and so int32.
  int64_t blocks = 0, widest = 0;
  for (const auto& [y_axis, x_axis] : phases) {
    const int64_t rows = int64_t(p.batch) * y_axis.count * x_axis.count;
    widest = std::max(widest, (rows + kBlockM - 1) / kBlockM);
    blocks += (rows + kBlockM - 1) / kBlockM;
  }
  const int64_t n_blocks = (int64_t(p.out_channels) + kBlockN - 1) / kBlockN;
  const dim3 grid = checked_grid(transposed_op, "convolution kernel", std::max<int64_t>(1, widest),
                                 std::max<int64_t>(1, n_blocks), int64_t(phases.size()));
  checked_grid(transposed_op, "convolution kernel (all phases' row blocks)", blocks);
  blocks = 0;
  for (size_t i = 0; i < phases.size(); ++i) {
    Phase& ph = p.phase[i];
    ph.y = phases[i].first, ph.x = phases[i].second;
    const int64_t rows = int64_t(p.batch) * ph.y.count * ph.x.count;
    ph.m_blocks = int32_t((rows + kBlockM - 1) / kBlockM);
    ph.block_offset = int32_t(blocks);
    blocks += ph.m_blocks;
  }
  p.phases = int32_t(phases.size());
  p.total_m_blocks = int32_t(blocks);
  const auto acc_type = at::toOpMathType(out.scalar_type());
  at::Tensor partials;
  if (mean != nullptr) {
    partials = at::empty({3 * int64_t(blocks) * p.out_channels}, out.options().dtype(acc_type));
    *mean = at::empty({p.out_channels}, out.options().dtype(acc_type));
    *var = at::empty({p.out_channels}, out.options().dtype(acc_type));
  }
  if (blocks == 0 || p.out_channels == 0) {
    if (mean != nullptr) {
      mean->zero_();
      var->zero_();
    }
    return;
  }
  const simt::Stream stream = simt::current_stream();
  dispatch_math(out.scalar_type(), [&]<typename scalar_t, typename Math>() {
    using acc = acc_t<scalar_t>;
    const auto slope = static_cast<acc>(negative_slope);
    const scalar_t* bias_ptr = bias.defined() ? bias.const_data_ptr<scalar_t>() : nullptr;
    acc* stats = partials.defined() ? partials.mutable_data_ptr<acc>() : nullptr;
    const scalar_t* y =
        grad_activation != Activation::Identity ? x_output.const_data_ptr<scalar_t>() : nullptr;
    const auto go = [&]<Activation act, Activation grad_act>() {
      simt::launch<conv_kernel<scalar_t, Math, act, grad_act>>(
          {grid, dim3(kThreads), 0, stream}, x.const_data_ptr<scalar_t>(), y,
          weight.const_data_ptr<scalar_t>(), bias_ptr, out.mutable_data_ptr<scalar_t>(), stats, p,
          slope);
    };
    if (grad_activation != Activation::Identity) {
      TORCH_CHECK(activation == Activation::Identity, "fastgen: internal: act and act' together");
      dispatch_activation(grad_activation, [&]<Activation grad_act>() {
        go.template operator()<Activation::Identity, grad_act>();
      });
    } else {
      dispatch_activation(activation, [&]<Activation act>() {
        go.template operator()<act, Activation::Identity>();
      });
    }
    if (stats != nullptr) {
      simt::launch<finalize_stats_kernel<acc>>(
          {checked_grid(transposed_op, "statistics kernel", p.out_channels), dim3(kStatsThreads), 0,
           stream},
          stats, int64_t(blocks), int64_t(p.out_channels), mean->mutable_data_ptr<acc>(),
          var->mutable_data_ptr<acc>());
    }
  });
}

// grad_weight[a, b, ky, kx] (at g_strides) = sum P[n, a, u, v] Q[n, b, s u - p + d ky, ...];
// the gradient operand (P if p_is_grad, else Q) scaled by act'(grad_output) as it is loaded.
inline void run_weight_grad(bool transposed_op, const at::Tensor& p_t, const at::Tensor& q_t,
                            bool p_is_grad, const at::Tensor& grad_output,
                            Activation grad_activation, double negative_slope,
                            std::array<int64_t, 2> kernel, std::array<int64_t, 2> stride,
                            std::array<int64_t, 2> padding, std::array<int64_t, 2> dilation,
                            at::Tensor& grad_weight, std::array<int64_t, 4> g_strides) {
  WeightGradProblem p{};
  p.batch = int32_t(p_t.size(0)), p.a_channels = int32_t(p_t.size(1));
  p.b_channels = int32_t(q_t.size(1));
  p.u_size = int32_t(p_t.size(2)), p.v_size = int32_t(p_t.size(3));
  p.q_height = int32_t(q_t.size(2)), p.q_width = int32_t(q_t.size(3));
  p.kernel_h = int32_t(kernel[0]), p.kernel_w = int32_t(kernel[1]);
  p.stride_h = int32_t(stride[0]), p.stride_w = int32_t(stride[1]);
  p.pad_h = int32_t(padding[0]), p.pad_w = int32_t(padding[1]);
  p.dilation_h = int32_t(dilation[0]), p.dilation_w = int32_t(dilation[1]);
  p.p_n = p_t.stride(0), p.p_c = p_t.stride(1), p.p_h = p_t.stride(2), p.p_w = p_t.stride(3);
  p.q_n = q_t.stride(0), p.q_c = q_t.stride(1), p.q_h = q_t.stride(2), p.q_w = q_t.stride(3);
  const dim3 grid = plan_weight_grad(transposed_op, p, simt::multiprocessor_count());
  const int64_t k_count = int64_t(p.batch) * p.u_size * p.v_size;
  const int64_t splits = p.splits;
  const int64_t per_split_values = int64_t(p.a_channels) * p.b_channels * kernel[0] * kernel[1];
  if (grad_weight.numel() == 0) return;
  const simt::Stream stream = simt::current_stream();
  const auto acc_type = at::toOpMathType(grad_weight.scalar_type());
  at::Tensor work = at::empty({splits * per_split_values}, grad_weight.options().dtype(acc_type));
  dispatch_math(grad_weight.scalar_type(), [&]<typename scalar_t, typename Math>() {
    using acc = acc_t<scalar_t>;
    const auto slope = static_cast<acc>(negative_slope);
    const scalar_t* y =
        grad_activation != Activation::Identity ? grad_output.const_data_ptr<scalar_t>() : nullptr;
    if (k_count == 0) {
      work.zero_();
    } else {
      const simt::LaunchConfig config{grid, dim3(kThreads), 0, stream};
      dispatch_activation(grad_activation, [&]<Activation grad_act>() {
        if (p_is_grad) {
          simt::launch<weight_grad_kernel<scalar_t, Math, grad_act, true>>(
              config, p_t.const_data_ptr<scalar_t>(), q_t.const_data_ptr<scalar_t>(), y,
              work.mutable_data_ptr<acc>(), p, slope);
        } else {
          simt::launch<weight_grad_kernel<scalar_t, Math, grad_act, false>>(
              config, p_t.const_data_ptr<scalar_t>(), q_t.const_data_ptr<scalar_t>(), y,
              work.mutable_data_ptr<acc>(), p, slope);
        }
      });
    }
    const int64_t threads = 256;
    const int64_t reduce_blocks =
        std::max<int64_t>(1, std::min<int64_t>((per_split_values + threads - 1) / threads,
                                               32 * simt::multiprocessor_count()));
    simt::launch<sum_splits_kernel<scalar_t>>(
        {dim3(unsigned(reduce_blocks)), dim3(unsigned(threads)), 0, stream},
        work.const_data_ptr<acc>(), splits, int64_t(p.a_channels), int64_t(p.b_channels), kernel[0],
        kernel[1], g_strides[0], g_strides[1], g_strides[2], g_strides[3],
        grad_weight.mutable_data_ptr<scalar_t>());
  });
}

// sum over (n, h, w) of grad * act'(output); grad and output share their (dense) strides.
inline at::Tensor run_bias_grad(bool transposed_op, const at::Tensor& grad,
                                const at::Tensor& output, Activation grad_activation,
                                double negative_slope) {
  at::Tensor grad_bias = at::empty({grad.size(1)}, grad.options());
  if (grad.size(1) == 0) return grad_bias;
  const simt::Stream stream = simt::current_stream();
  FASTGEN_DISPATCH_FLOATING_TYPES(grad.scalar_type(), "fastgen::implicit_gemm_bias_grad", [&] {
    using acc = acc_t<scalar_t>;
    const scalar_t* y =
        grad_activation != Activation::Identity ? output.const_data_ptr<scalar_t>() : nullptr;
    dispatch_activation(grad_activation, [&]<Activation grad_act>() {
      simt::launch<bias_grad_kernel<scalar_t, grad_act>>(
          {checked_grid(transposed_op, "bias-gradient kernel", grad.size(1)), dim3(kBiasThreads), 0,
           stream},
          grad.const_data_ptr<scalar_t>(), y, grad.size(0), grad.size(2), grad.size(3),
          grad.stride(0), grad.stride(1), grad.stride(2), grad.stride(3),
          static_cast<acc>(negative_slope), grad_bias.mutable_data_ptr<scalar_t>());
    });
  });
  return grad_bias;
}

}  // namespace host

// The entry points of conv/conv_engine.h (defined, not inline: this header is compiled once
// per build, by implicit_gemm_cuda.cu or implicit_gemm_emulated.cpp).
at::Tensor forward(const at::Tensor& input, const at::Tensor& weight, const at::Tensor& bias,
                   const conv::Geometry& g, std::array<int64_t, 2> out_size, Activation activation,
                   double negative_slope, c10::MemoryFormat format, at::Tensor* mean,
                   at::Tensor* var) {
  const simt::DeviceGuard guard(input.device());
  const int64_t out_channels = g.transposed ? weight.size(1) : weight.size(0);
  at::Tensor out = at::empty({input.size(0), out_channels, out_size[0], out_size[1]},
                             input.options().memory_format(format));
  // The weight element (reduction channel, output channel, ky, kx): [C_in, C_out, kH, kW] for
  // a transposed convolution, [C_out, C_in, kH, kW] for conv2d.
  const std::array<int64_t, 4> w = g.transposed
                                       ? std::array<int64_t, 4>{weight.stride(0), weight.stride(1),
                                                                weight.stride(2), weight.stride(3)}
                                       : std::array<int64_t, 4>{weight.stride(1), weight.stride(0),
                                                                weight.stride(2), weight.stride(3)};
  const auto phases = host::phases_of(g.transposed, out_size, {weight.size(2), weight.size(3)},
                                      g.stride, g.padding, g.dilation);
  host::run_conv(g.transposed, input, at::Tensor(), Activation::Identity, weight, w, bias, out,
                 phases, activation, negative_slope, mean, var);
  return out;
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> backward(
    const at::Tensor& grad_out, const at::Tensor& input, const at::Tensor& weight,
    const at::Tensor& output, const conv::Geometry& g, Activation activation, double negative_slope,
    std::array<bool, 3> output_mask, c10::MemoryFormat format) {
  const simt::DeviceGuard guard(input.device());
  // grad_out and the saved output in one layout, so act'(y) pairs with grad_out element by
  // element (y is read only for a non-identity activation).
  const auto grad_format =
      grad_out.is_contiguous(c10::MemoryFormat::ChannelsLast) && !grad_out.is_contiguous()
          ? c10::MemoryFormat::ChannelsLast
          : c10::MemoryFormat::Contiguous;
  const at::Tensor grad = grad_out.contiguous(grad_format);
  const at::Tensor y =
      activation != Activation::Identity ? output.contiguous(grad_format) : at::Tensor();
  const std::array<int64_t, 2> kernel{weight.size(2), weight.size(3)};
  at::Tensor grad_input, grad_weight, grad_bias;
  if (output_mask[0]) {
    grad_input = at::empty(input.sizes(), input.options().memory_format(format));
    // conv_transpose2d's data gradient is conv2d of grad with the weight, and conv2d's is the
    // transposed convolution of grad: the weight's channel roles swap.
    const std::array<int64_t, 4> w =
        g.transposed ? std::array<int64_t, 4>{weight.stride(1), weight.stride(0), weight.stride(2),
                                              weight.stride(3)}
                     : std::array<int64_t, 4>{weight.stride(0), weight.stride(1), weight.stride(2),
                                              weight.stride(3)};
    const auto phases = host::phases_of(!g.transposed, {input.size(2), input.size(3)}, kernel,
                                        g.stride, g.padding, g.dilation);
    host::run_conv(g.transposed, grad, y, activation, weight, w, at::Tensor(), grad_input, phases,
                   Activation::Identity, negative_slope, nullptr, nullptr);
  }
  if (output_mask[1]) {
    grad_weight = at::empty(weight.sizes(), weight.options().memory_format(format));
    const std::array<int64_t, 4> gw{grad_weight.stride(0), grad_weight.stride(1),
                                    grad_weight.stride(2), grad_weight.stride(3)};
    if (g.transposed) {  // dW[ci, co] = sum X[ci] * G[co] at s u - p + ky
      host::run_weight_grad(g.transposed, input, grad, /*p_is_grad=*/false, y, activation,
                            negative_slope, kernel, g.stride, g.padding, g.dilation, grad_weight,
                            gw);
    } else {  // dW[co, ci] = sum G[co] * X[ci] at s u - p + d ky
      host::run_weight_grad(g.transposed, grad, input, /*p_is_grad=*/true, y, activation,
                            negative_slope, kernel, g.stride, g.padding, g.dilation, grad_weight,
                            gw);
    }
  }
  if (output_mask[2])
    grad_bias = host::run_bias_grad(g.transposed, grad, y, activation, negative_slope);
  return {grad_input, grad_weight, grad_bias};
}

std::array<int64_t, 4> weight_grad_launch(bool transposed_op, std::array<int64_t, 4> p_sizes,
                                          int64_t b_channels, std::array<int64_t, 2> kernel) {
  WeightGradProblem p{};
  p.batch = int32_t(p_sizes[0]), p.a_channels = int32_t(p_sizes[1]);
  p.u_size = int32_t(p_sizes[2]), p.v_size = int32_t(p_sizes[3]);
  p.b_channels = int32_t(b_channels);
  p.kernel_h = int32_t(kernel[0]), p.kernel_w = int32_t(kernel[1]);
  const dim3 grid = host::plan_weight_grad(transposed_op, p, simt::multiprocessor_count());
  return {grid.x, grid.y, grid.z, p.k_per_split};
}

}  // namespace fastgen::FASTGEN_DEVICE_NS::implicit_gemm
