// The whole op surface of fastgen in one place: every schema is defined here and the
// kernels register themselves under their dispatch key (CPU in *_cpu.cpp, CUDA in
// *_cuda.cu). Fake (meta) kernels are registered from Python in fastgen/ops/. Autograd is
// C++ Autograd-key kernels for reparameterize, the convolutions and batch_norm_leaky_relu
// (reparameterize/reparameterize_autograd.cpp, conv/conv_autograd.cpp,
// batch_norm_leaky_relu/batch_norm_leaky_relu_autograd.cpp: at VAE latent sizes and on the
// DCGAN's layers the Python autograd layer cost as much as some kernels), registered from
// Python for the rest (the memory-saving batch norm, conv_transpose2d_with_stats, the
// backward ops that have a double backward). Each backward is an op of its own.
//
// Conventions shared by all ops:
//   * arguments are checked at the C++ boundary of every op (common/checks.h and each op's
//     header), so direct calls (torch.compile makes them) raise ValueError / TypeError naming
//     the op and the argument; the Python wrappers check what C++ cannot say better (the
//     Python types of arguments) and give the fastgen.ops.* names; kernels assume valid input;
//   * batch statistics and per-sample reductions are float32 for half inputs and of the
//     input dtype otherwise;
//   * `rng_state` is an int64 tensor [2] holding (seed, offset) for Philox4x32-10.

#include <pybind11/pybind11.h>
#include <pybind11/stl.h>
#include <torch/csrc/utils/pybind.h>
#include <torch/library.h>

#include "common/cpu_capability.h"
#include "common/emulated_cuda.h"
#include "conv/conv_engine.h"
#include "conv/conv_select_cpu.h"
#include "conv/winograd/winograd_cpu.h"
#include "conv/winograd/winograd_kernels.h"

TORCH_LIBRARY(fastgen, m) {
  // BatchNorm2d followed by LeakyReLU(negative_slope), functional: returns
  // (out, mean, var) where mean/var are the statistics used for normalisation
  // (batch statistics, biased var, when training; the running ones otherwise).
  // The running-statistics update is done by the caller from (mean, var).
  m.def(
      "batch_norm_leaky_relu(Tensor input, Tensor? weight, Tensor? bias, "
      "Tensor? running_mean, Tensor? running_var, bool training, float eps, "
      "float negative_slope) -> (Tensor, Tensor, Tensor)");
  m.def(
      "batch_norm_leaky_relu_backward(Tensor grad_out, Tensor input, Tensor? weight, "
      "Tensor? bias, Tensor mean, Tensor var, bool training, float eps, "
      "float negative_slope, bool[3] output_mask) -> (Tensor, Tensor, Tensor)");
  // Memory-saving mode (In-Place ABN): the same forward, but autograd keeps only the output,
  // weight, bias and var; the backward recovers xhat = (leaky^-1(out) - bias) / weight, which
  // needs negative_slope > 0 and a weight without zeros (the Python side clamps |weight|).
  m.def(
      "batch_norm_leaky_relu_memory_saving(Tensor input, Tensor? weight, Tensor? bias, "
      "Tensor? running_mean, Tensor? running_var, bool training, float eps, "
      "float negative_slope) -> (Tensor, Tensor, Tensor)");
  m.def(
      "batch_norm_leaky_relu_backward_from_output(Tensor grad_out, Tensor output, "
      "Tensor? weight, Tensor? bias, Tensor var, bool training, float eps, "
      "float negative_slope, bool[3] output_mask) -> (Tensor, Tensor, Tensor)");

  // act(conv_transpose2d(input, weight, bias)) with act one of identity, relu,
  // leaky_relu, tanh, sigmoid; bias and activation in one fused pass.
  m.def(
      "conv_transpose2d(Tensor input, Tensor weight, Tensor? bias, int[2] stride, "
      "int[2] padding, int[2] output_padding, int groups, int[2] dilation, "
      "str activation, float negative_slope) -> Tensor");
  // The activation's derivative is taken from the saved output.
  m.def(
      "conv_transpose2d_backward(Tensor grad_out, Tensor input, Tensor weight, "
      "Tensor output, int[2] stride, int[2] padding, int[2] output_padding, int groups, "
      "int[2] dilation, str activation, float negative_slope, bool[3] output_mask) "
      "-> (Tensor, Tensor, Tensor)");

  // conv_transpose2d(input, weight, bias) and the per-channel batch mean and biased variance
  // of its output (accumulation dtype), for a training batch norm after it: with fastgen's
  // implicit-GEMM engine on CUDA the statistics come from the convolution's epilogue.
  m.def(
      "conv_transpose2d_with_stats(Tensor input, Tensor weight, Tensor? bias, int[2] stride, "
      "int[2] padding, int[2] output_padding, int groups, int[2] dilation) "
      "-> (Tensor, Tensor, Tensor)");

  // act(conv2d(input, weight, bias)) with act one of identity, relu, leaky_relu, tanh,
  // sigmoid; bias and activation in one fused pass after the convolution.
  m.def(
      "conv2d(Tensor input, Tensor weight, Tensor? bias, int[2] stride, int[2] padding, "
      "int[2] dilation, int groups, str activation, float negative_slope) -> Tensor");
  // The activation's derivative is taken from the saved output.
  m.def(
      "conv2d_backward(Tensor grad_out, Tensor input, Tensor weight, Tensor output, "
      "int[2] stride, int[2] padding, int[2] dilation, int groups, str activation, "
      "float negative_slope, bool[3] output_mask) -> (Tensor, Tensor, Tensor)");

  // z = mu + exp(0.5 * logvar) * eps, and (if compute_kl) the per-sample KL term
  // kl[n] = -0.5 * sum(1 + logvar - mu^2 - exp(logvar)). With eps absent the noise is
  // made in-kernel by Philox4x32-10 + Box-Muller keyed by rng_state, or, when
  // rng_state is absent too, by a (seed, offset) drawn from the device's default
  // generator. Returns (z, kl, rng_state_used); kl is empty when not computed.
  m.def(
      "reparameterize(Tensor mu, Tensor logvar, Tensor? eps, Tensor? rng_state, "
      "bool compute_kl) -> (Tensor, Tensor, Tensor)",
      {at::Tag::nondeterministic_seeded});
  // Regenerates the noise from rng_state (or uses eps) instead of saving it.
  m.def(
      "reparameterize_backward(Tensor grad_z, Tensor grad_kl, Tensor mu, Tensor logvar, "
      "Tensor? eps, Tensor rng_state) -> (Tensor, Tensor)");

  // The CPU Winograd F(4x4, 2x2) kernels behind the 4x4 stride-2 padding-1 convolutions
  // of conv_transpose2d (csrc/conv/winograd), exposed for tests and benchmarks. float32, CPU.
  m.def("winograd_conv2d(Tensor input, Tensor weight) -> Tensor");
  m.def("winograd_conv_transpose2d(Tensor input, Tensor weight) -> Tensor");
  m.def("winograd_conv2d_weight_grad(Tensor input, Tensor grad_out) -> Tensor");
  // The GEMM panels of those kernels (in panels of 32 columns of b, the copy of the active CPU
  // capability), for tests and the GFLOP/s benchmark (benchmarks/bench_cpu_kernels.py).
  m.def("winograd_gemm(Tensor a, Tensor b, bool a_transposed) -> Tensor");
}

