// fastgen::conv_transpose2d on CUDA: the epilogue kernels of conv_transpose2d_cuda.cuh (which
// conv2d uses too) built by nvcc, and the registration, with both conv ops' CUDA kernels
// (conv::cuda_kernels, conv/conv_cuda.cu): per call (conv::route), fastgen's implicit-GEMM
// engine or cuDNN's convolution and those epilogues.

#include <torch/library.h>

#include "conv_transpose2d/conv_transpose2d.h"
#include "conv_transpose2d/conv_transpose2d_cuda.cuh"

namespace fastgen {

TORCH_LIBRARY_IMPL(fastgen, CUDA, m) {
  m.impl("conv_transpose2d", &conv_transpose2d_op<conv::cuda_kernels>);
  m.impl("conv_transpose2d_backward", &conv_transpose2d_backward_op<conv::cuda_kernels>);
  m.impl("conv_transpose2d_with_stats", &conv_transpose2d_with_stats_op<conv::cuda_kernels>);
}

}  // namespace fastgen
