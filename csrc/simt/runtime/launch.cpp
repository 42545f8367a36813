// The SIMT emulator's runtime, part 3 of 5: running a launch. Validating it against sm_90's
// limits, the seeded order of its blocks, setting up each block (shared arena, threads,
// first schedule) and running its fibers to the end, or to the error that describes who
// waits where; and the launch's coordinates as the kernel reads them.
//
// Compiled WITHOUT instrumentation, as the whole runtime (fibers.cpp).

#include "simt/runtime/internal.h"

#include <algorithm>
#include <atomic>
#include <cstdlib>
#include <cstring>
#include <map>
#include <mutex>

namespace fastgen::simt::detail {
namespace {

std::atomic<uint64_t> g_launches{0}, g_blocks{0};

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

void set_max_dynamic_shared(const void* kernel, const char* kernel_name, int bytes) {
  if (bytes < 0 || size_t(bytes) > kMaxSharedOptIn) {
    throw Error(std::string("fastgen.simt: kernel ") + kernel_name + ": " + std::to_string(bytes) +
                " bytes of dynamic shared memory exceed sm_90's opt-in maximum of 227 KiB");
  }
  std::lock_guard<std::mutex> lock(g_attributes_mutex);
  dynamic_shared_limits()[kernel] = size_t(bytes);
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
