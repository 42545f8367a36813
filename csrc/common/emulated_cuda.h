#pragma once
// The emulated-cuda backend's entry points, and how fastgen._C reaches them.
//
// fastgen._emulated_cuda holds each op's CUDA kernels and launchers compiled against the SIMT
// emulator; its registration file (csrc/fastgen_emulated.cpp) fills this table and hands it to
// fastgen._C when it is imported.
// The CPU kernel fastgen._C registers for an op that has a CUDA kernel is a router
// (route<...> below): while the emulated-cuda backend is on (fastgen.set_backend /
// FASTGEN_BACKEND=emulated-cuda, which the Python backend registry mirrors here), a call on
// CPU tensors runs the CUDA launcher through the emulator instead of the CPU kernel. The
// op, its schema, fake kernel and autograd registration stay the same ones a GPU runs.

#include <ATen/core/Tensor.h>

#include <array>
#include <optional>
#include <string>
#include <tuple>
#include <vector>

#include "common/activation.h"

namespace fastgen::conv {
struct Engine;  // conv/conv_engine.h; common/ includes nothing of the ops
}  // namespace fastgen::conv

namespace fastgen::emulation {

using Tensor3 = std::tuple<at::Tensor, at::Tensor, at::Tensor>;
using OptionalTensor = std::optional<at::Tensor>;

// Each entry has the signature of the CUDA function it stands for.
struct Kernels {
  static constexpr int kVersion = 3;
  int version = kVersion;
  // batch_norm_leaky_relu (and its memory-saving forward) / batch_norm_leaky_relu_backward
  Tensor3 (*batch_norm_leaky_relu)(const at::Tensor&, const OptionalTensor&, const OptionalTensor&,
                                   const OptionalTensor&, const OptionalTensor&, bool, double,
                                   double) = nullptr;
  Tensor3 (*batch_norm_leaky_relu_backward)(const at::Tensor&, const at::Tensor&,
                                            const OptionalTensor&, const OptionalTensor&,
                                            const at::Tensor&, const at::Tensor&, bool, double,
                                            double, std::array<bool, 3>) = nullptr;
  // reparameterize / reparameterize_backward
  Tensor3 (*reparameterize)(const at::Tensor&, const at::Tensor&, const OptionalTensor&,
                            const OptionalTensor&, bool) = nullptr;
  std::tuple<at::Tensor, at::Tensor> (*reparameterize_backward)(
      const at::Tensor&, const at::Tensor&, const at::Tensor&, const at::Tensor&,
      const OptionalTensor&, const at::Tensor&) = nullptr;
  // the epilogues of conv2d and conv_transpose2d around aten's convolution (cuDNN's on CUDA)
  void (*bias_activation)(at::Tensor&, const at::Tensor&, Activation, double) = nullptr;
  at::Tensor (*activation_backward)(const at::Tensor&, const at::Tensor&, Activation,
                                    double) = nullptr;
  // the implicit-GEMM convolution engine both conv ops take where conv::route() says so
  const conv::Engine* conv_engine = nullptr;
};

// In fastgen._C: the installed table while the backend is on, else null.
const Kernels* active();
void install(const Kernels* kernels);
void set_enabled(bool enabled);
bool installed();

// The op names whose CPU registration routes here (for fastgen's backend registry); each
// TORCH_LIBRARY_IMPL that registers a route adds its op with note_routed.
const std::vector<std::string>& routed_ops();
void note_routed(const char* op);

// A CPU kernel that runs the emulated CUDA one while the backend is on:
//   m.impl("op", &route<&op_cpu, &Kernels::op>::call);
// or, registered and noted in one step (impl_route below):
//   impl_route<&op_cpu, &Kernels::op>(m, "op");
template <auto cpu_kernel, auto member>
struct route;

template <typename R, typename... Args, R (*cpu_kernel)(Args...), R (*Kernels::*member)(Args...)>
struct route<cpu_kernel, member> {
  static R call(Args... args) {
    if (const Kernels* kernels = active()) return (kernels->*member)(args...);
    return cpu_kernel(args...);
  }
};

// Registers route<cpu_kernel, member> as op's CPU kernel in m (the torch::Library of a
// TORCH_LIBRARY_IMPL, a template parameter so this header needs no torch/library.h) and notes
// op routed, so the op's name is written once for both.
template <auto cpu_kernel, auto member, typename Library>
void impl_route(Library& m, const char* op) {
  m.impl(op, &route<cpu_kernel, member>::call);
  note_routed(op);
}

}  // namespace fastgen::emulation
