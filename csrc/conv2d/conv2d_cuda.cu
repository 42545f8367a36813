// fastgen::conv2d on CUDA: the registration only. The kernels are both conv ops' CUDA ones
// (conv::cuda_kernels, conv/conv_cuda.cu): per call (conv::route), fastgen's implicit-GEMM
// engine, or cuDNN's convolution through the public aten op with the bias + activation
// epilogue and activation backward kernels (conv/conv_epilogue_cuda.cuh).

#include <torch/library.h>

#include "conv2d/conv2d.h"

namespace fastgen {

TORCH_LIBRARY_IMPL(fastgen, CUDA, m) {
  m.impl("conv2d", &conv2d_op<conv::cuda_kernels>);
  m.impl("conv2d_backward", &conv2d_backward_op<conv::cuda_kernels>);
}

}  // namespace fastgen
