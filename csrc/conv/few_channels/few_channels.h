#pragma once
// Convolutions with an image on one side, on CPU: a conv2d FROM a few channels (a
// discriminator's or encoder's first layer, 1 or 3 channels in) and a conv_transpose2d TO a
// few channels (a generator's or decoder's output layer), with their backward.
//
// Why fastgen has its own: oneDNN vectorizes a convolution along its channels, and one side
// has 1-4 of them. Measured on the main job's layers (AMD EPYC Zen 4, 1 thread, torch
// 2.13.0+cpu, bfloat16 channels_last, batch 64): the generator's 32 -> 1 channel output layer
// (16x16 -> 32x32) took 1.5 ms in aten for 17 MFLOP (~11 GFLOP/s), where the same CPU runs
// aten's bfloat16 convolutions of the middle layers at 300-480 GFLOP/s.
//
// The math, with the "many" side M (C channels; the conv2d's output or the conv_transpose2d's
// input) and the image side I (S <= kMaxImageChannels channels): many pixel (i, j) meets image
// pixel (i * stride - padding + kh * dilation, j * stride - padding + kw * dilation) through
// weight[c, s, kh, kw] (conv2d [C_out, C_in = S, kH, kW] and conv_transpose2d
// [C_in, C_out = S, kH, kW] name the same thing). Three passes compute every direction:
//   gather:      M[n, c, i, j] = sum_{s, kh, kw} I[n, s, y, x] * weight[c, s, kh, kw]
//                (conv2d forward; conv_transpose2d's data gradient);
//   scatter:     I[n, s, y, x] = sum over (i, j, kh, kw) meeting (y, x) of
//                sum_c M[n, c, i, j] * weight[c, s, kh, kw]
//                (conv_transpose2d forward; conv2d's data gradient);
//   weight_grad: dweight[c, s, kh, kw] = sum_{n, i, j} M[n, c, i, j] * I[n, s, y, x].
// Image pixels outside the image count as zero. gather and weight_grad are one GEMM each
// (at::mm in the call's dtype: bfloat16 products summed in float32) of the image's patches, a
// [N * Hm * Wm, S * kH * kW] matrix, with the weight or the many side read in place (its
// channels run innermost); scatter, whose sums overlap, is a loop of our own with float32 sums
// (float64 for float64). groups 1 only. conv/conv_select_cpu.h measures each pass against
// aten's per shape.
//
// Non-finite values: aten skips the taps outside the image, where the GEMMs multiply a zero, so
// 0 * Inf there would make a NaN that aten's result does not have. A gather whose weight is not
// all finite, and a weight gradient that comes out not finite, are taken from aten's
// convolution instead (the values decide, as Winograd's range check does).

#include <ATen/core/Tensor.h>

#include <array>
#include <cstdint>
#include <optional>

#include "conv/conv_engine.h"
#include "conv/conv_select_cpu.h"

namespace fastgen::few_channels {

// The most channels the image side may have (RGBA); the many side must have more.
constexpr int64_t kMaxImageChannels = 4;
// The loops' vector block: packed weights pad the dimension they run along to a multiple.
constexpr int64_t kLanes = 16;

// Both sides' sizes and how they meet.
struct Shape {
  int64_t batch = 0, channels = 0, image_channels = 0;
  int64_t many_height = 0, many_width = 0, image_height = 0, image_width = 0;
  std::array<int64_t, 2> kernel{}, stride{}, padding{}, dilation{};
  // The taps of one many pixel: (kh, kw, s) flattened in that order.
  int64_t taps() const { return kernel[0] * kernel[1] * image_channels; }
};

inline int64_t padded(int64_t n) {
  return (n + kLanes - 1) / kLanes * kLanes;
}

// The convolution without bias, and its backward ((grad_input, grad_weight, undefined): the
// drivers sum grad_bias), or nullopt where the call has no image side these kernels take (CPU,
// one of the four floating dtypes for both operands, groups 1, weight.size(1) <=
// kMaxImageChannels and < weight.size(0), no empty tensor). Native candidates of
// conv/conv_select_cpu.h: operands in their own dtype, `operands` unused; results
// channels_last (the drivers lay them out as the op's layout rule says).
conv::select::ForwardCandidate forward;
conv::select::BackwardCandidate backward;

// The loops, one copy per CPU capability (few_channels_kernels.cpp). Tensors dense and
// channels-innermost: many [N, Hm, Wm, C] and image [N, Hi, Wi, S], in the call's dtype.
//   scatter: the image from the many side; `weight` packed [C, padded(taps)] in the sums'
//     dtype (float32, or float64), zero where padded.
//   patches: the image's taps of every many pixel, out [N * Hm * Wm, taps] in its dtype.
#define FASTGEN_FEW_CHANNELS_KERNELS(ns)                                                  \
  namespace ns {                                                                          \
  void scatter(const at::Tensor& many, const at::Tensor& weight, const at::Tensor& image, \
               const Shape& shape);                                                       \
  void patches(const at::Tensor& image, const at::Tensor& out, const Shape& shape);       \
  }
FASTGEN_FEW_CHANNELS_KERNELS(baseline)
FASTGEN_FEW_CHANNELS_KERNELS(avx2)
FASTGEN_FEW_CHANNELS_KERNELS(avx512)
#undef FASTGEN_FEW_CHANNELS_KERNELS

}  // namespace fastgen::few_channels
