// The measured choice between fastgen's CPU convolutions and aten's (conv/conv_select_cpu.h).

#include "conv/conv_select_cpu.h"

#include "common/cpu_capability.h"
#include "conv/conv_common.h"
#include "conv/winograd/winograd_cpu.h"

#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <c10/util/Exception.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <map>
#include <mutex>
#include <sstream>
#include <utility>

namespace fastgen::conv::select {
namespace {

// Timed runs of each candidate after the first (untimed: it allocates and warms the caches),
// interleaved so a drift of the machine hits both alike; the best run counts.
constexpr int kTimedRuns = 3;
// fastgen's kernel is taken only when it is at least this much faster: inside a training step
// (caches cold, other layers in between) a close win measured back to back can turn into a
// loss, e.g. a bf16 layer converted to float32 on load that timed 1.77 ms against aten's
// 1.70 ms ran at 2.1 ms in the step. A close call goes to aten, the stock layer's own path.
constexpr double kMargin = 0.95;

struct Entry {
  bool use_fastgen = false;
  double fastgen_ms = -1, aten_ms = -1;
  int64_t measurements = 0;
};

std::mutex g_mutex;
std::map<std::string, Entry>& table() {
  static std::map<std::string, Entry> entries;
  return entries;
}

std::optional<Entry> lookup(const std::string& key) {
  std::lock_guard<std::mutex> lock(g_mutex);
  const auto it = table().find(key);
  if (it == table().end()) return std::nullopt;
  return it->second;
}

void store(const std::string& key, Entry entry) {
  std::lock_guard<std::mutex> lock(g_mutex);
  Entry& slot = table()[key];
  entry.measurements += slot.measurements;
  slot = entry;
}

bool env_is(const char* name, const char* value) {
  const char* set = std::getenv(name);
  return set != nullptr && std::strcmp(set, value) == 0;
}

bool is_half(const at::Tensor& t) {
  return t.scalar_type() == at::kBFloat16 || t.scalar_type() == at::kHalf;
}

at::Tensor to_float(const at::Tensor& t) {
  return t.defined() ? t.to(at::kFloat) : t;
}

at::Tensor to_dtype(const at::Tensor& t, at::ScalarType dtype) {
  return t.defined() ? t.to(dtype) : t;
}

const char* layout(const at::Tensor& t) {
  if (t.is_contiguous()) return "nchw";
  if (t.dim() == 4 && t.is_contiguous(c10::MemoryFormat::ChannelsLast)) return "nhwc";
  return "strided";
}

// An operand as a key names it: its sizes and layout.
struct Operand {
  const char* name;
  at::IntArrayRef sizes;
  const char* layout;
};

Operand operand(const char* name, const at::Tensor& t) {
  return {name, t.sizes(), layout(t)};
}

// Everything the speed of either candidate depends on: the operands' sizes and layouts, the
// dtype, the geometry, which gradients are wanted, the threads and the CPU copy.
std::string make_key(const char* op, const char* pass, std::initializer_list<Operand> operands,
                     at::ScalarType dtype, const Geometry& geometry, std::array<bool, 3> mask) {
  std::ostringstream out;
  out << op << ' ' << pass;
  for (const Operand& o : operands) out << ' ' << o.name << '=' << o.sizes << ':' << o.layout;
  out << ' ' << c10::toString(dtype);
  out << " stride=" << at::IntArrayRef(geometry.stride)
      << " padding=" << at::IntArrayRef(geometry.padding);
  if (geometry.transposed) out << " output_padding=" << at::IntArrayRef(geometry.output_padding);
  out << " dilation=" << at::IntArrayRef(geometry.dilation) << " groups=" << geometry.groups;
  if (std::strcmp(pass, "backward") == 0) {
    out << " mask=" << mask[0] << mask[1] << mask[2];
  }
  out << " threads=" << at::get_num_threads() << ' ' << cpu::name(cpu::active());
  if (winograd::products_for(dtype) == winograd::Products::BFloat16) out << " winograd_bf16";
  return out.str();
}

double milliseconds_of(const std::function<void()>& run) {
  const auto start = std::chrono::steady_clock::now();
  run();
  return std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - start)
      .count();
}

// The policy's result for a call of `key`. `ours` returns nullopt where fastgen has no kernel.
template <typename Result, typename Ours, typename Library>
Result choose(Policy policy, const char* op, const char* pass, const std::string& key, bool half,
              Ours&& ours, Library&& library) {
  switch (policy) {
    case Policy::Aten:
      return library();
    case Policy::FixedRules:
      if (!half) {
        if (auto own = ours()) return std::move(*own);
      }
      return library();
    case Policy::Fastgen:
      if (auto own = ours()) return std::move(*own);
      return library();
    case Policy::Autotune:
      break;
  }
  if (const auto entry = lookup(key)) {
    if (entry->use_fastgen) {
      if (auto own = ours()) return std::move(*own);
    }
    return library();
  }
  // A new key: fastgen's candidate first (it says whether it has a kernel), then aten's, then
  // kTimedRuns more of each, alternating.
  std::optional<Result> own = ours();
  if (!own) {
    store(key, Entry{false, -1, -1, 0});
    return library();
  }
  Result theirs = library();
  double own_ms = INFINITY, aten_ms = INFINITY;
  for (int run = 0; run < kTimedRuns; ++run) {
    own_ms = std::min(own_ms, milliseconds_of([&] { own = ours(); }));
    aten_ms = std::min(aten_ms, milliseconds_of([&] { theirs = library(); }));
  }
  const bool use_fastgen = own_ms < aten_ms * kMargin;
  store(key, Entry{use_fastgen, own_ms, aten_ms, 1});
  if (env_is("FASTGEN_AUTOTUNE_LOG", "1")) {
    std::fprintf(stderr, "fastgen: %s %s autotune: fastgen %.3f ms, aten %.3f ms -> %s [%s]\n", op,
                 pass, own_ms, aten_ms, use_fastgen ? "fastgen" : "aten", key.c_str());
  }
  return use_fastgen ? std::move(*own) : std::move(theirs);
}

}  // namespace

