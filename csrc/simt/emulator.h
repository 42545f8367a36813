#pragma once
// fastgen's SIMT emulator: what CUDA kernel code sees when the host compiler builds it
// (FASTGEN_SIMT_EMULATION; included through csrc/simt/simt.h, never directly).
//
// The model, as CUDA defines a launch:
//   * blocks run one after another, in a seeded permutation of their indices; the threads of
//     a block run as cooperative fibers on one OS thread. A thread runs until it reaches a
//     synchronisation point (__syncthreads, a warp shuffle or vote, an atomic, a fence); the
//     order in which the runnable threads then continue is a permutation seeded by
//     FASTGEN_SIMT_SCHEDULE (default 0, a fixed permutation), the block and the barrier
//     count, so code that depends on an unsynchronised order changes with the seed;
//   * strict where CUDA is strict, with an error naming the kernel, never a hang: launch
//     dimensions and shared memory beyond sm_90's limits, a __syncthreads that some thread
//     of the block does not reach (divergent, or after threads exited), a shuffle or vote
//     whose mask leaves out the caller or names a lane that is absent, exited, or at another
//     synchronisation point;
//   * every load and store of the kernel code is checked (the code is compiled with GCC's
//     thread-sanitizer instrumentation, whose hooks the emulator implements): outside the
//     thread's stack, its block's shared variables and the op's tensors it is an
//     out-of-bounds error; a shared-memory byte read before any thread of the block wrote
//     it is an error; two threads of a block touching the same byte between two barriers,
//     at least one writing and not both atomically, is a race error (shared and global
//     memory). FASTGEN_SIMT_RACECHECK=0 turns the race and initialisation checks off.
// What it cannot show: anything between blocks running at the same time, the memory model's
// reorderings, tensor-core and nvcc numerics beyond IEEE +-*/ sqrt, and speed.

#include <c10/core/Device.h>
#include <c10/util/Exception.h>

#include <cmath>
#include <cstring>
#include <string>
#include <tuple>
#include <type_traits>
#include <utility>

#include "simt/runtime.h"

// --- CUDA's built-in types and keywords ------------------------------------------------------

struct uint3 {
  unsigned int x, y, z;
};

struct dim3 {
  unsigned int x, y, z;
  constexpr dim3(unsigned int x_ = 1, unsigned int y_ = 1, unsigned int z_ = 1)
      : x(x_), y(y_), z(z_) {}
};

#define __global__
#define __device__
#define __host__
#define __forceinline__ inline __attribute__((always_inline))
#define __noinline__ __attribute__((noinline))
#define __launch_bounds__(...)
#define __align__(n) __attribute__((aligned(n)))
#define warpSize 32

namespace fastgen::simt::detail {
inline uint3 as_uint3(Dim d) {
  return {d.x, d.y, d.z};
}
inline dim3 as_dim3(Dim d) {
  return dim3(d.x, d.y, d.z);
}
}  // namespace fastgen::simt::detail

#define threadIdx (::fastgen::simt::detail::as_uint3(::fastgen::simt::detail::thread_index()))
#define blockIdx (::fastgen::simt::detail::as_uint3(::fastgen::simt::detail::block_index()))
#define blockDim (::fastgen::simt::detail::as_dim3(::fastgen::simt::detail::block_dim()))
#define gridDim (::fastgen::simt::detail::as_dim3(::fastgen::simt::detail::grid_dim()))

#define __syncthreads() ::fastgen::simt::detail::syncthreads(__FILE__, __LINE__)

