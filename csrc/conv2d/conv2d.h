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
// conv/gemm/gemm_conv_cpu.h and leave the rest to aten; CUDA's are cuDNN's through aten. The
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

// The schema-shaped kernels each backend registers: the shared driver (conv::forward /
// conv::backward, conv/conv_common.h) with the kernels kernels() returns for the call, e.g.
// m.impl("conv2d", &conv2d_op<cpu_kernels>). Masked-out backward results are empty tensors.
template <conv::Kernels (*kernels)()>
at::Tensor conv2d_op(const at::Tensor& input, const at::Tensor& weight,
                     const std::optional<at::Tensor>& bias, at::IntArrayRef stride,
                     at::IntArrayRef padding, at::IntArrayRef dilation, int64_t groups,
                     c10::string_view activation, double negative_slope) {
  const auto params =
      conv::make_params(kConv2d, /*transposed=*/false, stride, padding,
                        /*output_padding=*/{0, 0}, dilation, groups, activation, negative_slope);
  return conv::forward(kConv2d, kernels(), params, input, weight, bias);
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
  return conv::backward("fastgen::conv2d_backward", kernels(), params, grad_out, input, weight,
                        output, output_mask);
}

}  // namespace fastgen
