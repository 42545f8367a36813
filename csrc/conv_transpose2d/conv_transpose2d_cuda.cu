// fastgen::conv_transpose2d on CUDA: cuDNN's convolution through the driver
// (conv_transpose2d.cpp) and the epilogue kernels of conv_transpose2d_cuda.cuh.

#include <torch/library.h>

#include "conv_transpose2d/conv_transpose2d.h"
#include "conv_transpose2d/conv_transpose2d_cuda.cuh"

namespace fastgen {
namespace {

ConvTranspose2dEpilogues cuda_epilogues() {
  return {cuda::bias_activation, cuda::activation_backward};
}

}  // namespace

TORCH_LIBRARY_IMPL(fastgen, CUDA, m) {
  m.impl("conv_transpose2d", &conv_transpose2d_op<cuda_epilogues>);
  m.impl("conv_transpose2d_backward", &conv_transpose2d_backward_op<cuda_epilogues>);
}

}  // namespace fastgen
