#pragma once
// fastgen::conv_transpose2d: act(conv_transpose2d(input, weight) + bias), the driver every
// backend shares.
//
// Per call: on CPU, fastgen's Winograd and GEMM kernels for the shapes they take
// (winograd/, common/gemm_conv_cpu.h) and aten's convolution for the rest; on CUDA, cuDNN
// through aten or, where conv::route() says so, fastgen's implicit-GEMM engine
// (conv/conv_engine.h). Library convolutions run WITHOUT bias, then one in-place epilogue
// pass adds the bias and applies the activation (the engine fuses it). Backward turns
// grad_out into the pre-activation gradient (one pass, the derivative taken from the saved
// output), then runs the convolution's backward. The layout rule is conv/conv_common.h's.

#include <ATen/core/Tensor.h>
#include <c10/core/MemoryFormat.h>

#include <array>
#include <optional>
#include <tuple>
#include <string_view>

#include "common/activation.h"
#include "conv/conv_common.h"

namespace fastgen {

struct ConvTranspose2dParams {
  std::array<int64_t, 2> stride;
  std::array<int64_t, 2> padding;
  std::array<int64_t, 2> output_padding;
  std::array<int64_t, 2> dilation;
  int64_t groups;
  Activation activation;
  double negative_slope;
};

// The device-independent driver (conv_transpose2d.cpp): the convolution plus the given
// backend's epilogues (conv::Epilogues, conv/conv_common.h). Masked-out backward results are
// empty tensors.
using ConvTranspose2dEpilogues = conv::Epilogues;

ConvTranspose2dParams make_conv_transpose2d_params(at::IntArrayRef stride, at::IntArrayRef padding,
                                                   at::IntArrayRef output_padding, int64_t groups,
                                                   at::IntArrayRef dilation,
                                                   std::string_view activation,
                                                   double negative_slope);

at::Tensor conv_transpose2d_forward(const at::Tensor& input, const at::Tensor& weight,
                                    const std::optional<at::Tensor>& bias,
                                    const ConvTranspose2dParams& params,
                                    const ConvTranspose2dEpilogues& epilogues);

std::tuple<at::Tensor, at::Tensor, at::Tensor> conv_transpose2d_backward(
    const at::Tensor& grad_out, const at::Tensor& input, const at::Tensor& weight,
    const at::Tensor& output, const ConvTranspose2dParams& params, std::array<bool, 3> output_mask,
    const ConvTranspose2dEpilogues& epilogues);

// conv_transpose2d(input, weight) + bias (no activation) and the per-channel batch mean and
// biased variance of that output, in the accumulation dtype (float32 for half types): what a
// training batch norm after it needs. The engine computes the statistics in the
// convolution's epilogue; every other path reads the output once more (at::var_mean).
std::tuple<at::Tensor, at::Tensor, at::Tensor> conv_transpose2d_with_stats(
    const at::Tensor& input, const at::Tensor& weight, const std::optional<at::Tensor>& bias,
    const ConvTranspose2dParams& params, const ConvTranspose2dEpilogues& epilogues);

// The schema-shaped kernels each backend registers (TORCH_LIBRARY_IMPL): the driver above
// with the epilogues epilogues() returns for the call, e.g.
// m.impl("conv_transpose2d", &conv_transpose2d_op<cpu_epilogues>).
template <ConvTranspose2dEpilogues (*epilogues)()>
at::Tensor conv_transpose2d_op(const at::Tensor& input, const at::Tensor& weight,
                               const std::optional<at::Tensor>& bias, at::IntArrayRef stride,
                               at::IntArrayRef padding, at::IntArrayRef output_padding,
                               int64_t groups, at::IntArrayRef dilation,
                               c10::string_view activation, double negative_slope) {
  const auto params = make_conv_transpose2d_params(stride, padding, output_padding, groups,
                                                   dilation, activation, negative_slope);
  return conv_transpose2d_forward(input, weight, bias, params, epilogues());
}

template <ConvTranspose2dEpilogues (*epilogues)()>
std::tuple<at::Tensor, at::Tensor, at::Tensor> conv_transpose2d_backward_op(
    const at::Tensor& grad_out, const at::Tensor& input, const at::Tensor& weight,
    const at::Tensor& output, at::IntArrayRef stride, at::IntArrayRef padding,
    at::IntArrayRef output_padding, int64_t groups, at::IntArrayRef dilation,
    c10::string_view activation, double negative_slope, std::array<bool, 3> output_mask) {
  const auto params = make_conv_transpose2d_params(stride, padding, output_padding, groups,
                                                   dilation, activation, negative_slope);
  return conv_transpose2d_backward(grad_out, input, weight, output, params, output_mask,
                                   epilogues());
}

template <ConvTranspose2dEpilogues (*epilogues)()>
std::tuple<at::Tensor, at::Tensor, at::Tensor> conv_transpose2d_with_stats_op(
    const at::Tensor& input, const at::Tensor& weight, const std::optional<at::Tensor>& bias,
    at::IntArrayRef stride, at::IntArrayRef padding, at::IntArrayRef output_padding, int64_t groups,
    at::IntArrayRef dilation) {
  const auto params = make_conv_transpose2d_params(stride, padding, output_padding, groups,
                                                   dilation, "identity", 0.0);
  return conv_transpose2d_with_stats(input, weight, bias, params, epilogues());
}

}  // namespace fastgen
