#pragma once
// What conv2d and conv_transpose2d share in C++ (their Python side shares fastgen/ops/_conv.py):
// the layout rule, the activation dispatch, the table of a backend's epilogues (bias +
// activation forward, act' backward, and the implicit-GEMM engine where the backend has it),
// the CUDA epilogue kernels' declarations and the argument parsing of the registered ops.
//
// Layout rule (shared with the Python fake kernels, fastgen/ops/_conv.py, and aten's own):
// the output, grad_input and grad_weight are channels_last when the input OR the weight is
// channels_last and not plainly contiguous (a tensor that is both, e.g. C == 1, counts as
// contiguous); otherwise NCHW. So `model.to(memory_format=torch.channels_last)` runs every
// layer channels_last, even on a [N, C, 1, 1] latent, as with the stock layers. The drivers
// enforce it, so a backend's convolution may return any dense layout.

#include <ATen/core/Tensor.h>
#include <c10/core/MemoryFormat.h>

#include <array>
#include <optional>
#include <string_view>
#include <tuple>

#include "common/activation.h"
#include "conv/conv_engine.h"

namespace fastgen {

inline c10::MemoryFormat conv_memory_format(const at::Tensor& t) {
  return (t.dim() == 4 && !t.is_contiguous() && t.is_contiguous(c10::MemoryFormat::ChannelsLast))
             ? c10::MemoryFormat::ChannelsLast
             : c10::MemoryFormat::Contiguous;
}

// The layout of a convolution's output and gradients (the rule above).
inline c10::MemoryFormat conv_format(const at::Tensor& input, const at::Tensor& weight) {
  return conv_memory_format(input) == c10::MemoryFormat::ChannelsLast
             ? c10::MemoryFormat::ChannelsLast
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
// Those two pick this CPU's copy of the loops (conv/conv_epilogue_cpu_kernels.cpp, compiled
// once per capability as conv_epilogue::baseline / avx2 / avx512, declared below with the
// CUDA ones; tanh and sigmoid go to ATen after the bias pass).

// Calls body.template operator()<act>() for the runtime activation, so kernels are
// instantiated once per activation and the per-element code has no switch.
template <typename Body>
void dispatch_activation(Activation activation, Body&& body) {
  switch (activation) {
    case Activation::Identity:
      return body.template operator()<Activation::Identity>();
    case Activation::ReLU:
      return body.template operator()<Activation::ReLU>();
    case Activation::LeakyReLU:
      return body.template operator()<Activation::LeakyReLU>();
    case Activation::Tanh:
      return body.template operator()<Activation::Tanh>();
    case Activation::Sigmoid:
      return body.template operator()<Activation::Sigmoid>();
  }
}

// A registered op's int[2] argument as a pair (the schema guarantees two values; direct
// calls through the C++ API are checked here).
std::array<int64_t, 2> as_pair(at::IntArrayRef values, const char* op, const char* name);

namespace conv {

// A backend's epilogues, which both conv drivers take.
struct Epilogues {
  void (*bias_activation)(at::Tensor&, const at::Tensor&, Activation, double);
  at::Tensor (*activation_backward)(const at::Tensor&, const at::Tensor&, Activation, double);
  // The CPU backend's own convolutions (Winograd, GEMMs) for the shapes they take; false:
  // always the aten convolution (CUDA's cuDNN, and its emulation on CPU tensors).
  bool cpu_convolutions = false;
  // CUDA (and its emulation): fastgen's implicit-GEMM engine, taken where conv::route()
  // says so (conv/conv_engine.h); null on the CPU backend.
  const conv::Engine* engine = nullptr;
};

// The engine's result when `epilogues` has the engine and conv::route() takes it for this
// call, else nullopt (the driver then runs the library convolution).
std::optional<at::Tensor> engine_forward(const Epilogues& epilogues, const Geometry& geometry,
                                         const at::Tensor& input, const at::Tensor& weight,
                                         const std::optional<at::Tensor>& bias,
                                         std::array<int64_t, 2> out_size, Activation activation,
                                         double negative_slope);
// Likewise for the backward, masked-out results as empty tensors (what the drivers return).
std::optional<std::tuple<at::Tensor, at::Tensor, at::Tensor>> engine_backward(
    const Epilogues& epilogues, const Geometry& geometry, const at::Tensor& grad_out,
    const at::Tensor& input, const at::Tensor& weight, const at::Tensor& output,
    Activation activation, double negative_slope, std::array<bool, 3> output_mask);

// The steps both drivers take around a library convolution:
//   finish_forward: `out` in the layout rule's strides, then bias + activation in place;
//   pre_activation_grad: grad_out * act'(output) (grad_out itself for identity);
//   finish_backward: the gradients in the layout rule's strides, grad_bias from grad_pre
//     when the convolution gave none, masked-out entries as empty tensors.
at::Tensor finish_forward(const Epilogues& epilogues, at::Tensor out,
                          const std::optional<at::Tensor>& bias, c10::MemoryFormat format,
                          Activation activation, double negative_slope);
at::Tensor pre_activation_grad(const Epilogues& epilogues, const at::Tensor& grad_out,
                               const at::Tensor& output, Activation activation,
                               double negative_slope);

// The first steps of both drivers' backward: grad_out, and for an activation the saved
// output (read only to differentiate it; identity saves none), checked against `input` and
// the forward's output shape; then the engine's gradients where conv::route() takes the
// call, else grad_pre for the library convolution's backward.
struct BackwardStart {
  std::optional<std::tuple<at::Tensor, at::Tensor, at::Tensor>> engine_grads;
  at::Tensor grad_pre;  // set when engine_grads is not
};
BackwardStart start_backward(const char* op, const Epilogues& epilogues, const Geometry& geometry,
                             const at::Tensor& grad_out, const at::Tensor& input,
                             const at::Tensor& weight, const at::Tensor& output,
                             at::IntArrayRef out_shape, Activation activation,
                             double negative_slope, std::array<bool, 3> output_mask);
std::tuple<at::Tensor, at::Tensor, at::Tensor> finish_backward(
    std::tuple<at::Tensor, at::Tensor, at::Tensor> grads, const at::Tensor& grad_pre,
    std::array<bool, 3> output_mask, c10::MemoryFormat format);

}  // namespace conv

// The epilogue kernels with one signature per backend: the CUDA ones
// (conv_transpose2d/conv_transpose2d_cuda.cuh), which both ops use, built by nvcc as cuda::
// and by the emulated build as emulated_cuda:: (FASTGEN_BACKEND=emulated-cuda); and the CPU
// loops' copies, one per capability.
#define FASTGEN_CONV_EPILOGUES(ns)                                                     \
  namespace ns {                                                                       \
  void bias_activation(at::Tensor& out, const at::Tensor& bias, Activation activation, \
                       double negative_slope);                                         \
  at::Tensor activation_backward(const at::Tensor& grad_out, const at::Tensor& output, \
                                 Activation activation, double negative_slope);        \
  }
FASTGEN_CONV_EPILOGUES(cuda)
FASTGEN_CONV_EPILOGUES(emulated_cuda)
FASTGEN_CONV_EPILOGUES(conv_epilogue::baseline)
FASTGEN_CONV_EPILOGUES(conv_epilogue::avx2)
FASTGEN_CONV_EPILOGUES(conv_epilogue::avx512)
#undef FASTGEN_CONV_EPILOGUES

}  // namespace fastgen
