// The SIMT emulator's runtime, part 4 of 5: the synchronisation points, where a thread yields to
// the scheduler. __syncthreads, the warp shuffles and votes and the warp-wide collectives
// (WMMA) with the rules on their masks and partners, atomics and fences.
//
// Compiled WITHOUT instrumentation, as the whole runtime (fibers.cpp).

#include "simt/runtime/internal.h"

#include <cstring>
#include <vector>

namespace fastgen::simt::detail {

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

unsigned active_mask() {
  const RuntimeSection section(t_thread);
  Engine& e = engine();
  Thread& t = *t_thread;
  const WarpState& w = e.warps[t.warp];
  return w.existing & ~w.exited;
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

}  // namespace fastgen::simt::detail
