// MemoryScope and the tracking allocator behind it (memory_scope.h).

#include "simt/memory_scope.h"

#include <c10/core/Allocator.h>
#include <c10/core/CPUAllocator.h>

#include <cstring>
#include <mutex>

#include "simt/runtime.h"

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

}  // namespace

MemoryScope::MemoryScope() : id_(detail::new_scope_id()), outer_(t_scope) {
  install_tracking_allocator();
  t_scope = id_;
}

MemoryScope::~MemoryScope() {
  t_scope = outer_;
  detail::unregister_scope(id_);
}

void MemoryScope::add(const at::Tensor& tensor) {
  if (!tensor.defined() || !tensor.has_storage()) return;
  const c10::Storage& storage = tensor.storage();
  detail::register_range(storage.data(), storage.nbytes(), detail::RangeKind::Tensor, id_);
}

}  // namespace fastgen::simt
