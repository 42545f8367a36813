// The CUDA kernels and launchers of batch_norm_leaky_relu_cuda.cuh, built against the SIMT
// emulator (csrc/simt) for the emulated-cuda backend: the same source as the CUDA build.

#include "batch_norm_leaky_relu/batch_norm_leaky_relu_cuda.cuh"
