#pragma once
// Argument checks of the registered ops (torch.ops.fastgen.*), run once per call at the C++
// boundary before any memory is touched, as aten's own ops do: a direct call (torch.compile
// makes them) with mismatched shapes, dtypes or devices gets a Python ValueError / TypeError
// naming the op and the argument, never a crash or an out-of-bounds read. Header-only: the
// CPU kernels, the CUDA launchers and their emulated build each include it.

#include <ATen/core/Tensor.h>
#include <c10/util/Exception.h>

#include <array>
#include <cmath>
#include <optional>
#include <string>

namespace fastgen::checks {

inline bool is_floating(const at::Tensor& t) {
  const auto s = t.scalar_type();
  return s == at::kFloat || s == at::kDouble || s == at::kHalf || s == at::kBFloat16;
}

// A defined floating tensor (float32, float64, float16, bfloat16).
inline void floating(const char* op, const char* name, const at::Tensor& t) {
  TORCH_CHECK_VALUE(t.defined(), op, ": ", name, " is an undefined tensor");
  TORCH_CHECK_TYPE(is_floating(t), op, ": ", name,
                   " must be float32, float64, float16 or bfloat16, got ", t.scalar_type());
}

// `t` on ref's device, of ref's dtype (when `dtype`), of `sizes` (when given).
inline void like(const char* op, const char* name, const at::Tensor& t, const char* ref_name,
                 const at::Tensor& ref, std::optional<at::IntArrayRef> sizes = std::nullopt,
                 bool dtype = true) {
  floating(op, name, t);
  TORCH_CHECK_VALUE(t.device() == ref.device(), op, ": ", name, " is on ", t.device(), " but ",
                    ref_name, " is on ", ref.device());
  TORCH_CHECK_TYPE(!dtype || t.scalar_type() == ref.scalar_type(), op, ": ", name, " has dtype ",
                   t.scalar_type(), " but ", ref_name, " has dtype ", ref.scalar_type());
  if (sizes.has_value()) {
    TORCH_CHECK_VALUE(t.sizes() == *sizes, op, ": ", name, " must have shape ", *sizes, ", got ",
                      t.sizes());
  }
}

inline void dim(const char* op, const char* name, const at::Tensor& t, int64_t expected,
                const char* layout = "") {
  TORCH_CHECK_VALUE(t.dim() == expected, op, ": ", name, " must be ", expected, "-D", layout,
                    ", got shape ", t.sizes());
}

// A per-channel parameter: 1-D of `channels` values on x's device, of x's dtype or, for half
// inputs, float32.
inline void channel_parameter(const char* op, const char* name, const std::optional<at::Tensor>& t,
                              const at::Tensor& x, int64_t channels) {
  if (!t.has_value() || !t->defined()) return;
  like(op, name, *t, "input", x, at::IntArrayRef{channels}, /*dtype=*/false);
  const bool half = x.scalar_type() == at::kHalf || x.scalar_type() == at::kBFloat16;
  TORCH_CHECK_TYPE(t->scalar_type() == x.scalar_type() || (half && t->scalar_type() == at::kFloat),
                   op, ": ", name, " has dtype ", t->scalar_type(), ", expected ", x.scalar_type(),
                   half ? " or float32" : "", " for input of dtype ", x.scalar_type());
}

inline void positive(const char* op, const char* name, double value) {
  TORCH_CHECK_VALUE(value > 0, op, ": ", name, " must be > 0, got ", value);
}

inline void finite(const char* op, const char* name, double value) {
  TORCH_CHECK_VALUE(std::isfinite(value), op, ": ", name, " must be finite, got ", value);
}

// An int[2] argument with every value >= minimum.
inline void pair(const char* op, const char* name, at::IntArrayRef values, int64_t minimum) {
  TORCH_CHECK_VALUE(values.size() == 2, op, ": ", name, " must have 2 values, got ", values);
  TORCH_CHECK_VALUE(values[0] >= minimum && values[1] >= minimum, op, ": ", name,
                    " must be >= ", minimum, ", got ", values);
}

// What every convolution checks first: a 4-D float input with height and width >= 1, a 4-D
// weight (laid out as `weight_layout`) of its dtype and device with no zero-size dim, and
// groups >= 1.
inline void conv_operands(const char* op, const at::Tensor& input, const at::Tensor& weight,
                          int64_t groups, const char* weight_layout) {
  floating(op, "input", input);
  dim(op, "input", input, 4, " [N, C_in, H, W]");
  like(op, "weight", weight, "input", input);
  dim(op, "weight", weight, 4, weight_layout);
  TORCH_CHECK_VALUE(groups >= 1, op, ": groups must be >= 1, got ", groups);
  for (int64_t size : weight.sizes()) {
    TORCH_CHECK_VALUE(size >= 1, op, ": weight must have no zero-size dim, got shape ",
                      weight.sizes());
  }
  TORCH_CHECK_VALUE(input.size(2) >= 1 && input.size(3) >= 1, op,
                    ": input height and width must be >= 1, got shape ", input.sizes());
}

}  // namespace fastgen::checks
