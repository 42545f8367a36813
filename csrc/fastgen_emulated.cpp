// fastgen._emulated_cuda: every op's CUDA launchers built against the SIMT emulator, handed
// to fastgen._C as a table (common/emulated_cuda.h), plus the emulator's self-test and
// counters and, for tests, the conv engine's weight-gradient launch arithmetic.
//
// The emulated module's registration, as csrc/fastgen.cpp is fastgen._C's: the one file of
// the module that knows the ops. The emulator (csrc/simt/) includes nothing of them; an op
// joins the emulated backend with its <op>_emulated.cpp, its entry in emulation::Kernels and
// its line in kernels() below.
//
// Memory the kernels may touch (simt/runtime.h): each table entry runs inside a MemoryScope
// (simt/memory_scope.h) that registers the storages of the op's tensor arguments and every
// CPU allocation made while the op runs.

#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <string>

#include "batch_norm_leaky_relu/batch_norm_leaky_relu.h"
#include "common/emulated_cuda.h"
#include "conv/conv_engine.h"
#include "conv_transpose2d/conv_transpose2d.h"
#include "reparameterize/reparameterize.h"
#include "simt/memory_scope.h"
#include "simt/runtime.h"
#include "simt/selftest.h"

namespace fastgen::emulation {
namespace {

using simt::scoped;

const Kernels& kernels() {
  static const conv::Engine conv_engine{&scoped<&emulated_cuda::implicit_gemm::forward>::call,
                                        &scoped<&emulated_cuda::implicit_gemm::backward>::call};
  static const Kernels table = [] {
    Kernels k;
    k.batch_norm_leaky_relu = &scoped<&batch_norm_leaky_relu::emulated_cuda::forward>::call;
    k.batch_norm_leaky_relu_backward =
        &scoped<&batch_norm_leaky_relu::emulated_cuda::backward>::call;
    k.reparameterize = &scoped<&reparameterize::emulated_cuda::forward>::call;
    k.reparameterize_backward = &scoped<&reparameterize::emulated_cuda::backward>::call;
    k.bias_activation = &scoped<&emulated_cuda::bias_activation>::call;
    k.activation_backward = &scoped<&emulated_cuda::activation_backward>::call;
    k.conv_engine = &conv_engine;
    return k;
  }();
  return table;
}

}  // namespace
}  // namespace fastgen::emulation

PYBIND11_MODULE(_emulated_cuda, module) {
  namespace simt = fastgen::simt;
  module.doc() = "fastgen's CUDA kernels compiled against its SIMT emulator (csrc/simt)";
  module.def(
      "kernels",
      [] {
        return pybind11::capsule(static_cast<const void*>(&fastgen::emulation::kernels()),
                                 "fastgen.emulation.Kernels");
      },
      "The table of emulated CUDA entry points, for fastgen._C._install_emulated_cuda");
  module.def("launch_count", &simt::detail::launch_count, "Kernel launches emulated so far");
  module.def("block_count", &simt::detail::block_count, "Thread blocks emulated so far");
  module.def(
      "conv_weight_grad_launch",
      [](bool transposed_op, std::array<int64_t, 4> p_sizes, int64_t b_channels,
         std::array<int64_t, 2> kernel) {
        return fastgen::emulated_cuda::implicit_gemm::weight_grad_launch(transposed_op, p_sizes,
                                                                         b_channels, kernel);
      },
      "The conv engine's weight-gradient launch for P = [batch, a, u, v] and b_channels x "
      "kernel columns: (grid x, grid y, grid z, reduction rows per split)");
  module.def("selftest_cases", &simt::selftest_cases,
             "The self-test kernels: (name, what it shows)");
  module.def(
      "run_selftest",
      [](const std::string& name) {
        simt::MemoryScope scope;
        return simt::run_selftest(name);
      },
      "Runs one self-test kernel; returns its result or raises the emulator's error");
}
