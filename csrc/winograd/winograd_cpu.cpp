// Winograd F(4x4, 2x2) convolutions on CPU: eligibility, the choice of the kernels' copy for
// this CPU (winograd_cpu_kernels.cpp, one per capability) and the test/benchmark ops.
// The algorithm is described in winograd_cpu_kernels.cpp; the math and shapes in
// winograd_cpu.h.
//
// The convolution is a 2x2 valid correlation of the input's four phases (sources read with
// zero padding and a stride of 2, channels concatenated):
//   1. input transform:  V[pos, t, c] = (B^T d B)[pos] for each 5x5 input tile d,
//   2. one GEMM per position: M[pos] = V[pos] @ U[pos]   ([T, C] x [C, Cout]),
//   3. output transform: each 4x4 output tile = A^T m A, written through the output's strides.
// The transposed convolution runs the transposed algorithm (see conv_transpose2d below) and
// the weight gradient its own transform (run_weight_grad). The transforms run over channels
// in the innermost loop (contiguous in V, M and the gathered bands), so they vectorise;
// tile rows are split across threads.

#include "winograd/winograd_cpu.h"

#include "common/cpu_capability.h"
#include "winograd/winograd_kernels.h"

#include <ATen/ATen.h>
#include <ATen/Parallel.h>

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <atomic>
#include <cstring>
#include <string>
#include <vector>

namespace fastgen::winograd {

const Kernels& kernels() {
  return *FASTGEN_CPU_KERNEL(winograd, kKernels);
}

namespace {
std::atomic<bool> g_enabled{true};
}  // namespace

void set_enabled(bool enabled) {
  g_enabled.store(enabled, std::memory_order_relaxed);
}
bool enabled() {
  return g_enabled.load(std::memory_order_relaxed);
}

bool eligible(const at::Tensor& input, const at::Tensor& weight, at::IntArrayRef stride,
              at::IntArrayRef padding, at::IntArrayRef output_padding, at::IntArrayRef dilation,
              int64_t groups, bool transposed) {
  if (!enabled() || !input.device().is_cpu() || input.scalar_type() != at::kFloat ||
      weight.scalar_type() != at::kFloat || input.dim() != 4 || weight.dim() != 4 || groups != 1)
    return false;
  const auto all = [](at::IntArrayRef values, int64_t want) {
    for (auto v : values)
      if (v != want) return false;
    return true;
  };
  if (weight.size(2) != 4 || weight.size(3) != 4 || !all(stride, 2) || !all(padding, 1) ||
      !all(dilation, 1) || !all(output_padding, 0))
    return false;
  const int64_t in_ch = input.size(1);
  const int64_t out_ch = transposed ? weight.size(1) : weight.size(0);
  if (!transposed && (input.size(2) % 2 || input.size(3) % 2)) return false;
  if (input.numel() == 0) return false;
  // Below ~32 channels on either side the GEMMs are too thin for the transforms to pay off,
  // and below ~32 tiles per GEMM the per-call weight transform outweighs the GEMM (measured
  // on the DCGAN layers: see notes/winograd.md).
  const int64_t out_h = transposed ? input.size(2) : input.size(2) / 2;
  const int64_t out_w = transposed ? input.size(3) : input.size(3) / 2;
  const int64_t tiles =
      input.size(0) * ((out_h + kTile - 1) / kTile) * ((out_w + kTile - 1) / kTile);
  return in_ch >= 32 && out_ch >= 32 && tiles >= 32;
}

bool values_in_range(const at::Tensor& a, const at::Tensor& b) {
  const auto magnitude = [](const at::Tensor& t) {
    const auto [low, high] = at::aminmax(t);
    const double lo = low.item<double>(), hi = high.item<double>();
    return (std::isfinite(lo) && std::isfinite(hi)) ? std::max(-lo, hi) : INFINITY;
  };
  const double ma = magnitude(a), mb = magnitude(b);
  constexpr double kEach = 0x1p100, kProduct = 0x1p90;
  return ma < kEach && mb < kEach && ma * mb < kProduct;
}

at::Tensor conv2d(const at::Tensor& input, const at::Tensor& weight) {
  return FASTGEN_CPU_KERNEL(winograd, conv2d)(input, weight);
}

at::Tensor conv_transpose2d(const at::Tensor& input, const at::Tensor& weight) {
  return FASTGEN_CPU_KERNEL(winograd, conv_transpose2d)(input, weight);
}

at::Tensor conv2d_weight_grad(const at::Tensor& input, const at::Tensor& grad_out) {
  return FASTGEN_CPU_KERNEL(winograd, conv2d_weight_grad)(input, grad_out);
}

std::tuple<at::Tensor, at::Tensor> conv2d_backward(const at::Tensor& grad_out,
                                                   const at::Tensor& input,
                                                   const at::Tensor& weight,
                                                   std::array<bool, 2> mask) {
  return FASTGEN_CPU_KERNEL(winograd, conv2d_backward)(grad_out, input, weight, mask);
}

std::tuple<at::Tensor, at::Tensor> conv_transpose2d_backward(const at::Tensor& grad_out,
                                                             const at::Tensor& input,
                                                             const at::Tensor& weight,
                                                             std::array<bool, 2> mask) {
  return FASTGEN_CPU_KERNEL(winograd, conv_transpose2d_backward)(grad_out, input, weight, mask);
}

}  // namespace fastgen::winograd

