// fastgen::conv2d on CUDA: the registration only.
//
// Per call (conv::route): fastgen's implicit-GEMM engine (conv/implicit_gemm_cuda.cuh, shared
// with conv_transpose2d), or cuDNN's convolution through the public aten op
// (conv2d_convolution_aten in conv2d.cpp) with conv_transpose2d's bias + activation epilogue
// and activation backward kernels (conv_transpose2d_cuda.cuh).

#include <torch/library.h>

#include "conv2d/conv2d.h"
#include "conv/conv_common.h"

namespace fastgen {

namespace {

constexpr conv::Engine kEngine{cuda::implicit_gemm::forward, cuda::implicit_gemm::backward};

conv::Kernels cuda_kernels() {
  return {kConv2dAten, {cuda::bias_activation, cuda::activation_backward, &kEngine}};
}

}  // namespace

TORCH_LIBRARY_IMPL(fastgen, CUDA, m) {
  m.impl("conv2d", &conv2d_op<cuda_kernels>);
  m.impl("conv2d_backward", &conv2d_backward_op<cuda_kernels>);
}

}  // namespace fastgen
