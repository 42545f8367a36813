// The CPU epilogues of both convolutions (conv/conv_common.h): the choice of the kernels' copy
// for this CPU (conv_epilogue_cpu_kernels.cpp, one per capability) and the tanh / sigmoid
// case, which goes to ATen. Their CUDA twins are conv_epilogue_cuda.cuh.

#include <ATen/ATen.h>

#include "common/cpu_capability.h"
#include "conv/conv_common.h"

namespace fastgen {

void bias_activation_cpu(at::Tensor& out, const at::Tensor& bias, Activation activation,
                         double negative_slope) {
  const auto bias_activation = FASTGEN_CPU_KERNEL(conv_epilogue, bias_activation);
  if (activation == Activation::Tanh || activation == Activation::Sigmoid) {
    // A scalar std::tanh/exp per element costs several times the memory pass (the compiler
    // does not vectorize libm calls); ATen's in-place tanh_/sigmoid_ have vectorized
    // polynomials for every capability. So: the bias pass here, then ATen's activation pass.
    // Measured on the 2-core CI CPU (DCGAN output layer 16->3, 32x32 -> 64x64, N=16): one
    // scalar pass 4.7 ms vs 2.7 ms for stock conv + tanh.
    if (bias.defined()) bias_activation(out, bias, Activation::Identity, negative_slope);
    if (activation == Activation::Tanh) {
      out.tanh_();
    } else {
      out.sigmoid_();
    }
    return;
  }
  bias_activation(out, bias, activation, negative_slope);
}

at::Tensor activation_backward_cpu(const at::Tensor& grad_out, const at::Tensor& output,
                                   Activation activation, double negative_slope) {
  return FASTGEN_CPU_KERNEL(conv_epilogue, activation_backward)(grad_out, output, activation,
                                                                negative_slope);
}

}  // namespace fastgen
