// The shared pieces of conv/conv_common.h.

#include "conv/conv_common.h"

#include "common/checks.h"

#include <ATen/ATen.h>
#include <c10/util/Exception.h>

#include <vector>

namespace fastgen {

at::Tensor with_canonical_strides(const at::Tensor& t, c10::MemoryFormat format) {
  at::Tensor dense = t.contiguous(format);
  const auto sizes = dense.sizes();
  std::vector<int64_t> strides(sizes.size());
  if (format == c10::MemoryFormat::ChannelsLast) {
    strides = c10::get_channels_last_strides_2d(sizes);
  } else {
    int64_t stride = 1;
    for (int64_t d = static_cast<int64_t>(sizes.size()) - 1; d >= 0; --d) {
      strides[d] = stride;
      stride *= std::max<int64_t>(sizes[d], 1);
    }
  }
  if (dense.strides() == at::IntArrayRef(strides)) return dense;
  // Only strides of size-1 dims differ: same memory, so restriding is free and exact.
  return dense.as_strided(sizes, strides, dense.storage_offset());
}

std::array<int64_t, 2> as_pair(at::IntArrayRef values, const char* op, const char* name) {
  TORCH_CHECK_VALUE(values.size() == 2, op, ": ", name, " must have 2 values, got ", values);
  return {values[0], values[1]};
}

namespace conv {

std::optional<at::Tensor> engine_forward(const Epilogues& epilogues, const Geometry& geometry,
                                         const at::Tensor& input, const at::Tensor& weight,
                                         const std::optional<at::Tensor>& bias,
                                         std::array<int64_t, 2> out_size, Activation activation,
                                         double negative_slope) {
  if (epilogues.engine == nullptr || route(geometry) != Route::ImplicitGemm) return std::nullopt;
  const bool has_bias = bias.has_value() && bias->defined();
  return epilogues.engine->forward(input, weight, has_bias ? bias->contiguous() : at::Tensor(),
                                   geometry, out_size, activation, negative_slope,
                                   conv_format(input, weight), nullptr, nullptr);
}

std::optional<std::tuple<at::Tensor, at::Tensor, at::Tensor>> engine_backward(
    const Epilogues& epilogues, const Geometry& geometry, const at::Tensor& grad_out,
    const at::Tensor& input, const at::Tensor& weight, const at::Tensor& output,
    Activation activation, double negative_slope, std::array<bool, 3> output_mask) {
  if (epilogues.engine == nullptr || route(geometry) != Route::ImplicitGemm) return std::nullopt;
  auto [grad_input, grad_weight, grad_bias] =
      epilogues.engine->backward(grad_out, input, weight, output, geometry, activation,
                                 negative_slope, output_mask, conv_format(input, weight));
  const auto result = [&](bool wanted, const at::Tensor& t) {
    return wanted ? t : at::empty({0}, grad_out.options());
  };
  return std::make_tuple(result(output_mask[0], grad_input), result(output_mask[1], grad_weight),
                         result(output_mask[2], grad_bias));
}

at::Tensor finish_forward(const Epilogues& epilogues, at::Tensor out,
                          const std::optional<at::Tensor>& bias, c10::MemoryFormat format,
                          Activation activation, double negative_slope) {
  out = with_canonical_strides(out, format);
  const bool has_bias = bias.has_value() && bias->defined();
  if (has_bias || activation != Activation::Identity) {
    epilogues.bias_activation(out, has_bias ? bias->contiguous() : at::Tensor(), activation,
                              negative_slope);
  }
  return out;
}

at::Tensor pre_activation_grad(const Epilogues& epilogues, const at::Tensor& grad_out,
                               const at::Tensor& output, Activation activation,
                               double negative_slope) {
  if (activation == Activation::Identity) return grad_out;
  return epilogues.activation_backward(grad_out, output, activation, negative_slope);
}

BackwardStart start_backward(const char* op, const Epilogues& epilogues, const Geometry& geometry,
                             const at::Tensor& grad_out, const at::Tensor& input,
                             const at::Tensor& weight, const at::Tensor& output,
                             at::IntArrayRef out_shape, Activation activation,
                             double negative_slope, std::array<bool, 3> output_mask) {
  checks::like(op, "grad_out", grad_out, "input", input, out_shape);
  if (activation != Activation::Identity)
    checks::like(op, "output", output, "input", input, out_shape);
  if (auto grads = engine_backward(epilogues, geometry, grad_out, input, weight, output, activation,
                                   negative_slope, output_mask)) {
    return {std::move(grads), at::Tensor()};
  }
  return {std::nullopt,
          pre_activation_grad(epilogues, grad_out, output, activation, negative_slope)};
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> finish_backward(
    std::tuple<at::Tensor, at::Tensor, at::Tensor> grads, const at::Tensor& grad_pre,
    std::array<bool, 3> output_mask, c10::MemoryFormat format) {
  auto& [grad_input, grad_weight, grad_bias] = grads;
  const auto empty = [&] { return at::empty({0}, grad_pre.options()); };
  if (output_mask[2] && !grad_bias.defined()) grad_bias = grad_pre.sum({0, 2, 3});
  return {output_mask[0] ? with_canonical_strides(grad_input, format) : empty(),
          output_mask[1] ? with_canonical_strides(grad_weight, format) : empty(),
          output_mask[2] ? grad_bias.contiguous() : empty()};
}

}  // namespace conv
}  // namespace fastgen
