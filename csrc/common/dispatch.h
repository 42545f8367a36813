#pragma once
// dtype dispatch shared by every kernel: the four floating dtypes fastgen supports.
// Half types compute in float32 (at::opmath_type); float64 stays float64 so gradcheck
// can run against the native kernels.

#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>

#define FASTGEN_DISPATCH_FLOATING_TYPES(TYPE, NAME, ...)                                      \
  AT_DISPATCH_FLOATING_TYPES_AND2(at::ScalarType::Half, at::ScalarType::BFloat16, TYPE, NAME, \
                                  __VA_ARGS__)

namespace fastgen {
template <typename scalar_t>
using acc_t = at::opmath_type<scalar_t>;
}  // namespace fastgen
