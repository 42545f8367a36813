// fastgen::reparameterize's CPU registration: each op runs the copy of its kernel for this CPU
// (reparameterize_cpu_kernels.cpp, one per capability, which also checks the arguments).

#include <torch/library.h>

#include "common/cpu_capability.h"
#include "common/emulated_cuda.h"
#include "reparameterize/reparameterize.h"

namespace fastgen::reparameterize {

// Both route to the CUDA kernels while the emulated-cuda backend is on (common/emulated_cuda.h).
TORCH_LIBRARY_IMPL(fastgen, CPU, m) {
  using emulation::impl_route;
  using emulation::Kernels;
  impl_route<FASTGEN_CPU_ENTRY(reparameterize, reparameterize_cpu), &Kernels::reparameterize>(
      m, "reparameterize");
  impl_route<FASTGEN_CPU_ENTRY(reparameterize, reparameterize_backward_cpu),
             &Kernels::reparameterize_backward>(m, "reparameterize_backward");
}

}  // namespace fastgen::reparameterize
