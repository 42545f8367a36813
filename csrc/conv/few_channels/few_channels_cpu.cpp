// The few-channel convolutions at tensor level (few_channels.h): which side is the image, the
// packed weights, the layouts the loops read, and this CPU's copy of the loops.

#include "conv/few_channels/few_channels.h"

#include <ATen/ATen.h>

#include "common/cpu_capability.h"
#include "conv/conv_common.h"

namespace fastgen::few_channels {
namespace {

bool supported(at::ScalarType dtype) {
  return dtype == at::kFloat || dtype == at::kDouble || dtype == at::kBFloat16 ||
         dtype == at::kHalf;
}

at::ScalarType sums_dtype(at::ScalarType dtype) {
  return dtype == at::kDouble ? at::kDouble : at::kFloat;
}

// Dense with channels innermost, as the loops read it (a no-op for channels_last tensors, and
// for a one-channel NCHW tensor up to its size-1 stride).
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

// ... and as gather reads it: [taps, padded(C)].
at::Tensor packed_by_tap(const at::Tensor& weight, const Shape& shape) {
  const at::Tensor rows = weight.permute({2, 3, 1, 0}).reshape({shape.taps(), shape.channels});
  at::Tensor packed = at::zeros({shape.taps(), padded(shape.channels)},
                                weight.options().dtype(sums_dtype(weight.scalar_type())));
  packed.narrow(1, 0, shape.channels).copy_(rows);
  return packed;
}

// weight_grad's [taps, padded(C)] sums as a gradient shaped and typed like `weight`.
at::Tensor weight_gradient(const at::Tensor& many, const at::Tensor& image, const Shape& shape,
                           const at::Tensor& weight) {
  at::Tensor sums = at::empty({shape.taps(), padded(shape.channels)},
                              weight.options().dtype(sums_dtype(weight.scalar_type())));
  FASTGEN_CPU_KERNEL(few_channels, weight_grad)(many, image, sums, shape);
  return sums.narrow(1, 0, shape.channels)
      .reshape({shape.kernel[0], shape.kernel[1], shape.image_channels, shape.channels})
      .permute({3, 2, 0, 1})
      .to(weight.scalar_type())
      .contiguous(conv_memory_format(weight));
}

// Many-side tensor from the image (gather) and image from the many side (scatter).
at::Tensor gather(const at::Tensor& image, const at::Tensor& weight, const Shape& shape) {
  at::Tensor many = empty_channels_last(
      {shape.batch, shape.channels, shape.many_height, shape.many_width}, image);
  FASTGEN_CPU_KERNEL(few_channels, gather)(image, packed_by_tap(weight, shape), many, shape);
  return many;
}

at::Tensor scatter(const at::Tensor& many, const at::Tensor& weight, const Shape& shape) {
  at::Tensor image = empty_channels_last(
      {shape.batch, shape.image_channels, shape.image_height, shape.image_width}, many);
  FASTGEN_CPU_KERNEL(few_channels, scatter)(many, packed_by_channel(weight, shape), image, shape);
  return image;
}

}  // namespace

bool applies(const at::Tensor& input, const at::Tensor& weight, const conv::Geometry& geometry) {
  return input.is_cpu() && weight.is_cpu() && supported(input.scalar_type()) &&
         weight.scalar_type() == input.scalar_type() && input.dim() == 4 && weight.dim() == 4 &&
         geometry.groups == 1 && weight.size(1) <= kMaxImageChannels &&
         weight.size(1) < weight.size(0) && input.numel() > 0 && weight.numel() > 0;
}

std::optional<at::Tensor> forward(const at::Tensor& input, const at::Tensor& weight,
                                  const conv::Geometry& geometry, at::ScalarType) {
  if (!applies(input, weight, geometry)) return std::nullopt;
  const Shape shape = shape_of(input, weight, geometry);
  const at::Tensor x = channels_innermost(input);
  return geometry.transposed ? scatter(x, weight, shape) : gather(x, weight, shape);
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
  // conv_transpose2d: the input is the many side, grad_out the image; conv2d the other way.
  const at::Tensor& many = geometry.transposed ? x : grad;
  const at::Tensor& image = geometry.transposed ? grad : x;
  at::Tensor grad_input, grad_weight;
  if (output_mask[0]) {
    grad_input = geometry.transposed ? gather(grad, weight, shape) : scatter(grad, weight, shape);
  }
  if (output_mask[1]) grad_weight = weight_gradient(many, image, shape, weight);
  return conv::select::Grads{grad_input, grad_weight, at::Tensor()};
}

}  // namespace fastgen::few_channels
