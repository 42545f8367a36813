// fastgen's implicit-GEMM convolution engine (conv/implicit_gemm_cuda.cuh) built by nvcc; the
// conv ops reach it through conv::Engine (conv_transpose2d_cuda.cu, conv2d_cuda.cu).

#include "conv/implicit_gemm_cuda.cuh"
