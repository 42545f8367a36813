// Device-independent half of fastgen::conv2d: its argument checks before the shared driver
// (conv::forward / conv::backward, conv/conv_common.cpp), and the aten convolution every
// backend falls back to.

#include "conv2d/conv2d.h"

#include <ATen/ATen.h>

#include "common/checks.h"

namespace fastgen {

at::Tensor conv2d_convolution_aten(const at::Tensor& input, const at::Tensor& weight,
                                   const conv::Geometry& geometry) {
  return at::conv2d(input, weight, std::nullopt, geometry.stride, geometry.padding,
                    geometry.dilation, geometry.groups);
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> conv2d_convolution_backward_aten(
    const at::Tensor& grad_pre, const at::Tensor& input, const at::Tensor& weight,
    const conv::Geometry& geometry, std::array<bool, 3> output_mask) {
  const int64_t out_channels = weight.size(0);
  return at::convolution_backward(grad_pre, input, weight, at::IntArrayRef{out_channels},
                                  geometry.stride, geometry.padding, geometry.dilation,
                                  /*transposed=*/false, /*output_padding=*/{0, 0}, geometry.groups,
                                  output_mask);
}

namespace {

// What every call checks before touching memory (common/checks.h); returns the output's
// [N, C_out, H_out, W_out].
std::array<int64_t, 4> check_conv2d(const char* op, const at::Tensor& input,
                                    const at::Tensor& weight, const conv::Geometry& geometry) {
  const int64_t groups = geometry.groups;
  checks::conv_operands(op, input, weight, groups, " [C_out, C_in / groups, kH, kW]");
  TORCH_CHECK_VALUE(weight.size(1) * groups == input.size(1), op, ": weight has ", weight.size(1),
                    " input channels per group but input has ", input.size(1),
                    " channels (groups=", groups, ")");
  TORCH_CHECK_VALUE(weight.size(0) % groups == 0, op, ": weight's output channels (",
                    weight.size(0), ") must be divisible by groups (", groups, ")");
  checks::pair(op, "stride", geometry.stride, 1);
  checks::pair(op, "padding", geometry.padding, 0);
  checks::pair(op, "dilation", geometry.dilation, 1);
  std::array<int64_t, 4> out{input.size(0), weight.size(0), 0, 0};
  for (int d = 0; d < 2; ++d) {
    out[2 + d] = (input.size(2 + d) + 2 * geometry.padding[d] -
                  geometry.dilation[d] * (weight.size(2 + d) - 1) - 1) /
                     geometry.stride[d] +
                 1;
  }
  TORCH_CHECK_VALUE(out[2] >= 1 && out[3] >= 1, op, ": output size (", out[2], ", ", out[3],
                    ") is below 1 for input ", input.sizes(), " and weight ", weight.sizes());
  return out;
}

}  // namespace

at::Tensor conv2d_forward(const at::Tensor& input, const at::Tensor& weight,
                          const std::optional<at::Tensor>& bias, const conv::Params& params,
                          const conv::Kernels& kernels) {
  const auto shape = check_conv2d(kConv2d, input, weight, params.geometry);
  return conv::forward(kConv2d, kernels, params, input, weight, bias, shape);
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> conv2d_backward(
    const at::Tensor& grad_out, const at::Tensor& input, const at::Tensor& weight,
    const at::Tensor& output, const conv::Params& params, std::array<bool, 3> output_mask,
    const conv::Kernels& kernels) {
  constexpr const char* op = "fastgen::conv2d_backward";
  const auto shape = check_conv2d(op, input, weight, params.geometry);
  return conv::backward(op, kernels, params, grad_out, input, weight, output, shape, output_mask);
}

}  // namespace fastgen
