// fastgen::reparameterize on CPU: the argument checks, the choice of the kernels' copy for
// this CPU (reparameterize_cpu_kernels.cpp, one per capability), and the CPU registration.

#include <torch/library.h>

#include "common/cpu_capability.h"
#include "common/emulated_cuda.h"
#include "reparameterize/reparameterize.h"

namespace fastgen::reparameterize {

namespace {

struct CpuKernels {
  decltype(&baseline::reparameterize_cpu) forward;
  decltype(&baseline::reparameterize_backward_cpu) backward;
};

const CpuKernels& kernels() {
  static const CpuKernels kBaseline{baseline::reparameterize_cpu,
                                    baseline::reparameterize_backward_cpu};
#if defined(__x86_64__)
  static const CpuKernels kAvx2{avx2::reparameterize_cpu, avx2::reparameterize_backward_cpu};
  static const CpuKernels kAvx512{avx512::reparameterize_cpu, avx512::reparameterize_backward_cpu};
  return cpu::select(kBaseline, &kAvx2, &kAvx512);
#else
  return kBaseline;
#endif
}

}  // namespace

std::tuple<at::Tensor, at::Tensor, at::Tensor> reparameterize_cpu(
    const at::Tensor& mu, const at::Tensor& logvar, const std::optional<at::Tensor>& eps,
    const std::optional<at::Tensor>& rng_state, bool compute_kl) {
  check_forward(mu, logvar, eps, rng_state);
  return kernels().forward(mu, logvar, eps, rng_state, compute_kl);
}

std::tuple<at::Tensor, at::Tensor> reparameterize_backward_cpu(
    const at::Tensor& grad_z, const at::Tensor& grad_kl, const at::Tensor& mu,
    const at::Tensor& logvar, const std::optional<at::Tensor>& eps, const at::Tensor& rng_state) {
  check_backward(grad_z, grad_kl, mu, logvar, eps, rng_state);
  return kernels().backward(grad_z, grad_kl, mu, logvar, eps, rng_state);
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
