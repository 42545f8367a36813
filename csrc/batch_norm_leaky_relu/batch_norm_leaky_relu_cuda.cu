// fastgen::batch_norm_leaky_relu on CUDA: the registration of the kernels and launchers in
// batch_norm_leaky_relu_cuda.cuh.

#include <torch/library.h>

#include "batch_norm_leaky_relu/batch_norm_leaky_relu_cuda.cuh"

namespace fastgen::batch_norm_leaky_relu {

TORCH_LIBRARY_IMPL(fastgen, CUDA, m) {
  m.impl("batch_norm_leaky_relu", &cuda::forward);
  m.impl("batch_norm_leaky_relu_backward", &cuda::backward);
  // Same forward; its backward from the output runs as torch ops on CUDA for now
  // (fastgen/ops/batch_norm_leaky_relu.py falls back when no native kernel is registered).
  m.impl("batch_norm_leaky_relu_memory_saving", &cuda::forward);
}

}  // namespace fastgen::batch_norm_leaky_relu