// Shared memory: a reference to this block's copy of the variable. `name` must be unique in
// its function; the tag's address is unique per kernel instantiation.
#define FASTGEN_SHARED(name, ...)                                                                  \
  static char fastgen_shared_tag_##name;                                                           \
  ::std::type_identity_t<__VA_ARGS__>& name =                                                      \
      *static_cast<::std::type_identity_t<__VA_ARGS__>*>(::fastgen::simt::detail::shared_variable( \
          &fastgen_shared_tag_##name, sizeof(::std::type_identity_t<__VA_ARGS__>),                 \
          alignof(::std::type_identity_t<__VA_ARGS__>), #name))
#define FASTGEN_DYNAMIC_SHARED(name, ...) \
  auto* name = static_cast<__VA_ARGS__*>(::fastgen::simt::detail::dynamic_shared())

// --- warp shuffles and votes -------------------------------------------------------------------

namespace fastgen::simt::detail {

template <typename T>
inline T warp_exchange(WarpOp op, unsigned mask, T value, int param, int width, const char* file,
                       int line) {
  static_assert(std::is_trivially_copyable_v<T> && sizeof(T) <= 8,
                "warp shuffles move values of at most 8 bytes");
  uint64_t bits = 0;
  std::memcpy(&bits, &value, sizeof(T));
  bits = warp_op(op, mask, bits, param, width, file, line);
  T result;
  std::memcpy(&result, &bits, sizeof(T));
  return result;
}

}  // namespace fastgen::simt::detail

// __shfl_sync, __shfl_up_sync, __shfl_down_sync and __shfl_xor_sync: one exchange each, told
// apart by its WarpOp; `Param` (source lane, delta or lane mask) has CUDA's type for it.
#define FASTGEN_SIMT_SHUFFLE(name, op, Param)                                                 \
  template <typename T>                                                                       \
  inline T name(unsigned mask, T var, Param param, int width = 32,                            \
                const char* file = __builtin_FILE(), int line = __builtin_LINE()) {           \
    return fastgen::simt::detail::warp_exchange(fastgen::simt::detail::WarpOp::op, mask, var, \
                                                int(param), width, file, line);               \
  }
FASTGEN_SIMT_SHUFFLE(__shfl_sync, Shuffle, int)
FASTGEN_SIMT_SHUFFLE(__shfl_up_sync, ShuffleUp, unsigned)
FASTGEN_SIMT_SHUFFLE(__shfl_down_sync, ShuffleDown, unsigned)
FASTGEN_SIMT_SHUFFLE(__shfl_xor_sync, ShuffleXor, int)
#undef FASTGEN_SIMT_SHUFFLE

inline unsigned __ballot_sync(unsigned mask, int predicate, const char* file = __builtin_FILE(),
                              int line = __builtin_LINE()) {
  using fastgen::simt::detail::WarpOp;
  return unsigned(
      fastgen::simt::detail::warp_op(WarpOp::Ballot, mask, predicate != 0, 0, 32, file, line));
}
inline int __any_sync(unsigned mask, int predicate, const char* file = __builtin_FILE(),
                      int line = __builtin_LINE()) {
  using fastgen::simt::detail::WarpOp;
  return int(fastgen::simt::detail::warp_op(WarpOp::Any, mask, predicate != 0, 0, 32, file, line));
}
inline int __all_sync(unsigned mask, int predicate, const char* file = __builtin_FILE(),
                      int line = __builtin_LINE()) {
  using fastgen::simt::detail::WarpOp;
  return int(fastgen::simt::detail::warp_op(WarpOp::All, mask, predicate != 0, 0, 32, file, line));
}
inline unsigned __activemask() {
  return fastgen::simt::detail::active_mask();
}

// --- atomics (global or shared memory) and fences ----------------------------------------------

namespace fastgen::simt::detail {

template <typename T, typename Update>
inline T atomic_update(T* address, Update update, const char* what, const char* file, int line) {
  atomic_access(address, sizeof(T), what, file, line);
  using Bits = std::conditional_t<sizeof(T) == 2, uint16_t,
                                  std::conditional_t<sizeof(T) == 4, uint32_t, uint64_t>>;
  static_assert(sizeof(T) == sizeof(Bits));
  Bits* bits = reinterpret_cast<Bits*>(address);
  Bits expected = __atomic_load_n(bits, __ATOMIC_RELAXED);
  for (;;) {
    T old;
    std::memcpy(&old, &expected, sizeof(T));
    const T next = update(old);
    Bits desired;
    std::memcpy(&desired, &next, sizeof(T));
    if (__atomic_compare_exchange_n(bits, &expected, desired, false, __ATOMIC_SEQ_CST,
                                    __ATOMIC_RELAXED)) {
      return old;
    }
  }
}

}  // namespace fastgen::simt::detail

#define FASTGEN_SIMT_ATOMIC_SITE const char *file = __builtin_FILE(), int line = __builtin_LINE()

template <typename T>
inline T atomicAdd(T* address, T value, FASTGEN_SIMT_ATOMIC_SITE) {
  static_assert(std::is_same_v<T, int> || std::is_same_v<T, unsigned int> ||
                    std::is_same_v<T, unsigned long long> || std::is_same_v<T, float> ||
                    std::is_same_v<T, double>,
                "atomicAdd: int, unsigned, unsigned long long, float or double");
  return fastgen::simt::detail::atomic_update(
      address, [value](T old) { return T(old + value); }, "atomicAdd", file, line);
}
template <typename T>
inline T atomicCAS(T* address, T compare, T value, FASTGEN_SIMT_ATOMIC_SITE) {
  static_assert(std::is_same_v<T, int> || std::is_same_v<T, unsigned int> ||
                    std::is_same_v<T, unsigned long long> || std::is_same_v<T, unsigned short>,
                "atomicCAS: int, unsigned, unsigned long long or unsigned short");
  return fastgen::simt::detail::atomic_update(
      address, [compare, value](T old) { return old == compare ? value : old; }, "atomicCAS", file,
      line);
}
template <typename T>
inline T atomicExch(T* address, T value, FASTGEN_SIMT_ATOMIC_SITE) {
  static_assert(std::is_same_v<T, int> || std::is_same_v<T, unsigned int> ||
                    std::is_same_v<T, unsigned long long> || std::is_same_v<T, float>,
                "atomicExch: int, unsigned, unsigned long long or float");
  return fastgen::simt::detail::atomic_update(
      address, [value](T) { return value; }, "atomicExch", file, line);
}
template <typename T>
inline T atomicMax(T* address, T value, FASTGEN_SIMT_ATOMIC_SITE) {
  static_assert(std::is_integral_v<T> && sizeof(T) >= 4, "atomicMax: 32- or 64-bit integers");
  return fastgen::simt::detail::atomic_update(
      address, [value](T old) { return old < value ? value : old; }, "atomicMax", file, line);
}
template <typename T>
inline T atomicMin(T* address, T value, FASTGEN_SIMT_ATOMIC_SITE) {
  static_assert(std::is_integral_v<T> && sizeof(T) >= 4, "atomicMin: 32- or 64-bit integers");
  return fastgen::simt::detail::atomic_update(
      address, [value](T old) { return value < old ? value : old; }, "atomicMin", file, line);
}
#undef FASTGEN_SIMT_ATOMIC_SITE

inline void __threadfence() {
  fastgen::simt::detail::thread_fence();
}
inline void __threadfence_block() {
  fastgen::simt::detail::thread_fence();
}

// Cache-hinted loads: plain (checked) loads here.
template <typename T>
inline T __ldg(const T* address) {
  return *address;
}
template <typename T>
inline T __ldcg(const T* address) {
  return *address;
}
template <typename T>
inline T __ldcs(const T* address) {
  return *address;
}

// --- math intrinsics: IEEE round-to-nearest, as on the device ---------------------------------
// CUDA's math library puts isfinite & co. in the global namespace; so does the emulator.
using std::isfinite;
using std::isinf;
using std::isnan;

// The emulated build is compiled with -ffp-contract=off (no fused multiply-add) and the CUDA
// build with --fmad=false, so a*b+c rounds twice on both sides.

// __f<op>_rn and __d<op>_rn: the one IEEE operation, rounded to nearest.
#define FASTGEN_SIMT_ROUNDED(op, symbol)           \
  inline float __f##op##_rn(float a, float b) {    \
    return a symbol b;                             \
  }                                                \
  inline double __d##op##_rn(double a, double b) { \
    return a symbol b;                             \
  }
