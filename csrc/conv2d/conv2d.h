#pragma once
// fastgen::conv2d: act(conv2d(input, weight) + bias), the driver every backend shares.
//
// Per call, the backend's convolution WITHOUT bias and then one in-place epilogue pass adding
// the bias and applying the activation; or, on CUDA where conv::route() says so, fastgen's
// implicit-GEMM engine with the epilogue fused (conv/conv_engine.h). Backward turns grad_out
// into the pre-activation gradient (one pass, the derivative taken from the saved output),
// then runs the convolution's backward; the engine fuses that pass into its operand loads.
//
// Each backend supplies its convolution (forward and backward) next to its epilogues: the CPU
// ones (conv2d_cpu.cpp) take the GEMM shapes of common/gemm_conv_cpu.h and leave the rest to
// aten; CUDA's are cuDNN's through aten. The layout rule is conv/conv_common.h's.

#include <ATen/core/Tensor.h>

#include <array>
#include <optional>
#include <string_view>
#include <tuple>

#include "common/activation.h"
#include "conv/conv_common.h"

namespace fastgen {

struct Conv2dParams {
  std::array<int64_t, 2> stride;
  std::array<int64_t, 2> padding;
  std::array<int64_t, 2> dilation;
  int64_t groups;
  Activation activation;
  double negative_slope;
};

// What a backend plugs into the driver.
//   convolution(input, weight, params): conv2d without bias (params.activation is ignored).
//   convolution_backward(grad_pre, input, weight, params, mask): (grad_input, grad_weight,
//     grad_bias) of that convolution for the pre-activation gradient grad_pre, as
//     at::convolution_backward returns them (grad_bias = grad_pre summed over N, H, W);
//     entries whose mask is false may be undefined.
struct Conv2dKernels {
  at::Tensor (*convolution)(const at::Tensor&, const at::Tensor&, const Conv2dParams&);
  std::tuple<at::Tensor, at::Tensor, at::Tensor> (*convolution_backward)(const at::Tensor&,
                                                                         const at::Tensor&,
                                                                         const at::Tensor&,
                                                                         const Conv2dParams&,
                                                                         std::array<bool, 3>);
  conv::Epilogues epilogues;
};

// The public aten convolution (oneDNN / native CPU kernels, cuDNN on CUDA): what every
// backend uses for the shapes it has no kernel of its own for.
at::Tensor conv2d_convolution_aten(const at::Tensor& input, const at::Tensor& weight,
                                   const Conv2dParams& params);
std::tuple<at::Tensor, at::Tensor, at::Tensor> conv2d_convolution_backward_aten(
    const at::Tensor& grad_pre, const at::Tensor& input, const at::Tensor& weight,
    const Conv2dParams& params, std::array<bool, 3> output_mask);

Conv2dParams make_conv2d_params(at::IntArrayRef stride, at::IntArrayRef padding,
                                at::IntArrayRef dilation, int64_t groups,
                                std::string_view activation, double negative_slope);

// The device-independent driver (conv2d.cpp). Masked-out backward results are empty tensors.
at::Tensor conv2d_forward(const at::Tensor& input, const at::Tensor& weight,
                          const std::optional<at::Tensor>& bias, const Conv2dParams& params,
                          const Conv2dKernels& kernels);

std::tuple<at::Tensor, at::Tensor, at::Tensor> conv2d_backward(
    const at::Tensor& grad_out, const at::Tensor& input, const at::Tensor& weight,
    const at::Tensor& output, const Conv2dParams& params, std::array<bool, 3> output_mask,
    const Conv2dKernels& kernels);

// The schema-shaped kernels each backend registers, with the kernels kernels() returns for
// the call, e.g. m.impl("conv2d", &conv2d_op<cpu_kernels>).
template <Conv2dKernels (*kernels)()>
at::Tensor conv2d_op(const at::Tensor& input, const at::Tensor& weight,
                     const std::optional<at::Tensor>& bias, at::IntArrayRef stride,
                     at::IntArrayRef padding, at::IntArrayRef dilation, int64_t groups,
                     c10::string_view activation, double negative_slope) {
  const auto params =
      make_conv2d_params(stride, padding, dilation, groups, activation, negative_slope);
  return conv2d_forward(input, weight, bias, params, kernels());
}

template <Conv2dKernels (*kernels)()>
std::tuple<at::Tensor, at::Tensor, at::Tensor> conv2d_backward_op(
    const at::Tensor& grad_out, const at::Tensor& input, const at::Tensor& weight,
    const at::Tensor& output, at::IntArrayRef stride, at::IntArrayRef padding,
    at::IntArrayRef dilation, int64_t groups, c10::string_view activation, double negative_slope,
    std::array<bool, 3> output_mask) {
  const auto params =
      make_conv2d_params(stride, padding, dilation, groups, activation, negative_slope);
  return conv2d_backward(grad_out, input, weight, output, params, output_mask, kernels());
}

}  // namespace fastgen
