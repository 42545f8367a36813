// The loops of the few-channel convolutions (few_channels.h), compiled once per CPU capability
// (FASTGEN_CPU_NS; common/cpu_capability.h): scatter, whose sums overlap in the image and stay
// in float32 until the end, and patches, the image side's taps as a matrix for the GEMMs of
// gather and weight_grad (few_channels_cpu.cpp).
//
// scatter keeps blocks of kLanes sums in GCC vector values, which the compiler holds in
// registers at the capability's width, over four many pixels at once (each weight row loaded
// once for the four); the packed weight is padded to whole blocks so no block has a tail.
// Half-precision values are widened to float32 a row at a time. Work splits over images: no
// two tasks write the same value, so a result does not depend on the scheduling.

#include "conv/few_channels/few_channels.h"

#include "common/bfloat16_chunks.h"
#include "common/dispatch.h"

#include <ATen/Parallel.h>

#include <algorithm>
#include <cstring>
#include <type_traits>
#include <vector>

namespace fastgen::few_channels::FASTGEN_CPU_NS {
namespace {

template <typename scalar_t, typename acc>
inline void load(const scalar_t* __restrict__ src, acc* __restrict__ dst, int64_t n) {
  if constexpr (std::is_same_v<scalar_t, c10::BFloat16> && std::is_same_v<acc, float>) {
    bfloat16_chunks::widen(src, dst, n);
  } else {
    for (int64_t i = 0; i < n; ++i) dst[i] = static_cast<acc>(src[i]);
  }
}

template <typename scalar_t, typename acc>
inline void store(const acc* __restrict__ src, scalar_t* __restrict__ dst, int64_t n) {
  if constexpr (std::is_same_v<scalar_t, c10::BFloat16> && std::is_same_v<acc, float>) {
    bfloat16_chunks::narrow(src, dst, n);
  } else {
    for (int64_t i = 0; i < n; ++i) dst[i] = static_cast<scalar_t>(src[i]);
  }
}

// One image (in scatter's sums type, or its own for patches), zero-padded so that every tap of
// every many pixel lands inside it: the loops then read and add without bounds checks. Padded pixel
// (py, px) is image pixel (py - padding[0], px - padding[1]); many pixel (i, j)'s tap (kh, kw) is
// padded pixel (i * stride[0] + kh * dilation[0], j * stride[1] + kw * dilation[1]).
template <typename acc>
struct PaddedImage {
  int64_t height, width, channels;
  std::vector<acc> values;

  explicit PaddedImage(const Shape& shape)
      : height((shape.many_height - 1) * shape.stride[0] +
               (shape.kernel[0] - 1) * shape.dilation[0] + 1),
        width((shape.many_width - 1) * shape.stride[1] + (shape.kernel[1] - 1) * shape.dilation[1] +
              1),
        channels(shape.image_channels),
        values(height * width * channels, acc(0)) {}

  acc* pixel(int64_t py, int64_t px) { return values.data() + (py * width + px) * channels; }

  // Calls body(padded row, image row, values) for each image row's run of values inside the
  // padded extent (whole pixels, channels innermost).
  template <typename Body>
  void for_each_image_row(const Shape& shape, Body&& body) {
    const int64_t pixels = std::min(shape.image_width, width - shape.padding[1]);
    if (pixels <= 0) return;
    for (int64_t y = 0; y < shape.image_height; ++y) {
      const int64_t py = y + shape.padding[0];
      if (py >= height) break;
      body(pixel(py, shape.padding[1]), y * shape.image_width * channels, pixels * channels);
    }
  }

  // The image (image_n: [Hi, Wi, S]) written in; the zero border stays.
  template <typename scalar_t>
  void read(const scalar_t* image_n, const Shape& shape) {
    for_each_image_row(
        shape, [&](acc* dst, int64_t at, int64_t count) { load(image_n + at, dst, count); });
  }

  // The image part written out to image_n (pixels no tap reaches are zero).
  template <typename scalar_t>
  void write(scalar_t* image_n, const Shape& shape) {
    std::fill(image_n, image_n + shape.image_height * shape.image_width * channels, scalar_t(0));
    for_each_image_row(
        shape, [&](const acc* src, int64_t at, int64_t count) { store(src, image_n + at, count); });
  }