FASTGEN_SIMT_ROUNDED(add, +)
FASTGEN_SIMT_ROUNDED(sub, -)
FASTGEN_SIMT_ROUNDED(mul, *)
FASTGEN_SIMT_ROUNDED(div, /)
#undef FASTGEN_SIMT_ROUNDED
inline float __frcp_rn(float a) {
  return 1.0f / a;
}
inline float __fsqrt_rn(float a) {
  return __builtin_sqrtf(a);
}
inline double __dsqrt_rn(double a) {
  return __builtin_sqrt(a);
}
inline float __fmaf_rn(float a, float b, float c) {
  return __builtin_fmaf(a, b, c);
}
inline double __fma_rn(double a, double b, double c) {
  return __builtin_fma(a, b, c);
}

// __float_as_uint & co.: the same bits read as another type.
#define FASTGEN_SIMT_BIT_CAST(name, From, To) \
  inline To name(From a) {                    \
    return __builtin_bit_cast(To, a);         \
  }
FASTGEN_SIMT_BIT_CAST(__float_as_uint, float, unsigned int)
FASTGEN_SIMT_BIT_CAST(__uint_as_float, unsigned int, float)
FASTGEN_SIMT_BIT_CAST(__float_as_int, float, int)
FASTGEN_SIMT_BIT_CAST(__int_as_float, int, float)
FASTGEN_SIMT_BIT_CAST(__double_as_longlong, double, long long)
FASTGEN_SIMT_BIT_CAST(__longlong_as_double, long long, double)
#undef FASTGEN_SIMT_BIT_CAST

