#pragma once
// The SIMT emulator runtime's private header: the state its files share and the functions one
// of them defines for the others. Only csrc/simt/runtime/*.cpp include it; the kernels see
// simt/runtime.h alone.
//
// Layout of the state: one Engine per OS thread (emulated launches on different OS threads
// are independent); inside it the block being run, its threads (fibers with their own
// stacks, reused from launch to launch), the run queue, the shared arena and the shadow
// cells of the race check. t_thread points at the emulated thread running now, or is null
// when host code runs, which is all a memory hook looks at before returning.
//
// Everything declared here is hidden in the module (the visibility pragma) and sits in
// fastgen::simt::detail beside runtime.h's interface; no kernel-side header declares these
// names. What only one file uses stays in that file's anonymous namespace.

#include <sys/mman.h>
#include <unistd.h>

#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <string>
#include <vector>

#include "simt/runtime.h"

#if !defined(__x86_64__)
#include <ucontext.h>
#endif

#pragma GCC visibility push(hidden)

#if defined(__x86_64__)
// The context switch and a new fiber's first frame, in assembly (fibers.cpp).
extern "C" void fastgen_simt_switch(void** from_sp, void* to_sp);
extern "C" void fastgen_simt_trampoline();
#endif

namespace fastgen::simt::detail {

// sm_90 limits (CUDA programming guide, compute capability 9.0).
constexpr uint64_t kMaxGridX = (uint64_t(1) << 31) - 1;
constexpr unsigned kMaxGridYZ = 65535;
constexpr unsigned kMaxBlockXY = 1024, kMaxBlockZ = 64, kMaxThreads = 1024;
constexpr size_t kMaxStaticShared = 48 * 1024;
constexpr size_t kMaxDynamicSharedDefault = 48 * 1024;
constexpr size_t kMaxSharedOptIn = 227 * 1024;
constexpr unsigned kWarp = 32;

constexpr size_t kStackBytes = 128 * 1024;  // per emulated thread; the lowest page is a guard
constexpr size_t kRedzone = 64;             // unusable bytes around each shared variable
constexpr size_t kArenaBytes = kMaxSharedOptIn + 64 * kRedzone + 4096;

// --- fibers ------------------------------------------------------------------------------

enum class Status : uint8_t { Runnable, Barrier, Warp, Exited };

struct WarpWait {
  WarpOp op;
  unsigned mask;
  uint64_t value;
  int param;
  int width;
  const char* file;
  int line;
  uint64_t result;
  CollectiveFn collective;  // non-null for warp_collective
  const char* what;
  void* data;
};

struct Thread {
  Dim index{};
  unsigned linear = 0, warp = 0, lane = 0;
  Status status = Status::Exited;
  char* stack_lo = nullptr;  // usable stack [stack_lo, stack_hi)
  char* stack_hi = nullptr;
#if defined(__x86_64__)
  void* sp = nullptr;
#else
  ucontext_t context;
#endif
  WarpWait wait{};
  // True while the runtime works on this thread's behalf. The runtime and the instrumented
  // kernel code share inline library functions (std::string's, say), and the linker keeps
  // one copy, possibly the instrumented one: the hooks must ignore what the runtime does.
  bool in_runtime = false;
};

// Marks the current thread as inside the runtime for the scope's duration.
struct RuntimeSection {
  Thread* thread;
  bool saved;
  explicit RuntimeSection(Thread* t) : thread(t), saved(t ? t->in_runtime : false) {
    if (thread) thread->in_runtime = true;
  }
  ~RuntimeSection() {
    if (thread) thread->in_runtime = saved;
  }
};

// Which lanes of a warp have exited, wait at the barrier, or wait at a warp operation (in
// which group: the lanes of one mask that have arrived so far).
struct WarpGroup {
  unsigned mask, arrived;
};
struct WarpState {
  unsigned existing = 0, exited = 0, barrier = 0, waiting = 0;
  int group_count = 0;
  WarpGroup groups[32];
  // The group expecting lane `bit` other than one with mask `except`, or null.
  const WarpGroup* expecting(unsigned bit, unsigned except) const {
    for (int g = 0; g < group_count; ++g) {
      if ((groups[g].mask & bit) && groups[g].mask != except) return &groups[g];
    }
    return nullptr;
  }
};

struct SharedVariable {
  const void* tag;
  size_t offset, bytes;
  const char* name;
};

// Race-check shadow of 8 bytes: for each byte the thread (1 + linear index) that last wrote
// it and the one that read it (kMany: several) since the last barrier, and which writes were
// atomic. A cell whose (block, epoch) is old counts as empty.
constexpr uint16_t kMany = 0xFFFF;
struct Cell {
  uint64_t block = 0;
  uint32_t epoch = 0;
  uint8_t atomic = 0;
  uint16_t writer[8];
  uint16_t reader[8];
};

struct GlobalCell {
  uintptr_t chunk = 0;  // address >> 3; 0 = never used
  Cell cell;
};

struct Range {
  uintptr_t begin, end;
  RangeKind kind;
};

enum class Access : uint8_t { Read, Write, Atomic };

struct Engine {
  // threads and their stacks
  std::vector<Thread> threads;
  std::vector<WarpState> warps;
  char* stack_memory = nullptr;
  size_t stack_slots = 0;
#if defined(__x86_64__)
  void* scheduler_sp = nullptr;
#else
  ucontext_t scheduler_context;
#endif
  std::vector<uint32_t> queue;
  size_t queue_head = 0;
  std::vector<uint32_t> scratch;

