#pragma once
// fastgen::conv_transpose2d: act(conv_transpose2d(input, weight) + bias), the driver every
// backend shares.
//
// Per call: on CPU, fastgen's Winograd and GEMM kernels for the shapes they take
// (conv/winograd/, conv/gemm/gemm_conv_cpu.h; the choice is conv_transpose2d_cpu.cpp's) and aten's
// convolution for the rest; on CUDA, cuDNN through aten or, where conv::route() says so,
// fastgen's implicit-GEMM engine (conv/conv_engine.h). Library convolutions run WITHOUT
// bias, then one in-place epilogue pass adds the bias and applies the activation (the engine
// fuses it). Backward turns grad_out into the pre-activation gradient (one pass, the
// derivative taken from the saved output), then runs the convolution's backward. That
// driver is conv2d's too (conv::forward / conv::backward); the layout rule is
// conv/conv_common.h's.

#include <ATen/core/Tensor.h>
#include <c10/core/MemoryFormat.h>

#include <array>
#include <optional>
#include <tuple>

#include "common/activation.h"
#include "conv/conv_common.h"

namespace fastgen {

constexpr const char* kConvTranspose2d = "fastgen::conv_transpose2d";

// conv_transpose2d(input, weight) + bias (no activation) and the per-channel batch mean and
// biased variance of that output, in the accumulation dtype (float32 for half types): what a
// training batch norm after it needs. The engine computes the statistics in the
// convolution's epilogue; every other path reads the output once more (at::var_mean).
std::tuple<at::Tensor, at::Tensor, at::Tensor> conv_transpose2d_with_stats(
    const at::Tensor& input, const at::Tensor& weight, const std::optional<at::Tensor>& bias,
    const conv::Params& params, const conv::Kernels& kernels);

// The schema-shaped kernels each backend registers (TORCH_LIBRARY_IMPL): the shared driver
// (conv::forward / conv::backward, conv/conv_common.h) or the function above, with the
// kernels kernels() returns for the call, e.g.
// m.impl("conv_transpose2d", &conv_transpose2d_op<cpu_kernels>). Masked-out backward results
// are empty tensors.
template <conv::Kernels (*kernels)()>
at::Tensor conv_transpose2d_op(const at::Tensor& input, const at::Tensor& weight,
                               const std::optional<at::Tensor>& bias, at::IntArrayRef stride,
                               at::IntArrayRef padding, at::IntArrayRef output_padding,
                               int64_t groups, at::IntArrayRef dilation,
                               c10::string_view activation, double negative_slope) {
  const auto params =
      conv::make_params(kConvTranspose2d, /*transposed=*/true, stride, padding, output_padding,
                        dilation, groups, activation, negative_slope);
  return conv::forward(kConvTranspose2d, kernels(), params, input, weight, bias);
}

template <conv::Kernels (*kernels)()>
std::tuple<at::Tensor, at::Tensor, at::Tensor> conv_transpose2d_backward_op(
    const at::Tensor& grad_out, const at::Tensor& input, const at::Tensor& weight,
    const at::Tensor& output, at::IntArrayRef stride, at::IntArrayRef padding,
    at::IntArrayRef output_padding, int64_t groups, at::IntArrayRef dilation,
    c10::string_view activation, double negative_slope, std::array<bool, 3> output_mask) {
  const auto params =
      conv::make_params(kConvTranspose2d, /*transposed=*/true, stride, padding, output_padding,
                        dilation, groups, activation, negative_slope);
  return conv::backward("fastgen::conv_transpose2d_backward", kernels(), params, grad_out, input,
                        weight, output, output_mask);
}

template <conv::Kernels (*kernels)()>
std::tuple<at::Tensor, at::Tensor, at::Tensor> conv_transpose2d_with_stats_op(
    const at::Tensor& input, const at::Tensor& weight, const std::optional<at::Tensor>& bias,
    at::IntArrayRef stride, at::IntArrayRef padding, at::IntArrayRef output_padding, int64_t groups,
    at::IntArrayRef dilation) {
  const auto params = conv::make_params(kConvTranspose2d, /*transposed=*/true, stride, padding,
                                        output_padding, dilation, groups, "identity", 0.0);
  return conv_transpose2d_with_stats(input, weight, bias, params, kernels());
}

}  // namespace fastgen
