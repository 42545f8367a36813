// The CUDA kernels of both conv ops (conv::cuda_kernels, conv/conv_common.h): cuDNN's
// convolution through aten, the epilogue kernels (conv/conv_epilogue_cuda.cu)
// and fastgen's implicit-GEMM engine (conv/implicit_gemm_cuda.cu), which the drivers take
// per call as conv::route() says.

#include "conv/conv_common.h"

namespace fastgen::conv {
namespace {

constexpr Engine kEngine{cuda::implicit_gemm::forward, cuda::implicit_gemm::backward};

}  // namespace

Kernels cuda_kernels() {
  return {kLibrary, {cuda::bias_activation, cuda::activation_backward, &kEngine}};
}

}  // namespace fastgen::conv
