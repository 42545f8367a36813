// The SIMT emulator's runtime: fibers, the block scheduler, shared memory, the checks, and
// the memory-access hooks the instrumented kernel code calls (model in emulator.h).
//
// This file is compiled WITHOUT instrumentation (setup.py builds it on its own); everything
// it does on a kernel's behalf is checked explicitly.
//
// Layout of the state: one Engine per OS thread (emulated launches on different OS threads
// are independent); inside it the block being run, its threads (fibers with their own
// stacks, reused from launch to launch), the run queue, the shared arena and the shadow
// cells of the race check. t_thread points at the emulated thread running now, or is null
// when host code runs, which is all a memory hook looks at before returning.

#include "simt/runtime.h"

#include <dlfcn.h>
#include <link.h>
#include <sys/mman.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <iterator>
#include <map>
#include <mutex>
#include <sstream>
#include <vector>

#if !defined(__x86_64__)
#include <ucontext.h>
#endif

#if defined(__x86_64__)
// fastgen_simt_switch(&from_sp, to_sp): saves the callee-saved registers on the current stack,
// stores its pointer, and resumes the stack at to_sp. (The SSE and x87 control words are not
// switched: no fiber changes the rounding mode, and ldmxcsr costs as much as the rest.) A new
// fiber's stack is laid out so that the first switch "returns" into fiber_trampoline with
// r12 = the thread and r13 = the function to call.
extern "C" void fastgen_simt_switch(void** from_sp, void* to_sp);
extern "C" void fastgen_simt_trampoline();
asm(R"(
.text
.p2align 4
.globl fastgen_simt_switch
.hidden fastgen_simt_switch
.type fastgen_simt_switch,@function
fastgen_simt_switch:
  pushq %rbp
  pushq %rbx
  pushq %r12
  pushq %r13
  pushq %r14
  pushq %r15
  movq %rsp, (%rdi)
  movq %rsi, %rsp
  popq %r15
  popq %r14
  popq %r13
  popq %r12
  popq %rbx
  popq %rbp
  ret
.size fastgen_simt_switch,.-fastgen_simt_switch
.p2align 4
.globl fastgen_simt_trampoline
.hidden fastgen_simt_trampoline
.type fastgen_simt_trampoline,@function
fastgen_simt_trampoline:
  movq %r12, %rdi
  callq *%r13
  ud2
.size fastgen_simt_trampoline,.-fastgen_simt_trampoline
)");
#endif

