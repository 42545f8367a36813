// fastgen._emulated_cuda: every op's CUDA launchers built against the SIMT emulator, handed
// to fastgen._C as a table (common/emulated_cuda.h), plus the emulator's self-test and, for
// tests, the conv engine's weight-gradient launch arithmetic.
//
// Memory the kernels may touch (runtime.h): each table entry runs inside a MemoryScope that
// registers the storages of the op's tensor arguments and every CPU allocation made while the
// op runs (through TrackingAllocator, which wraps the CPU allocator once the first scope
// opens and records only while a scope is open on the allocating thread).

#include <c10/core/Allocator.h>
#include <c10/core/CPUAllocator.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <cstring>
#include <mutex>
#include <optional>
#include <string>

#include "batch_norm_leaky_relu/batch_norm_leaky_relu.h"
#include "common/emulated_cuda.h"
#include "conv/conv_engine.h"
#include "conv_transpose2d/conv_transpose2d.h"
#include "reparameterize/reparameterize.h"
#include "simt/runtime.h"
#include "simt/selftest.h"

namespace fastgen::simt {
namespace {

thread_local uint64_t t_scope = 0;

// Wraps the CPU allocator: while a scope is open on this thread, a new allocation is
// registered as kernel-accessible memory until it is freed or the scope closes.
class TrackingAllocator final : public c10::Allocator {
 public:
  explicit TrackingAllocator(c10::Allocator* inner) : inner_(inner) {}

  c10::DataPtr allocate(size_t bytes) override {
    c10::DataPtr data = inner_->allocate(bytes);
    if (t_scope == 0 || bytes == 0 || data.get() == nullptr) return data;
    auto* tracked = new Tracked{std::move(data), t_scope};
    void* pointer = tracked->inner.get();
    detail::register_range(pointer, bytes, detail::RangeKind::Tensor, tracked->scope);
    return c10::DataPtr(pointer, tracked, &Tracked::release, tracked->inner.device());
  }

  c10::DeleterFnPtr raw_deleter() const override { return inner_->raw_deleter(); }

  void copy_data(void* dest, const void* src, std::size_t count) const override {
    std::memcpy(dest, src, count);
  }

 private:
  struct Tracked {
    c10::DataPtr inner;
    uint64_t scope;
    static void release(void* context) {
      auto* tracked = static_cast<Tracked*>(context);
      detail::unregister_range(tracked->inner.get(), tracked->scope);
      delete tracked;
    }
  };
  c10::Allocator* inner_;
};

void install_tracking_allocator() {
  static std::once_flag once;
  std::call_once(once, [] {
    static TrackingAllocator allocator(c10::GetCPUAllocator());
    c10::SetCPUAllocator(&allocator, /*priority=*/255);
  });
}

class MemoryScope {
 public:
  MemoryScope() : id_(detail::new_scope_id()), outer_(t_scope) {
    install_tracking_allocator();
    t_scope = id_;
  }
  ~MemoryScope() {
    t_scope = outer_;
    detail::unregister_scope(id_);
  }
  MemoryScope(const MemoryScope&) = delete;
  MemoryScope& operator=(const MemoryScope&) = delete;

  void add(const at::Tensor& tensor) {
    if (!tensor.defined() || !tensor.has_storage()) return;
    const c10::Storage& storage = tensor.storage();
    detail::register_range(storage.data(), storage.nbytes(), detail::RangeKind::Tensor, id_);
  }
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

const emulation::Kernels& kernels() {
  static const emulation::Kernels table = [] {
    emulation::Kernels k;
    k.batch_norm_leaky_relu = &scoped<&batch_norm_leaky_relu::emulated_cuda::forward>::call;
    k.batch_norm_leaky_relu_backward =
        &scoped<&batch_norm_leaky_relu::emulated_cuda::backward>::call;
    k.reparameterize = &scoped<&reparameterize::emulated_cuda::forward>::call;
    k.reparameterize_backward = &scoped<&reparameterize::emulated_cuda::backward>::call;
    k.bias_activation = &scoped<&emulated_cuda::bias_activation>::call;
    k.activation_backward = &scoped<&emulated_cuda::activation_backward>::call;
    k.conv_engine = {&scoped<&emulated_cuda::implicit_gemm::forward>::call,
                     &scoped<&emulated_cuda::implicit_gemm::backward>::call};
    return k;
  }();
  return table;
}

}  // namespace
}  // namespace fastgen::simt

PYBIND11_MODULE(_emulated_cuda, module) {
  namespace simt = fastgen::simt;
  module.doc() = "fastgen's CUDA kernels compiled against its SIMT emulator (csrc/simt)";
  module.def(
      "kernels",
      [] {
        return pybind11::capsule(static_cast<const void*>(&simt::kernels()),
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
