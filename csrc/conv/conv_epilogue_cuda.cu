// The CUDA epilogues of both conv ops (conv/conv_epilogue_cuda.cuh) built by nvcc; the conv
// ops reach them through conv::Epilogues (conv/conv_cuda.cu).

#include "conv/conv_epilogue_cuda.cuh"
