// fastgen::conv2d on CUDA: the registration only.
//
// The convolution is cuDNN's, through the public aten op (conv2d_convolution_aten in
// conv2d.cpp); the bias + activation epilogue and the activation backward are
// conv_transpose2d's CUDA kernels (conv_transpose2d_cuda.cu), which handle any NCHW or
// channels_last output. No kernel of its own yet, so this file only wires them together.

#include <torch/library.h>

#include "conv2d/conv2d.h"
#include "conv_transpose2d/conv_transpose2d.h"

namespace fastgen {

namespace {

constexpr Conv2dKernels kCudaKernels{conv2d_convolution_aten,
                                     conv2d_convolution_backward_aten,
                                     {bias_activation_cuda, activation_backward_cuda}};

}  // namespace

TORCH_LIBRARY_IMPL(fastgen, CUDA, m) {
  m.impl("conv2d", &conv2d_op<kCudaKernels>);
  m.impl("conv2d_backward", &conv2d_backward_op<kCudaKernels>);
}

}  // namespace fastgen
