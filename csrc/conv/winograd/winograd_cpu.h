#pragma once
// Winograd F(4x4, 2x2) for the 4x4, stride-2, padding-1 convolutions of DCGAN-style models
// (CPU, float32 operands; bfloat16 ones converted by the caller, see Products).
//
// Why: on CPU these convolutions are GEMM-bound and oneDNN already runs them near the
// core's peak FLOP rate, so only fewer multiplications can make them faster. A 4x4 stride-2
// convolution is a sum of four 2x2 stride-1 convolutions over the input's even/odd row and
// column phases (a transposed one scatters each 4x4 input tile into 5x5 windows of its four
// output phases), and a 2x2 convolution computed as F(4x4, 2x2) takes 25 multiplications per
// 4x4 tile instead of 64: 2.56x fewer, spent in 25 GEMMs per call.
//
// The transforms use the interpolation points {0, 1, -1, 2, inf}, with the rows of B^T
// scaled to small integers (and G scaled back), so the input and output transforms are
// exact-ish integer combinations; the float32 error is a few 1e-6 relative to the output's
// largest value (direct convolution: ~2e-7), well inside the float32 tolerance.
//
// Shapes (N batch, C channels):
//   conv2d:             input [N, Cin, H, W], weight [Cout, Cin, 4, 4] -> [N, Cout, H/2, W/2]
//   conv_transpose2d:   input [N, Cin, H, W], weight [Cin, Cout, 4, 4] -> [N, Cout, 2H, 2W]
//   conv2d_weight_grad: input [N, Cin, H, W], grad_out [N, Cout, H/2, W/2] -> [Cout, Cin, 4, 4]
// (H and W even for the conv2d forms.) Any strides in (the kernels gather small
// channels-innermost bands of rows); the output is channels_last when the input is
// channels_last, NCHW otherwise. The
// backward passes of both convolutions are these three functions again (see
// conv2d_backward / conv_transpose2d_backward).

#include <ATen/core/Tensor.h>

#include <array>
#include <tuple>

namespace fastgen::winograd {

// Whether the Winograd path handles the convolution: CPU float32, weight 4x4, stride 2,
// padding 1, dilation 1, groups 1, output_padding 0, even input sizes for conv2d, and
// channel counts large enough that the GEMMs dominate the transforms (below that oneDNN
// wins), and the path switched on (set_enabled; fastgen/_backend.py mirrors FASTGEN_WINOGRAD
// and fastgen.registry.set_winograd into it).
bool eligible(const at::Tensor& input, const at::Tensor& weight, at::IntArrayRef stride,
              at::IntArrayRef padding, at::IntArrayRef output_padding, at::IntArrayRef dilation,
              int64_t groups, bool transposed);

// Turns the Winograd path on or off for every later call (on until told otherwise).
void set_enabled(bool enabled);
bool enabled();

// Whether the values of the two operands of a Winograd product keep its transforms exact
// enough and finite: every value finite and max|a| * max|b| < 2^90 (each < 2^100). The
// transforms add and scale up to 25 values before the product, so inf and NaN would spread
// to 4-8x as many outputs as a direct convolution's and values near 1e37 would overflow where
// stock stays finite; such calls take aten's exact convolution instead (one min/max pass).
bool values_in_range(const at::Tensor& a, const at::Tensor& b);

// What the 25 GEMMs multiply. Float32: the transformed tiles and weights as they are.
// BFloat16: both rounded to bfloat16 after their float32 transforms, products summed in
// float32 with AVX-512 BF16's `vdpbf16ps` (twice the multiply rate). The callers' operands
// were bfloat16 already (torch.autocast), but the transformed values are sums of up to 25
// of them with coefficients up to 36, and the output transform scales by up to 64, so one
// more rounding of each costs ~10x the error of stock bf16 autocast (DCGAN layers: 2.4-3.7e-2
// of the output's largest value against 2.4-3.1e-3) for 1.2x on the transposed layers'
// forward only. That is why it is opt-in (FASTGEN_WINOGRAD_BF16=1), not the default; README
// "Which CPU convolution runs" has the numbers. Transforms, sums and outputs stay float32.
enum class Products { Float32, BFloat16 };

// The products for operands that were `operands` before the caller converted them to float32:
// BFloat16 for bfloat16 operands where FASTGEN_WINOGRAD_BF16=1 (read on each call) and the CPU
// has the instruction (cpu::bf16_dot_products()); Float32 otherwise (float32 operands, and by
// default bfloat16 ones too, converted on load).
Products products_for(at::ScalarType operands);

// input and weight are float32 (bfloat16 operands converted by the caller, with `products`
// saying so); the result is float32.
at::Tensor conv2d(const at::Tensor& input, const at::Tensor& weight,
                  Products products = Products::Float32);
at::Tensor conv_transpose2d(const at::Tensor& input, const at::Tensor& weight,
                            Products products = Products::Float32);
at::Tensor conv2d_weight_grad(const at::Tensor& input, const at::Tensor& grad_out);

// (grad_input, grad_weight) of the convolutions above; an entry whose mask is false is an
// undefined tensor. `products` applies to grad_input; the weight gradient's GEMMs (summing
// over tiles, not channels) multiply float32.
std::tuple<at::Tensor, at::Tensor> conv2d_backward(const at::Tensor& grad_out,
                                                   const at::Tensor& input,
                                                   const at::Tensor& weight,
                                                   std::array<bool, 2> mask,
                                                   Products products = Products::Float32);
std::tuple<at::Tensor, at::Tensor> conv_transpose2d_backward(const at::Tensor& grad_out,
                                                             const at::Tensor& input,
                                                             const at::Tensor& weight,
                                                             std::array<bool, 2> mask,
                                                             Products products = Products::Float32);

// The implementations of the five above, compiled once per CPU capability
// (winograd_conv_kernels.cpp, winograd_weight_grad_kernels.cpp), plus its GEMM panel
// (loops.gemm_panel, or at::mm where the table has none); the functions above pick the copy for
// this CPU.
struct Kernels;
#define FASTGEN_WINOGRAD_CPU(ns)                                                                   \
  namespace ns {                                                                                   \
  at::Tensor conv2d(const at::Tensor& input, const at::Tensor& weight, Products products);         \
  at::Tensor conv_transpose2d(const at::Tensor& input, const at::Tensor& weight,                   \
                              Products products);                                                  \
  at::Tensor conv2d_weight_grad(const at::Tensor& input, const at::Tensor& grad_out);              \
  std::tuple<at::Tensor, at::Tensor> conv2d_backward(const at::Tensor& grad_out,                   \
                                                     const at::Tensor& input,                      \
                                                     const at::Tensor& weight,                     \
                                                     std::array<bool, 2> mask, Products products); \
  std::tuple<at::Tensor, at::Tensor> conv_transpose2d_backward(const at::Tensor& grad_out,         \
                                                               const at::Tensor& input,            \
                                                               const at::Tensor& weight,           \
                                                               std::array<bool, 2> mask,           \
                                                               Products products);                 \
  void gemm_panel(const Kernels& loops, const float* a, int64_t lda, bool a_transposed,            \
                  const float* b, int64_t ldb, float* c, int64_t ldc, int64_t m, int64_t k,        \
                  int64_t width);                                                                  \
  }
FASTGEN_WINOGRAD_CPU(baseline)
FASTGEN_WINOGRAD_CPU(avx2)
FASTGEN_WINOGRAD_CPU(avx512)
#undef FASTGEN_WINOGRAD_CPU

}  // namespace fastgen::winograd
