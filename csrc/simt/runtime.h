#pragma once
// The SIMT emulator's runtime interface (implemented in runtime/*.cpp). Plain C++: it is
// compiled WITHOUT memory instrumentation, while the kernels that call it are compiled with
// GCC's -fsanitize=thread instrumentation and so report every load and store to it (the
// __tsan_* hooks of runtime/hooks.cpp). See emulator.h for the model it implements.

#include <cstddef>
#include <cstdint>
#include <stdexcept>
#include <string>

namespace fastgen::simt {

// What the emulator reports: a launch it refuses, or a kernel that broke a rule. The
// launch helper turns it into a c10::Error naming the kernel.
struct Error : std::runtime_error {
  using std::runtime_error::runtime_error;
};

namespace detail {

struct Dim {
  unsigned x, y, z;
};

struct LaunchDesc {
  const char* kernel_name;
  const void* kernel;  // identity, for the dynamic-shared-memory opt-in
  Dim grid, block;
  size_t dynamic_shared_bytes;
  void (*entry)(const void* args);  // runs the kernel for the current thread
  const void* args;                 // the argument tuple (read-only while the launch runs)
  size_t args_bytes;
};

// Runs every block of the launch (blocks one after another, each block's threads as
// cooperative fibers). Throws Error for an invalid launch or a broken rule.
void run(const LaunchDesc& launch);

Dim thread_index();
Dim block_index();
Dim block_dim();
Dim grid_dim();

void syncthreads(const char* file, int line);

enum class WarpOp : int { Shuffle, ShuffleUp, ShuffleDown, ShuffleXor, Ballot, Any, All };
uint64_t warp_op(WarpOp op, unsigned mask, uint64_t value, int param, int width, const char* file,
                 int line);
unsigned active_mask();

// A warp-wide operation over all 32 lanes' data (the WMMA calls): every lane of the warp
// must call it with the same `op`; the last one to arrive runs op(data of lane 0..31) once.
using CollectiveFn = void (*)(void* const* lane_data);
void warp_collective(CollectiveFn op, void* data, const char* what, const char* file, int line);
// Memory the emulator itself reads or writes for the current thread (inside a collective),
// checked and race-tracked as if the thread had accessed it. `lane` picks the thread of the
// current warp the access is charged to.
void check_read(const void* address, size_t bytes, int lane);
void check_write(void* address, size_t bytes, int lane);
// Stops the launch with `message` (for the emulator's device-side library, e.g. wmma.h).
[[noreturn]] void kernel_error(const std::string& message);

// Static shared variables: the storage of the variable declared at `tag` (unique per
// declaration and kernel instantiation) for the current block.
void* shared_variable(const void* tag, size_t bytes, size_t alignment, const char* name);
void* dynamic_shared();

// Called before each atomic read-modify-write: bounds, race bookkeeping, and a yield so that
// other threads run in between (a spin loop on an atomic always makes progress).
void atomic_access(void* address, size_t bytes, const char* what, const char* file, int line);
void thread_fence();

void set_max_dynamic_shared(const void* kernel, const char* kernel_name, int bytes);

// --- memory the kernels may touch --------------------------------------------------------
// Kernels may read and write only (a) their own thread's stack, (b) the block's shared
// variables, (c) ranges registered here: the tensors of the op being emulated (its
// arguments' storages, and every CPU allocation made while the op runs), read-only
// argument tuples and the emulated module's own static data.
enum class RangeKind : int { Tensor, ReadOnly, Static };
void register_range(const void* begin, size_t bytes, RangeKind kind, uint64_t scope);
void unregister_range(const void* begin, uint64_t scope);
void unregister_scope(uint64_t scope);
uint64_t new_scope_id();

// Counters and settings, for tests and `fastgen info`.
uint64_t launch_count();
uint64_t block_count();

std::string parse_kernel_name(const char* pretty_function);

}  // namespace detail
}  // namespace fastgen::simt
