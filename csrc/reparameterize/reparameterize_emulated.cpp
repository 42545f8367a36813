// The CUDA kernels and launchers of reparameterize_cuda.cuh, built against the SIMT emulator
// (csrc/simt) for the emulated-cuda backend: the same source as the CUDA build.

#include "reparameterize/reparameterize_cuda.cuh"
