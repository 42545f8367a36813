// fastgen::conv_transpose2d on CUDA: the driver (conv_transpose2d.cpp) with, per call
// (conv::route), fastgen's implicit-GEMM engine (conv/implicit_gemm_cuda.cuh) or cuDNN's
// convolution and the epilogue kernels of conv_transpose2d_cuda.cuh.

#include <torch/library.h>

#include "conv_transpose2d/conv_transpose2d.h"
#include "conv_transpose2d/conv_transpose2d_cuda.cuh"

namespace fastgen {
namespace {

constexpr conv::Engine kEngine{cuda::implicit_gemm::forward, cuda::implicit_gemm::backward};

conv::Kernels cuda_kernels() {
  return {kConvTranspose2dAten, {cuda::bias_activation, cuda::activation_backward, &kEngine}};
}

}  // namespace

TORCH_LIBRARY_IMPL(fastgen, CUDA, m) {
  m.impl("conv_transpose2d", &conv_transpose2d_op<cuda_kernels>);
  m.impl("conv_transpose2d_backward", &conv_transpose2d_backward_op<cuda_kernels>);
  m.impl("conv_transpose2d_with_stats", &conv_transpose2d_with_stats_op<cuda_kernels>);
}

}  // namespace fastgen
