// The loops of the few-channel convolutions (few_channels.h), compiled once per CPU capability
// (FASTGEN_CPU_NS; common/cpu_capability.h).
//
// Each loop keeps a block of kLanes sums in a fixed-size local array over its reduction (the
// many side's channels for scatter, the taps for gather), so the compiler holds the block in
// registers at the capability's vector width; the packed weights are padded to whole blocks
// so no block has a tail. Half-precision values are widened to float32 a pixel at a time.
// Work splits over images (scatter, weight_grad) or image rows (gather): no two tasks write
// the same value, and weight_grad's per-task sums are added in task order, so a result does
// not depend on the scheduling.

#include "conv/few_channels/few_channels.h"

#include "common/bfloat16_chunks.h"
#include "common/dispatch.h"
#include "common/parallel.h"

#include <ATen/Parallel.h>

#include <algorithm>
#include <cstring>
#include <type_traits>
#include <vector>

namespace fastgen::few_channels::FASTGEN_CPU_NS {
namespace {

template <typename scalar_t, typename acc>
inline void load(const scalar_t* __restrict__ src, acc* __restrict__ dst, int64_t n) {
  if constexpr (std::is_same_v<scalar_t, c10::BFloat16>) {
    bfloat16_chunks::widen(src, dst, n);
  } else {
    for (int64_t i = 0; i < n; ++i) dst[i] = static_cast<acc>(src[i]);
  }
}

template <typename scalar_t, typename acc>
inline void store(const acc* __restrict__ src, scalar_t* __restrict__ dst, int64_t n) {
  if constexpr (std::is_same_v<scalar_t, c10::BFloat16>) {
    bfloat16_chunks::narrow(src, dst, n);
  } else {
    for (int64_t i = 0; i < n; ++i) dst[i] = static_cast<scalar_t>(src[i]);
  }
}

// One image in the sums' type, zero-padded so that every tap of every many pixel lands inside
// it: the loops then read and add without bounds checks. Padded pixel (py, px) is image pixel
// (py - padding[0], px - padding[1]); many pixel (i, j)'s tap (kh, kw) is padded pixel
// (i * stride[0] + kh * dilation[0], j * stride[1] + kw * dilation[1]).
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

  // Calls body(padded pixel, image pixel index) for each image pixel inside the padded extent.
  template <typename Body>
  void for_each_image_pixel(const Shape& shape, Body&& body) {
    for (int64_t y = 0; y < shape.image_height; ++y) {
      const int64_t py = y + shape.padding[0];
      if (py >= height) break;
      for (int64_t x = 0; x < shape.image_width; ++x) {
        const int64_t px = x + shape.padding[1];
        if (px >= width) break;
        body(pixel(py, px), y * shape.image_width + x);
      }
    }
  }

  // The image (image_n: [Hi, Wi, S]) written in; the zero border stays.
  template <typename scalar_t>
  void read(const scalar_t* image_n, const Shape& shape) {
    for_each_image_pixel(shape, [&](acc* dst, int64_t at) {
      for (int64_t s = 0; s < channels; ++s) dst[s] = static_cast<acc>(image_n[at * channels + s]);
    });
  }

