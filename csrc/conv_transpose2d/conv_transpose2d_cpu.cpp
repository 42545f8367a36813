// fastgen::conv_transpose2d on CPU: the convolution hooks and the CPU registration.
//
// Every CPU transposed convolution of the op goes through the two functions below (the shape
// tests and the kernels they pick); the driver (conv::forward / conv::backward) and the epilogues,
// shared with conv2d (conv/conv_epilogue_cpu.cpp), stay as they are.

#include <torch/library.h>

#include "common/emulated_cuda.h"
#include "conv/conv_common.h"
#include "conv/gemm/gemm_conv_cpu.h"
#include "conv/conv_select_cpu.h"
#include "conv/few_channels/few_channels.h"
#include "conv_transpose2d/conv_transpose2d.h"
#include "conv/winograd/winograd_cpu.h"

namespace fastgen {

namespace {

// 4x4 stride-2 layers (the DCGAN generator's) take the Winograd kernels (csrc/conv/winograd), a
// few shapes are plain GEMMs (conv/gemm/gemm_conv_cpu.h), layers to an image the few-channel
// kernels (conv/few_channels), everything else the aten convolution, as measured.
bool use_winograd(const at::Tensor& input, const at::Tensor& weight,
                  const conv::Geometry& geometry) {
  return winograd::eligible(input, weight, geometry.stride, geometry.padding,
                            geometry.output_padding, geometry.dilation, geometry.groups,
                            /*transposed=*/true);
}

// fastgen's own transposed convolution for the call (float32/float64 operands): Winograd;
// nullopt where it has none. conv/conv_select_cpu.h chooses between it and aten's.
std::optional<at::Tensor> own_forward(const at::Tensor& input, const at::Tensor& weight,
                                      const conv::Geometry& geometry, at::ScalarType operands) {
  if (use_winograd(input, weight, geometry)) {
    return winograd::values_in_range(input, weight)
               ? winograd::conv_transpose2d(input, weight, winograd::products_for(operands))
               : conv::library_forward(input, weight, geometry);
  }
  return std::nullopt;
}

// (grad_input, grad_weight, grad_bias) of own_forward for the pre-activation gradient
// grad_pre (see conv::Convolution in conv/conv_common.h for the contract; fastgen's kernels
// leave grad_bias to the driver); nullopt where fastgen has no kernel for the shape.
std::optional<conv::select::Grads> own_backward(const at::Tensor& grad_pre, const at::Tensor& input,
                                                const at::Tensor& weight,
                                                const conv::Geometry& geometry,
                                                std::array<bool, 3> output_mask,
                                                at::ScalarType operands) {
  if (!use_winograd(input, weight, geometry) || grad_pre.scalar_type() != at::kFloat) {
    return std::nullopt;
  }
  if (!winograd::values_in_range(grad_pre, weight) || !winograd::values_in_range(input, grad_pre)) {
    return conv::library_backward(grad_pre, input, weight, geometry, output_mask);
  }
  auto [grad_input, grad_weight] = winograd::conv_transpose2d_backward(
      grad_pre, input, weight, {output_mask[0], output_mask[1]}, winograd::products_for(operands));
  return conv::select::Grads{grad_input, grad_weight, at::Tensor()};
}

// fastgen's candidates: first, in the call's own dtype, the GEMM shapes and the layers to or
// from an image; then Winograd (float32 operands).
constexpr conv::select::Own kOwn{own_forward,
                                 {gemm_shapes::forward, few_channels::forward},
                                 own_backward,
                                 {gemm_shapes::backward, few_channels::backward}};

// conv_transpose2d(input, weight) without bias on CPU, and its backward: fastgen's kernel or
// aten's, as conv/conv_select_cpu.h chooses.
at::Tensor conv_transpose2d_convolution_cpu(const at::Tensor& input, const at::Tensor& weight,
                                            const conv::Geometry& geometry) {
  return conv::select::forward("conv_transpose2d", input, weight, geometry, kOwn);
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> conv_transpose2d_convolution_backward_cpu(
    const at::Tensor& grad_pre, const at::Tensor& input, const at::Tensor& weight,
    const conv::Geometry& geometry, std::array<bool, 3> output_mask) {
  return conv::select::backward("conv_transpose2d", grad_pre, input, weight, geometry, output_mask,
                                kOwn);
}

// The CPU backend's kernels, or, while the emulated-cuda backend is on, what the CUDA build
// runs: the aten convolution and the CUDA epilogues (emulated).
conv::Kernels cpu_kernels() {
  return conv::cpu_or_emulated(
      {conv_transpose2d_convolution_cpu, conv_transpose2d_convolution_backward_cpu});
}

}  // namespace

TORCH_LIBRARY_IMPL(fastgen, CPU, m) {
  m.impl("conv_transpose2d", &conv_transpose2d_op<cpu_kernels>);
  m.impl("conv_transpose2d_backward", &conv_transpose2d_backward_op<cpu_kernels>);
  m.impl("conv_transpose2d_with_stats", &conv_transpose2d_with_stats_op<cpu_kernels>);
  emulation::note_routed("conv_transpose2d");
  emulation::note_routed("conv_transpose2d_backward");
  emulation::note_routed("conv_transpose2d_with_stats");
}

}  // namespace fastgen
