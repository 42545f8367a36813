// The shared pieces of conv/conv_common.h: argument parsing, the CPU registrations' choice of
// kernels and the drivers both conv ops run.

#include "conv/conv_common.h"

#include "common/checks.h"
#include "common/emulated_cuda.h"

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

namespace conv {
namespace {

std::array<int64_t, 2> as_pair(at::IntArrayRef values, const char* op, const char* name) {
  TORCH_CHECK_VALUE(values.size() == 2, op, ": ", name, " must have 2 values, got ", values);
  return {values[0], values[1]};
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> engine_backward(
    const Epilogues& epilogues, const Geometry& geometry, const at::Tensor& grad_out,
    const at::Tensor& input, const at::Tensor& weight, const at::Tensor& output,
    Activation activation, double negative_slope, std::array<bool, 3> output_mask) {
  auto [grad_input, grad_weight, grad_bias] =
      epilogues.engine->backward(grad_out, input, weight, output, geometry, activation,
                                 negative_slope, output_mask, conv_format(input, weight));
  const auto result = [&](bool wanted, const at::Tensor& t) {
    return wanted ? t : at::empty({0}, grad_out.options());
  };
  return {result(output_mask[0], grad_input), result(output_mask[1], grad_weight),
          result(output_mask[2], grad_bias)};
}

// The library convolution's output in the layout rule's strides, then bias + activation in
// place.
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

// The library convolution's gradients in the layout rule's strides, grad_bias from grad_pre
// when the convolution gave none, masked-out entries as empty tensors.
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

bool takes_engine(const Epilogues& epilogues, const Geometry& geometry) {
  return epilogues.engine != nullptr && route(geometry) == Route::ImplicitGemm;
}

}  // namespace

Params make_params(const char* op, bool transposed, at::IntArrayRef stride, at::IntArrayRef padding,
                   at::IntArrayRef output_padding, at::IntArrayRef dilation, int64_t groups,
                   std::string_view activation, double negative_slope) {
  // Braced initialization evaluates in order: the checks run as the arguments are listed.
  return Params{Geometry{transposed, as_pair(stride, op, "stride"), as_pair(padding, op, "padding"),
                         as_pair(output_padding, op, "output_padding"),
                         as_pair(dilation, op, "dilation"), groups},
                parse_activation(activation), negative_slope};
}

at::Tensor library_forward(const at::Tensor& input, const at::Tensor& weight,
                           const Geometry& geometry) {
  if (geometry.transposed) {
    return at::conv_transpose2d(input, weight, std::nullopt, geometry.stride, geometry.padding,
                                geometry.output_padding, geometry.groups, geometry.dilation);
  }
  return at::conv2d(input, weight, std::nullopt, geometry.stride, geometry.padding,
                    geometry.dilation, geometry.groups);
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> library_backward(const at::Tensor& grad_pre,
                                                                const at::Tensor& input,
                                                                const at::Tensor& weight,
                                                                const Geometry& geometry,
                                                                std::array<bool, 3> output_mask) {
  // grad_bias is left to finish_backward's sum over grad_pre: oneDNN's transposed
  // convolutions take a reference (scalar, NCHW-order) loop for it, e.g. 0.2 ms of the DCGAN
  // output layer's backward in bfloat16.
  const int64_t out_channels =
      geometry.transposed ? weight.size(1) * geometry.groups : weight.size(0);
  return at::convolution_backward(grad_pre, input, weight, at::IntArrayRef{out_channels},
                                  geometry.stride, geometry.padding, geometry.dilation,
                                  geometry.transposed, geometry.output_padding, geometry.groups,
                                  {output_mask[0], output_mask[1], false});
}

Kernels cpu_or_emulated(Convolution cpu) {
  if (const emulation::Kernels* kernels = emulation::active()) {
    return {kLibrary,
            {kernels->bias_activation, kernels->activation_backward, kernels->conv_engine}};
  }
  return {cpu, {bias_activation_cpu, activation_backward_cpu}};
}

std::optional<at::Tensor> engine_forward(const Epilogues& epilogues, const Geometry& geometry,
                                         const at::Tensor& input, const at::Tensor& weight,
                                         const std::optional<at::Tensor>& bias,
                                         std::array<int64_t, 2> out_size, Activation activation,
                                         double negative_slope, at::Tensor* mean, at::Tensor* var) {
  if (!takes_engine(epilogues, geometry)) return std::nullopt;
  const bool has_bias = bias.has_value() && bias->defined();
  return epilogues.engine->forward(input, weight, has_bias ? bias->contiguous() : at::Tensor(),
                                   geometry, out_size, activation, negative_slope,
                                   conv_format(input, weight), mean, var);
}

int64_t output_size(const at::Tensor& input, const at::Tensor& weight, const Geometry& geometry,
                    int d) {
  const int64_t kernel_span = geometry.dilation[d] * (weight.size(2 + d) - 1);
  if (geometry.transposed) {
    return (input.size(2 + d) - 1) * geometry.stride[d] - 2 * geometry.padding[d] + kernel_span +
           geometry.output_padding[d] + 1;
  }
  return (input.size(2 + d) + 2 * geometry.padding[d] - kernel_span - 1) / geometry.stride[d] + 1;
}

std::array<int64_t, 4> output_shape(const char* op, const at::Tensor& input,
                                    const at::Tensor& weight, const Geometry& geometry) {
  const bool transposed = geometry.transposed;
  const int64_t groups = geometry.groups;
  checks::conv_operands(
      op, input, weight, groups,
      transposed ? " [C_in, C_out / groups, kH, kW]" : " [C_out, C_in / groups, kH, kW]");
  if (transposed) {
    TORCH_CHECK_VALUE(weight.size(0) == input.size(1), op, ": weight has ", weight.size(0),
                      " input channels but input has ", input.size(1));
    TORCH_CHECK_VALUE(input.size(1) % groups == 0, op, ": input channels (", input.size(1),
                      ") must be divisible by groups (", groups, ")");
  } else {
    TORCH_CHECK_VALUE(weight.size(1) * groups == input.size(1), op, ": weight has ", weight.size(1),
                      " input channels per group but input has ", input.size(1),
                      " channels (groups=", groups, ")");
    TORCH_CHECK_VALUE(weight.size(0) % groups == 0, op, ": weight's output channels (",
                      weight.size(0), ") must be divisible by groups (", groups, ")");
  }
  checks::pair(op, "stride", geometry.stride, 1);
  checks::pair(op, "padding", geometry.padding, 0);
  if (transposed) checks::pair(op, "output_padding", geometry.output_padding, 0);
  checks::pair(op, "dilation", geometry.dilation, 1);
  std::array<int64_t, 4> out{input.size(0), transposed ? weight.size(1) * groups : weight.size(0),
                             0, 0};
  for (int d = 0; d < 2; ++d) {
    TORCH_CHECK_VALUE(
        !transposed ||
            geometry.output_padding[d] < std::max(geometry.stride[d], geometry.dilation[d]),
        op, ": output_padding must be smaller than stride or dilation, got output_padding=",
        at::IntArrayRef(geometry.output_padding), ", stride=", at::IntArrayRef(geometry.stride),
        ", dilation=", at::IntArrayRef(geometry.dilation));
    out[2 + d] = output_size(input, weight, geometry, d);
  }
  TORCH_CHECK_VALUE(out[2] >= 1 && out[3] >= 1, op, ": output size (", out[2], ", ", out[3],
                    ") is below 1 for input ", input.sizes(), " and weight ", weight.sizes());
  return out;
}

at::Tensor forward(const char* op, const Kernels& kernels, const Params& params,
                   const at::Tensor& input, const at::Tensor& weight,
                   const std::optional<at::Tensor>& bias) {
  const auto shape = output_shape(op, input, weight, params.geometry);
  if (bias.has_value() && bias->defined()) {
    checks::like(op, "bias", *bias, "input", input, at::IntArrayRef{shape[1]});
  }
  if (auto out = engine_forward(kernels.epilogues, params.geometry, input, weight, bias,
                                {shape[2], shape[3]}, params.activation, params.negative_slope)) {
    return *out;
  }
  // No bias in the convolution: it is added in the epilogue together with the activation,
  // so the output is touched once after the GEMMs instead of twice.
  return finish_forward(kernels.epilogues,
                        kernels.convolution.forward(input, weight, params.geometry), bias,
                        conv_format(input, weight), params.activation, params.negative_slope);
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> backward(
    const char* op, const Kernels& kernels, const Params& params, const at::Tensor& grad_out,
    const at::Tensor& input, const at::Tensor& weight, const at::Tensor& output,
    std::array<bool, 3> output_mask) {
  const auto shape = output_shape(op, input, weight, params.geometry);
  checks::like(op, "grad_out", grad_out, "input", input, shape);
  if (params.activation != Activation::Identity) {
    checks::like(op, "output", output, "input", input, shape);
  }
  const Epilogues& epilogues = kernels.epilogues;
  if (takes_engine(epilogues, params.geometry)) {
    return engine_backward(epilogues, params.geometry, grad_out, input, weight, output,
                           params.activation, params.negative_slope, output_mask);
  }
  // grad_out * act'(output) in one pass (grad_out itself for identity), then the
  // convolution's backward of that.
  const at::Tensor grad_pre = params.activation == Activation::Identity
                                  ? grad_out
                                  : epilogues.activation_backward(
                                        grad_out, output, params.activation, params.negative_slope);
  return finish_backward(
      kernels.convolution.backward(grad_pre, input, weight, params.geometry, output_mask), grad_pre,
      output_mask, conv_format(input, weight));
}

}  // namespace conv
}  // namespace fastgen