Policy policy() {
  if (const char* forced = std::getenv("FASTGEN_CONV_CPU"); forced != nullptr && *forced) {
    if (std::strcmp(forced, "fastgen") == 0) return Policy::Fastgen;
    if (std::strcmp(forced, "aten") == 0) return Policy::Aten;
    TORCH_CHECK_VALUE(std::strcmp(forced, "auto") == 0,
                      "fastgen: FASTGEN_CONV_CPU must be fastgen, aten or auto, got '", forced,
                      "'");
  }
  if (const char* autotune = std::getenv("FASTGEN_AUTOTUNE"); autotune != nullptr && *autotune) {
    if (std::strcmp(autotune, "0") == 0) return Policy::FixedRules;
    TORCH_CHECK_VALUE(std::strcmp(autotune, "1") == 0,
                      "fastgen: FASTGEN_AUTOTUNE must be 0 or 1, got '", autotune, "'");
  }
  return Policy::Autotune;
}

at::Tensor forward(const char* op, const at::Tensor& input, const at::Tensor& weight,
                   const Geometry& geometry, const Own& own) {
  const bool half = is_half(input);
  const auto ours = [&]() -> std::optional<at::Tensor> {
    for (const OwnForward native : own.native_forward) {
      if (!native) continue;
      if (auto out = native(input, weight, geometry, input.scalar_type())) return out;
    }
    if (!own.forward) return std::nullopt;
    if (!half) return own.forward(input, weight, geometry, input.scalar_type());
    auto out = own.forward(to_float(input), to_float(weight), geometry, input.scalar_type());
    if (out) *out = to_dtype(*out, input.scalar_type());
    return out;
  };
  const auto library = [&] { return library_forward(input, weight, geometry); };
  const Policy now = policy();
  const std::string key =
      now == Policy::Autotune
          ? make_key(op, "forward", {operand("input", input), operand("weight", weight)},
                     input.scalar_type(), geometry, {})
          : std::string();
  return choose<at::Tensor>(now, op, "forward", key, half, ours, library);
}

