// fastgen::batch_norm_leaky_relu on CPU: the argument checks, the choice of the kernels' copy
// for this CPU (batch_norm_leaky_relu_cpu_kernels.cpp, one per capability), and the CPU
// registration.

#include <torch/library.h>

#include "batch_norm_leaky_relu/batch_norm_leaky_relu.h"
#include "common/cpu_capability.h"
#include "common/emulated_cuda.h"

namespace fastgen::batch_norm_leaky_relu {
namespace {

std::tuple<at::Tensor, at::Tensor, at::Tensor> forward_cpu(
    const at::Tensor& input, const std::optional<at::Tensor>& weight,
    const std::optional<at::Tensor>& bias, const std::optional<at::Tensor>& running_mean,
    const std::optional<at::Tensor>& running_var, bool training, double eps,
    double negative_slope) {
  check_forward("fastgen::batch_norm_leaky_relu", input, weight, bias, running_mean, running_var,
                training);
  return FASTGEN_CPU_KERNEL(batch_norm_leaky_relu, forward_cpu)(
      input, weight, bias, running_mean, running_var, training, eps, negative_slope);
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> backward_cpu(
    const at::Tensor& grad_out, const at::Tensor& input, const std::optional<at::Tensor>& weight,
    const std::optional<at::Tensor>& bias, const at::Tensor& mean, const at::Tensor& var,
    bool training, double eps, double negative_slope, std::array<bool, 3> output_mask) {
  check_backward("fastgen::batch_norm_leaky_relu_backward", grad_out, input, "input", weight, bias,
                 mean, var);
  return FASTGEN_CPU_KERNEL(batch_norm_leaky_relu, backward_cpu)(
      grad_out, input, weight, bias, mean, var, training, eps, negative_slope, output_mask);
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> backward_from_output_cpu(
    const at::Tensor& grad_out, const at::Tensor& output, const std::optional<at::Tensor>& weight,
    const std::optional<at::Tensor>& bias, const at::Tensor& var, bool training, double eps,
    double negative_slope, std::array<bool, 3> output_mask) {
  constexpr const char* op = "fastgen::batch_norm_leaky_relu_backward_from_output";
  check_backward(op, grad_out, output, "output", weight, bias, var, var);
  TORCH_CHECK_VALUE(negative_slope > 0, op, ": negative_slope must be > 0, got ", negative_slope);
  return FASTGEN_CPU_KERNEL(batch_norm_leaky_relu, backward_from_output_cpu)(
      grad_out, output, weight, bias, var, training, eps, negative_slope, output_mask);
}

}  // namespace

// The ops with a CUDA kernel route to it while the emulated-cuda backend is on
// (common/emulated_cuda.h); the backward from the output has none, as on CUDA.
TORCH_LIBRARY_IMPL(fastgen, CPU, m) {
  using emulation::Kernels;
  using emulation::route;
  m.impl("batch_norm_leaky_relu", &route<&forward_cpu, &Kernels::batch_norm_leaky_relu>::call);
  m.impl("batch_norm_leaky_relu_backward",
         &route<&backward_cpu, &Kernels::batch_norm_leaky_relu_backward>::call);
  m.impl("batch_norm_leaky_relu_memory_saving",
         &route<&forward_cpu, &Kernels::batch_norm_leaky_relu>::call);
  m.impl("batch_norm_leaky_relu_backward_from_output", &backward_from_output_cpu);
  for (const char* op : {"batch_norm_leaky_relu", "batch_norm_leaky_relu_backward",
                         "batch_norm_leaky_relu_memory_saving"}) {
    emulation::note_routed(op);
  }
}

}  // namespace fastgen::batch_norm_leaky_relu
