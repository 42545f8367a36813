// fastgen::batch_norm_leaky_relu's CPU registration: each op runs the copy of its kernel for
// this CPU (batch_norm_leaky_relu_cpu_kernels.cpp, one per capability, which also checks the
// arguments).

#include <torch/library.h>

#include "batch_norm_leaky_relu/batch_norm_leaky_relu.h"
#include "common/cpu_capability.h"
#include "common/emulated_cuda.h"

namespace fastgen::batch_norm_leaky_relu {

// The ops with a CUDA kernel route to it while the emulated-cuda backend is on
// (common/emulated_cuda.h); the backward from the output has none, as on CUDA.
TORCH_LIBRARY_IMPL(fastgen, CPU, m) {
  using emulation::impl_route;
  using emulation::Kernels;
  impl_route<FASTGEN_CPU_ENTRY(batch_norm_leaky_relu, forward_cpu),
             &Kernels::batch_norm_leaky_relu>(m, "batch_norm_leaky_relu");
  impl_route<FASTGEN_CPU_ENTRY(batch_norm_leaky_relu, backward_cpu),
             &Kernels::batch_norm_leaky_relu_backward>(m, "batch_norm_leaky_relu_backward");
  impl_route<FASTGEN_CPU_ENTRY(batch_norm_leaky_relu, forward_cpu),
             &Kernels::batch_norm_leaky_relu>(m, "batch_norm_leaky_relu_memory_saving");
  m.impl("batch_norm_leaky_relu_backward_from_output",
         FASTGEN_CPU_ENTRY(batch_norm_leaky_relu, backward_from_output_cpu));
}

}  // namespace fastgen::batch_norm_leaky_relu
