// fastgen::conv2d on CUDA: the registration only.
//
// The convolution is cuDNN's, through the public aten op (conv2d_convolution_aten in
// conv2d.cpp); the bias + activation epilogue and the activation backward are
// conv_transpose2d's CUDA kernels (conv_transpose2d_cuda.cuh), which handle any NCHW or
// channels_last output. No kernel of its own yet, so this file only wires them together.

#include <torch/library.h>

#include "conv2d/conv2d.h"
#include "conv_transpose2d/conv_transpose2d.h"

namespace fastgen {

namespace {

Conv2dKernels cuda_kernels() {
  return {conv2d_convolution_aten,
          conv2d_convolution_backward_aten,
          {cuda::bias_activation, cuda::activation_backward}};
}

}  // namespace

TORCH_LIBRARY_IMPL(fastgen, CUDA, m) {
  m.impl("conv2d", &conv2d_op<cuda_kernels>);
  m.impl("conv2d_backward", &conv2d_backward_op<cuda_kernels>);
}

}  // namespace fastgen