  // the launch and block being run
  const LaunchDesc* launch = nullptr;
  Dim block_index{};
  unsigned thread_count = 0, exited = 0, at_barrier = 0;
  const char* barrier_file = nullptr;
  int barrier_line = 0;
  uint32_t epoch = 0;
  uint64_t block_serial = 0;
  uint64_t seed = 0;
  uint64_t rng = 0;
  bool racecheck = true;
  std::string error;

  // shared memory
  unsigned char* arena = nullptr;
  std::vector<uint8_t> valid;        // byte belongs to a variable (or the dynamic region)
  std::vector<uint8_t> initialized;  // byte written since the block started
  std::vector<Cell> shared_cells;
  std::vector<SharedVariable> variables;
  size_t arena_top = 0, arena_high = 0, static_bytes = 0;
  size_t dynamic_offset = 0, dynamic_bytes = 0;

  // global memory
  std::vector<Range> ranges;
  size_t last_range = 0;
  std::vector<GlobalCell> global_cells;
  size_t global_used = 0;

  Engine() {
    arena = static_cast<unsigned char*>(std::aligned_alloc(4096, kArenaBytes));
    valid.assign(kArenaBytes, 0);
    initialized.assign(kArenaBytes, 0);
    shared_cells.resize(kArenaBytes / 8);
    global_cells.resize(1 << 12);
  }
  ~Engine() {
    std::free(arena);
    if (stack_memory != nullptr) munmap(stack_memory, stack_slots * kStackBytes);
  }

  void ensure_stacks(size_t count) {
    if (count <= stack_slots) return;
    if (stack_memory != nullptr) munmap(stack_memory, stack_slots * kStackBytes);
    void* memory = mmap(nullptr, count * kStackBytes, PROT_READ | PROT_WRITE,
                        MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
    if (memory == MAP_FAILED) throw Error("fastgen.simt: cannot map fiber stacks");
    stack_memory = static_cast<char*>(memory);
    stack_slots = count;
    const size_t page = size_t(sysconf(_SC_PAGESIZE));
    for (size_t i = 0; i < count; ++i) mprotect(stack_memory + i * kStackBytes, page, PROT_NONE);
  }
};

// The emulated thread running now on this OS thread, null while host code runs (fibers.cpp).
extern __attribute__((tls_model("initial-exec"))) thread_local constinit Thread* t_thread;

// --- defined in fibers.cpp ---------------------------------------------------------------

// This OS thread's Engine, made on first use and kept for reuse.
Engine& engine();
uint64_t splitmix(uint64_t& state);
// Message pieces: "(x, y, z)", "thread (..) of block (..)", "file.cu:line", "0x..", and
// " [code at module+offset; ...]" for an instruction address (empty if unknown).
std::string dim_text(Dim d);
std::string thread_text(const Engine& e, const Thread& t);
std::string site(const char* file, int line);
std::string hex(uint64_t value);
std::string code_location(const void* pc);
// Stops the launch: records the first error and returns to the scheduler for good.
[[noreturn]] void fail(const std::string& message);
// The run queue.
void enqueue(Engine& e, uint32_t index);
void enqueue_permuted(Engine& e, std::vector<uint32_t>& indices);
void release_barrier(Engine& e);
void block_here(Engine& e, Thread& t);
// Fiber start, and what the deadlock and exit messages say about waiting threads.
void prepare_fiber(Thread& t);
std::string waiters_text(Engine& e);
std::string wait_text(const WarpWait& w);
unsigned lanes_in_warp(const Engine& e, unsigned warp);

// --- defined in memory.cpp ---------------------------------------------------------------

// The ranges a launch may touch: the registry, the module's own segments, the arguments.
void snapshot_ranges(Engine& e);
// Checks one access by thread t (bounds, read-only memory, initialisation, races).
void check(Thread& t, const void* pointer, size_t bytes, Access access, const void* pc);

}  // namespace fastgen::simt::detail

#pragma GCC visibility pop
