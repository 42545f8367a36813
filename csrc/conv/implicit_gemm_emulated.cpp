// The implicit-GEMM convolution engine (conv/implicit_gemm_cuda.cuh) built against the SIMT
// emulator (csrc/simt) for the emulated-cuda backend: the same source as the CUDA build.

#include "conv/implicit_gemm_cuda.cuh"
