#pragma once
// What conv2d and conv_transpose2d share on CUDA (and under its emulation): the description of
// a convolution, fastgen's implicit-GEMM engine (conv/implicit_gemm_cuda.cuh) as a table of
// entry points, and the one rule that chooses per call between it and the library
// convolution (cuDNN through aten), used by forward and backward alike.
//
// Route rule (route() below): FASTGEN_CONV_TRANSPOSE (conv_transpose2d) and FASTGEN_CONV2D
// (conv2d), read on every call, are auto | fastgen | cudnn.
//   cudnn    the library convolution and fastgen's epilogue kernels;
//   fastgen  the implicit-GEMM engine wherever it applies: groups 1, dilation 1, stride at
//            most 4 in each direction (a transposed convolution is s_h * s_w GEMMs, one per
//            output phase; the engine takes up to 16); other calls take cudnn;
//   auto     (the default) cudnn for every shape: no GPU measurement committed under
//            benchmarks/results/ shows the engine faster for any class of shapes yet, and a
//            user must never get an unmeasured, possibly slower path by default. When one
//            does, the class it covers moves here.

#include <ATen/core/Tensor.h>
#include <c10/core/MemoryFormat.h>

#include <array>
#include <tuple>

#include "common/activation.h"

namespace fastgen::conv {

struct Geometry {
  bool transposed;
  std::array<int64_t, 2> stride, padding, output_padding, dilation;
  int64_t groups;
};

enum class Route { Library, ImplicitGemm };

// FASTGEN_CONV_TRANSPOSE / FASTGEN_CONV2D as above; a value other than auto, fastgen, cudnn
// is a ValueError naming the variable.
Route route(const Geometry& geometry);

// Whether the engine computes this convolution (the "fastgen" row of the rule).
bool engine_applies(const Geometry& geometry);

// The engine's entry points, one table per device build (cuda::, emulated_cuda::).
//   forward: act(conv(input, weight) + bias) as a new [N, C_out, out_size] tensor in
//     `format`; with mean and var given, also the per-channel mean and biased variance of
//     that output (what a following training batch norm needs), in the accumulation dtype.
//   backward: (grad_input, grad_weight, grad_bias) for grad_out of the forward's output
//     `output` (read for act' only), each computed when its mask entry is set (else
//     undefined); grad_input and grad_weight in `format`.
// And, for tests of the launch arithmetic without tensors of its size: weight_grad_launch,
// the weight gradient's grid (x, y, z) and reduction rows per split for P = [batch, a, u, v]
// and b_channels * kernel columns, or the error a shape beyond CUDA's grid limits gets.
struct Engine {
  at::Tensor (*forward)(const at::Tensor& input, const at::Tensor& weight, const at::Tensor& bias,
                        const Geometry& geometry, std::array<int64_t, 2> out_size,
                        Activation activation, double negative_slope, c10::MemoryFormat format,
                        at::Tensor* mean, at::Tensor* var);
  std::tuple<at::Tensor, at::Tensor, at::Tensor> (*backward)(
      const at::Tensor& grad_out, const at::Tensor& input, const at::Tensor& weight,
      const at::Tensor& output, const Geometry& geometry, Activation activation,
      double negative_slope, std::array<bool, 3> output_mask, c10::MemoryFormat format);
};

#define FASTGEN_CONV_ENGINE(ns)                                                                 \
  namespace ns::implicit_gemm {                                                                 \
  at::Tensor forward(const at::Tensor& input, const at::Tensor& weight, const at::Tensor& bias, \
                     const conv::Geometry& geometry, std::array<int64_t, 2> out_size,           \
                     Activation activation, double negative_slope, c10::MemoryFormat format,    \
                     at::Tensor* mean, at::Tensor* var);                                        \
  std::tuple<at::Tensor, at::Tensor, at::Tensor> backward(                                      \
      const at::Tensor& grad_out, const at::Tensor& input, const at::Tensor& weight,            \
      const at::Tensor& output, const conv::Geometry& geometry, Activation activation,          \
      double negative_slope, std::array<bool, 3> output_mask, c10::MemoryFormat format);        \
  std::array<int64_t, 4> weight_grad_launch(bool transposed_op, std::array<int64_t, 4> p_sizes, \
                                            int64_t b_channels, std::array<int64_t, 2> kernel); \
  }

}  // namespace fastgen::conv

namespace fastgen {
FASTGEN_CONV_ENGINE(cuda)
FASTGEN_CONV_ENGINE(emulated_cuda)
}  // namespace fastgen
#undef FASTGEN_CONV_ENGINE
