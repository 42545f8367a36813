// Device-independent half of fastgen::conv_transpose2d: the transposed convolution and its
// gradients come from public aten ops (which pick oneDNN / cuDNN / native kernels); the
// caller supplies the device's fused epilogues (bias + activation forward, activation
// derivative backward).

#include "conv_transpose2d/conv_transpose2d.h"

#include <ATen/ATen.h>
#include <ATen/OpMathType.h>

#include "common/checks.h"

#include <tuple>

#include "common/gemm_conv_cpu.h"
#include "winograd/winograd_cpu.h"

namespace fastgen {

constexpr const char* kOp = "fastgen::conv_transpose2d";

ConvTranspose2dParams make_conv_transpose2d_params(at::IntArrayRef stride, at::IntArrayRef padding,
                                                   at::IntArrayRef output_padding, int64_t groups,
                                                   at::IntArrayRef dilation,
                                                   std::string_view activation,
                                                   double negative_slope) {
  return ConvTranspose2dParams{as_pair(stride, kOp, "stride"),
                               as_pair(padding, kOp, "padding"),
                               as_pair(output_padding, kOp, "output_padding"),
                               as_pair(dilation, kOp, "dilation"),
                               groups,
                               parse_activation(activation),
                               negative_slope};
}

namespace {

// What every call checks before touching memory (common/checks.h); returns the output's
// [N, C_out, H_out, W_out].
std::array<int64_t, 4> check_conv_transpose2d(const char* op, const at::Tensor& input,
                                              const at::Tensor& weight,
                                              const ConvTranspose2dParams& params) {
  checks::conv_operands(op, input, weight, params.groups, " [C_in, C_out / groups, kH, kW]");
  TORCH_CHECK_VALUE(weight.size(0) == input.size(1), op, ": weight has ", weight.size(0),
                    " input channels but input has ", input.size(1));
  TORCH_CHECK_VALUE(input.size(1) % params.groups == 0, op, ": input channels (", input.size(1),
                    ") must be divisible by groups (", params.groups, ")");
  checks::pair(op, "stride", params.stride, 1);
  checks::pair(op, "padding", params.padding, 0);
  checks::pair(op, "output_padding", params.output_padding, 0);
  checks::pair(op, "dilation", params.dilation, 1);
  std::array<int64_t, 4> out{input.size(0), weight.size(1) * params.groups, 0, 0};
  for (int d = 0; d < 2; ++d) {
    TORCH_CHECK_VALUE(
        params.output_padding[d] < std::max(params.stride[d], params.dilation[d]), op,
        ": output_padding must be smaller than stride or dilation, got output_padding=",
        at::IntArrayRef(params.output_padding), ", stride=", at::IntArrayRef(params.stride),
        ", dilation=", at::IntArrayRef(params.dilation));
    out[2 + d] = (input.size(2 + d) - 1) * params.stride[d] - 2 * params.padding[d] +
                 params.dilation[d] * (weight.size(2 + d) - 1) + params.output_padding[d] + 1;
  }
  TORCH_CHECK_VALUE(out[2] >= 1 && out[3] >= 1, op, ": output size (", out[2], ", ", out[3],
                    ") is below 1 for input ", input.sizes(), " and weight ", weight.sizes());
  return out;
}

conv::Geometry geometry_of(const ConvTranspose2dParams& params) {
  return {true,         params.stride, params.padding, params.output_padding, params.dilation,
          params.groups};
}

}  // namespace

at::Tensor conv_transpose2d_forward(const at::Tensor& input, const at::Tensor& weight,
                                    const std::optional<at::Tensor>& bias,
                                    const ConvTranspose2dParams& params,
                                    const ConvTranspose2dEpilogues& epilogues) {
  const auto shape = check_conv_transpose2d("fastgen::conv_transpose2d", input, weight, params);
  if (bias.has_value() && bias->defined()) {
    checks::like("fastgen::conv_transpose2d", "bias", *bias, "input", input,
                 at::IntArrayRef{shape[1]});
  }
  if (auto out =
          conv::engine_forward(epilogues, geometry_of(params), input, weight, bias,
                               {shape[2], shape[3]}, params.activation, params.negative_slope)) {
    return *out;
  }
  // No bias in the convolution: it is added in the epilogue together with the activation,
  // so the output is touched once after the GEMMs instead of twice.
  // On CPU, 4x4 stride-2 layers (the DCGAN generator's) take the Winograd kernels, and a
  // few shapes are plain GEMMs (common/gemm_conv_cpu.h); everything else, and every CUDA
  // call (and its emulation), the aten convolution.
  at::Tensor out;
  const bool cpu = epilogues.cpu_convolutions;
  if (cpu &&
      winograd::eligible(input, weight, params.stride, params.padding, params.output_padding,
                         params.dilation, params.groups, /*transposed=*/true) &&
      winograd::values_in_range(input, weight)) {
    out = winograd::conv_transpose2d(input, weight);
  } else if (cpu && is_transposed_single_pixel(input, weight, params.padding, params.output_padding,
                                               params.dilation, params.groups)) {
    out = transposed_single_pixel(input, weight);
  } else if (cpu && is_transposed_to_one_channel(input, weight, params.groups) &&
             params.output_padding == std::array<int64_t, 2>{0, 0}) {
    std::array<int64_t, 2> size;
    for (int d = 0; d < 2; ++d) {
      size[d] = (input.size(2 + d) - 1) * params.stride[d] - 2 * params.padding[d] +
                params.dilation[d] * (weight.size(2 + d) - 1) + params.output_padding[d] + 1;
    }
    out = transposed_by_col2im(input, weight, size, params.stride, params.padding, params.dilation);
  } else {
    out = at::conv_transpose2d(input, weight, std::nullopt, params.stride, params.padding,
                               params.output_padding, params.groups, params.dilation);
  }
  return conv::finish_forward(epilogues, out, bias, conv_format(input, weight), params.activation,
                              params.negative_slope);
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> conv_transpose2d_backward(
    const at::Tensor& grad_out, const at::Tensor& input, const at::Tensor& weight,
    const at::Tensor& output, const ConvTranspose2dParams& params, std::array<bool, 3> output_mask,
    const ConvTranspose2dEpilogues& epilogues) {
  constexpr const char* op = "fastgen::conv_transpose2d_backward";
  const auto shape = check_conv_transpose2d(op, input, weight, params);
  auto start =
      conv::start_backward(op, epilogues, geometry_of(params), grad_out, input, weight, output,
                           shape, params.activation, params.negative_slope, output_mask);
  if (start.engine_grads) return *start.engine_grads;
  const at::Tensor& grad_pre = start.grad_pre;
  // The same CPU choices as the forward, then one layout fix for every path.
  at::Tensor grad_input, grad_weight, grad_bias;
  const std::array<bool, 2> data_mask{output_mask[0], output_mask[1]};
  const bool cpu = epilogues.cpu_convolutions;
  if (cpu &&
      winograd::eligible(input, weight, params.stride, params.padding, params.output_padding,
                         params.dilation, params.groups, /*transposed=*/true) &&
      grad_pre.scalar_type() == at::kFloat && winograd::values_in_range(grad_pre, weight) &&
      winograd::values_in_range(input, grad_pre)) {
    std::tie(grad_input, grad_weight) =
        winograd::conv_transpose2d_backward(grad_pre, input, weight, data_mask);
  } else if (cpu && is_transposed_single_pixel(input, weight, params.padding, params.output_padding,
                                               params.dilation, params.groups)) {
    std::tie(grad_input, grad_weight) =
        transposed_single_pixel_backward(grad_pre, input, weight, data_mask);
  } else if (cpu && is_transposed_to_one_channel(input, weight, params.groups) &&
             params.output_padding == std::array<int64_t, 2>{0, 0}) {
    std::tie(grad_input, grad_weight) = transposed_by_col2im_backward(
        grad_pre, input, weight, params.stride, params.padding, params.dilation, data_mask);
  } else {
    const int64_t out_channels = weight.size(1) * params.groups;
    std::tie(grad_input, grad_weight, grad_bias) = at::convolution_backward(
        grad_pre, input, weight, at::IntArrayRef{out_channels}, params.stride, params.padding,
        params.dilation, /*transposed=*/true, params.output_padding, params.groups, output_mask);
  }
  return conv::finish_backward({grad_input, grad_weight, grad_bias}, grad_pre, output_mask,
                               conv_format(input, weight));
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> conv_transpose2d_with_stats(
    const at::Tensor& input, const at::Tensor& weight, const std::optional<at::Tensor>& bias,
    const ConvTranspose2dParams& params, const ConvTranspose2dEpilogues& epilogues) {
  constexpr const char* op = "fastgen::conv_transpose2d_with_stats";
  const auto shape = check_conv_transpose2d(op, input, weight, params);
  const bool has_bias = bias.has_value() && bias->defined();
  if (has_bias) checks::like(op, "bias", *bias, "input", input, at::IntArrayRef{shape[1]});
  TORCH_CHECK_VALUE(shape[0] * shape[2] * shape[3] > 0, op,
                    ": batch statistics need at least one value per channel, got output of size ",
                    at::IntArrayRef(shape));
  if (const conv::Geometry geometry = geometry_of(params);
      epilogues.engine != nullptr && conv::route(geometry) == conv::Route::ImplicitGemm) {
    at::Tensor mean, var;
    at::Tensor out = epilogues.engine->forward(
        input, weight, has_bias ? bias->contiguous() : at::Tensor(), geometry, {shape[2], shape[3]},
        Activation::Identity, 0.0, conv_format(input, weight), &mean, &var);
    return {out, mean, var};
  }
  ConvTranspose2dParams plain = params;
  plain.activation = Activation::Identity;
  at::Tensor out = conv_transpose2d_forward(input, weight, bias, plain, epilogues);
  auto [var, mean] = at::var_mean(out.to(at::toOpMathType(out.scalar_type())), {0, 2, 3},
                                  /*correction=*/0, /*keepdim=*/false);
  return {out, mean, var};
}

}  // namespace fastgen
