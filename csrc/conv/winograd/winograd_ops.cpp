// The Winograd kernels as registered ops for tests and benchmarks (torch.ops.fastgen.winograd_*,
// schemas in csrc/fastgen.cpp): the library calls them through winograd_cpu.h after its own
// eligibility test, these check their arguments first.

#include <ATen/ATen.h>
#include <torch/library.h>

#include <algorithm>
#include <string>
#include <utility>

#include "conv/winograd/winograd_cpu.h"
#include "common/cpu_capability.h"
#include "conv/winograd/winograd_kernels.h"

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