Grads backward(const char* op, const at::Tensor& grad_pre, const at::Tensor& input,
               const at::Tensor& weight, const Geometry& geometry, std::array<bool, 3> output_mask,
               const Own& own) {
  const bool half = is_half(input);
  const auto ours = [&]() -> std::optional<Grads> {
    for (const OwnBackward native : own.native_backward) {
      if (!native) continue;
      if (auto grads =
              native(grad_pre, input, weight, geometry, output_mask, input.scalar_type())) {
        return grads;
      }
    }
    if (!own.backward) return std::nullopt;
    if (!half) {
      return own.backward(grad_pre, input, weight, geometry, output_mask, input.scalar_type());
    }
    auto grads = own.backward(to_float(grad_pre), to_float(input), to_float(weight), geometry,
                              output_mask, input.scalar_type());
    if (grads) {
      auto& [grad_input, grad_weight, grad_bias] = *grads;
      const auto dtype = input.scalar_type();
      *grads = Grads{to_dtype(grad_input, dtype), to_dtype(grad_weight, dtype),
                     to_dtype(grad_bias, dtype)};
    }
    return grads;
  };
  const auto library = [&] {
    return library_backward(grad_pre, input, weight, geometry, output_mask);
  };
  const Policy now = policy();
  const std::string key = now == Policy::Autotune
                              ? make_key(op, "backward",
                                         {operand("grad_out", grad_pre), operand("input", input),
                                          operand("weight", weight)},
                                         grad_pre.scalar_type(), geometry, output_mask)
                              : std::string();
  return choose<Grads>(now, op, "backward", key, half, ours, library);
}

bool measured_aten(const char* op, const at::Tensor& input, const at::Tensor& weight,
                   at::ScalarType dtype, const Geometry& geometry,
                   std::optional<std::array<bool, 3>> backward_mask) {
  if (policy() != Policy::Autotune) return false;
  const auto aten_won = [](const std::string& key) {
    const auto entry = lookup(key);
    return entry.has_value() && !entry->use_fastgen;
  };
  const Operand in = operand("input", input), w = operand("weight", weight);
  if (!aten_won(make_key(op, "forward", {in, w}, dtype, geometry, {}))) return false;
  if (!backward_mask) return true;
  std::vector<int64_t> out_sizes{input.size(0), 0, output_size(input, weight, geometry, 0),
                                 output_size(input, weight, geometry, 1)};
  out_sizes[1] = geometry.transposed ? weight.size(1) * geometry.groups : weight.size(0);
  const bool nhwc = conv_format(input, weight) == c10::MemoryFormat::ChannelsLast;
  const Operand grad_out{"grad_out", out_sizes, nhwc ? "nhwc" : "nchw"};
  return aten_won(make_key(op, "backward", {grad_out, in, w}, dtype, geometry, *backward_mask));
}

std::vector<Record> records() {
  std::lock_guard<std::mutex> lock(g_mutex);
  std::vector<Record> out;
  for (const auto& [key, entry] : table()) {
    out.push_back(Record{key, entry.use_fastgen ? "fastgen" : "aten", entry.fastgen_ms,
                         entry.aten_ms, entry.measurements});
  }
  return out;
}

void prefer(const std::string& key, const std::string& choice) {
  TORCH_CHECK_VALUE(
      choice == "fastgen" || choice == "aten",
      "fastgen.ops.prefer_conv_cpu_choices: choice must be 'fastgen' or 'aten', got '", choice,
      "'");
  std::lock_guard<std::mutex> lock(g_mutex);
  Entry& slot = table()[key];
  slot.use_fastgen = choice == "fastgen";
}

void reset() {
  std::lock_guard<std::mutex> lock(g_mutex);
  table().clear();
}

}  // namespace fastgen::conv::select
