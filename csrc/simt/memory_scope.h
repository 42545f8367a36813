#pragma once
// Which memory an emulated op's kernels may touch, seen from the host (runtime.h): a
// MemoryScope registers the storages of the op's tensor arguments and every CPU allocation
// made while it is open (through a tracking allocator that wraps the CPU allocator once the
// first scope opens and records only while a scope is open on the allocating thread).
//
// The emulator's own, apart from the runtime because it needs torch (c10's allocator and
// at::Tensor) and is compiled with the instrumented module, and apart from the emulated
// module's registration (csrc/fastgen_emulated.cpp) because it knows nothing of the ops:
// every table entry there, and each self-test run, is wrapped in one.

#include <ATen/core/Tensor.h>

#include <cstdint>
#include <optional>
#include <utility>

namespace fastgen::simt {

class MemoryScope {
 public:
  MemoryScope();
  ~MemoryScope();
  MemoryScope(const MemoryScope&) = delete;
  MemoryScope& operator=(const MemoryScope&) = delete;

  void add(const at::Tensor& tensor);
  void add(const std::optional<at::Tensor>& tensor) {
    if (tensor.has_value()) add(*tensor);
  }
  template <typename T>
  void add(const T&) {}

 private:
  uint64_t id_, outer_;
};

// fn with a MemoryScope around it holding its tensor arguments.
template <auto fn>
struct scoped;
template <typename R, typename... Args, R (*fn)(Args...)>
struct scoped<fn> {
  static R call(Args... args) {
    MemoryScope scope;
    (scope.add(args), ...);
    return fn(std::forward<Args>(args)...);
  }
};

}  // namespace fastgen::simt
