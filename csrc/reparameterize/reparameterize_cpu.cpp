// fastgen::reparameterize on CPU: the argument checks, the choice of the kernels' copy for
// this CPU (reparameterize_cpu_kernels.cpp, one per capability), and the CPU registration.

#include <torch/library.h>

#include "common/cpu_capability.h"
#include "common/emulated_cuda.h"
#include "reparameterize/reparameterize.h"

namespace fastgen::reparameterize {

std::tuple<at::Tensor, at::Tensor, at::Tensor> reparameterize_cpu(
    const at::Tensor& mu, const at::Tensor& logvar, const std::optional<at::Tensor>& eps,
    const std::optional<at::Tensor>& rng_state, bool compute_kl) {
  check_forward(mu, logvar, eps, rng_state);
  return FASTGEN_CPU_KERNEL(reparameterize, reparameterize_cpu)(mu, logvar, eps, rng_state,
                                                                compute_kl);
}

std::tuple<at::Tensor, at::Tensor> reparameterize_backward_cpu(
    const at::Tensor& grad_z, const at::Tensor& grad_kl, const at::Tensor& mu,
    const at::Tensor& logvar, const std::optional<at::Tensor>& eps, const at::Tensor& rng_state) {
  check_backward(grad_z, grad_kl, mu, logvar, eps, rng_state);
  return FASTGEN_CPU_KERNEL(reparameterize, reparameterize_backward_cpu)(grad_z, grad_kl, mu,
                                                                         logvar, eps, rng_state);
}

// Both route to the CUDA kernels while the emulated-cuda backend is on (common/emulated_cuda.h).
TORCH_LIBRARY_IMPL(fastgen, CPU, m) {
  using emulation::Kernels;
  using emulation::route;
  m.impl("reparameterize", &route<&reparameterize_cpu, &Kernels::reparameterize>::call);
  m.impl("reparameterize_backward",
         &route<&reparameterize_backward_cpu, &Kernels::reparameterize_backward>::call);
  emulation::note_routed("reparameterize");
  emulation::note_routed("reparameterize_backward");
}

}  // namespace fastgen::reparameterize
