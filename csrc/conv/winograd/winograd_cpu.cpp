// Winograd F(4x4, 2x2) convolutions on CPU: eligibility, the choice of the kernels' copy for
// this CPU (winograd_*_kernels.cpp, one copy per capability). The algorithm is described in
// winograd_conv_kernels.cpp, the math and shapes in winograd_cpu.h; the test and benchmark
// ops are in winograd_ops.cpp.

#include "conv/winograd/winograd_cpu.h"

#include "common/cpu_capability.h"
#include "conv/winograd/winograd_kernels.h"

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

Products products_for(at::ScalarType operands) {
  if (operands != at::kBFloat16) return Products::Float32;
  const char* wanted = std::getenv("FASTGEN_WINOGRAD_BF16");
  if (wanted == nullptr || *wanted == '\0') return Products::Float32;
  TORCH_CHECK_VALUE(std::strcmp(wanted, "0") == 0 || std::strcmp(wanted, "1") == 0,
                    "fastgen: FASTGEN_WINOGRAD_BF16 must be 0 or 1, got '", wanted, "'");
  return std::strcmp(wanted, "1") == 0 && cpu::bf16_dot_products() ? Products::BFloat16
                                                                   : Products::Float32;
}

at::Tensor conv2d(const at::Tensor& input, const at::Tensor& weight, Products products) {
  return FASTGEN_CPU_KERNEL(winograd, conv2d)(input, weight, products);
}

at::Tensor conv_transpose2d(const at::Tensor& input, const at::Tensor& weight, Products products) {
  return FASTGEN_CPU_KERNEL(winograd, conv_transpose2d)(input, weight, products);
}

at::Tensor conv2d_weight_grad(const at::Tensor& input, const at::Tensor& grad_out) {
  return FASTGEN_CPU_KERNEL(winograd, conv2d_weight_grad)(input, grad_out);
}

std::tuple<at::Tensor, at::Tensor> conv2d_backward(const at::Tensor& grad_out,
                                                   const at::Tensor& input,
                                                   const at::Tensor& weight,
                                                   std::array<bool, 2> mask, Products products) {
  return FASTGEN_CPU_KERNEL(winograd, conv2d_backward)(grad_out, input, weight, mask, products);
}

std::tuple<at::Tensor, at::Tensor> conv_transpose2d_backward(const at::Tensor& grad_out,
                                                             const at::Tensor& input,
                                                             const at::Tensor& weight,
                                                             std::array<bool, 2> mask,
                                                             Products products) {
  return FASTGEN_CPU_KERNEL(winograd, conv_transpose2d_backward)(grad_out, input, weight, mask,
                                                                 products);
}

}  // namespace fastgen::winograd
