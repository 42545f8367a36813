#pragma once
// What conv2d and conv_transpose2d share in C++ (their Python side shares fastgen/ops/_conv.py):
// the layout rule, the activation dispatch, the parsed arguments of the registered ops and
// their checks, aten's convolution, the table of a backend's convolution and epilogues (bias +
// activation forward, act' backward, and the implicit-GEMM engine where the backend has it),
// the driver both ops run around them, and the CUDA epilogue kernels' declarations.
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

// A convolution operand's layout as aten's convolutions read it: the strides decide
// (suggest_memory_format), so a tensor contiguous both ways, like a weight with one input
// channel after Module.to(memory_format=torch.channels_last), counts as channels_last when
// its strides are channels_last's. fastgen/ops/_conv.py's memory_format mirrors it.
inline c10::MemoryFormat conv_memory_format(const at::Tensor& t) {
  return t.dim() == 4 && t.suggest_memory_format() == c10::MemoryFormat::ChannelsLast
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

namespace conv {

// A registered op's arguments past the tensors, parsed once per call.
struct Params {
  Geometry geometry;
  Activation activation;
  double negative_slope;
};

// Each int[2] argument checked to have two values (the schema guarantees it; direct calls
// through the C++ API are checked here; errors name `op`, e.g. "fastgen::conv2d", and the
// argument), in the order given, then the activation's name parsed. conv2d, which has no
// output_padding, passes {0, 0}.
Params make_params(const char* op, bool transposed, at::IntArrayRef stride, at::IntArrayRef padding,
                   at::IntArrayRef output_padding, at::IntArrayRef dilation, int64_t groups,
                   std::string_view activation, double negative_slope);

// A backend's convolution of one op, without bias (the drivers add it in the epilogue).
//   forward(input, weight, geometry): the op's convolution, any dense layout.
//   backward(grad_pre, input, weight, geometry, mask): (grad_input, grad_weight, grad_bias)
//     of that convolution for the pre-activation gradient grad_pre, as
//     at::convolution_backward returns them; entries whose mask is false may be undefined,
//     and so may grad_bias (the driver then sums grad_pre over N, H, W).
struct Convolution {
  at::Tensor (*forward)(const at::Tensor& input, const at::Tensor& weight,
                        const Geometry& geometry);
  std::tuple<at::Tensor, at::Tensor, at::Tensor> (*backward)(const at::Tensor& grad_pre,
                                                             const at::Tensor& input,
                                                             const at::Tensor& weight,
                                                             const Geometry& geometry,
                                                             std::array<bool, 3> output_mask);
};

// aten's convolution (oneDNN / native CPU kernels, cuDNN on CUDA), at::conv2d or
// at::conv_transpose2d as geometry.transposed says: what every backend uses for the shapes it
// has no kernel of its own for. Its backward leaves grad_bias undefined (the driver sums it).
at::Tensor library_forward(const at::Tensor& input, const at::Tensor& weight,
                           const Geometry& geometry);
std::tuple<at::Tensor, at::Tensor, at::Tensor> library_backward(const at::Tensor& grad_pre,
                                                                const at::Tensor& input,
                                                                const at::Tensor& weight,
                                                                const Geometry& geometry,
                                                                std::array<bool, 3> output_mask);
constexpr Convolution kLibrary{library_forward, library_backward};

// A backend's epilogues, which both conv drivers take.
struct Epilogues {
  void (*bias_activation)(at::Tensor&, const at::Tensor&, Activation, double);
  at::Tensor (*activation_backward)(const at::Tensor&, const at::Tensor&, Activation, double);
  // CUDA (and its emulation): fastgen's implicit-GEMM engine, taken where conv::route()
  // says so (conv/conv_engine.h); null on the CPU backend.
  const conv::Engine* engine = nullptr;
};

// What a backend plugs into a driver for one op.
struct Kernels {
  Convolution convolution;
  Epilogues epilogues;
};

// The kernels a CPU registration runs: `cpu` (the op's own CPU convolutions) with the CPU
// epilogues or, while the emulated-cuda backend is on, what the CUDA build runs (kLibrary
// with the CUDA epilogues and engine), emulated.
Kernels cpu_or_emulated(Convolution cpu);
// The kernels both ops' CUDA registrations run: kLibrary (cuDNN), the CUDA epilogues and the
// engine (conv/conv_cuda.cu, in CUDA builds only).
Kernels cuda_kernels();

// The output's size in spatial dimension d (0: H, 1: W) for arguments that passed the
// checks of output_shape.
int64_t output_size(const at::Tensor& input, const at::Tensor& weight, const Geometry& geometry,
                    int d);
// What every call of either op checks before touching memory (common/checks.h), in the
// order of the op's arguments, errors naming `op`; returns the output's
// [N, C_out, H_out, W_out].
std::array<int64_t, 4> output_shape(const char* op, const at::Tensor& input,
                                    const at::Tensor& weight, const Geometry& geometry);

// The drivers both ops share, each call checked first (output_shape, then bias / grad_out /
// output against the output's shape). Both take the engine where `kernels` has it and
// conv::route() says so; else the library convolution and the epilogue around it.
//   forward: act(conv(input, weight) + bias);
//   backward: (grad_input, grad_weight, grad_bias) for grad_out, the saved output read only
//     to differentiate an activation (identity saves none). Masked-out results are empty
//     tensors.
at::Tensor forward(const char* op, const Kernels& kernels, const Params& params,
                   const at::Tensor& input, const at::Tensor& weight,
                   const std::optional<at::Tensor>& bias);
std::tuple<at::Tensor, at::Tensor, at::Tensor> backward(
    const char* op, const Kernels& kernels, const Params& params, const at::Tensor& grad_out,
    const at::Tensor& input, const at::Tensor& weight, const at::Tensor& output,
    std::array<bool, 3> output_mask);

// The engine's forward when `epilogues` has the engine and conv::route() takes this call,
// else nullopt; with mean and var given, also the batch statistics (conv/conv_engine.h).
std::optional<at::Tensor> engine_forward(const Epilogues& epilogues, const Geometry& geometry,
                                         const at::Tensor& input, const at::Tensor& weight,
                                         const std::optional<at::Tensor>& bias,
                                         std::array<int64_t, 2> out_size, Activation activation,
                                         double negative_slope, at::Tensor* mean = nullptr,
                                         at::Tensor* var = nullptr);

}  // namespace conv

// The epilogue kernels with one signature per backend: the CUDA ones
// (conv/conv_epilogue_cuda.cuh), which both ops use, built by nvcc as cuda::
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