inline float __uint2float_rn(unsigned int a) {
  return static_cast<float>(a);
}
inline float __int2float_rn(int a) {
  return static_cast<float>(a);
}
inline unsigned int __umulhi(unsigned int a, unsigned int b) {
  return static_cast<unsigned int>((static_cast<unsigned long long>(a) * b) >> 32);
}
inline int __mulhi(int a, int b) {
  return static_cast<int>((static_cast<long long>(a) * b) >> 32);
}
inline float __saturatef(float a) {
  return a < 0.0f ? 0.0f : (a > 1.0f ? 1.0f : (a == a ? a : 0.0f));
}

// --- the launcher's side ----------------------------------------------------------------------

namespace fastgen::simt {

struct Stream {};
inline Stream current_stream() {
  return {};
}

// CPU tensors: nothing to guard.
struct DeviceGuard {
  explicit DeviceGuard(c10::Device) {}
};

// The SM count launchers size their grids by: an H100 SXM / H200's 132.
inline int multiprocessor_count() {
  return 132;
}

inline void memset_async(void* data, int value, size_t bytes, Stream) {
  std::memset(data, value, bytes);
}

struct LaunchConfig {
  dim3 grid;
  dim3 block;
  size_t shared_bytes = 0;  // dynamic shared memory
  Stream stream = {};
};

template <typename Kernel>
struct kernel_arguments;
template <typename... Params>
struct kernel_arguments<void (*)(Params...)> {
  using type = std::tuple<std::decay_t<Params>...>;
};

template <auto kernel>
const char* kernel_name() {
  static const std::string name = detail::parse_kernel_name(__PRETTY_FUNCTION__);
  return name.c_str();
}

template <auto kernel, typename Arguments>
void kernel_entry(const void* arguments) {
  std::apply(kernel, *static_cast<const Arguments*>(arguments));
}

// What kernel<<<grid, block, shared_bytes, stream>>>(args...) does, emulated: the arguments
// are converted to the kernel's parameter types once, and every thread gets its own copy.
template <auto kernel, typename... Args>
void launch(const LaunchConfig& config, Args&&... args) {
  using Arguments = typename kernel_arguments<decltype(kernel)>::type;
  const Arguments arguments(std::forward<Args>(args)...);
  const detail::LaunchDesc desc{kernel_name<kernel>(),
                                reinterpret_cast<const void*>(kernel),
                                {config.grid.x, config.grid.y, config.grid.z},
                                {config.block.x, config.block.y, config.block.z},
                                config.shared_bytes,
                                &kernel_entry<kernel, Arguments>,
                                &arguments,
                                sizeof(Arguments)};
  try {
    detail::run(desc);
  } catch (const Error& error) {
    TORCH_CHECK(false, error.what());
  }
}

template <auto kernel>
void set_max_dynamic_shared(int bytes) {
  try {
    detail::set_max_dynamic_shared(reinterpret_cast<const void*>(kernel), kernel_name<kernel>(),
                                   bytes);
  } catch (const Error& error) {
    TORCH_CHECK(false, error.what());
  }
}

}  // namespace fastgen::simt
