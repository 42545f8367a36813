// Convolutions done as GEMMs on CPU; see gemm_conv_cpu.h for which and why.

#include "conv/gemm/gemm_conv_cpu.h"

#include <ATen/ATen.h>

namespace fastgen {

namespace {

bool cpu_float(const at::Tensor& input, const at::Tensor& weight) {
  const auto dtype = input.scalar_type();
  return input.is_cpu() && (dtype == at::kFloat || dtype == at::kDouble) &&
         weight.scalar_type() == dtype && input.numel() > 0;
}

constexpr std::array<int64_t, 2> kZero{0, 0}, kOne{1, 1};

}  // namespace

bool is_transposed_single_pixel(const at::Tensor& input, const at::Tensor& weight,
                                std::array<int64_t, 2> padding,
                                std::array<int64_t, 2> output_padding,
                                std::array<int64_t, 2> dilation, int64_t groups) {
  return cpu_float(input, weight) && input.size(2) == 1 && input.size(3) == 1 && groups == 1 &&
         padding == kZero && output_padding == kZero && dilation == kOne;
}

bool is_single_pixel_output(const at::Tensor& input, const at::Tensor& weight,
                            std::array<int64_t, 2> padding, std::array<int64_t, 2> dilation,
                            int64_t groups) {
  return cpu_float(input, weight) && groups == 1 && padding == kZero && dilation == kOne &&
         input.size(2) == weight.size(2) && input.size(3) == weight.size(3);
}

at::Tensor transposed_single_pixel(const at::Tensor& input, const at::Tensor& weight) {
  return at::mm(input.reshape({input.size(0), input.size(1)}), weight.reshape({weight.size(0), -1}))
      .view({input.size(0), weight.size(1), weight.size(2), weight.size(3)});
}

std::tuple<at::Tensor, at::Tensor> transposed_single_pixel_backward(const at::Tensor& grad_out,
                                                                    const at::Tensor& input,
                                                                    const at::Tensor& weight,
                                                                    std::array<bool, 2> mask) {
  const at::Tensor grad = grad_out.reshape({grad_out.size(0), -1});  // [N, C_out * kH * kW]
  at::Tensor grad_input, grad_weight;
  if (mask[0])
    grad_input = at::mm(grad, weight.reshape({weight.size(0), -1}).t()).view(input.sizes());
  if (mask[1]) {
    grad_weight =
        at::mm(input.reshape({input.size(0), input.size(1)}).t(), grad).view(weight.sizes());
  }
  return {grad_input, grad_weight};
}

at::Tensor single_pixel_output(const at::Tensor& input, const at::Tensor& weight) {
  return at::mm(input.reshape({input.size(0), -1}), weight.reshape({weight.size(0), -1}).t())
      .view({input.size(0), weight.size(0), 1, 1});
}

std::tuple<at::Tensor, at::Tensor> single_pixel_output_backward(const at::Tensor& grad_out,
                                                                const at::Tensor& input,
                                                                const at::Tensor& weight,
                                                                std::array<bool, 2> mask) {
  const at::Tensor grad = grad_out.reshape({grad_out.size(0), grad_out.size(1)});  // [N, C_out]
  at::Tensor grad_input, grad_weight;
  if (mask[0]) grad_input = at::mm(grad, weight.reshape({weight.size(0), -1})).view(input.sizes());
  if (mask[1]) {
    grad_weight = at::mm(grad.t(), input.reshape({input.size(0), -1})).view(weight.sizes());
  }
  return {grad_input, grad_weight};
}

}  // namespace fastgen
