// fastgen._C's side of the emulated-cuda backend (see emulated_cuda.h): the installed table,
// the on/off switch the Python backend registry sets, and the list of routed ops.

#include "common/emulated_cuda.h"

#include <atomic>

namespace fastgen::emulation {
namespace {

std::atomic<const Kernels*> g_kernels{nullptr};
std::atomic<bool> g_enabled{false};

std::vector<std::string>& routed() {
  static std::vector<std::string> names;
  return names;
}

}  // namespace

const Kernels* active() {
  return g_enabled.load(std::memory_order_relaxed) ? g_kernels.load(std::memory_order_acquire)
                                                   : nullptr;
}

void install(const Kernels* kernels) {
  TORCH_CHECK(kernels != nullptr && kernels->version == Kernels::kVersion,
              "fastgen: the emulated-cuda module was built from other sources than fastgen._C "
              "(rebuild the extension)");
  g_kernels.store(kernels, std::memory_order_release);
}

void set_enabled(bool enabled) {
  g_enabled.store(enabled, std::memory_order_relaxed);
}

bool installed() {
  return g_kernels.load() != nullptr;
}

const std::vector<std::string>& routed_ops() {
  return routed();
}

void note_routed(const char* op) {
  routed().emplace_back(op);
}

}  // namespace fastgen::emulation