namespace fastgen::simt::detail {
namespace {

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

std::atomic<uint64_t> g_launches{0}, g_blocks{0};

// --- fibers -------------------------------------------------------------------------------

struct Thread;
void fiber_main(Thread* thread);

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

thread_local Engine* t_engine = nullptr;
__attribute__((tls_model("initial-exec"))) thread_local Thread* t_thread = nullptr;

Engine& engine() {
  if (t_engine == nullptr) t_engine = new Engine();  // one per OS thread, kept for reuse
  return *t_engine;
}

uint64_t splitmix(uint64_t& state) {
  uint64_t z = (state += 0x9E3779B97F4A7C15ull);
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
  return z ^ (z >> 31);
}

std::string dim_text(Dim d) {
  return "(" + std::to_string(d.x) + ", " + std::to_string(d.y) + ", " + std::to_string(d.z) + ")";
}

std::string thread_text(const Engine& e, const Thread& t) {
  return "thread " + dim_text(t.index) + " of block " + dim_text(e.block_index);
}

std::string site(const char* file, int line) {
  const char* base = std::strrchr(file, '/');
  return std::string(base ? base + 1 : file) + ":" + std::to_string(line);
}

std::string hex(uint64_t value) {
  char text[32];
  std::snprintf(text, sizeof(text), "0x%llx", static_cast<unsigned long long>(value));
  return text;
}

std::string code_location(const void* pc) {
  Dl_info info;
  if (pc != nullptr && dladdr(pc, &info) != 0 && info.dli_fname != nullptr) {
    const char* base = std::strrchr(info.dli_fname, '/');
    return std::string(" [code at ") + (base ? base + 1 : info.dli_fname) + "+" +
           hex(reinterpret_cast<uintptr_t>(pc) - reinterpret_cast<uintptr_t>(info.dli_fbase)) +
           "; addr2line -Cfe <that file> <offset>]";
  }
  return "";
}

void switch_to_scheduler(Engine& e, Thread& t) {
#if defined(__x86_64__)
  fastgen_simt_switch(&t.sp, e.scheduler_sp);
#else
  swapcontext(&t.context, &e.scheduler_context);
#endif
}

// Stops the launch: records the first error and returns to the scheduler for good.
[[noreturn]] void fail(const std::string& message) {
  if (t_thread != nullptr) t_thread->in_runtime = true;
  Engine& e = engine();
  if (e.error.empty()) {
    e.error = "fastgen.simt: kernel " + std::string(e.launch ? e.launch->kernel_name : "?") + ": " +
              message;
  }
  Thread* t = t_thread;
  if (t == nullptr) throw Error(e.error);
  t->status = Status::Exited;
  switch_to_scheduler(e, *t);
  __builtin_unreachable();
}

// --- the run queue ------------------------------------------------------------------------

void enqueue(Engine& e, uint32_t index) {
  e.queue.push_back(index);
}

// Appends `indices` in a random order drawn from the block's schedule stream.
void enqueue_permuted(Engine& e, std::vector<uint32_t>& indices) {
  for (size_t i = indices.size(); i > 1; --i) {
    const size_t j = splitmix(e.rng) % i;
    std::swap(indices[i - 1], indices[j]);
  }
  for (uint32_t index : indices) enqueue(e, index);
}

void release_barrier(Engine& e) {
  e.at_barrier = 0;
  ++e.epoch;
  uint64_t stream = e.seed ^ (e.block_serial * 0x9E3779B97F4A7C15ull) ^ (uint64_t(e.epoch) << 40);
  e.rng = splitmix(stream);
  std::vector<uint32_t>& all = e.scratch;
  all.resize(e.thread_count);
  for (uint32_t i = 0; i < e.thread_count; ++i) {
    e.threads[i].status = Status::Runnable;
    all[i] = i;
  }
  for (WarpState& w : e.warps) w.barrier = 0;
  enqueue_permuted(e, all);
}

void block_here(Engine& e, Thread& t) {
  switch_to_scheduler(e, t);
}

// --- fibers: start and exit ---------------------------------------------------------------

#if !defined(__x86_64__)
void fiber_entry_ucontext() {
  fiber_main(t_thread);
}
#endif

void prepare_fiber(Thread& t) {
#if defined(__x86_64__)
  // Stacks are kStackBytes apart, so their tops would all fall into the same cache sets;
  // a per-thread offset (a multiple of 16) spreads them.
  uintptr_t top =
      (reinterpret_cast<uintptr_t>(t.stack_hi) - (t.linear % 127) * 272) & ~uintptr_t(15);
  // Popped by the first switch: r15, r14, r13 = fiber_main, r12 = &t, rbx, rbp, then the
  // "return address" fastgen_simt_trampoline, which then finds rsp = frame + 56 = top - 16:
  // 16-byte aligned at its call, as the ABI wants.
  auto* frame = reinterpret_cast<uint64_t*>(top - 72);
  frame[0] = 0;
  frame[1] = 0;
  frame[2] = reinterpret_cast<uint64_t>(&fiber_main);
  frame[3] = reinterpret_cast<uint64_t>(&t);
  frame[4] = 0;
  frame[5] = 0;
  frame[6] = reinterpret_cast<uint64_t>(&fastgen_simt_trampoline);
  frame[7] = 0;
  t.sp = frame;
#else
  getcontext(&t.context);
  t.context.uc_stack.ss_sp = t.stack_lo;
  t.context.uc_stack.ss_size = size_t(t.stack_hi - t.stack_lo);
  t.context.uc_link = nullptr;
  makecontext(&t.context, reinterpret_cast<void (*)()>(&fiber_entry_ucontext), 0);
#endif
}

std::string waiters_text(Engine& e) {
  std::string text;
  unsigned shown = 0;
  for (uint32_t i = 0; i < e.thread_count && shown < 3; ++i) {
    if (e.threads[i].status == Status::Barrier) {
      text += (shown++ ? ", " : "") + dim_text(e.threads[i].index);
    }
  }
  return text;
}

// CUDA's name of each WarpOp, in the enum's order.
constexpr const char* kWarpOpNames[] = {"__shfl_sync",     "__shfl_up_sync", "__shfl_down_sync",
                                        "__shfl_xor_sync", "__ballot_sync",  "__any_sync",
                                        "__all_sync"};
static_assert(std::size(kWarpOpNames) == size_t(WarpOp::All) + 1, "a name for each WarpOp");

const char* op_name(WarpOp op) {
  return kWarpOpNames[int(op)];
}

std::string wait_text(const WarpWait& w) {
  return std::string(w.collective ? w.what : op_name(w.op)) + " (mask " + hex(w.mask) + ") at " +
         site(w.file, w.line);
}

unsigned lanes_in_warp(const Engine& e, unsigned warp) {
  return std::min(kWarp, e.thread_count - warp * kWarp);
}

// A thread that leaves a synchronisation point the others need is an error, not a hang.
void on_exit(Engine& e, Thread& t) {
  if (e.at_barrier > 0) {
    fail(thread_text(e, t) + " exited while " + std::to_string(e.at_barrier) +
         " threads wait at __syncthreads at " + site(e.barrier_file, e.barrier_line) +
         " (e.g. threads " + waiters_text(e) +
         "); every thread of the block must reach each __syncthreads");
  }
  WarpState& w = e.warps[t.warp];
  if (const WarpGroup* g = w.expecting(1u << t.lane, 0)) {
    const Thread& other = e.threads[t.warp * kWarp + unsigned(__builtin_ctz(g->arrived))];
    fail(thread_text(e, t) + " (lane " + std::to_string(t.lane) + ") exited while lane " +
         std::to_string(other.lane) + " waits for it at " + wait_text(other.wait));
  }
  w.exited |= 1u << t.lane;
  t.status = Status::Exited;
  ++e.exited;
}

void fiber_main(Thread* thread) {
  Engine& e = engine();
  try {
    e.launch->entry(e.launch->args);
  } catch (const std::exception& error) {
    fail(std::string("a thread threw: ") + error.what());
  } catch (...) {
    fail("a thread threw a non-standard exception");
  }
  thread->in_runtime = true;
  on_exit(e, *thread);
  switch_to_scheduler(e, *thread);
  __builtin_unreachable();
}

// --- memory ranges ------------------------------------------------------------------------

struct RangeEntry {
  uintptr_t end;
  RangeKind kind;
  uint64_t scope;
  int count;
};

std::mutex g_ranges_mutex;
std::map<uintptr_t, RangeEntry>& ranges_registry() {
  static auto* registry = new std::map<uintptr_t, RangeEntry>();
  return *registry;
}

std::vector<Range> module_segments() {
  std::vector<Range> segments;
  Dl_info self;
  if (dladdr(reinterpret_cast<void*>(&module_segments), &self) == 0) return segments;
  struct Search {
    const void* base;
    std::vector<Range>* out;
  } search{self.dli_fbase, &segments};
  dl_iterate_phdr(
      [](dl_phdr_info* info, size_t, void* data) {
        auto* s = static_cast<Search*>(data);
        if (reinterpret_cast<const void*>(info->dlpi_addr) != s->base) return 0;
        for (int i = 0; i < info->dlpi_phnum; ++i) {
          const auto& ph = info->dlpi_phdr[i];
          if (ph.p_type != PT_LOAD) continue;
          const uintptr_t begin = info->dlpi_addr + ph.p_vaddr;
          s->out->push_back({begin, begin + ph.p_memsz,
                             (ph.p_flags & PF_W) ? RangeKind::Static : RangeKind::ReadOnly});
        }
        return 1;
      },
      &search);
  return segments;
}

void snapshot_ranges(Engine& e) {
  static const std::vector<Range> segments = module_segments();
  e.ranges.clear();
  {
    std::lock_guard<std::mutex> lock(g_ranges_mutex);
    for (const auto& [begin, entry] : ranges_registry())
      e.ranges.push_back({begin, entry.end, entry.kind});
  }
  e.ranges.insert(e.ranges.end(), segments.begin(), segments.end());
  const auto args = reinterpret_cast<uintptr_t>(e.launch->args);
  e.ranges.push_back({args, args + e.launch->args_bytes, RangeKind::ReadOnly});
  std::sort(e.ranges.begin(), e.ranges.end(),
            [](const Range& a, const Range& b) { return a.begin < b.begin; });
  e.last_range = 0;
}

// --- the checks -----------------------------------------------------------------------------

const char* access_name(Access a) {
  return a == Access::Read ? "read" : (a == Access::Write ? "write" : "atomic");
}

std::string thread_of_id(Engine& e, uint16_t id) {
  if (id == kMany) return "several threads";
  return "thread " + dim_text(e.threads[id - 1u].index);
}

using Describe = const std::string& (*)(Engine&, uintptr_t);

[[noreturn]] __attribute__((noinline)) void report_race(Engine& e, uint16_t me, Access access,
                                                        const char* earlier, uint16_t other,
                                                        Describe describe, uintptr_t address,
                                                        const void* pc) {
  fail("race on " + describe(e, address) + ": " + thread_text(e, e.threads[me - 1u]) + " " +
       access_name(access) + "s it after " + thread_of_id(e, other) + " " + earlier +
       " it, with no __syncthreads in between" + code_location(pc));
}

// The race rules for bytes [slot, slot + count) of the 8 that `cell` shadows, starting at
// `address`: since the last barrier, another thread's write conflicts with any access, and
// another thread's read with a write; atomic updates conflict only with plain accesses.
inline void shadow_bytes(Engine& e, Cell& cell, unsigned slot, unsigned count, uint16_t me,
                         Access access, Describe describe, uintptr_t address, const void* pc) {
  if (cell.block != e.block_serial || cell.epoch != e.epoch) {
    cell.block = e.block_serial;
    cell.epoch = e.epoch;
    cell.atomic = 0;
    std::memset(cell.writer, 0, sizeof(cell.writer));
    std::memset(cell.reader, 0, sizeof(cell.reader));
  }
  for (unsigned i = slot; i < slot + count; ++i) {
    const uint16_t writer = cell.writer[i], reader = cell.reader[i];
    const bool atomic_write = (cell.atomic >> i) & 1u;
    const uintptr_t at = address + (i - slot);
    switch (access) {
      case Access::Read:
        if (writer != 0 && writer != me) {
          report_race(e, me, access, atomic_write ? "updated (atomically)" : "wrote", writer,
                      describe, at, pc);
        }
        cell.reader[i] = (reader == 0 || reader == me) ? me : kMany;
        break;
      case Access::Write:
        if (writer != 0 && writer != me) {
          report_race(e, me, access, atomic_write ? "updated (atomically)" : "wrote", writer,
                      describe, at, pc);
        }
        if (reader != 0 && reader != me)
          report_race(e, me, access, "read", reader, describe, at, pc);
        cell.writer[i] = me;
        cell.atomic &= uint8_t(~(1u << i));
        break;
      case Access::Atomic:
        if (writer != 0 && writer != me && !atomic_write)
          report_race(e, me, access, "wrote", writer, describe, at, pc);
        if (reader != 0 && reader != me)
          report_race(e, me, access, "read", reader, describe, at, pc);
        cell.writer[i] = me;
        cell.atomic |= uint8_t(1u << i);
        break;
    }
  }
}

const std::string& describe_shared(Engine& e, uintptr_t address) {
  static thread_local std::string text;
  const size_t offset = address - reinterpret_cast<uintptr_t>(e.arena);
  if (offset >= e.dynamic_offset && offset < e.dynamic_offset + e.dynamic_bytes) {
    text = "dynamic shared memory at byte " + std::to_string(offset - e.dynamic_offset) + " of " +
           std::to_string(e.dynamic_bytes);
    return text;
  }
  for (const SharedVariable& v : e.variables) {
    if (offset >= v.offset && offset < v.offset + v.bytes) {
      text = "shared variable '" + std::string(v.name) + "' at byte " +
             std::to_string(offset - v.offset) + " of " + std::to_string(v.bytes);
      return text;
    }
  }
  // Outside every variable: name the nearest one.
  const SharedVariable* nearest = nullptr;
  for (const SharedVariable& v : e.variables) {
    if (v.offset + v.bytes <= offset && (!nearest || v.offset > nearest->offset)) nearest = &v;
  }
  if (nearest) {
    text = "shared memory " + std::to_string(offset - nearest->offset - nearest->bytes) +
           " bytes past the end of shared variable '" + nearest->name + "' (" +
           std::to_string(nearest->bytes) + " bytes)";
  } else {
    text = "shared memory outside every shared variable";
  }
  return text;
}

const std::string& describe_global(Engine& e, uintptr_t address) {
  static thread_local std::string text;
  for (const Range& r : e.ranges) {
    if (address >= r.begin && address < r.end) {
      text = "byte " + std::to_string(address - r.begin) + " of a " +
             std::to_string(r.end - r.begin) + "-byte tensor";
      return text;
    }
  }
  text = "global address " + hex(address);
  return text;
}

void check_shared(Engine& e, Thread& t, uintptr_t address, size_t bytes, Access access,
                  const void* pc) {
  const size_t offset = address - reinterpret_cast<uintptr_t>(e.arena);
  for (size_t i = 0; i < bytes; ++i) {
    const size_t byte = offset + i;
    if (byte >= kArenaBytes || !e.valid[byte]) {
      fail("out-of-bounds " + std::string(access_name(access)) + " of " + std::to_string(bytes) +
           " bytes by " + thread_text(e, t) + ": " + describe_shared(e, address + i) +
           code_location(pc));
    }
  }
  if (!e.racecheck) return;
  const uint16_t me = uint16_t(t.linear + 1);
  for (size_t i = 0; i < bytes; ++i) {
    const size_t byte = offset + i;
    if (access != Access::Write && !e.initialized[byte]) {
      fail(std::string(access == Access::Read ? "read" : "atomic update") + " of " +
           describe_shared(e, address + i) + " by " + thread_text(e, t) +
           " before any thread of the block wrote it" + code_location(pc));
    }
    shadow_bytes(e, e.shared_cells[byte / 8], unsigned(byte % 8), 1, me, access, &describe_shared,
                 address + i, pc);
    e.initialized[byte] = 1;
  }
}

Cell& global_cell(Engine& e, uintptr_t chunk) {
  if (2 * (e.global_used + 1) > e.global_cells.size()) {
    // Grow, keeping this block's cells (older blocks' cells are dead).
    std::vector<GlobalCell> old;
    old.swap(e.global_cells);
    e.global_cells.resize(old.size() * 2);
    e.global_used = 0;
    for (const GlobalCell& g : old) {
      if (g.chunk != 0 && g.cell.block == e.block_serial) {
        size_t slot = (g.chunk * 0x9E3779B97F4A7C15ull) >> 20 & (e.global_cells.size() - 1);
        while (e.global_cells[slot].chunk != 0) slot = (slot + 1) & (e.global_cells.size() - 1);
        e.global_cells[slot] = g;
        ++e.global_used;
      }
    }
  }
  const size_t mask = e.global_cells.size() - 1;
  size_t slot = (chunk * 0x9E3779B97F4A7C15ull) >> 20 & mask;
  for (;;) {
    GlobalCell& g = e.global_cells[slot];
    if (g.chunk == chunk && g.cell.block == e.block_serial) return g.cell;
    if (g.chunk == 0 || g.cell.block != e.block_serial) {
      // Free, or left by an earlier block: every cell of this block was placed after the
      // block started, so a lookup never needs to probe past a dead slot.
      g.chunk = chunk;
      g.cell = Cell{};
      ++e.global_used;
      return g.cell;
    }
    slot = (slot + 1) & mask;
  }
}

void check_global(Engine& e, Thread& t, uintptr_t address, size_t bytes, Access access,
                  const void* pc) {
  const uintptr_t end = address + bytes;
  const Range* range = nullptr;
  if (e.last_range < e.ranges.size()) {
    const Range& r = e.ranges[e.last_range];
    if (address >= r.begin && end <= r.end) range = &r;
  }
  if (range == nullptr) {
    auto it = std::upper_bound(e.ranges.begin(), e.ranges.end(), address,
                               [](uintptr_t a, const Range& r) { return a < r.begin; });
    if (it != e.ranges.begin()) {
      --it;
      if (address >= it->begin && end <= it->end) {
        range = &*it;
        e.last_range = size_t(it - e.ranges.begin());
      }
    }
  }
  if (range == nullptr) {
    std::string where =
        "an address outside every tensor of this op, shared variable and the thread's stack";
    for (const Range& r : e.ranges) {
      if (r.kind != RangeKind::Tensor) continue;
      if (address >= r.begin && address < r.end) {
        where = "bytes " + std::to_string(address - r.begin) + ".." +
                std::to_string(end - r.begin - 1) + " of a " + std::to_string(r.end - r.begin) +
                "-byte tensor (running past its end)";
        break;
      }
      if (address >= r.end && address < r.end + 4096) {
        where = std::to_string(address - r.end) + " bytes past the end of a " +
                std::to_string(r.end - r.begin) + "-byte tensor";
        break;
      }
      if (end <= r.begin && r.begin - address <= 4096) {
        where = std::to_string(r.begin - address) + " bytes before the start of a " +
                std::to_string(r.end - r.begin) + "-byte tensor";
        break;
      }
    }
    for (const Thread& other : e.threads) {
      if (&other != &t && address >= uintptr_t(other.stack_lo) &&
          address < uintptr_t(other.stack_hi)) {
        where = "the stack (local memory) of another thread";
      }
    }
    fail("out-of-bounds " + std::string(access_name(access)) + " of " + std::to_string(bytes) +
         " bytes at " + hex(address) + " by " + thread_text(e, t) + ": " + where +
         code_location(pc));
  }
  if (range->kind == RangeKind::ReadOnly && access != Access::Read) {
    fail(std::string(access_name(access)) +
         " to read-only memory (kernel arguments or constants) by " + thread_text(e, t) +
         code_location(pc));
  }
  if (range->kind != RangeKind::Tensor || !e.racecheck) return;
  const uint16_t me = uint16_t(t.linear + 1);
  for (uintptr_t a = address; a < end;) {
    const unsigned slot = unsigned(a & 7), count = unsigned(std::min<uintptr_t>(8 - slot, end - a));
    shadow_bytes(e, global_cell(e, a >> 3), slot, count, me, access, &describe_global, a, pc);
    a += count;
  }
}

void check(Thread& t, const void* pointer, size_t bytes, Access access, const void* pc) {
  const auto address = reinterpret_cast<uintptr_t>(pointer);
  if (address - reinterpret_cast<uintptr_t>(t.stack_lo) < kStackBytes) return;  // own stack
  const RuntimeSection section(t_thread);
  Engine& e = engine();
  if (address - reinterpret_cast<uintptr_t>(e.arena) < kArenaBytes) {
    check_shared(e, t, address, bytes, access, pc);
  } else {
    check_global(e, t, address, bytes, access, pc);
  }
}

// --- running a launch -------------------------------------------------------------------------

std::mutex g_attributes_mutex;
std::map<const void*, size_t>& dynamic_shared_limits() {
  static auto* limits = new std::map<const void*, size_t>();
  return *limits;
}

uint64_t schedule_seed() {
  const char* text = std::getenv("FASTGEN_SIMT_SCHEDULE");
  if (text == nullptr || *text == '\0') return 0;
  return std::strtoull(text, nullptr, 0);
}

bool racecheck_enabled() {
  const char* text = std::getenv("FASTGEN_SIMT_RACECHECK");
  return text == nullptr || std::strcmp(text, "0") != 0;
}

void validate(const LaunchDesc& l) {
  const std::string name = std::string("fastgen.simt: launch of kernel ") + l.kernel_name + ": ";
  if (l.grid.x == 0 || l.grid.y == 0 || l.grid.z == 0) {
    throw Error(name + "gridDim " + dim_text(l.grid) +
                " has a zero dimension (cudaErrorInvalidConfiguration)");
  }
  if (l.grid.x > kMaxGridX || l.grid.y > kMaxGridYZ || l.grid.z > kMaxGridYZ) {
    throw Error(
        name + "gridDim " + dim_text(l.grid) +
        " exceeds sm_90's limits (x <= 2^31-1, y and z <= 65535; cudaErrorInvalidConfiguration)");
  }
  if (l.block.x == 0 || l.block.y == 0 || l.block.z == 0) {
    throw Error(name + "blockDim " + dim_text(l.block) +
                " has a zero dimension (cudaErrorInvalidConfiguration)");
  }
  const uint64_t threads = uint64_t(l.block.x) * l.block.y * l.block.z;
  if (l.block.x > kMaxBlockXY || l.block.y > kMaxBlockXY || l.block.z > kMaxBlockZ ||
      threads > kMaxThreads) {
    throw Error(name + "blockDim " + dim_text(l.block) + " (" + std::to_string(threads) +
                " threads) exceeds sm_90's limits (x, y <= 1024, z <= 64, at most 1024 threads; "
                "cudaErrorInvalidConfiguration)");
  }
  size_t limit = kMaxDynamicSharedDefault;
  {
    std::lock_guard<std::mutex> lock(g_attributes_mutex);
    auto it = dynamic_shared_limits().find(l.kernel);
    if (it != dynamic_shared_limits().end()) limit = it->second;
  }
  if (l.dynamic_shared_bytes > limit) {
    throw Error(name + std::to_string(l.dynamic_shared_bytes) +
                " bytes of dynamic shared memory exceed " + std::to_string(limit) +
                (limit == kMaxDynamicSharedDefault
                     ? " (48 KiB without the cudaFuncAttributeMaxDynamicSharedMemorySize "
                       "opt-in, simt::set_max_dynamic_shared)"
                     : " (the kernel's opt-in)"));
  }
}

void run_block(Engine& e, Dim index) {
  e.block_index = index;
  e.block_serial = g_blocks.fetch_add(1, std::memory_order_relaxed) + 1;
  e.exited = 0;
  e.at_barrier = 0;
  e.epoch = 0;
  e.queue.clear();
  e.queue_head = 0;
  // Shared memory: forget the last block's variables, poison the bytes (0xFF: NaN floats).
  std::memset(e.valid.data(), 0, e.arena_high);
  std::memset(e.initialized.data(), 0, e.arena_high);
  e.variables.clear();
  e.static_bytes = 0;
  e.dynamic_bytes = e.launch->dynamic_shared_bytes;
  e.dynamic_offset = kRedzone;
  e.arena_top = e.dynamic_offset + e.dynamic_bytes + kRedzone;
  e.arena_high = std::max(e.arena_high, e.arena_top);
  e.global_used = 0;
  std::memset(e.arena, 0xFF, e.arena_top);
  std::memset(e.valid.data() + e.dynamic_offset, 1, e.dynamic_bytes);

  const Dim dims = e.launch->block;
  static const size_t page = size_t(sysconf(_SC_PAGESIZE));
  const unsigned warp_count = (e.thread_count + kWarp - 1) / kWarp;
  e.warps.assign(warp_count, WarpState{});
  for (unsigned warp = 0; warp < warp_count; ++warp) {
    const unsigned lanes = lanes_in_warp(e, warp);
    e.warps[warp].existing = lanes == kWarp ? ~0u : (1u << lanes) - 1;
  }
  for (uint32_t i = 0; i < e.thread_count; ++i) {
    Thread& t = e.threads[i];
    t.linear = i;
    t.index = {i % dims.x, (i / dims.x) % dims.y, i / (dims.x * dims.y)};
    t.warp = i / kWarp;
    t.lane = i % kWarp;
    t.status = Status::Runnable;
    t.in_runtime = false;
    t.stack_lo = e.stack_memory + size_t(i) * kStackBytes + page;
    t.stack_hi = e.stack_memory + size_t(i + 1) * kStackBytes;
    prepare_fiber(t);
  }
  uint64_t stream = e.seed ^ (e.block_serial * 0x9E3779B97F4A7C15ull);
  e.rng = splitmix(stream);
  std::vector<uint32_t>& all = e.scratch;
  all.resize(e.thread_count);
  for (uint32_t i = 0; i < e.thread_count; ++i) all[i] = i;
  enqueue_permuted(e, all);

  while (e.queue_head < e.queue.size() && e.error.empty()) {
    Thread& t = e.threads[e.queue[e.queue_head++]];
    if (e.queue_head > 4096 && e.queue_head * 2 > e.queue.size()) {
      e.queue.erase(e.queue.begin(), e.queue.begin() + std::ptrdiff_t(e.queue_head));
      e.queue_head = 0;
    }
    if (t.status != Status::Runnable) continue;
    t_thread = &t;
#if defined(__x86_64__)
    fastgen_simt_switch(&e.scheduler_sp, t.sp);
#else
    swapcontext(&e.scheduler_context, &t.context);
#endif
    t_thread = nullptr;
  }
  if (!e.error.empty()) throw Error(e.error);
  if (e.exited != e.thread_count) {
    // Nothing can run and not everyone finished: describe who waits where.
    std::string detail;
    for (uint32_t i = 0; i < e.thread_count && detail.size() < 400; ++i) {
      const Thread& t = e.threads[i];
      if (t.status == Status::Barrier) {
        detail += " " + dim_text(t.index) + " at __syncthreads " +
                  site(e.barrier_file, e.barrier_line) + ";";
      } else if (t.status == Status::Warp) {
        detail += " " + dim_text(t.index) + " at " + wait_text(t.wait) + ";";
      }
    }
    throw Error("fastgen.simt: kernel " + std::string(e.launch->kernel_name) + ": block " +
                dim_text(index) + " cannot finish: " + std::to_string(e.thread_count - e.exited) +
                " threads wait for threads that will never arrive:" + detail);
  }
}

}  // namespace

// --- the interface ----------------------------------------------------------------------------

void run(const LaunchDesc& launch) {
  validate(launch);
  Engine& e = engine();
  if (e.launch != nullptr) {
    throw Error(std::string("fastgen.simt: kernel ") + launch.kernel_name +
                " launched from inside another kernel (dynamic parallelism is not emulated)");
  }
  struct Reset {
    Engine& e;
    ~Reset() {
      e.launch = nullptr;
      t_thread = nullptr;
    }
  } reset{e};
  e.launch = &launch;
  e.error.clear();
  e.seed = schedule_seed();
  e.racecheck = racecheck_enabled();
  e.thread_count = launch.block.x * launch.block.y * launch.block.z;
  if (e.threads.size() < e.thread_count) e.threads.resize(e.thread_count);
  e.ensure_stacks(e.thread_count);
  snapshot_ranges(e);
  g_launches.fetch_add(1, std::memory_order_relaxed);

  // Blocks in a seeded permutation: linear index b -> (a * b + c) mod count, a odd and
  // coprime with count.
  const unsigned __int128 count = (unsigned __int128)launch.grid.x * launch.grid.y * launch.grid.z;
  uint64_t state = e.seed * 0xD1B54A32D192ED03ull + 0x2545F4914F6CDD1Dull;
  uint64_t a = splitmix(state) | 1u, c = splitmix(state);
  auto gcd = [](unsigned __int128 x, unsigned __int128 y) {
    while (y != 0) {
      const unsigned __int128 r = x % y;
      x = y;
      y = r;
    }
    return x;
  };
  while (gcd(a % count, count) != 1) a += 2;
  for (unsigned __int128 b = 0; b < count; ++b) {
    const unsigned __int128 linear = (a * b + c) % count;
    const uint64_t x = uint64_t(linear % launch.grid.x);
    const uint64_t rest = uint64_t(linear / launch.grid.x);
    run_block(e, {unsigned(x), unsigned(rest % launch.grid.y), unsigned(rest / launch.grid.y)});
  }
}

Dim thread_index() {
  return t_thread ? t_thread->index : Dim{0, 0, 0};
}
Dim block_index() {
  return engine().block_index;
}
Dim block_dim() {
  return engine().launch ? engine().launch->block : Dim{1, 1, 1};
}
Dim grid_dim() {
  return engine().launch ? engine().launch->grid : Dim{1, 1, 1};
}

void syncthreads(const char* file, int line) {
  const RuntimeSection section(t_thread);
  Engine& e = engine();
  Thread& t = *t_thread;
  if (e.exited > 0) {
    fail(thread_text(e, t) + " reached __syncthreads at " + site(file, line) + " after " +
         std::to_string(e.exited) +
         " threads of the block exited; every thread of the block must reach each __syncthreads");
  }
  if (e.at_barrier == 0) {
    e.barrier_file = file;
    e.barrier_line = line;
  } else if (e.barrier_line != line || std::strcmp(e.barrier_file, file) != 0) {
    fail("divergent __syncthreads: " + thread_text(e, t) + " is at " + site(file, line) +
         " while threads " + waiters_text(e) + " wait at " + site(e.barrier_file, e.barrier_line));
  }
  WarpState& w = e.warps[t.warp];
  if (const WarpGroup* g = w.expecting(1u << t.lane, 0)) {
    const Thread& other = e.threads[t.warp * kWarp + unsigned(__builtin_ctz(g->arrived))];
    fail(thread_text(e, t) + " (lane " + std::to_string(t.lane) + ") reached __syncthreads at " +
         site(file, line) + " while lane " + std::to_string(other.lane) + " waits for it at " +
         wait_text(other.wait));
  }
  w.barrier |= 1u << t.lane;
  t.status = Status::Barrier;
  if (++e.at_barrier == e.thread_count) release_barrier(e);
  block_here(e, t);
}

namespace {

// Validates a warp operation's mask and partners and records the arrival; returns true when
// every lane of the mask has arrived.
bool arrive(Engine& e, Thread& t, const WarpWait& wait) {
  WarpState& w = e.warps[t.warp];
  const unsigned bit = 1u << t.lane, mask = wait.mask;
  auto what = [&] { return wait_text(wait); };
  auto caller = [&] {
    return thread_text(e, t) + " (lane " + std::to_string(t.lane) + ") calls " + what();
  };
  auto lowest = [](unsigned bits) { return std::to_string(__builtin_ctz(bits)); };
  if (!(mask & bit)) fail(caller() + " whose mask leaves out the calling lane");
  if (wait.width < 1 || wait.width > int(kWarp) || (wait.width & (wait.width - 1)) != 0) {
    fail(caller() + " with width " + std::to_string(wait.width) +
         " (must be a power of 2 up to 32)");
  }
  if (mask & ~w.existing) {
    fail(caller() + ", which names lane " + lowest(mask & ~w.existing) +
         ": that lane does not exist (the block has " + std::to_string(e.thread_count) +
         " threads)");
  }
  if (mask & w.exited)
    fail(caller() + ", which names lane " + lowest(mask & w.exited) + ": that lane has exited");
  if (mask & w.barrier) {
    fail(caller() + ", which names lane " + lowest(mask & w.barrier) +
         ": that lane waits at __syncthreads at " + site(e.barrier_file, e.barrier_line));
  }
  if (const WarpGroup* g = w.expecting(bit, mask)) {
    const Thread& other = e.threads[t.warp * kWarp + unsigned(__builtin_ctz(g->arrived))];
    fail(caller() + " while lane " + std::to_string(other.lane) + " waits for it at " +
         wait_text(other.wait));
  }
  WarpGroup* group = nullptr;
  for (int g = 0; g < w.group_count; ++g) {
    if (w.groups[g].mask == mask) group = &w.groups[g];
  }
  if (group != nullptr) {
    const WarpWait& first =
        e.threads[t.warp * kWarp + unsigned(__builtin_ctz(group->arrived))].wait;
    if (first.op != wait.op || first.width != wait.width || first.collective != wait.collective) {
      fail(caller() + " while lane " + lowest(group->arrived) + " of its mask waits at " +
           wait_text(first) + "; all lanes of a mask must call the same operation");
    }
    group->arrived |= bit;
  } else {
    if (mask & w.waiting) {
      const Thread& other = e.threads[t.warp * kWarp + unsigned(__builtin_ctz(mask & w.waiting))];
      fail(caller() + " while lane " + std::to_string(other.lane) + " of its mask waits at " +
           wait_text(other.wait) +
           "; all lanes of a mask must call the same operation with the same mask");
    }
    group = &w.groups[w.group_count++];
    *group = {mask, bit};
  }
  w.waiting |= bit;
  if (group->arrived != mask) return false;
  w.waiting &= ~mask;
  *group = w.groups[--w.group_count];
  return true;
}

void wake_lanes(Engine& e, unsigned base, unsigned mask) {
  std::vector<uint32_t>& lanes = e.scratch;
  lanes.clear();
  for (unsigned lane = 0; lane < kWarp; ++lane) {
    if (mask >> lane & 1u) {
      e.threads[base + lane].status = Status::Runnable;
      lanes.push_back(base + lane);
    }
  }
  enqueue_permuted(e, lanes);
}

uint64_t finish_warp_op(Engine& e, Thread& t) {
  const unsigned base = t.warp * kWarp;
  const WarpWait& w = t.wait;
  uint32_t ballot = 0;
  for (unsigned lane = 0; lane < kWarp; ++lane) {
    if ((w.mask >> lane & 1u) && e.threads[base + lane].wait.value != 0) ballot |= 1u << lane;
  }
  for (unsigned lane = 0; lane < kWarp; ++lane) {
    if (!(w.mask >> lane & 1u)) continue;
    Thread& u = e.threads[base + lane];
    const unsigned width = unsigned(w.width), segment = lane & ~(width - 1);
    int source = -1;
    switch (w.op) {
      case WarpOp::Shuffle:
        source = int(segment + (unsigned(u.wait.param) & (width - 1)));
        break;
      case WarpOp::ShuffleUp: {
        const int s = int(lane) - u.wait.param;
        source = s < int(segment) ? int(lane) : s;
        break;
      }
      case WarpOp::ShuffleDown: {
        const unsigned s = lane + unsigned(u.wait.param);
        source = s >= segment + width ? int(lane) : int(s);
        break;
      }
      case WarpOp::ShuffleXor: {
        const unsigned s = lane ^ unsigned(u.wait.param);
        source = (s < segment || s >= segment + width) ? int(lane) : int(s);
        break;
      }
      case WarpOp::Ballot:
        u.wait.result = ballot;
        continue;
      case WarpOp::Any:
        u.wait.result = ballot != 0;
        continue;
      case WarpOp::All:
        u.wait.result = ballot == (w.mask & ((lanes_in_warp(e, t.warp) == kWarp)
                                                 ? ~0u
                                                 : ((1u << lanes_in_warp(e, t.warp)) - 1)));
        continue;
    }
    if (!(w.mask >> source & 1u)) {
      fail("lane " + std::to_string(lane) + " of " + thread_text(e, u) + "'s warp reads lane " +
           std::to_string(source) + " in " + wait_text(u.wait) +
           ", which is not in the mask (its value is undefined on the device)");
    }
    u.wait.result = e.threads[base + unsigned(source)].wait.value;
  }
  return t.wait.result;
}

}  // namespace

uint64_t warp_op(WarpOp op, unsigned mask, uint64_t value, int param, int width, const char* file,
                 int line) {
  const RuntimeSection section(t_thread);
  Engine& e = engine();
  Thread& t = *t_thread;
  t.wait = WarpWait{op, mask, value, param, width, file, line, 0, nullptr, nullptr, nullptr};
  if (arrive(e, t, t.wait)) {
    t.status = Status::Warp;
    finish_warp_op(e, t);
    wake_lanes(e, t.warp * kWarp, mask);
  } else {
    t.status = Status::Warp;
  }
  block_here(e, t);
  return t.wait.result;
}

void warp_collective(CollectiveFn op, void* data, const char* what, const char* file, int line) {
  const RuntimeSection section(t_thread);
  Engine& e = engine();
  Thread& t = *t_thread;
  if (lanes_in_warp(e, t.warp) != kWarp) {
    fail(thread_text(e, t) + " calls " + what + " at " + site(file, line) +
         " in a partial warp (the block has " + std::to_string(e.thread_count) +
         " threads); warp-wide matrix operations need all 32 lanes");
  }
  t.wait = WarpWait{WarpOp::Shuffle, ~0u, 0, 0, 32, file, line, 0, op, what, data};
  if (arrive(e, t, t.wait)) {
    void* lane_data[kWarp];
    const unsigned base = t.warp * kWarp;
    for (unsigned lane = 0; lane < kWarp; ++lane)
      lane_data[lane] = e.threads[base + lane].wait.data;
    t.status = Status::Warp;
    op(lane_data);
    wake_lanes(e, base, ~0u);
  } else {
    t.status = Status::Warp;
  }
  block_here(e, t);
}

void check_read(const void* address, size_t bytes, int lane) {
  Engine& e = engine();
  Thread& t = e.threads[t_thread->warp * kWarp + unsigned(lane)];
  check(t, address, bytes, Access::Read, __builtin_return_address(0));
}

void check_write(void* address, size_t bytes, int lane) {
  Engine& e = engine();
  Thread& t = e.threads[t_thread->warp * kWarp + unsigned(lane)];
  check(t, address, bytes, Access::Write, __builtin_return_address(0));
}

void kernel_error(const std::string& message) {
  const RuntimeSection section(t_thread);
  fail(message);
}

unsigned active_mask() {
  const RuntimeSection section(t_thread);
  Engine& e = engine();
  Thread& t = *t_thread;
  const WarpState& w = e.warps[t.warp];
  return w.existing & ~w.exited;
}

void* shared_variable(const void* tag, size_t bytes, size_t alignment, const char* name) {
  const RuntimeSection section(t_thread);
  Engine& e = engine();
  for (const SharedVariable& v : e.variables) {
    if (v.tag == tag) return e.arena + v.offset;
  }
  e.static_bytes += bytes;
  if (e.static_bytes > kMaxStaticShared) {
    fail("static shared memory of " + std::to_string(e.static_bytes) + " bytes (with '" + name +
         "') exceeds sm_90's 48 KiB per block (use dynamic shared memory with the opt-in)");
  }
  if (e.static_bytes + e.dynamic_bytes > kMaxSharedOptIn) {
    fail(std::to_string(e.static_bytes) + " bytes of static and " +
         std::to_string(e.dynamic_bytes) +
         " of dynamic shared memory exceed sm_90's 227 KiB per block");
  }
  const size_t align = std::max<size_t>(alignment, 16);
  const size_t offset = (e.arena_top + align - 1) / align * align;
  e.variables.push_back({tag, offset, bytes, name});
  e.arena_top = offset + bytes + kRedzone;
  e.arena_high = std::max(e.arena_high, e.arena_top);
  std::memset(e.arena + offset, 0xFF, bytes);
  std::memset(e.valid.data() + offset, 1, bytes);
  return e.arena + offset;
}

void* dynamic_shared() {
  Engine& e = engine();
  return e.arena + e.dynamic_offset;
}

void atomic_access(void* address, size_t bytes, const char* what, const char* file, int line) {
  const RuntimeSection section(t_thread);
  Engine& e = engine();
  Thread& t = *t_thread;
  if (reinterpret_cast<uintptr_t>(address) % bytes != 0) {
    fail(std::string(what) + " at " + site(file, line) + " by " + thread_text(e, t) +
         " on a misaligned address " + hex(reinterpret_cast<uintptr_t>(address)));
  }
  check(t, address, bytes, Access::Atomic, __builtin_return_address(0));
  // Let the others run first: a spin loop on an atomic then always makes progress.
  enqueue(e, t.linear);
  block_here(e, t);
}

void thread_fence() {
  const RuntimeSection section(t_thread);
  __atomic_thread_fence(__ATOMIC_SEQ_CST);
  Engine& e = engine();
  Thread& t = *t_thread;
  enqueue(e, t.linear);
  block_here(e, t);
}

void set_max_dynamic_shared(const void* kernel, const char* kernel_name, int bytes) {
  if (bytes < 0 || size_t(bytes) > kMaxSharedOptIn) {
    throw Error(std::string("fastgen.simt: kernel ") + kernel_name + ": " + std::to_string(bytes) +
                " bytes of dynamic shared memory exceed sm_90's opt-in maximum of 227 KiB");
  }
  std::lock_guard<std::mutex> lock(g_attributes_mutex);
  dynamic_shared_limits()[kernel] = size_t(bytes);
}

void register_range(const void* begin, size_t bytes, RangeKind kind, uint64_t scope) {
  if (bytes == 0 || begin == nullptr) return;
  std::lock_guard<std::mutex> lock(g_ranges_mutex);
  const auto key = reinterpret_cast<uintptr_t>(begin);
  auto [it, inserted] = ranges_registry().try_emplace(key, RangeEntry{key + bytes, kind, scope, 1});
  if (!inserted) {
    it->second.end = std::max(it->second.end, key + bytes);
    ++it->second.count;
  }
}

void unregister_range(const void* begin, uint64_t scope) {
  std::lock_guard<std::mutex> lock(g_ranges_mutex);
  auto it = ranges_registry().find(reinterpret_cast<uintptr_t>(begin));
  if (it != ranges_registry().end() && (scope == 0 || it->second.scope == scope)) {
    if (--it->second.count <= 0) ranges_registry().erase(it);
  }
}

void unregister_scope(uint64_t scope) {
  std::lock_guard<std::mutex> lock(g_ranges_mutex);
  auto& registry = ranges_registry();
  for (auto it = registry.begin(); it != registry.end();) {
    it = it->second.scope == scope ? registry.erase(it) : std::next(it);
  }
}

uint64_t new_scope_id() {
  static std::atomic<uint64_t> next{1};
  return next.fetch_add(1);
}

uint64_t launch_count() {
  return g_launches.load();
}
uint64_t block_count() {
  return g_blocks.load();
}

std::string parse_kernel_name(const char* pretty_function) {
  std::string text(pretty_function);
  const std::string key = "kernel = ";
  const size_t at = text.find(key);
  if (at == std::string::npos) return text;
  std::string name = text.substr(at + key.size());
  if (!name.empty() && name.back() == ']') name.pop_back();
  const std::string anonymous = "{anonymous}::";
  for (size_t p; (p = name.find(anonymous)) != std::string::npos;) name.erase(p, anonymous.size());
  return name;
}

}  // namespace fastgen::simt::detail

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
