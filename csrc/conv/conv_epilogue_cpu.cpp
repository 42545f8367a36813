// The CPU epilogues of both convolutions (conv/conv_common.h): the choice of the kernels' copy
// for this CPU (conv_epilogue_cpu_kernels.cpp, one per capability) and the tanh / sigmoid
// case, which goes to ATen.

#include <ATen/ATen.h>

#include "common/cpu_capability.h"
#include "conv/conv_common.h"

namespace fastgen {

namespace {

struct CpuKernels {
  decltype(&conv_epilogue::baseline::bias_activation) bias_activation;
  decltype(&conv_epilogue::baseline::activation_backward) activation_backward;
};

const CpuKernels& kernels() {
  namespace e = conv_epilogue;
  static const CpuKernels kBaseline{e::baseline::bias_activation, e::baseline::activation_backward};
#if defined(__x86_64__)
  static const CpuKernels kAvx2{e::avx2::bias_activation, e::avx2::activation_backward};
  static const CpuKernels kAvx512{e::avx512::bias_activation, e::avx512::activation_backward};
  return cpu::select(kBaseline, &kAvx2, &kAvx512);
#else
  return kBaseline;
#endif
}

}  // namespace

void bias_activation_cpu(at::Tensor& out, const at::Tensor& bias, Activation activation,
                         double negative_slope) {
  if (activation == Activation::Tanh || activation == Activation::Sigmoid) {
    // A scalar std::tanh/exp per element costs several times the memory pass (the compiler
    // does not vectorize libm calls); ATen's in-place tanh_/sigmoid_ have vectorized
    // polynomials for every capability. So: the bias pass here, then ATen's activation pass.
    // Measured on the 2-core CI CPU (DCGAN output layer 16->3, 32x32 -> 64x64, N=16): one
    // scalar pass 4.7 ms vs 2.7 ms for stock conv + tanh.
    if (bias.defined()) kernels().bias_activation(out, bias, Activation::Identity, negative_slope);
    if (activation == Activation::Tanh) {
      out.tanh_();
    } else {
      out.sigmoid_();
    }
    return;
  }
  kernels().bias_activation(out, bias, activation, negative_slope);
}

at::Tensor activation_backward_cpu(const at::Tensor& grad_out, const at::Tensor& output,
                                   Activation activation, double negative_slope) {
  return kernels().activation_backward(grad_out, output, activation, negative_slope);
}

}  // namespace fastgen