  // patch[(kh * kW + kw) * S + s]: many pixel (i, j)'s taps.
  void read_patch(const Shape& shape, int64_t i, int64_t j, acc* __restrict__ patch) {
    for (int64_t kh = 0; kh < shape.kernel[0]; ++kh) {
      const acc* row = pixel(i * shape.stride[0] + kh * shape.dilation[0], j * shape.stride[1]);
      const int64_t step = shape.dilation[1] * channels;
      if (channels == 1) {  // (a loop over s would become a call to memcpy per tap)
        for (int64_t kw = 0; kw < shape.kernel[1]; ++kw) *patch++ = row[kw * step];
        continue;
      }
      for (int64_t kw = 0; kw < shape.kernel[1]; ++kw) {
        for (int64_t s = 0; s < channels; ++s) *patch++ = row[kw * step + s];
      }
    }
  }

  // The reverse: adds many pixel (i, j)'s taps into the padded image.
  void add_patch(const Shape& shape, int64_t i, int64_t j, const acc* __restrict__ patch) {
    for (int64_t kh = 0; kh < shape.kernel[0]; ++kh) {
      acc* row = pixel(i * shape.stride[0] + kh * shape.dilation[0], j * shape.stride[1]);
      const int64_t step = shape.dilation[1] * channels;
      if (channels == 1) {
        for (int64_t kw = 0; kw < shape.kernel[1]; ++kw) row[kw * step] += *patch++;
        continue;
      }
      for (int64_t kw = 0; kw < shape.kernel[1]; ++kw) {
        for (int64_t s = 0; s < channels; ++s) row[kw * step + s] += *patch++;
      }
    }
  }
};

// kLanes sums as one value of GCC's vector extension: the compiler keeps it in registers at
// the capability's width (one zmm of float32 with AVX-512, two ymm with AVX2, four xmm for
// the baseline) where a plain array of sums would go through memory.
template <typename acc>
struct Lanes {
  typedef acc type __attribute__((vector_size(kLanes * sizeof(acc))));
};

template <typename acc>
inline typename Lanes<acc>::type load_lanes(const acc* from) {
  typename Lanes<acc>::type lanes;
  std::memcpy(&lanes, from, sizeof(lanes));
  return lanes;
}

// out[0, padded(width)) = sum_r coefficient[r] * rows[r * padded(width) + .], r < count, in
// order of r (as combine_rows4 sums each of its four).
template <typename acc>
inline void combine_rows(const acc* __restrict__ coefficient, const acc* __restrict__ rows,
                         int64_t count, int64_t width, acc* __restrict__ out) {
  using V = typename Lanes<acc>::type;
  const int64_t stride = padded(width);
  for (int64_t first = 0; first < stride; first += kLanes) {
    V sum{};
    for (int64_t r = 0; r < count; ++r)
      sum += coefficient[r] * load_lanes(rows + r * stride + first);
    std::memcpy(out + first, &sum, sizeof(sum));
  }
}

// combine_rows for four coefficient vectors at once (coefficient + k * coefficient_stride into
// out + k * out_stride, k < 4): each row of `rows` is loaded once for the four, and the four
// sums are the independent chains.
template <typename acc>
inline void combine_rows4(const acc* __restrict__ coefficient, int64_t coefficient_stride,
                          const acc* __restrict__ rows, int64_t count, int64_t width,
                          acc* __restrict__ out, int64_t out_stride) {
  using V = typename Lanes<acc>::type;
  const int64_t stride = padded(width);
  const acc* c0 = coefficient;
  const acc* c1 = c0 + coefficient_stride;
  const acc* c2 = c1 + coefficient_stride;
  const acc* c3 = c2 + coefficient_stride;
  for (int64_t first = 0; first < stride; first += kLanes) {
    V sum0{}, sum1{}, sum2{}, sum3{};
    for (int64_t r = 0; r < count; ++r) {
      const V row = load_lanes(rows + r * stride + first);
      sum0 += c0[r] * row;
      sum1 += c1[r] * row;
      sum2 += c2[r] * row;
      sum3 += c3[r] * row;
    }
    std::memcpy(out + first, &sum0, sizeof(V));
    std::memcpy(out + out_stride + first, &sum1, sizeof(V));
    std::memcpy(out + 2 * out_stride + first, &sum2, sizeof(V));
    std::memcpy(out + 3 * out_stride + first, &sum3, sizeof(V));
  }
}

// combine_rows for `pixels` coefficient vectors, four at a time (the rest one by one).
template <typename acc>
inline void combine_pixels(const acc* coefficient, int64_t coefficient_stride, int64_t pixels,
                           const acc* rows, int64_t count, int64_t width, acc* out,
                           int64_t out_stride) {
  int64_t j = 0;
  for (; j + 4 <= pixels; j += 4) {
    combine_rows4(coefficient + j * coefficient_stride, coefficient_stride, rows, count, width,
                  out + j * out_stride, out_stride);
  }
  for (; j < pixels; ++j) {
    combine_rows(coefficient + j * coefficient_stride, rows, count, width, out + j * out_stride);
  }
}

template <typename scalar_t>
void scatter_typed(const scalar_t* many, const acc_t<scalar_t>* weight, scalar_t* image,
                   const Shape& shape) {
  using acc = acc_t<scalar_t>;
  const int64_t C = shape.channels;
  const int64_t many_size = shape.many_height * shape.many_width * C;
  const int64_t image_size = shape.image_height * shape.image_width * shape.image_channels;
  at::parallel_for(0, shape.batch, 1, [&](int64_t begin, int64_t end) {
    PaddedImage<acc> sums(shape);
    const int64_t taps_width = padded(shape.taps());
    std::vector<acc> pixels(shape.many_width * C), taps(shape.many_width * taps_width);
    for (int64_t n = begin; n < end; ++n) {
      std::fill(sums.values.begin(), sums.values.end(), acc(0));
      for (int64_t i = 0; i < shape.many_height; ++i) {
        load(many + n * many_size + i * shape.many_width * C, pixels.data(), shape.many_width * C);
        combine_pixels(pixels.data(), C, shape.many_width, weight, C, shape.taps(), taps.data(),
                       taps_width);
        for (int64_t j = 0; j < shape.many_width; ++j) {
          sums.add_patch(shape, i, j, taps.data() + j * taps_width);
        }
      }
      sums.write(image + n * image_size, shape);
    }
  });
}

// The image side's taps for every many pixel: out[(n * Hm + i) * Wm + j, t] = the tap t of
// many pixel (i, j) of image n (zero in the border), in the image's dtype.
template <typename scalar_t>
void patches_typed(const scalar_t* image, scalar_t* out, const Shape& shape) {
  const int64_t image_size = shape.image_height * shape.image_width * shape.image_channels;
  const int64_t pixels = shape.many_height * shape.many_width;
  at::parallel_for(0, shape.batch, 1, [&](int64_t begin, int64_t end) {
    PaddedImage<scalar_t> source(shape);
    for (int64_t n = begin; n < end; ++n) {
      source.read(image + n * image_size, shape);
      for (int64_t i = 0; i < shape.many_height; ++i) {
        for (int64_t j = 0; j < shape.many_width; ++j) {
          source.read_patch(shape, i, j,
                            out + (n * pixels + i * shape.many_width + j) * shape.taps());
        }
      }
    }
  });
}

}  // namespace

void scatter(const at::Tensor& many, const at::Tensor& weight, const at::Tensor& image,
             const Shape& shape) {
  FASTGEN_DISPATCH_FLOATING_TYPES(many.scalar_type(), "fastgen few_channels scatter", [&] {
    scatter_typed<scalar_t>(many.const_data_ptr<scalar_t>(),
                            weight.const_data_ptr<acc_t<scalar_t>>(),
                            image.mutable_data_ptr<scalar_t>(), shape);
  });
}

void patches(const at::Tensor& image, const at::Tensor& out, const Shape& shape) {
  FASTGEN_DISPATCH_FLOATING_TYPES(image.scalar_type(), "fastgen few_channels patches", [&] {
    patches_typed<scalar_t>(image.const_data_ptr<scalar_t>(), out.mutable_data_ptr<scalar_t>(),
                            shape);
  });
}

}  // namespace fastgen::few_channels::FASTGEN_CPU_NS
