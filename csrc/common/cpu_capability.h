#pragma once
// Which compiled copy of the hot CPU loops runs: the kernels in csrc/**/*_kernels.cpp are
// compiled once per instruction set (setup.py's CPU_CAPABILITIES: a portable baseline, AVX2 +
// FMA, AVX-512), and each op picks the copy for the CPU it runs on, as ATen's DispatchStub
// does. The rest of the extension is compiled for the baseline, so one build runs on any CPU
// of its architecture at the speed that CPU allows, whichever machine built it.
//
// FASTGEN_CPU_CAPABILITY=baseline|avx2|avx512 forces a copy (tests, benchmarks); forcing one
// the CPU cannot run is an error, not a crash.

#include <string>
#include <vector>

namespace fastgen::cpu {

enum class Capability : int { Baseline = 0, AVX2 = 1, AVX512 = 2 };

const char* name(Capability capability);

// The best copy this CPU runs (and this build has).
Capability supported();

// The copy to run now: FASTGEN_CPU_CAPABILITY if set (checked against supported()), else
// supported(). Read on each call, so a test can switch it with the environment.
Capability active();

// The CPU features the choice looks at, e.g. {"sse2", "avx2", "fma", "avx512f", ...}.
std::vector<std::string> features();

// Whether kernels may multiply bfloat16 pairs with AVX-512 BF16's `vdpbf16ps` now: the active
// copy is AVX-512 and the CPU has `avx512_bf16`. It is not a capability of its own (no kernel
// file is compiled for it): the AVX-512 copy holds the few functions that use the instruction,
// compiled for it with a target attribute, and calls them only where this says yes. Forcing
// FASTGEN_CPU_CAPABILITY=avx2 (or baseline) turns them off with the rest of the copy.
bool bf16_dot_products();

// Of three copies of one thing (a kernel function's address, a table), the active one.
template <typename T>
T pick(T baseline, T avx2, T avx512) {
  switch (active()) {
    case Capability::AVX512:
      return avx512;
    case Capability::AVX2:
      return avx2;
    case Capability::Baseline:
      break;
  }
  return baseline;
}

// FASTGEN_CPU_ENTRY's function: the three copies of one function, called through pick().
template <auto baseline, auto avx2, auto avx512>
struct Picked;

template <typename R, typename... Args, R (*baseline)(Args...), R (*avx2)(Args...),
          R (*avx512)(Args...)>
struct Picked<baseline, avx2, avx512> {
  static R call(Args... args) { return pick(baseline, avx2, avx512)(args...); }
};

}  // namespace fastgen::cpu

// The copy of `name` (a function or object of a *_kernels.cpp file, which defines it in
// `ns::baseline`, `ns::avx2` and `ns::avx512`) that runs on this CPU now, as a pointer, e.g.
//   FASTGEN_CPU_KERNEL(batch_norm_leaky_relu, forward_cpu)(input, ...);
// FASTGEN_CPU_ENTRY(ns, name), for a function, is one function of the copies' signature that
// calls the copy running on the CPU at each call: a compile-time constant, so an op can
// register it (m.impl, emulation::route) without a wrapper that restates the signature.
// Off x86-64 only the baseline copy is built.
#if defined(__x86_64__)
#define FASTGEN_CPU_KERNEL(ns, name) \
  ::fastgen::cpu::pick(&ns::baseline::name, &ns::avx2::name, &ns::avx512::name)
#define FASTGEN_CPU_ENTRY(ns, name) \
  (&::fastgen::cpu::Picked<&ns::baseline::name, &ns::avx2::name, &ns::avx512::name>::call)
#else
#define FASTGEN_CPU_KERNEL(ns, name) (&ns::baseline::name)
#define FASTGEN_CPU_ENTRY(ns, name) (&ns::baseline::name)
#endif
