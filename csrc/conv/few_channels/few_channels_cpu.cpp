// The few-channel convolutions at tensor level (few_channels.h): which side is the image, the
// layouts the loops and GEMMs read, the GEMMs, and this CPU's copy of the loops.

#include "conv/few_channels/few_channels.h"

#include <ATen/ATen.h>

#include <functional>

#include "common/checks.h"
#include "common/cpu_capability.h"
#include "conv/conv_common.h"

namespace fastgen::few_channels {
namespace {

at::ScalarType sums_dtype(at::ScalarType dtype) {
  return dtype == at::kDouble ? at::kDouble : at::kFloat;
}

// Dense with channels innermost, as the loops and GEMMs read it (a no-op for channels_last tensors,
// and for a one-channel NCHW tensor up to its size-1 stride).
at::Tensor channels_innermost(const at::Tensor& t) {
  return t.contiguous(c10::MemoryFormat::ChannelsLast);
}

at::Tensor empty_channels_last(at::IntArrayRef sizes, const at::Tensor& like) {
  return at::empty(sizes, like.options().memory_format(c10::MemoryFormat::ChannelsLast));
}

Shape shape_of(const at::Tensor& input, const at::Tensor& weight, const conv::Geometry& geometry) {
  Shape shape;
  shape.batch = input.size(0);
  shape.channels = weight.size(0);
  shape.image_channels = weight.size(1);
  shape.kernel = {weight.size(2), weight.size(3)};
  shape.stride = geometry.stride;
  shape.padding = geometry.padding;
  shape.dilation = geometry.dilation;
  const int64_t out_h = conv::output_size(input, weight, geometry, 0);
  const int64_t out_w = conv::output_size(input, weight, geometry, 1);
  if (geometry.transposed) {  // many -> image
    shape.many_height = input.size(2), shape.many_width = input.size(3);
    shape.image_height = out_h, shape.image_width = out_w;
  } else {  // image -> many
    shape.image_height = input.size(2), shape.image_width = input.size(3);
    shape.many_height = out_h, shape.many_width = out_w;
  }
  return shape;
}

// weight [C, S, kH, kW] as scatter reads it: [C, padded(taps)], taps ordered (kh, kw, s).
at::Tensor packed_by_channel(const at::Tensor& weight, const Shape& shape) {
  const at::Tensor rows = weight.permute({0, 2, 3, 1}).reshape({shape.channels, shape.taps()});
  at::Tensor packed = at::zeros({shape.channels, padded(shape.taps())},
                                weight.options().dtype(sums_dtype(weight.scalar_type())));
  packed.narrow(1, 0, shape.taps()).copy_(rows);
  return packed;
}

// The image's taps of every many pixel: [N * Hm * Wm, taps], in its dtype.
at::Tensor patches_of(const at::Tensor& image, const Shape& shape) {
  at::Tensor out = at::empty({shape.batch * shape.many_height * shape.many_width, shape.taps()},
                             image.options());
  FASTGEN_CPU_KERNEL(few_channels, patches)(image, out, shape);
  return out;
}

// weight [C, S, kH, kW] as a [taps, C] matrix (taps ordered (kh, kw, s), as patches_of).
at::Tensor weight_by_tap(const at::Tensor& weight, const Shape& shape) {
  return weight.permute({2, 3, 1, 0}).reshape({shape.taps(), shape.channels});
}

// The many side [N, C, Hm, Wm] (channels innermost) as a [N * Hm * Wm, C] matrix, in place.
at::Tensor many_rows(const at::Tensor& many, const Shape& shape) {
  return many.permute({0, 2, 3, 1}).reshape({-1, shape.channels});
}

// Many side from the image's patches: one GEMM, or aten's convolution where the weight is not
// all finite (few_channels.h: non-finite values).
at::Tensor gather_many(const at::Tensor& patches, const at::Tensor& weight, const Shape& shape,
                       const std::function<at::Tensor()>& library) {
  if (!weight.isfinite().all().item<bool>()) return library();
  return at::mm(patches, weight_by_tap(weight, shape))
      .view({shape.batch, shape.many_height, shape.many_width, shape.channels})
      .permute({0, 3, 1, 2});
}

// dweight from the image's patches and the many side: one GEMM, or aten's where the result is
// not all finite (few_channels.h: non-finite values).
at::Tensor weight_gradient(const at::Tensor& patches, const at::Tensor& many, const Shape& shape,
                           const std::function<at::Tensor()>& library) {
  at::Tensor taps_by_channel = at::mm(patches.t(), many_rows(many, shape));  // [taps, C]
  if (!taps_by_channel.isfinite().all().item<bool>()) return library();
  return taps_by_channel
      .view({shape.kernel[0], shape.kernel[1], shape.image_channels, shape.channels})
      .permute({3, 2, 0, 1});
}

at::Tensor scatter_image(const at::Tensor& many, const at::Tensor& weight, const Shape& shape) {
  at::Tensor image = empty_channels_last(
      {shape.batch, shape.image_channels, shape.image_height, shape.image_width}, many);
  FASTGEN_CPU_KERNEL(few_channels, scatter)(many, packed_by_channel(weight, shape), image, shape);
  return image;
}

// Whether the call has an image side these kernels take (few_channels.h, forward).
bool applies(const at::Tensor& input, const at::Tensor& weight, const conv::Geometry& geometry) {
  return input.is_cpu() && weight.is_cpu() && checks::is_floating(input) &&
         weight.scalar_type() == input.scalar_type() && input.dim() == 4 && weight.dim() == 4 &&
         geometry.groups == 1 && weight.size(1) <= kMaxImageChannels &&
         weight.size(1) < weight.size(0) && input.numel() > 0 && weight.numel() > 0;
}

}  // namespace

std::optional<at::Tensor> forward(const at::Tensor& input, const at::Tensor& weight,
                                  const conv::Geometry& geometry, at::ScalarType) {
  if (!applies(input, weight, geometry)) return std::nullopt;
  const Shape shape = shape_of(input, weight, geometry);
  const at::Tensor x = channels_innermost(input);
  if (geometry.transposed) return scatter_image(x, weight, shape);
  return gather_many(patches_of(x, shape), weight, shape,
                     [&] { return conv::library_forward(input, weight, geometry); });
}

std::optional<conv::select::Grads> backward(const at::Tensor& grad_out, const at::Tensor& input,
                                            const at::Tensor& weight,
                                            const conv::Geometry& geometry,
                                            std::array<bool, 3> output_mask, at::ScalarType) {
  if (!applies(input, weight, geometry) || grad_out.scalar_type() != input.scalar_type()) {
    return std::nullopt;
  }
  const Shape shape = shape_of(input, weight, geometry);
  const at::Tensor grad = channels_innermost(grad_out), x = channels_innermost(input);
  // aten's gradient `which` (0: input, 1: weight), for the non-finite cases.
  const auto library = [&](int which) {
    std::array<bool, 3> mask{false, false, false};
    mask[which] = true;
    auto grads = conv::library_backward(grad_out, input, weight, geometry, mask);
    return which == 0 ? std::get<0>(grads) : std::get<1>(grads);
  };
  at::Tensor grad_input, grad_weight;
  // conv2d: grad_out is the many side, the input the image; conv_transpose2d the other way
  // round, where both gradients read grad_out's patches.
  if (!geometry.transposed) {
    if (output_mask[0]) grad_input = scatter_image(grad, weight, shape);
    if (output_mask[1]) {
      grad_weight = weight_gradient(patches_of(x, shape), grad, shape, [&] { return library(1); });
    }
  } else if (output_mask[0] || output_mask[1]) {
    const at::Tensor image_patches = patches_of(grad, shape);
    if (output_mask[0]) {
      grad_input = gather_many(image_patches, weight, shape, [&] { return library(0); });
    }
    if (output_mask[1]) {
      grad_weight = weight_gradient(image_patches, x, shape, [&] { return library(1); });
    }
  }
  return conv::select::Grads{grad_input, grad_weight, at::Tensor()};
}

}  // namespace fastgen::few_channels
