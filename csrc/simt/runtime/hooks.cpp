// The SIMT emulator's runtime, part 5 of 5: the hooks GCC's -fsanitize=thread instrumentation
// calls around every memory access of the instrumented code. Each hands the access to check()
// (memory.cpp), or forwards a host atomic. Apart from the rest because it is the emulator's
// other face: the rest is called by kernel code on purpose, these by the compiler.
//
// Compiled WITHOUT instrumentation, as the whole runtime (fibers.cpp): an instrumented hook
// would call the hooks again.

#include "simt/runtime/internal.h"

#include <cstring>

// --- the instrumentation hooks ----------------------------------------------------------------
// GCC's -fsanitize=thread calls these around every memory access of the kernel code (and of
// the host code compiled with it, which runs with t_thread == null and returns at once).
// Atomics of host code (reference counts of tensors) are forwarded as they are.

using fastgen::simt::detail::Access;
using fastgen::simt::detail::t_thread;

#define FASTGEN_HOOK extern "C" __attribute__((visibility("hidden"), used))

namespace {
inline void hook(const void* address, size_t bytes, Access access, const void* pc) {
  fastgen::simt::detail::Thread* t = t_thread;
  if (t != nullptr && !t->in_runtime) fastgen::simt::detail::check(*t, address, bytes, access, pc);
}
}  // namespace

FASTGEN_HOOK void __tsan_init() {}
FASTGEN_HOOK void __tsan_func_entry(void*) {}
FASTGEN_HOOK void __tsan_func_exit() {}
FASTGEN_HOOK void __tsan_vptr_update(void**, void*) {}
FASTGEN_HOOK void __tsan_vptr_read(void**) {}

// One access hook, __tsan_<kind><n>: checks the n bytes at a. The return address is taken here,
// in the hook the instrumented code calls, so that it names the kernel's instruction.
#define FASTGEN_ACCESS_HOOK(kind, n, access)         \
  FASTGEN_HOOK void __tsan_##kind##n(void* a) {      \
    hook(a, n, access, __builtin_return_address(0)); \
  }

#define FASTGEN_ACCESS_HOOKS(n)                       \
  FASTGEN_ACCESS_HOOK(read, n, Access::Read)          \
  FASTGEN_ACCESS_HOOK(write, n, Access::Write)        \
  FASTGEN_ACCESS_HOOK(volatile_read, n, Access::Read) \
  FASTGEN_ACCESS_HOOK(volatile_write, n, Access::Write)
FASTGEN_ACCESS_HOOKS(1)
FASTGEN_ACCESS_HOOKS(2)
FASTGEN_ACCESS_HOOKS(4)
FASTGEN_ACCESS_HOOKS(8)
FASTGEN_ACCESS_HOOKS(16)
#undef FASTGEN_ACCESS_HOOKS

#define FASTGEN_UNALIGNED_HOOKS(n)                     \
  FASTGEN_ACCESS_HOOK(unaligned_read, n, Access::Read) \
  FASTGEN_ACCESS_HOOK(unaligned_write, n, Access::Write)
FASTGEN_UNALIGNED_HOOKS(2)
FASTGEN_UNALIGNED_HOOKS(4)
FASTGEN_UNALIGNED_HOOKS(8)
FASTGEN_UNALIGNED_HOOKS(16)
#undef FASTGEN_UNALIGNED_HOOKS
#undef FASTGEN_ACCESS_HOOK

FASTGEN_HOOK void __tsan_read_range(void* a, unsigned long n) {
  hook(a, n, Access::Read, __builtin_return_address(0));
}
FASTGEN_HOOK void __tsan_write_range(void* a, unsigned long n) {
  hook(a, n, Access::Write, __builtin_return_address(0));
}

FASTGEN_HOOK void* __tsan_memcpy(void* d, const void* s, unsigned long n) {
  hook(s, n, Access::Read, __builtin_return_address(0));
  hook(d, n, Access::Write, __builtin_return_address(0));
  return std::memcpy(d, s, n);
}
FASTGEN_HOOK void* __tsan_memmove(void* d, const void* s, unsigned long n) {
  hook(s, n, Access::Read, __builtin_return_address(0));
  hook(d, n, Access::Write, __builtin_return_address(0));
  return std::memmove(d, s, n);
}
FASTGEN_HOOK void* __tsan_memset(void* d, int c, unsigned long n) {
  hook(d, n, Access::Write, __builtin_return_address(0));
  return std::memset(d, c, n);
}

