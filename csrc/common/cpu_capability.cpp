// Run-time choice of the compiled copy of the CPU kernels (cpu_capability.h).

#include "common/cpu_capability.h"

#include <c10/util/Exception.h>

#include <cstdlib>
#include <cstring>
#include <iterator>

namespace fastgen::cpu {

namespace {
// Each capability's name, in the enum's order (its values are 0, 1, 2); also the values
// FASTGEN_CPU_CAPABILITY takes.
constexpr const char* kNames[] = {"baseline", "avx2", "avx512"};
static_assert(std::size(kNames) == static_cast<size_t>(Capability::AVX512) + 1);
}  // namespace

const char* name(Capability capability) {
  return kNames[static_cast<int>(capability)];
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
  int wanted = 0;
  while (wanted < int(std::size(kNames)) && std::strcmp(forced, kNames[wanted]) != 0) ++wanted;
  TORCH_CHECK_VALUE(wanted < int(std::size(kNames)),
                    "FASTGEN_CPU_CAPABILITY must be baseline, avx2 or avx512, got '", forced, "'");
  TORCH_CHECK_VALUE(wanted <= static_cast<int>(supported()), "FASTGEN_CPU_CAPABILITY=", forced,
                    ", but this CPU (or build) runs at most '", name(supported()), "'");
  return static_cast<Capability>(wanted);
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
  FASTGEN_FEATURE("avx512bf16");
#undef FASTGEN_FEATURE
#elif defined(__aarch64__)
  found.emplace_back("neon");
#endif
  return found;
}

bool bf16_dot_products() {
#if defined(__x86_64__)
  static const bool has = [] {
    __builtin_cpu_init();
    return bool(__builtin_cpu_supports("avx512bf16"));
  }();
  return has && active() == Capability::AVX512;
#else
  return false;
#endif
}

}  // namespace fastgen::cpu
