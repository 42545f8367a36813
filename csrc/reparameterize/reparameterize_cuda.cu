// fastgen::reparameterize on CUDA: the registration of the kernels and launchers in
// reparameterize_cuda.cuh.

#include <torch/library.h>

#include "reparameterize/reparameterize_cuda.cuh"

namespace fastgen::reparameterize {

TORCH_LIBRARY_IMPL(fastgen, CUDA, m) {
  m.impl("reparameterize", &cuda::forward);
  m.impl("reparameterize_backward", &cuda::backward);
}

}  // namespace fastgen::reparameterize
