// The CUDA epilogues of both conv ops (conv/conv_epilogue_cuda.cuh) built against the SIMT
// emulator (csrc/simt) for the emulated-cuda backend: the same source as the CUDA build.

#include "conv/conv_epilogue_cuda.cuh"
