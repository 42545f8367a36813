// fastgen::conv_transpose2d_with_stats, the one part of the op beside the driver both conv ops
// share (conv::forward / conv::backward, conv/conv_common.cpp).

#include "conv_transpose2d/conv_transpose2d.h"

#include <ATen/ATen.h>
#include <ATen/OpMathType.h>

#include "common/checks.h"

namespace fastgen {

std::tuple<at::Tensor, at::Tensor, at::Tensor> conv_transpose2d_with_stats(
    const at::Tensor& input, const at::Tensor& weight, const std::optional<at::Tensor>& bias,
    const conv::Params& params, const conv::Kernels& kernels) {
  constexpr const char* op = "fastgen::conv_transpose2d_with_stats";
  const auto shape = conv::output_shape(op, input, weight, params.geometry);
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
  at::Tensor out = conv::forward(kConvTranspose2d, kernels, plain, input, weight, bias);
  std::tie(var, mean) = at::var_mean(out.to(at::toOpMathType(out.scalar_type())), {0, 2, 3},
                                     /*correction=*/0, /*keepdim=*/false);
  return {out, mean, var};
}

}  // namespace fastgen