// Atomic hooks: the memory-order argument is ignored (every operation is sequentially
// consistent, which is never weaker than asked).
// __tsan_atomic<bits>_<op>(a, v): builtin(a, v), which returns the old value.
#define FASTGEN_ATOMIC_RMW_HOOK(bits, T, op, builtin)                  \
  FASTGEN_HOOK T __tsan_atomic##bits##_##op(volatile T* a, T v, int) { \
    return builtin(a, v, __ATOMIC_SEQ_CST);                            \
  }
// __tsan_atomic<bits>_compare_exchange_<kind>: the strong or weak compare-exchange.
#define FASTGEN_ATOMIC_CAS_HOOK(bits, T, kind, weak)                                            \
  FASTGEN_HOOK int __tsan_atomic##bits##_compare_exchange_##kind(volatile T* a, T* c, T v, int, \
                                                                 int) {                         \
    return __atomic_compare_exchange_n(a, c, v, weak, __ATOMIC_SEQ_CST, __ATOMIC_SEQ_CST);      \
  }
#define FASTGEN_ATOMIC_HOOKS(bits, T)                                                            \
  FASTGEN_HOOK T __tsan_atomic##bits##_load(const volatile T* a, int) {                          \
    return __atomic_load_n(a, __ATOMIC_SEQ_CST);                                                 \
  }                                                                                              \
  FASTGEN_HOOK void __tsan_atomic##bits##_store(volatile T* a, T v, int) {                       \
    __atomic_store_n(a, v, __ATOMIC_SEQ_CST);                                                    \
  }                                                                                              \
  FASTGEN_ATOMIC_RMW_HOOK(bits, T, exchange, __atomic_exchange_n)                                \
  FASTGEN_ATOMIC_RMW_HOOK(bits, T, fetch_add, __atomic_fetch_add)                                \
  FASTGEN_ATOMIC_RMW_HOOK(bits, T, fetch_sub, __atomic_fetch_sub)                                \
  FASTGEN_ATOMIC_RMW_HOOK(bits, T, fetch_and, __atomic_fetch_and)                                \
  FASTGEN_ATOMIC_RMW_HOOK(bits, T, fetch_or, __atomic_fetch_or)                                  \
  FASTGEN_ATOMIC_RMW_HOOK(bits, T, fetch_xor, __atomic_fetch_xor)                                \
  FASTGEN_ATOMIC_RMW_HOOK(bits, T, fetch_nand, __atomic_fetch_nand)                              \
  FASTGEN_ATOMIC_CAS_HOOK(bits, T, strong, false)                                                \
  FASTGEN_ATOMIC_CAS_HOOK(bits, T, weak, true)                                                   \
  FASTGEN_HOOK T __tsan_atomic##bits##_compare_exchange_val(volatile T* a, T c, T v, int, int) { \
    __atomic_compare_exchange_n(a, &c, v, false, __ATOMIC_SEQ_CST, __ATOMIC_SEQ_CST);            \
    return c;                                                                                    \
  }
FASTGEN_ATOMIC_HOOKS(8, uint8_t)
FASTGEN_ATOMIC_HOOKS(16, uint16_t)
FASTGEN_ATOMIC_HOOKS(32, uint32_t)
FASTGEN_ATOMIC_HOOKS(64, uint64_t)
#undef FASTGEN_ATOMIC_HOOKS
#undef FASTGEN_ATOMIC_CAS_HOOK
#undef FASTGEN_ATOMIC_RMW_HOOK

FASTGEN_HOOK void __tsan_atomic_thread_fence(int) {
  __atomic_thread_fence(__ATOMIC_SEQ_CST);
}
FASTGEN_HOOK void __tsan_atomic_signal_fence(int) {
  __atomic_signal_fence(__ATOMIC_SEQ_CST);
}
