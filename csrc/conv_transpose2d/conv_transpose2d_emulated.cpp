// The CUDA epilogues of conv_transpose2d_cuda.cuh, built against the SIMT emulator
// (csrc/simt) for the emulated-cuda backend: the same source as the CUDA build.

#include "conv_transpose2d/conv_transpose2d_cuda.cuh"
