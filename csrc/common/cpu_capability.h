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

}  // namespace fastgen::cpu

// The copy of `name` (a function or object of a *_kernels.cpp file, which defines it in
// `ns::baseline`, `ns::avx2` and `ns::avx512`) that runs on this CPU now, as a pointer, e.g.
//   FASTGEN_CPU_KERNEL(batch_norm_leaky_relu, forward_cpu)(input, ...);
// Off x86-64 only the baseline copy is built.
#if defined(__x86_64__)
#define FASTGEN_CPU_KERNEL(ns, name) \
  ::fastgen::cpu::pick(&ns::baseline::name, &ns::avx2::name, &ns::avx512::name)
#else
#define FASTGEN_CPU_KERNEL(ns, name) (&ns::baseline::name)
#endif
