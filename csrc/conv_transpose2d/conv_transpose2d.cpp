// Device-independent half of fastgen::conv_transpose2d: its argument checks before the shared
// driver (conv::forward / conv::backward, conv/conv_common.cpp), the batch-statistics variant,
// and the aten convolution every backend falls back to (which picks oneDNN / cuDNN / native
// kernels).

#include "conv_transpose2d/conv_transpose2d.h"

#include <ATen/ATen.h>
#include <ATen/OpMathType.h>

#include "common/checks.h"

namespace fastgen {

at::Tensor conv_transpose2d_convolution_aten(const at::Tensor& input, const at::Tensor& weight,
                                             const conv::Geometry& geometry) {
  return at::conv_transpose2d(input, weight, std::nullopt, geometry.stride, geometry.padding,
                              geometry.output_padding, geometry.groups, geometry.dilation);
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> conv_transpose2d_convolution_backward_aten(
    const at::Tensor& grad_pre, const at::Tensor& input, const at::Tensor& weight,
    const conv::Geometry& geometry, std::array<bool, 3> output_mask) {
  const int64_t out_channels = weight.size(1) * geometry.groups;
  return at::convolution_backward(grad_pre, input, weight, at::IntArrayRef{out_channels},
                                  geometry.stride, geometry.padding, geometry.dilation,
                                  /*transposed=*/true, geometry.output_padding, geometry.groups,
                                  output_mask);
}

namespace {

// What every call checks before touching memory (common/checks.h); returns the output's
// [N, C_out, H_out, W_out].
std::array<int64_t, 4> check_conv_transpose2d(const char* op, const at::Tensor& input,
                                              const at::Tensor& weight,
                                              const conv::Geometry& geometry) {
  const int64_t groups = geometry.groups;
  checks::conv_operands(op, input, weight, groups, " [C_in, C_out / groups, kH, kW]");
  TORCH_CHECK_VALUE(weight.size(0) == input.size(1), op, ": weight has ", weight.size(0),
                    " input channels but input has ", input.size(1));
  TORCH_CHECK_VALUE(input.size(1) % groups == 0, op, ": input channels (", input.size(1),
                    ") must be divisible by groups (", groups, ")");
  checks::pair(op, "stride", geometry.stride, 1);
  checks::pair(op, "padding", geometry.padding, 0);
  checks::pair(op, "output_padding", geometry.output_padding, 0);
  checks::pair(op, "dilation", geometry.dilation, 1);
  std::array<int64_t, 4> out{input.size(0), weight.size(1) * groups, 0, 0};
  for (int d = 0; d < 2; ++d) {
    TORCH_CHECK_VALUE(
        geometry.output_padding[d] < std::max(geometry.stride[d], geometry.dilation[d]), op,
        ": output_padding must be smaller than stride or dilation, got output_padding=",
        at::IntArrayRef(geometry.output_padding), ", stride=", at::IntArrayRef(geometry.stride),
        ", dilation=", at::IntArrayRef(geometry.dilation));
    out[2 + d] = conv_transpose2d_output_size(input, weight, geometry, d);
  }
  TORCH_CHECK_VALUE(out[2] >= 1 && out[3] >= 1, op, ": output size (", out[2], ", ", out[3],
                    ") is below 1 for input ", input.sizes(), " and weight ", weight.sizes());
  return out;
}

}  // namespace

at::Tensor conv_transpose2d_forward(const at::Tensor& input, const at::Tensor& weight,
                                    const std::optional<at::Tensor>& bias,
                                    const conv::Params& params, const conv::Kernels& kernels) {
  const auto shape = check_conv_transpose2d(kConvTranspose2d, input, weight, params.geometry);
  return conv::forward(kConvTranspose2d, kernels, params, input, weight, bias, shape);
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> conv_transpose2d_backward(
    const at::Tensor& grad_out, const at::Tensor& input, const at::Tensor& weight,
    const at::Tensor& output, const conv::Params& params, std::array<bool, 3> output_mask,
    const conv::Kernels& kernels) {
  constexpr const char* op = "fastgen::conv_transpose2d_backward";
  const auto shape = check_conv_transpose2d(op, input, weight, params.geometry);
  return conv::backward(op, kernels, params, grad_out, input, weight, output, shape, output_mask);
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> conv_transpose2d_with_stats(
    const at::Tensor& input, const at::Tensor& weight, const std::optional<at::Tensor>& bias,
    const conv::Params& params, const conv::Kernels& kernels) {
  constexpr const char* op = "fastgen::conv_transpose2d_with_stats";
  const auto shape = check_conv_transpose2d(op, input, weight, params.geometry);
  if (bias.has_value() && bias->defined()) {
    checks::like(op, "bias", *bias, "input", input, at::IntArrayRef{shape[1]});
  }
  TORCH_CHECK_VALUE(shape[0] * shape[2] * shape[3] > 0, op,
                    ": batch statistics need at least one value per channel, got output of size ",
                    at::IntArrayRef(shape));
  at::Tensor mean, var;
  if (auto out =
          conv::engine_forward(kernels.epilogues, params.geometry, input, weight, bias,
                               {shape[2], shape[3]}, Activation::Identity, 0.0, &mean, &var)) {
    return {*out, mean, var};
  }
  conv::Params plain = params;
  plain.activation = Activation::Identity;
  at::Tensor out = conv_transpose2d_forward(input, weight, bias, plain, kernels);
  std::tie(var, mean) = at::var_mean(out.to(at::toOpMathType(out.scalar_type())), {0, 2, 3},
                                     /*correction=*/0, /*keepdim=*/false);
  return {out, mean, var};
}

}  // namespace fastgen
