// Run-time choice of the compiled copy of the CPU kernels (cpu_capability.h).

#include "common/cpu_capability.h"

#include <c10/util/Exception.h>

#include <cstdlib>
#include <cstring>

namespace fastgen::cpu {

const char* name(Capability capability) {
  switch (capability) {
    case Capability::AVX512:
      return "avx512";
    case Capability::AVX2:
      return "avx2";
    case Capability::Baseline:
      break;
  }
  return "baseline";
}

Capability supported() {
#if defined(__x86_64__) || defined(__i386__)
  static const Capability best = [] {
    __builtin_cpu_init();
    if (__builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
        __builtin_cpu_supports("avx512dq") && __builtin_cpu_supports("avx512vl") &&
        __builtin_cpu_supports("fma")) {
      return Capability::AVX512;
    }
    if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma")) return Capability::AVX2;
    return Capability::Baseline;
  }();
  return best;
#else
  return Capability::Baseline;  // only the portable copy is built here
#endif
}

Capability active() {
  const char* forced = std::getenv("FASTGEN_CPU_CAPABILITY");
  if (forced == nullptr || *forced == '\0') return supported();
  Capability wanted;
  if (std::strcmp(forced, "baseline") == 0) {
    wanted = Capability::Baseline;
  } else if (std::strcmp(forced, "avx2") == 0) {
    wanted = Capability::AVX2;
  } else if (std::strcmp(forced, "avx512") == 0) {
    wanted = Capability::AVX512;
  } else {
    TORCH_CHECK_VALUE(false, "FASTGEN_CPU_CAPABILITY must be baseline, avx2 or avx512, got '",
                      forced, "'");
  }
  TORCH_CHECK_VALUE(static_cast<int>(wanted) <= static_cast<int>(supported()),
                    "FASTGEN_CPU_CAPABILITY=", forced, ", but this CPU (or build) runs at most '",
                    name(supported()), "'");
  return wanted;
}

std::vector<std::string> features() {
  std::vector<std::string> found;
#if defined(__x86_64__) || defined(__i386__)
  __builtin_cpu_init();
#define FASTGEN_FEATURE(f) \
  if (__builtin_cpu_supports(f)) found.emplace_back(f)
  FASTGEN_FEATURE("sse2");
  FASTGEN_FEATURE("avx");
  FASTGEN_FEATURE("avx2");
  FASTGEN_FEATURE("fma");
  FASTGEN_FEATURE("avx512f");
  FASTGEN_FEATURE("avx512bw");
  FASTGEN_FEATURE("avx512dq");
  FASTGEN_FEATURE("avx512vl");
#undef FASTGEN_FEATURE
#elif defined(__aarch64__)
  found.emplace_back("neon");
#endif
  return found;
}

}  // namespace fastgen::cpu