// An importable Python module, so `import fastgen._C` loads the library and runs the
// registrations above.
PYBIND11_MODULE(_C, module) {
  module.doc() = "fastgen native kernels (ops are registered under torch.ops.fastgen)";
#ifdef FASTGEN_WITH_CUDA
  module.attr("with_cuda") = true;
#else
  module.attr("with_cuda") = false;
#endif
  // The emulated-cuda backend (csrc/common/emulated_cuda.h): fastgen/_extension.py installs
  // the table of fastgen._emulated_cuda, and fastgen/_backend.py switches it on and off.
  module.def(
      "_install_emulated_cuda",
      [](pybind11::capsule capsule) {
        fastgen::emulation::install(capsule.get_pointer<const fastgen::emulation::Kernels>());
      },
      "Installs fastgen._emulated_cuda.kernels() (a capsule)");
  module.def("_set_emulated_cuda", &fastgen::emulation::set_enabled,
             "Routes the CPU kernels of ops with a CUDA kernel to the emulated CUDA kernel");
  module.def(
      "_conv_route",
      [](bool transposed, std::array<int64_t, 2> stride, std::array<int64_t, 2> dilation,
         int64_t groups) {
        const fastgen::conv::Geometry geometry{transposed, stride,   {0, 0},
                                               {0, 0},     dilation, groups};
        return fastgen::conv::route(geometry) == fastgen::conv::Route::ImplicitGemm ? "fastgen"
                                                                                    : "cudnn";
      },
      "The convolution a CUDA (or emulated) call of these arguments takes (conv/conv_engine.h)");
  module.def(
      "_cpu_capability",
      [] {
        return pybind11::make_tuple(fastgen::cpu::name(fastgen::cpu::active()),
                                    fastgen::cpu::name(fastgen::cpu::supported()),
                                    fastgen::cpu::features());
      },
      "(active, supported, CPU features) of the CPU kernels' run-time dispatch");
  module.def(
      "_set_winograd", &fastgen::winograd::set_enabled,
      "Turns the CPU Winograd path on or off (fastgen/_backend.py mirrors FASTGEN_WINOGRAD)");
  module.def(
      "_cpu_fma_loop",
      [](int64_t iterations) { return fastgen::winograd::kernels().fma_loop(iterations); },
      "Runs independent FMA chains at the active capability's vector width; returns the flops");
  module.def(
      "_winograd_bf16_products",
      [] {
        return fastgen::winograd::products_for(at::kBFloat16) ==
               fastgen::winograd::Products::BFloat16;
      },
      "Whether the Winograd GEMMs multiply bfloat16 operands in bfloat16 now "
      "(FASTGEN_WINOGRAD_BF16=1 on a CPU with avx512_bf16)");
  module.def(
      "_cpu_bf16_dot_loop",
      [](int64_t iterations) {
        TORCH_CHECK(fastgen::cpu::bf16_dot_products(),
                    "fastgen._C._cpu_bf16_dot_loop: needs the AVX-512 copy on a CPU with "
                    "avx512_bf16");
#if defined(__x86_64__)
        return fastgen::winograd::avx512::kKernels.bf16_dot_loop(iterations);
#else
        return 0.0;  // not reached: bf16_dot_products() is false off x86-64
#endif
      },
      "Runs independent vdpbf16ps chains (AVX-512 BF16); returns the flops");
  module.def(
      "_batch_norm_update_running_stats",
      [](at::Tensor running_mean, at::Tensor running_var, const at::Tensor& mean,
         const at::Tensor& var, int64_t count, double momentum) {
        // fastgen.ops.batch_norm_leaky_relu's update, as F.batch_norm does it: one call
        // instead of five tensor ops from Python (~12 us a layer on CPU).
        at::NoGradGuard no_grad;
        running_mean.mul_(1 - momentum).add_(mean.to(running_mean.scalar_type()), momentum);
        const at::Tensor unbiased = var.mul(static_cast<double>(count) / (count - 1));
        running_var.mul_(1 - momentum).add_(unbiased.to(running_var.scalar_type()), momentum);
      },
      "running = (1 - momentum) * running + momentum * batch, var unbiased over `count` values "
      "(fastgen/ops/batch_norm_leaky_relu.py)");
  module.def(
      "_conv_cpu_choices",
      [] {
        std::vector<pybind11::tuple> out;
        for (const auto& record : fastgen::conv::select::records()) {
          out.push_back(pybind11::make_tuple(record.key, record.choice, record.fastgen_ms,
                                             record.aten_ms, record.measurements));
        }
        return out;
      },
      "The CPU convolutions' measured choices so far: (key, choice, fastgen ms, aten ms, "
      "measurements) each (conv/conv_select_cpu.h)");
  module.def(
      "_conv_cpu_measured_aten",
      [](const std::string& op, const at::Tensor& input, const at::Tensor& weight,
         std::vector<int64_t> stride, std::vector<int64_t> padding,
         std::vector<int64_t> output_padding, std::vector<int64_t> dilation, int64_t groups,
         std::optional<std::array<bool, 3>> backward_mask, std::optional<at::ScalarType> dtype) {
        const auto pair = [](const std::vector<int64_t>& v) {
          TORCH_CHECK_VALUE(v.size() == 2, "fastgen: _conv_cpu_measured_aten takes pairs");
          return std::array<int64_t, 2>{v[0], v[1]};
        };
        const fastgen::conv::Geometry geometry{
            op == "conv_transpose2d", pair(stride),   pair(padding),
            pair(output_padding),     pair(dilation), groups};
        return fastgen::conv::select::measured_aten(op.c_str(), input, weight,
                                                    dtype.value_or(input.scalar_type()), geometry,
                                                    backward_mask);
      },
      "Whether aten's convolution won every measured pass of this call, its operands of "
      "`dtype` (default: input's) (conv/conv_select_cpu.h, measured_aten)",
      pybind11::arg("op"), pybind11::arg("input"), pybind11::arg("weight"), pybind11::arg("stride"),
      pybind11::arg("padding"), pybind11::arg("output_padding"), pybind11::arg("dilation"),
      pybind11::arg("groups"), pybind11::arg("backward_mask"),
      pybind11::arg("dtype") = pybind11::none());
  module.def("_conv_cpu_reset", &fastgen::conv::select::reset,
             "Forgets the CPU convolutions' measured choices");
  module.def("_conv_cpu_prefer", &fastgen::conv::select::prefer,
             "Takes a choice for a key without timing it (a resumed run's recorded choices)");
  module.def(
      "_conv_cpu_policy",
      [] {
        switch (fastgen::conv::select::policy()) {
          case fastgen::conv::select::Policy::Autotune:
            return "autotune";
          case fastgen::conv::select::Policy::FixedRules:
            return "fixed rules (FASTGEN_AUTOTUNE=0)";
          case fastgen::conv::select::Policy::Fastgen:
            return "fastgen (FASTGEN_CONV_CPU=fastgen)";
          case fastgen::conv::select::Policy::Aten:
            break;
        }
        return "aten (FASTGEN_CONV_CPU=aten)";
      },
      "How CPU convolutions choose between fastgen's kernels and aten's");
  module.def(
      "_emulated_cuda_ops",
      [] {
        return fastgen::emulation::installed() ? fastgen::emulation::routed_ops()
                                               : std::vector<std::string>{};
      },
      "The ops that run their CUDA kernel under the emulated-cuda backend");
}