  // The image part written out to image_n (pixels no tap reaches are zero).
  template <typename scalar_t>
  void write(scalar_t* image_n, const Shape& shape) {
    std::fill(image_n, image_n + shape.image_height * shape.image_width * channels, scalar_t(0));
    for_each_image_pixel(shape, [&](acc* src, int64_t at) {
      for (int64_t s = 0; s < channels; ++s)
        image_n[at * channels + s] = static_cast<scalar_t>(src[s]);
    });
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

  // The taps of many pixel (i, j) inside the image (not in the zero border), as indices into
  // a patch; returns how many. Used where a product with the border's zero must be left out
  // rather than added as 0: aten's convolutions skip the taps outside the image, so an Inf or
  // NaN met there (0 * Inf) must not reach the result.
  int64_t inside_taps(const Shape& shape, int64_t i, int64_t j, int64_t* taps) const {
    int64_t count = 0;
    for (int64_t kh = 0; kh < shape.kernel[0]; ++kh) {
      const int64_t y = i * shape.stride[0] + kh * shape.dilation[0] - shape.padding[0];
      for (int64_t kw = 0; kw < shape.kernel[1]; ++kw) {
        const int64_t x = j * shape.stride[1] + kw * shape.dilation[1] - shape.padding[1];
        if (y < 0 || y >= shape.image_height || x < 0 || x >= shape.image_width) continue;
        for (int64_t s = 0; s < channels; ++s)
          taps[count++] = (kh * shape.kernel[1] + kw) * channels + s;
      }
    }
    return count;
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
// four independent sums (r mod 4) added at the end: one running sum would wait on the
// previous add's latency at every row.
template <typename acc>
inline void combine_rows(const acc* __restrict__ coefficient, const acc* __restrict__ rows,
                         int64_t count, int64_t width, acc* __restrict__ out) {
  using V = typename Lanes<acc>::type;
  const int64_t stride = padded(width);
  for (int64_t first = 0; first < stride; first += kLanes) {
    const acc* column = rows + first;
    V sum0{}, sum1{}, sum2{}, sum3{};
    int64_t r = 0;
    for (; r + 4 <= count; r += 4) {
      sum0 += coefficient[r] * load_lanes(column + r * stride);
      sum1 += coefficient[r + 1] * load_lanes(column + (r + 1) * stride);
      sum2 += coefficient[r + 2] * load_lanes(column + (r + 2) * stride);
      sum3 += coefficient[r + 3] * load_lanes(column + (r + 3) * stride);
    }
    for (; r < count; ++r) sum0 += coefficient[r] * load_lanes(column + r * stride);
    const V total = (sum0 + sum1) + (sum2 + sum3);
    std::memcpy(out + first, &total, sizeof(total));
  }
}

// Whether values[0, n) are all finite: a sum of value * 0 is 0 for finite values and NaN
// for any Inf or NaN (a loop the compiler vectorizes, unlike std::isfinite's).
template <typename acc>
inline bool all_finite(const acc* __restrict__ values, int64_t n) {
  acc zero_if_finite = 0;
  for (int64_t i = 0; i < n; ++i) zero_if_finite += values[i] * acc(0);
  return zero_if_finite == acc(0);
}

// combine_rows over the listed rows only (r = listed[0, count)).
template <typename acc>
inline void combine_listed_rows(const acc* __restrict__ coefficient, const int64_t* listed,
                                int64_t count, const acc* __restrict__ rows, int64_t width,
                                acc* __restrict__ out) {
  using V = typename Lanes<acc>::type;
  const int64_t stride = padded(width);
  for (int64_t first = 0; first < stride; first += kLanes) {
    V sum{};
    for (int64_t k = 0; k < count; ++k) {
      sum += coefficient[listed[k]] * load_lanes(rows + listed[k] * stride + first);
    }
    std::memcpy(out + first, &sum, sizeof(V));
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

// combine_rows for `pixels` coefficient vectors, four at a time.
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

template <typename scalar_t>
void gather_typed(const scalar_t* image, const acc_t<scalar_t>* weight, scalar_t* many,
                  const Shape& shape) {
  using acc = acc_t<scalar_t>;
  const int64_t C = shape.channels, width = padded(C);
  const int64_t image_size = shape.image_height * shape.image_width * shape.image_channels;
  const int64_t rows = shape.batch * shape.many_height;
  const bool finite_weight = all_finite(weight, shape.taps() * width);
  at::parallel_for(0, rows, parallel::grain(shape.many_width * C), [&](int64_t begin, int64_t end) {
    PaddedImage<acc> source(shape);
    int64_t source_n = -1;
    const int64_t T = shape.taps();
    std::vector<acc> patches(shape.many_width * T), out(shape.many_width * width);
    std::vector<int64_t> inside(T);
    for (int64_t row = begin; row < end; ++row) {
      const int64_t n = row / shape.many_height, i = row % shape.many_height;
      if (n != source_n) source.read(image + n * image_size, shape), source_n = n;
      for (int64_t j = 0; j < shape.many_width; ++j) {
        source.read_patch(shape, i, j, patches.data() + j * T);
      }
      if (finite_weight) {
        combine_pixels(patches.data(), T, shape.many_width, weight, T, C, out.data(), width);
      } else {  // the border's taps left out (PaddedImage::inside_taps says why)
        for (int64_t j = 0; j < shape.many_width; ++j) {
          const int64_t count = source.inside_taps(shape, i, j, inside.data());
          combine_listed_rows(patches.data() + j * T, inside.data(), count, weight, C,
                              out.data() + j * width);
        }
      }
      scalar_t* dst = many + row * shape.many_width * C;
      if (width == C) {
        store(out.data(), dst, shape.many_width * C);
      } else {
        for (int64_t j = 0; j < shape.many_width; ++j)
          store(out.data() + j * width, dst + j * C, C);
      }
    }
  });
}

// weight_grad's register block: this many taps (x kLanes channels).
constexpr int64_t kTapBlock = 8;

template <typename scalar_t>
void weight_grad_typed(const scalar_t* many, const scalar_t* image, acc_t<scalar_t>* grad,
                       const Shape& shape) {
  using acc = acc_t<scalar_t>;
  using V = typename Lanes<acc>::type;
  const int64_t C = shape.channels, T = shape.taps(), width = padded(C);
  const int64_t taps_width = (T + kTapBlock - 1) / kTapBlock * kTapBlock;
  const int64_t image_size = shape.image_height * shape.image_width * shape.image_channels;
  const int64_t tasks = std::max<int64_t>(1, std::min<int64_t>(shape.batch, at::get_num_threads()));
  std::vector<std::vector<acc>> partial(tasks, std::vector<acc>(taps_width * width, acc(0)));
  at::parallel_for(0, tasks, 1, [&](int64_t begin, int64_t end) {
    PaddedImage<acc> source(shape);
    const int64_t pixel_count = shape.many_height * shape.many_width;
    std::vector<acc> patches(pixel_count * taps_width, acc(0)), pixels(pixel_count * width, acc(0));
    std::vector<int64_t> inside(T);
    for (int64_t task = begin; task < end; ++task) {
      acc* __restrict__ sums = partial[task].data();
      for (int64_t n = task * shape.batch / tasks; n < (task + 1) * shape.batch / tasks; ++n) {
        // The image's patches [pixel, taps_width] and many pixels [pixel, width], then
        // sums[t, c] += patches[p, t] * pixels[p, c] over its pixels, a block of kTapBlock taps
        // x kLanes channels held in registers across all of them.
        source.read(image + n * image_size, shape);
        const scalar_t* src = many + n * pixel_count * C;
        if (width == C) {
          load(src, pixels.data(), pixel_count * C);
        } else {
          for (int64_t p = 0; p < pixel_count; ++p) load(src + p * C, pixels.data() + p * width, C);
        }
        for (int64_t i = 0; i < shape.many_height; ++i) {
          for (int64_t j = 0; j < shape.many_width; ++j) {
            source.read_patch(shape, i, j,
                              patches.data() + (i * shape.many_width + j) * taps_width);
          }
        }
        if (!all_finite(pixels.data(), pixel_count * width)) {
          // An Inf or NaN in this image's many side: the border's taps left out, as aten does
          // (PaddedImage::inside_taps), one pixel at a time.
          for (int64_t p = 0; p < pixel_count; ++p) {
            const acc* q = patches.data() + p * taps_width;
            const int64_t count = source.inside_taps(shape, p / shape.many_width,
                                                     p % shape.many_width, inside.data());
            for (int64_t first = 0; first < width; first += kLanes) {
              const V values = load_lanes(pixels.data() + p * width + first);
              for (int64_t k = 0; k < count; ++k) {
                acc* at = sums + inside[k] * width + first;
                const V sum = load_lanes(at) + q[inside[k]] * values;
                std::memcpy(at, &sum, sizeof(V));
              }
            }
          }
          continue;
        }
        for (int64_t t0 = 0; t0 < taps_width; t0 += kTapBlock) {
          for (int64_t first = 0; first < width; first += kLanes) {
            acc* block = sums + t0 * width + first;
            V s[kTapBlock];
            for (int64_t u = 0; u < kTapBlock; ++u) s[u] = load_lanes(block + u * width);
            for (int64_t p = 0; p < pixel_count; ++p) {
              const V values = load_lanes(pixels.data() + p * width + first);
              const acc* q = patches.data() + p * taps_width + t0;
              for (int64_t u = 0; u < kTapBlock; ++u) s[u] += q[u] * values;
            }
            for (int64_t u = 0; u < kTapBlock; ++u)
              std::memcpy(block + u * width, &s[u], sizeof(V));
          }
        }
      }
    }
  });
  std::copy(partial[0].begin(), partial[0].begin() + T * width, grad);
  for (int64_t task = 1; task < tasks; ++task) {
    for (int64_t k = 0; k < T * width; ++k) grad[k] += partial[task][k];
  }
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

void gather(const at::Tensor& image, const at::Tensor& weight, const at::Tensor& many,
            const Shape& shape) {
  FASTGEN_DISPATCH_FLOATING_TYPES(image.scalar_type(), "fastgen few_channels gather", [&] {
    gather_typed<scalar_t>(image.const_data_ptr<scalar_t>(),
                           weight.const_data_ptr<acc_t<scalar_t>>(),
                           many.mutable_data_ptr<scalar_t>(), shape);
  });
}

void weight_grad(const at::Tensor& many, const at::Tensor& image, const at::Tensor& grad,
                 const Shape& shape) {
  FASTGEN_DISPATCH_FLOATING_TYPES(many.scalar_type(), "fastgen few_channels weight_grad", [&] {
    weight_grad_typed<scalar_t>(many.const_data_ptr<scalar_t>(), image.const_data_ptr<scalar_t>(),
                                grad.mutable_data_ptr<acc_t<scalar_t>>(), shape);
  });
}

}  // namespace fastgen::few_channels::FASTGEN_CPU_NS
