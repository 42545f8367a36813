// The SIMT emulator's runtime, part 2 of 5: the memory kernels may touch, and the check of each
// access. The registry of ranges (the op's tensors, registered by the host), the snapshot a
// launch takes of it, the block's shared variables, and check(): bounds, read-only memory,
// uninitialised shared memory and the race shadow, for every access the hooks (hooks.cpp)
// and the emulator's own collectives report.
//
// Compiled WITHOUT instrumentation, as the whole runtime (fibers.cpp).

#include "simt/runtime/internal.h"

#include <dlfcn.h>
#include <link.h>

#include <algorithm>
#include <atomic>
#include <cstring>
#include <iterator>
#include <map>
#include <mutex>

namespace fastgen::simt::detail {
namespace {

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

}  // namespace

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

namespace {

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

}  // namespace

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

}  // namespace fastgen::simt::detail