#include <torch/library.h>

namespace fastgen::winograd {
namespace {

// The exposed ops check their arguments here (the library's own calls come through
// eligible() and are valid by construction).
void check_float_4d(const char* op, const char* name, const at::Tensor& t) {
  TORCH_CHECK(t.device().is_cpu() && t.scalar_type() == at::kFloat && t.dim() == 4, op, ": ", name,
              " must be a 4-D float32 CPU tensor, got ", t.dim(), "-D ", t.scalar_type(), " on ",
              t.device());
  TORCH_CHECK(t.numel() > 0, op, ": ", name, " must not be empty, got shape ", t.sizes());
}

// input and a 4x4 weight whose dimension `in_dim` (1 for conv2d's [C_out, C_in, 4, 4], 0 for
// the transposed convolution's [C_in, C_out, 4, 4]) holds input's channels.
void check_input_and_weight(const char* op, const at::Tensor& input, const at::Tensor& weight,
                            int in_dim) {
  check_float_4d(op, "input", input);
  check_float_4d(op, "weight", weight);
  const std::string c_in = std::to_string(input.size(1));
  TORCH_CHECK(weight.size(in_dim) == input.size(1) && weight.size(2) == 4 && weight.size(3) == 4,
              op, ": weight must be [", in_dim == 1 ? "C_out, " + c_in : c_in + ", C_out",
              ", 4, 4], got ", weight.sizes());
}

at::Tensor conv2d_op(const at::Tensor& input, const at::Tensor& weight) {
  constexpr const char* op = "fastgen::winograd_conv2d";
  check_input_and_weight(op, input, weight, /*in_dim=*/1);
  TORCH_CHECK(input.size(2) % 2 == 0 && input.size(3) % 2 == 0, op,
              ": input height and width must be even, got ", input.sizes());
  return winograd::conv2d(input, weight);
}

at::Tensor conv_transpose2d_op(const at::Tensor& input, const at::Tensor& weight) {
  check_input_and_weight("fastgen::winograd_conv_transpose2d", input, weight, /*in_dim=*/0);
  return winograd::conv_transpose2d(input, weight);
}

at::Tensor conv2d_weight_grad_op(const at::Tensor& input, const at::Tensor& grad_out) {
  constexpr const char* op = "fastgen::winograd_conv2d_weight_grad";
  check_float_4d(op, "input", input);
  check_float_4d(op, "grad_out", grad_out);
  TORCH_CHECK(
      input.size(2) % 2 == 0 && input.size(3) % 2 == 0 && grad_out.size(0) == input.size(0) &&
          grad_out.size(2) * 2 == input.size(2) && grad_out.size(3) * 2 == input.size(3),
      op, ": grad_out must be [", input.size(0), ", C_out, ", input.size(2) / 2, ", ",
      input.size(3) / 2, "] for an input of even size ", input.sizes(), ", got ", grad_out.sizes());
  return conv2d_weight_grad(input, grad_out);
}

}  // namespace
}  // namespace fastgen::winograd

namespace fastgen::winograd {

// a @ b (or a^T @ b) through the GEMM panels, 32 columns of b at a time.
at::Tensor gemm_op(const at::Tensor& a, const at::Tensor& b, bool a_transposed) {
  constexpr const char* op = "fastgen::winograd_gemm";
  for (const auto& [name, t] : {std::pair{"a", &a}, std::pair{"b", &b}}) {
    TORCH_CHECK_VALUE(t->dim() == 2 && t->device().is_cpu() && t->scalar_type() == at::kFloat, op,
                      ": ", name, " must be a 2-D float32 CPU tensor, got ", t->sizes(), " ",
                      t->scalar_type());
  }
  const at::Tensor a_c = a.contiguous(), b_c = b.contiguous();
  const int64_t m = a_transposed ? a.size(1) : a.size(0), k = a_transposed ? a.size(0) : a.size(1);
  TORCH_CHECK_VALUE(b.size(0) == k, op, ": b has ", b.size(0), " rows, expected ", k);
  const int64_t n = b.size(1);
  at::Tensor c = at::empty({m, n}, a.options());
  const auto gemm_panel = FASTGEN_CPU_KERNEL(winograd, gemm_panel);
  const Kernels& loops = kernels();
  for (int64_t column = 0; column < n; column += kGemmPanel) {
    gemm_panel(loops, a_c.const_data_ptr<float>(), a_c.size(1), a_transposed,
               b_c.const_data_ptr<float>() + column, n, c.mutable_data_ptr<float>() + column, n, m,
               k, std::min(kGemmPanel, n - column));
  }
  return c;
}

}  // namespace fastgen::winograd

TORCH_LIBRARY_IMPL(fastgen, CPU, m) {
  m.impl("winograd_gemm", &fastgen::winograd::gemm_op);
  m.impl("winograd_conv2d", &fastgen::winograd::conv2d_op);
  m.impl("winograd_conv_transpose2d", &fastgen::winograd::conv_transpose2d_op);
  m.impl("winograd_conv2d_weight_grad", &fastgen::winograd::conv2d_weight_grad_op);
}
