// Device-independent half of fastgen::conv2d: the backend's convolution (forward and
// backward) around the backend's fused epilogues (bias + activation forward, activation
// derivative backward), and the aten convolution every backend falls back to.

#include "conv2d/conv2d.h"

#include <ATen/ATen.h>

#include "common/checks.h"

namespace fastgen {

Conv2dParams make_conv2d_params(at::IntArrayRef stride, at::IntArrayRef padding,
                                at::IntArrayRef dilation, int64_t groups,
                                std::string_view activation, double negative_slope) {
  return Conv2dParams{as_pair(stride, "fastgen::conv2d", "stride"),
                      as_pair(padding, "fastgen::conv2d", "padding"),
                      as_pair(dilation, "fastgen::conv2d", "dilation"),
                      groups,
                      parse_activation(activation),
                      negative_slope};
}

at::Tensor conv2d_convolution_aten(const at::Tensor& input, const at::Tensor& weight,
                                   const Conv2dParams& params) {
  return at::conv2d(input, weight, std::nullopt, params.stride, params.padding, params.dilation,
                    params.groups);
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> conv2d_convolution_backward_aten(
    const at::Tensor& grad_pre, const at::Tensor& input, const at::Tensor& weight,
    const Conv2dParams& params, std::array<bool, 3> output_mask) {
  const int64_t out_channels = weight.size(0);
  return at::convolution_backward(grad_pre, input, weight, at::IntArrayRef{out_channels},
                                  params.stride, params.padding, params.dilation,
                                  /*transposed=*/false, /*output_padding=*/{0, 0}, params.groups,
                                  output_mask);
}

namespace {

// What every call checks before touching memory (common/checks.h); returns the output's
// [N, C_out, H_out, W_out].
std::array<int64_t, 4> check_conv2d(const char* op, const at::Tensor& input,
                                    const at::Tensor& weight, const Conv2dParams& params) {
  checks::conv_operands(op, input, weight, params.groups, " [C_out, C_in / groups, kH, kW]");
  TORCH_CHECK_VALUE(weight.size(1) * params.groups == input.size(1), op, ": weight has ",
                    weight.size(1), " input channels per group but input has ", input.size(1),
                    " channels (groups=", params.groups, ")");
  TORCH_CHECK_VALUE(weight.size(0) % params.groups == 0, op, ": weight's output channels (",
                    weight.size(0), ") must be divisible by groups (", params.groups, ")");
  checks::pair(op, "stride", params.stride, 1);
  checks::pair(op, "padding", params.padding, 0);
  checks::pair(op, "dilation", params.dilation, 1);
  std::array<int64_t, 4> out{input.size(0), weight.size(0), 0, 0};
  for (int d = 0; d < 2; ++d) {
    out[2 + d] = (input.size(2 + d) + 2 * params.padding[d] -
                  params.dilation[d] * (weight.size(2 + d) - 1) - 1) /
                     params.stride[d] +
                 1;
  }
  TORCH_CHECK_VALUE(out[2] >= 1 && out[3] >= 1, op, ": output size (", out[2], ", ", out[3],
                    ") is below 1 for input ", input.sizes(), " and weight ", weight.sizes());
  return out;
}

conv::Geometry geometry_of(const Conv2dParams& params) {
  return {false, params.stride, params.padding, {0, 0}, params.dilation, params.groups};
}

}  // namespace

at::Tensor conv2d_forward(const at::Tensor& input, const at::Tensor& weight,
                          const std::optional<at::Tensor>& bias, const Conv2dParams& params,
                          const Conv2dKernels& kernels) {
  const auto shape = check_conv2d("fastgen::conv2d", input, weight, params);
  if (bias.has_value() && bias->defined()) {
    checks::like("fastgen::conv2d", "bias", *bias, "input", input, at::IntArrayRef{weight.size(0)});
  }
  if (auto out =
          conv::engine_forward(kernels.epilogues, geometry_of(params), input, weight, bias,
                               {shape[2], shape[3]}, params.activation, params.negative_slope)) {
    return *out;
  }
  // No bias in the convolution: it is added in the epilogue together with the activation,
  // so the output is touched once after the GEMMs instead of twice.
  return conv::finish_forward(kernels.epilogues, kernels.convolution(input, weight, params), bias,
                              conv_format(input, weight), params.activation, params.negative_slope);
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> conv2d_backward(
    const at::Tensor& grad_out, const at::Tensor& input, const at::Tensor& weight,
    const at::Tensor& output, const Conv2dParams& params, std::array<bool, 3> output_mask,
    const Conv2dKernels& kernels) {
  constexpr const char* op = "fastgen::conv2d_backward";
  const auto out = check_conv2d(op, input, weight, params);
  auto start =
      conv::start_backward(op, kernels.epilogues, geometry_of(params), grad_out, input, weight,
                           output, out, params.activation, params.negative_slope, output_mask);
  if (start.engine_grads) return *start.engine_grads;
  const at::Tensor& grad_pre = start.grad_pre;
  return conv::finish_backward(
      kernels.convolution_backward(grad_pre, input, weight, params, output_mask), grad_pre,
      output_mask, conv_format(input, weight));
}

}  // namespace fastgen
