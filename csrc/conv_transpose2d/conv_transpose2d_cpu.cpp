// fastgen::conv_transpose2d's CPU registration. Its CPU epilogues (bias + activation, and
// act' backward) are shared with conv2d: conv/conv_epilogue_cpu.cpp.

#include <torch/library.h>

#include "common/emulated_cuda.h"
#include "conv_transpose2d/conv_transpose2d.h"

namespace fastgen {

// The CPU backend's epilogues, or, while the emulated-cuda backend is on, the CUDA ones run
// by the emulator around the aten convolution (what the CUDA build does with cuDNN).
ConvTranspose2dEpilogues cpu_epilogues() {
  if (const emulation::Kernels* kernels = emulation::active()) {
    return {kernels->bias_activation, kernels->activation_backward, /*cpu_convolutions=*/false,
            &kernels->conv_engine};
  }
  return {bias_activation_cpu, activation_backward_cpu, /*cpu_convolutions=*/true};
}

TORCH_LIBRARY_IMPL(fastgen, CPU, m) {
  m.impl("conv_transpose2d", &conv_transpose2d_op<cpu_epilogues>);
  m.impl("conv_transpose2d_backward", &conv_transpose2d_backward_op<cpu_epilogues>);
  m.impl("conv_transpose2d_with_stats", &conv_transpose2d_with_stats_op<cpu_epilogues>);
  emulation::note_routed("conv_transpose2d");
  emulation::note_routed("conv_transpose2d_backward");
  emulation::note_routed("conv_transpose2d_with_stats");
}

}  // namespace fastgen
