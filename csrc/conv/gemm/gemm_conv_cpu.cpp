// Convolutions done as GEMMs on CPU; see gemm_conv_cpu.h for which and why.

#include "conv/gemm/gemm_conv_cpu.h"

#include "common/checks.h"
#include "conv/conv_common.h"

#include <ATen/ATen.h>

namespace fastgen::gemm_shapes {

namespace {

bool cpu_floating(const at::Tensor& input, const at::Tensor& weight) {
  return input.is_cpu() && checks::is_floating(input) &&
         weight.scalar_type() == input.scalar_type() && input.numel() > 0;
}

constexpr std::array<int64_t, 2> kZero{0, 0}, kOne{1, 1};

// Whether t is dense channels_last and not plainly contiguous: each sample's values then run
// (h, w, c), and a GEMM over them in that order reads t in place.
bool channels_innermost(const at::Tensor& t) {
  return !t.is_contiguous() && t.is_contiguous(c10::MemoryFormat::ChannelsLast);
}

// [R, C, H, W] as a matrix [R, C * H * W], columns in (h, w, c) order if `hwc` else (c, h, w):
// a view where t is dense in that order.
at::Tensor as_rows(const at::Tensor& t, bool hwc) {
  return (hwc ? t.permute({0, 2, 3, 1}) : t).reshape({t.size(0), -1});
}

// The reverse: a [R, C * H * W] matrix as [R, C, H, W] (channels_last strides if `hwc`).
at::Tensor from_rows(const at::Tensor& m, at::IntArrayRef sizes, bool hwc) {
  return hwc ? m.view({sizes[0], sizes[2], sizes[3], sizes[1]}).permute({0, 3, 1, 2})
             : m.view(sizes);
}

bool is_transposed_single_pixel(const at::Tensor& input, const at::Tensor& weight,
                                std::array<int64_t, 2> padding,
                                std::array<int64_t, 2> output_padding,
                                std::array<int64_t, 2> dilation, int64_t groups) {
  return cpu_floating(input, weight) && input.size(2) == 1 && input.size(3) == 1 && groups == 1 &&
         padding == kZero && output_padding == kZero && dilation == kOne;
}

bool is_single_pixel_output(const at::Tensor& input, const at::Tensor& weight,
                            std::array<int64_t, 2> padding, std::array<int64_t, 2> dilation,
                            int64_t groups) {
  return cpu_floating(input, weight) && groups == 1 && padding == kZero && dilation == kOne &&
         input.size(2) == weight.size(2) && input.size(3) == weight.size(3);
}

// input [N, C_in, 1, 1], weight [C_in, C_out, kH, kW] -> [N, C_out, kH, kW], written
// channels_last if `channels_last` (the op's layout rule for the call) else NCHW.
at::Tensor transposed_single_pixel(const at::Tensor& input, const at::Tensor& weight,
                                   bool channels_last) {
  const at::Tensor x = input.reshape({input.size(0), input.size(1)});
  const auto out_sizes = {input.size(0), weight.size(1), weight.size(2), weight.size(3)};
  return from_rows(at::mm(x, as_rows(weight, channels_last)), out_sizes, channels_last);
}

// (grad_input, grad_weight); undefined where the mask is false.
std::tuple<at::Tensor, at::Tensor> transposed_single_pixel_backward(const at::Tensor& grad_out,
                                                                    const at::Tensor& input,
                                                                    const at::Tensor& weight,
                                                                    std::array<bool, 2> mask) {
  const bool hwc = channels_innermost(grad_out);
  const at::Tensor grad = as_rows(grad_out, hwc);  // [N, C_out * kH * kW]
  at::Tensor grad_input, grad_weight;
  if (mask[0]) grad_input = at::mm(grad, as_rows(weight, hwc).t()).view(input.sizes());
  if (mask[1]) {
    const at::Tensor x = input.reshape({input.size(0), input.size(1)});
    grad_weight = from_rows(at::mm(x.t(), grad), weight.sizes(), hwc);
  }
  return {grad_input, grad_weight};
}

// input [N, C_in, kH, kW], weight [C_out, C_in, kH, kW] -> [N, C_out, 1, 1].
at::Tensor single_pixel_output(const at::Tensor& input, const at::Tensor& weight) {
  const bool hwc = channels_innermost(input);
  return at::mm(as_rows(input, hwc), as_rows(weight, hwc).t())
      .view({input.size(0), weight.size(0), 1, 1});
}

std::tuple<at::Tensor, at::Tensor> single_pixel_output_backward(const at::Tensor& grad_out,
                                                                const at::Tensor& input,
                                                                const at::Tensor& weight,
                                                                std::array<bool, 2> mask) {
  const bool hwc = channels_innermost(input);
  const at::Tensor grad = grad_out.reshape({grad_out.size(0), grad_out.size(1)});  // [N, C_out]
  at::Tensor grad_input, grad_weight;
  if (mask[0]) grad_input = from_rows(at::mm(grad, as_rows(weight, hwc)), input.sizes(), hwc);
  if (mask[1]) grad_weight = from_rows(at::mm(grad.t(), as_rows(input, hwc)), weight.sizes(), hwc);
  return {grad_input, grad_weight};
}

}  // namespace

std::optional<at::Tensor> forward(const at::Tensor& input, const at::Tensor& weight,
                                  const conv::Geometry& geometry, at::ScalarType) {
  if (geometry.transposed) {
    if (!is_transposed_single_pixel(input, weight, geometry.padding, geometry.output_padding,
                                    geometry.dilation, geometry.groups)) {
      return std::nullopt;
    }
    return transposed_single_pixel(input, weight,
                                   conv_format(input, weight) == c10::MemoryFormat::ChannelsLast);
  }
  if (!is_single_pixel_output(input, weight, geometry.padding, geometry.dilation,
                              geometry.groups)) {
    return std::nullopt;
  }
  return single_pixel_output(input, weight);
}

std::optional<conv::select::Grads> backward(const at::Tensor& grad_out, const at::Tensor& input,
                                            const at::Tensor& weight,
                                            const conv::Geometry& geometry,
                                            std::array<bool, 3> output_mask, at::ScalarType) {
  const std::array<bool, 2> mask{output_mask[0], output_mask[1]};
  at::Tensor grad_input, grad_weight;
  if (geometry.transposed &&
      is_transposed_single_pixel(input, weight, geometry.padding, geometry.output_padding,
                                 geometry.dilation, geometry.groups)) {
    std::tie(grad_input, grad_weight) =
        transposed_single_pixel_backward(grad_out, input, weight, mask);
  } else if (!geometry.transposed && is_single_pixel_output(input, weight, geometry.padding,
                                                            geometry.dilation, geometry.groups)) {
    std::tie(grad_input, grad_weight) = single_pixel_output_backward(grad_out, input, weight, mask);
  } else {
    return std::nullopt;
  }
  return conv::select::Grads{grad_input, grad_weight, at::Tensor()};
}

}  // namespace fastgen::gemm_shapes
