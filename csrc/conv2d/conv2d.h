#pragma once
// fastgen::conv2d: act(conv2d(input, weight) + bias), the driver every backend shares.
//
// Per call, the backend's convolution WITHOUT bias and then one in-place epilogue pass adding
// the bias and applying the activation; or, on CUDA where conv::route() says so, fastgen's
// implicit-GEMM engine with the epilogue fused (conv/conv_engine.h). Backward turns grad_out
// into the pre-activation gradient (one pass, the derivative taken from the saved output),
// then runs the convolution's backward; the engine fuses that pass into its operand loads.
//
// Each backend supplies its convolution (forward and backward) next to its epilogues
// (conv::Kernels): the CPU ones (conv2d_cpu.cpp) take Winograd's and the GEMM shapes of
// common/gemm_conv_cpu.h and leave the rest to aten; CUDA's are cuDNN's through aten. The
// driver itself is conv_transpose2d's too (conv::forward / conv::backward); the layout rule
// is conv/conv_common.h's.

#include <ATen/core/Tensor.h>

#include <array>
#include <optional>
#include <tuple>

#include "common/activation.h"
#include "conv/conv_common.h"

namespace fastgen {

constexpr const char* kConv2d = "fastgen::conv2d";

// The public aten convolution (oneDNN / native CPU kernels, cuDNN on CUDA): what every
// backend uses for the shapes it has no kernel of its own for.
at::Tensor conv2d_convolution_aten(const at::Tensor& input, const at::Tensor& weight,
                                   const conv::Geometry& geometry);
std::tuple<at::Tensor, at::Tensor, at::Tensor> conv2d_convolution_backward_aten(
    const at::Tensor& grad_pre, const at::Tensor& input, const at::Tensor& weight,
    const conv::Geometry& geometry, std::array<bool, 3> output_mask);
constexpr conv::Convolution kConv2dAten{conv2d_convolution_aten, conv2d_convolution_backward_aten};

// The device-independent driver (conv2d.cpp): the op's checks, then conv::forward /
// conv::backward. Masked-out backward results are empty tensors.
at::Tensor conv2d_forward(const at::Tensor& input, const at::Tensor& weight,
                          const std::optional<at::Tensor>& bias, const conv::Params& params,
                          const conv::Kernels& kernels);

std::tuple<at::Tensor, at::Tensor, at::Tensor> conv2d_backward(
    const at::Tensor& grad_out, const at::Tensor& input, const at::Tensor& weight,
    const at::Tensor& output, const conv::Params& params, std::array<bool, 3> output_mask,
    const conv::Kernels& kernels);

// The schema-shaped kernels each backend registers, with the kernels kernels() returns for
// the call, e.g. m.impl("conv2d", &conv2d_op<cpu_kernels>).
template <conv::Kernels (*kernels)()>
at::Tensor conv2d_op(const at::Tensor& input, const at::Tensor& weight,
                     const std::optional<at::Tensor>& bias, at::IntArrayRef stride,
                     at::IntArrayRef padding, at::IntArrayRef dilation, int64_t groups,
                     c10::string_view activation, double negative_slope) {
  const auto params =
      conv::make_params(kConv2d, /*transposed=*/false, stride, padding,
                        /*output_padding=*/{0, 0}, dilation, groups, activation, negative_slope);
  return conv2d_forward(input, weight, bias, params, kernels());
}

template <conv::Kernels (*kernels)()>
std::tuple<at::Tensor, at::Tensor, at::Tensor> conv2d_backward_op(
    const at::Tensor& grad_out, const at::Tensor& input, const at::Tensor& weight,
    const at::Tensor& output, at::IntArrayRef stride, at::IntArrayRef padding,
    at::IntArrayRef dilation, int64_t groups, c10::string_view activation, double negative_slope,
    std::array<bool, 3> output_mask) {
  const auto params =
      conv::make_params(kConv2d, /*transposed=*/false, stride, padding,
                        /*output_padding=*/{0, 0}, dilation, groups, activation, negative_slope);
  return conv2d_backward(grad_out, input, weight, output, params, output_mask, kernels());
}

}  // namespace fastgen
