#pragma once
// BatchNorm2d + LeakyReLU: what the CPU and CUDA kernels share.
//
// Math, per channel c over the N*H*W values of x (M of them):
//   mean, var        batch statistics (biased var) in training, the running ones in eval
//   invstd = 1 / sqrt(var + eps)
//   scale = weight * invstd,  shift = bias - mean * scale       (weight=1, bias=0 if absent)
//   v = x * scale + shift,    out = v > 0 ? v : negative_slope * v
// Backward, with g = grad_out * (v > 0 ? 1 : negative_slope):
//   grad_bias = sum(g),  grad_weight = invstd * sum(g * (x - mean))
//   training: grad_x = scale * (g - sum(g)/M - (x - mean) * invstd^2 * sum(g * (x - mean))/M)
//   eval:     grad_x = scale * g
// Both passes compute v with the same expression, so the activation's branch taken in
// backward is bit-for-bit the one taken in forward.
//
// Statistics and sums are accumulated in acc_t (float32 for half inputs); partial results
// are merged in a fixed order (Chan et al.'s pairwise update for (count, mean, M2)), so the
// result does not depend on the number of threads or on timing.

#include <ATen/core/Tensor.h>
#include <c10/core/MemoryFormat.h>

#include <array>
#include <optional>
#include <tuple>

#include "common/checks.h"

namespace fastgen::batch_norm_leaky_relu {

// The two memory layouts the kernels run on; any other strides are copied once to NCHW.
enum class Layout { NCHW, NHWC };

// NCHW when the input is contiguous (this also covers inputs that are both, like C == 1),
// NHWC when it is channels_last, else NCHW after one copy. The Python fake kernel mirrors it.
inline Layout choose_layout(const at::Tensor& input) {
  if (input.is_contiguous()) return Layout::NCHW;
  if (input.is_contiguous(at::MemoryFormat::ChannelsLast)) return Layout::NHWC;
  return Layout::NCHW;
}

inline at::MemoryFormat memory_format(Layout layout) {
  return layout == Layout::NHWC ? at::MemoryFormat::ChannelsLast : at::MemoryFormat::Contiguous;
}

// Sizes of one call, shared by every kernel.
struct Shape {
  int64_t batch = 0;                                 // N
  int64_t channels = 0;                              // C
  int64_t spatial = 0;                               // H * W
  int64_t count() const { return batch * spatial; }  // values per channel (M)
};

inline Shape shape_of(const at::Tensor& input) {
  return {input.size(0), input.size(1), input.size(2) * input.size(3)};
}

// The checks every entry point runs first (common/checks.h): `op` names the schema.
inline void check_forward(const char* op, const at::Tensor& input,
                          const std::optional<at::Tensor>& weight,
                          const std::optional<at::Tensor>& bias,
                          const std::optional<at::Tensor>& running_mean,
                          const std::optional<at::Tensor>& running_var, bool training) {
  checks::floating(op, "input", input);
  checks::dim(op, "input", input, 4, " [N, C, H, W]");
  const int64_t channels = input.size(1);
  checks::channel_parameter(op, "weight", weight, input, channels);
  checks::channel_parameter(op, "bias", bias, input, channels);
  checks::channel_parameter(op, "running_mean", running_mean, input, channels);
  checks::channel_parameter(op, "running_var", running_var, input, channels);
  TORCH_CHECK_VALUE(training || (running_mean.has_value() && running_var.has_value()), op,
                    ": eval (training=False) needs running_mean and running_var");
}

// `saved` is the input (or, from the output, the output); mean and var are the forward's.
inline void check_backward(const char* op, const at::Tensor& grad_out, const at::Tensor& saved,
                           const char* saved_name, const std::optional<at::Tensor>& weight,
                           const std::optional<at::Tensor>& bias, const at::Tensor& mean,
                           const at::Tensor& var) {
  checks::floating(op, saved_name, saved);
  checks::dim(op, saved_name, saved, 4, " [N, C, H, W]");
  checks::like(op, "grad_out", grad_out, saved_name, saved, saved.sizes());
  const int64_t channels = saved.size(1);
  checks::channel_parameter(op, "weight", weight, saved, channels);
  checks::channel_parameter(op, "bias", bias, saved, channels);
  checks::like(op, "mean", mean, saved_name, saved, at::IntArrayRef{channels}, /*dtype=*/false);
  checks::like(op, "var", var, saved_name, saved, at::IntArrayRef{channels}, /*dtype=*/false);
}

// Schema entry points: (out, mean, var) and (grad_input, grad_weight, grad_bias); a gradient
// not asked for by output_mask is returned as an empty tensor. They check their arguments
// first (batch_norm_leaky_relu_cpu_kernels.cpp, compiled once per capability into namespaces
// baseline, avx2 and avx512 with these signatures; the op runs the copy for this CPU).
#define FASTGEN_BATCH_NORM_LEAKY_RELU_CPU(ns)                                               \
  namespace ns {                                                                            \
  std::tuple<at::Tensor, at::Tensor, at::Tensor> forward_cpu(                               \
      const at::Tensor& input, const std::optional<at::Tensor>& weight,                     \
      const std::optional<at::Tensor>& bias, const std::optional<at::Tensor>& running_mean, \
      const std::optional<at::Tensor>& running_var, bool training, double eps,              \
      double negative_slope);                                                               \
  std::tuple<at::Tensor, at::Tensor, at::Tensor> backward_cpu(                              \
      const at::Tensor& grad_out, const at::Tensor& input,                                  \
      const std::optional<at::Tensor>& weight, const std::optional<at::Tensor>& bias,       \
      const at::Tensor& mean, const at::Tensor& var, bool training, double eps,             \
      double negative_slope, std::array<bool, 3> output_mask);                              \
  /* Memory-saving backward: from the output instead of the input (see fastgen.cpp). */     \
  std::tuple<at::Tensor, at::Tensor, at::Tensor> backward_from_output_cpu(                  \
      const at::Tensor& grad_out, const at::Tensor& output,                                 \
      const std::optional<at::Tensor>& weight, const std::optional<at::Tensor>& bias,       \
      const at::Tensor& var, bool training, double eps, double negative_slope,              \
      std::array<bool, 3> output_mask);                                                     \
  }
FASTGEN_BATCH_NORM_LEAKY_RELU_CPU(baseline)
FASTGEN_BATCH_NORM_LEAKY_RELU_CPU(avx2)
FASTGEN_BATCH_NORM_LEAKY_RELU_CPU(avx512)
#undef FASTGEN_BATCH_NORM_LEAKY_RELU_CPU

// The CUDA launchers (batch_norm_leaky_relu_cuda.cuh) as the emulated build compiles them
// (FASTGEN_BACKEND=emulated-cuda); nvcc builds the same code as cuda::forward / backward.
namespace emulated_cuda {
std::tuple<at::Tensor, at::Tensor, at::Tensor> forward(
    const at::Tensor& input, const std::optional<at::Tensor>& weight,
    const std::optional<at::Tensor>& bias, const std::optional<at::Tensor>& running_mean,
    const std::optional<at::Tensor>& running_var, bool training, double eps, double negative_slope);
std::tuple<at::Tensor, at::Tensor, at::Tensor> backward(
    const at::Tensor& grad_out, const at::Tensor& input, const std::optional<at::Tensor>& weight,
    const std::optional<at::Tensor>& bias, const at::Tensor& mean, const at::Tensor& var,
    bool training, double eps, double negative_slope, std::array<bool, 3> output_mask);
}  // namespace emulated_cuda

}  // namespace fastgen::batch_norm_leaky_relu
