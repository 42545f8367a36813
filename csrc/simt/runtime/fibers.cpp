// The SIMT emulator's runtime, part 1 of 5: fibers and their scheduling. The context switch,
// each OS thread's Engine, the run queue (the seeded order in which runnable threads resume),
// a fiber's start and exit, and fail(), which ends a launch from inside a fiber. The other
// parts call in here whenever a thread must stop or yield.
//
// Like every file of csrc/simt/runtime/, compiled WITHOUT instrumentation (setup.py builds
// them on their own); everything it does on a kernel's behalf is checked explicitly.

#include "simt/runtime/internal.h"

#include <dlfcn.h>

#include <algorithm>
#include <cstdio>
#include <cstring>
#include <exception>
#include <iterator>

#if defined(__x86_64__)
// fastgen_simt_switch(&from_sp, to_sp): saves the callee-saved registers on the current stack,
// stores its pointer, and resumes the stack at to_sp. (The SSE and x87 control words are not
// switched: no fiber changes the rounding mode, and ldmxcsr costs as much as the rest.) A new
// fiber's stack is laid out so that the first switch "returns" into fiber_trampoline with
// r12 = the thread and r13 = the function to call.
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

// --- fibers -------------------------------------------------------------------------------

namespace {

void fiber_main(Thread* thread);

thread_local Engine* t_engine = nullptr;

}  // namespace

__attribute__((tls_model("initial-exec"))) thread_local constinit Thread* t_thread = nullptr;

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

namespace {

void switch_to_scheduler(Engine& e, Thread& t) {
#if defined(__x86_64__)
  fastgen_simt_switch(&t.sp, e.scheduler_sp);
#else
  swapcontext(&t.context, &e.scheduler_context);
#endif
}

}  // namespace

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

void kernel_error(const std::string& message) {
  const RuntimeSection section(t_thread);
  fail(message);
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

namespace {

#if !defined(__x86_64__)
void fiber_entry_ucontext() {
  fiber_main(t_thread);
}
#endif

}  // namespace

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

namespace {

// CUDA's name of each WarpOp, in the enum's order.
constexpr const char* kWarpOpNames[] = {"__shfl_sync",     "__shfl_up_sync", "__shfl_down_sync",
                                        "__shfl_xor_sync", "__ballot_sync",  "__any_sync",
                                        "__all_sync"};
static_assert(std::size(kWarpOpNames) == size_t(WarpOp::All) + 1, "a name for each WarpOp");

const char* op_name(WarpOp op) {
  return kWarpOpNames[int(op)];
}

}  // namespace

std::string wait_text(const WarpWait& w) {
  return std::string(w.collective ? w.what : op_name(w.op)) + " (mask " + hex(w.mask) + ") at " +
         site(w.file, w.line);
}

unsigned lanes_in_warp(const Engine& e, unsigned warp) {
  return std::min(kWarp, e.thread_count - warp * kWarp);
}

namespace {

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

}  // namespace
}  // namespace fastgen::simt::detail
