// fastgen's implicit-GEMM convolution engine (conv/implicit_gemm_cuda.cuh) built by nvcc; the
// conv ops reach it through conv::Engine (conv/conv_cuda.cu).

#include "conv/implicit_gemm_cuda.cuh"
