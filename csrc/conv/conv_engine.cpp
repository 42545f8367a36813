// The route rule of conv/conv_engine.h.

#include "conv/conv_engine.h"

#include <c10/util/Exception.h>

#include <cstdlib>
#include <cstring>

namespace fastgen::conv {

bool engine_applies(const Geometry& geometry) {
  if (geometry.groups != 1) return false;
  for (int d = 0; d < 2; ++d) {
    if (geometry.dilation[d] != 1 || geometry.stride[d] > 4) return false;
  }
  return true;
}

Route route(const Geometry& geometry) {
  const char* name = geometry.transposed ? "FASTGEN_CONV_TRANSPOSE" : "FASTGEN_CONV2D";
  const char* value = std::getenv(name);
  if (value == nullptr || *value == '\0' || std::strcmp(value, "auto") == 0) return Route::Library;
  if (std::strcmp(value, "cudnn") == 0) return Route::Library;
  if (std::strcmp(value, "fastgen") == 0) {
    return engine_applies(geometry) ? Route::ImplicitGemm : Route::Library;
  }
  TORCH_CHECK_VALUE(false,
                    geometry.transposed ? "fastgen::conv_transpose2d: " : "fastgen::conv2d: ", name,
                    " must be auto, fastgen or cudnn, got '", value, "'");
}

}  // namespace fastgen::conv
