#pragma once
// fastgen::conv_transpose2d: act(conv_transpose2d(input, weight) + bias).
//
// Both backends run the transposed convolution itself through public aten ops (oneDNN /
// the native CPU kernels on CPU, cuDNN on CUDA) WITHOUT bias, then one in-place epilogue
// pass adds the bias and applies the activation. Backward first turns grad_out into the
// pre-activation gradient (one pass, the derivative taken from the saved output), then
// calls at::convolution_backward.
//
// Layout rule shared with the Python fake kernels (fastgen/ops/conv_transpose2d.py), aten's
// own: the output, grad_input and grad_weight are channels_last when the input OR the weight
// is channels_last and not plainly contiguous (a tensor that is both, e.g. C == 1, counts as
// contiguous); otherwise NCHW. So `model.to(memory_format=torch.channels_last)` runs every
// layer channels_last, even on a [N, C, 1, 1] latent, as with the stock layers.

#include <ATen/core/Tensor.h>
#include <c10/core/MemoryFormat.h>

#include <array>
#include <optional>
#include <tuple>
#include <string_view>

#include "common/activation.h"
#include "conv/conv_engine.h"

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

inline c10::MemoryFormat conv_memory_format(const at::Tensor& t) {
  return (t.dim() == 4 && !t.is_contiguous() && t.is_contiguous(c10::MemoryFormat::ChannelsLast))
             ? c10::MemoryFormat::ChannelsLast
             : c10::MemoryFormat::Contiguous;
}

// The layout of a convolution's output and gradients (the rule above).
inline c10::MemoryFormat conv_format(const at::Tensor& input, const at::Tensor& weight) {
  return conv_memory_format(input) == c10::MemoryFormat::ChannelsLast ? c10::MemoryFormat::ChannelsLast
                                                                       : conv_memory_format(weight);
}

// `t` dense in `format`, with exactly the strides at::empty(..., format) would give (strides
// of size-1 dims are free to differ otherwise, and fake kernels must predict them).
at::Tensor with_canonical_strides(const at::Tensor& t, c10::MemoryFormat format);

// In place on `out` (dense, NCHW or channels_last): out = act(out + bias).
void bias_activation_cpu(at::Tensor& out, const at::Tensor& bias, Activation activation,
                         double negative_slope);
// grad_out * act'(output), written into a new tensor laid out like `output`.
at::Tensor activation_backward_cpu(const at::Tensor& grad_out, const at::Tensor& output,
                                   Activation activation, double negative_slope);

// Calls body.template operator()<act>() for the runtime activation, so kernels are
// instantiated once per activation and the per-element code has no switch.
template <typename Body>
void dispatch_activation(Activation activation, Body&& body) {
  switch (activation) {
    case Activation::Identity: return body.template operator()<Activation::Identity>();
    case Activation::ReLU: return body.template operator()<Activation::ReLU>();
    case Activation::LeakyReLU: return body.template operator()<Activation::LeakyReLU>();
    case Activation::Tanh: return body.template operator()<Activation::Tanh>();
    case Activation::Sigmoid: return body.template operator()<Activation::Sigmoid>();
  }
}

// The device-independent driver (conv_transpose2d.cpp): the convolution plus the given
// backend's epilogues. Masked-out backward results are empty tensors.
struct ConvTranspose2dEpilogues {
  void (*bias_activation)(at::Tensor&, const at::Tensor&, Activation, double);
  at::Tensor (*activation_backward)(const at::Tensor&, const at::Tensor&, Activation, double);
  // The CPU backend's own convolutions (Winograd, GEMMs) for the shapes they take; false:
  // always the aten convolution (CUDA's cuDNN, and its emulation on CPU tensors).
  bool cpu_convolutions = false;
  // CUDA (and its emulation): fastgen's implicit-GEMM engine, taken where conv::route()
  // says so (conv/conv_engine.h); null on the CPU backend.
  const conv::Engine* engine = nullptr;
};

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
  const auto params = make_conv_transpose2d_params(stride, padding, output_padding, groups, dilation,
                                                   activation, negative_slope);
  return conv_transpose2d_forward(input, weight, bias, params, epilogues());
}

template <ConvTranspose2dEpilogues (*epilogues)()>
std::tuple<at::Tensor, at::Tensor, at::Tensor> conv_transpose2d_backward_op(
    const at::Tensor& grad_out, const at::Tensor& input, const at::Tensor& weight,
    const at::Tensor& output, at::IntArrayRef stride, at::IntArrayRef padding,
    at::IntArrayRef output_padding, int64_t groups, at::IntArrayRef dilation,
    c10::string_view activation, double negative_slope, std::array<bool, 3> output_mask) {
  const auto params = make_conv_transpose2d_params(stride, padding, output_padding, groups, dilation,
                                                   activation, negative_slope);
  return conv_transpose2d_backward(grad_out, input, weight, output, params, output_mask,
                                   epilogues());
}

template <ConvTranspose2dEpilogues (*epilogues)()>
std::tuple<at::Tensor, at::Tensor, at::Tensor> conv_transpose2d_with_stats_op(
    const at::Tensor& input, const at::Tensor& weight, const std::optional<at::Tensor>& bias,
    at::IntArrayRef stride, at::IntArrayRef padding, at::IntArrayRef output_padding, int64_t groups,
    at::IntArrayRef dilation) {
  const auto params = make_conv_transpose2d_params(stride, padding, output_padding, groups, dilation,
                                                   "identity", 0.0);
  return conv_transpose2d_with_stats(input, weight, bias, params, epilogues());
}

// The CUDA epilogues (conv_transpose2d_cuda.cuh), which conv2d shares: nvcc builds them as
// cuda::, the emulated build as emulated_cuda:: (FASTGEN_BACKEND=emulated-cuda).
#define FASTGEN_CONV_EPILOGUES_CUDA(ns)                                                     \
  namespace ns {                                                                          \
  void bias_activation(at::Tensor& out, const at::Tensor& bias, Activation activation,    \
                       double negative_slope);                                            \
  at::Tensor activation_backward(const at::Tensor& grad_out, const at::Tensor& output,    \
                                 Activation activation, double negative_slope);           \
  }
FASTGEN_CONV_EPILOGUES_CUDA(cuda)
FASTGEN_CONV_EPILOGUES_CUDA(emulated_cuda)
#undef FASTGEN_CONV_EPILOGUES_CUDA

}  // namespace fastgen
