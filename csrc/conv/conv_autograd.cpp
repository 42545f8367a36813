// Autograd kernels of fastgen::conv2d and fastgen::conv_transpose2d, in C++ so that eager
// calls skip Python's autograd layer (an autograd.Function apply and a Python backward, which
// cost 0.05-0.1 ms a layer on the main job's DCGAN, forward and backward: as much as some of
// its kernels). Device-neutral, like reparameterize's (reparameterize/reparameterize_autograd.cpp):
// the forward and backward ops go through the dispatcher, which picks the CPU or CUDA kernel
// (under torch.compile, the fake kernels registered from Python).
//
// Saved for backward: input, weight and the output (its activation's derivative is read from
// it; an empty stand-in for "identity", which needs none). A plain backward calls the
// backward op below autograd. With create_graph (R1, WGAN-GP) it runs the same math through
// differentiable aten ops instead (act' from the output, then aten's convolution_backward), so
// the second derivative is exact, the saved output's path included.

#include <ATen/ATen.h>
#include <ATen/core/dispatch/Dispatcher.h>
#include <torch/autograd.h>
#include <torch/library.h>

#include <string>
#include <vector>

namespace fastgen::conv {
namespace {

using torch::autograd::AutogradContext;
using torch::autograd::variable_list;

// act'(pre-activation) from y = act(pre), differentiable; undefined for "identity".
at::Tensor activation_grad(const at::Tensor& output, const std::string& activation, double slope) {
  if (activation == "relu") return output.gt(0).to(output.scalar_type());
  if (activation == "leaky_relu") {
    return at::where(output.gt(0), at::ones_like(output), at::full_like(output, slope));
  }
  if (activation == "tanh") return at::rsub(output.mul(output), 1);
  if (activation == "sigmoid") return output.mul(at::rsub(output, 1));
  return at::Tensor();
}

// What both ops save: the tensors, the geometry (conv2d's output_padding is {0, 0}), the
// activation, and whether there is a bias.
void save(AutogradContext* ctx, const at::Tensor& input, const at::Tensor& weight,
          const std::optional<at::Tensor>& bias, const at::Tensor& output, at::IntArrayRef stride,
          at::IntArrayRef padding, at::IntArrayRef output_padding, at::IntArrayRef dilation,
          int64_t groups, c10::string_view activation, double negative_slope) {
  const bool identity = activation == "identity";
  ctx->save_for_backward({input, weight, identity ? output.new_empty({0}) : output});
  ctx->saved_data["has_bias"] = bias.has_value() && bias->defined();
  ctx->saved_data["stride"] = stride.vec();
  ctx->saved_data["padding"] = padding.vec();
  ctx->saved_data["output_padding"] = output_padding.vec();
  ctx->saved_data["dilation"] = dilation.vec();
  ctx->saved_data["groups"] = groups;
  ctx->saved_data["activation"] = std::string(activation);
  ctx->saved_data["negative_slope"] = negative_slope;
}

// needs_input_grad counts the tensor arguments given: input 0, weight 1, bias 2 when there is
// one (asked only then).
std::array<bool, 3> output_mask(AutogradContext* ctx) {
  return {ctx->needs_input_grad(0), ctx->needs_input_grad(1),
          ctx->saved_data["has_bias"].toBool() && ctx->needs_input_grad(2)};
}

// Whether this backward must itself be differentiable (create_graph and something to
// differentiate through).
bool differentiable(const at::Tensor& grad, const variable_list& saved) {
  if (!at::GradMode::is_enabled()) return false;
  if (grad.requires_grad()) return true;
  for (const at::Tensor& t : saved) {
    if (t.defined() && t.requires_grad()) return true;
  }
  return false;
}

// aten's convolution backward for the pre-activation gradient, through autograd.
std::tuple<at::Tensor, at::Tensor, at::Tensor> differentiable_backward(
    AutogradContext* ctx, const at::Tensor& grad, const variable_list& saved, bool transposed,
    at::IntArrayRef stride, at::IntArrayRef padding, at::IntArrayRef output_padding,
    at::IntArrayRef dilation, int64_t groups) {
  const at::Tensor &input = saved[0], &weight = saved[1], &output = saved[2];
  const at::Tensor derivative = activation_grad(output, ctx->saved_data["activation"].toStringRef(),
                                                ctx->saved_data["negative_slope"].toDouble());
  const at::Tensor grad_pre = derivative.defined() ? grad.mul(derivative) : grad;
  const int64_t out_channels = transposed ? weight.size(1) * groups : weight.size(0);
  return at::convolution_backward(grad_pre, input, weight, at::IntArrayRef{out_channels}, stride,
                                  padding, dilation, transposed, output_padding, groups,
                                  output_mask(ctx));
}

variable_list gradients(const std::tuple<at::Tensor, at::Tensor, at::Tensor>& grads,
                        std::array<bool, 3> mask, size_t arguments) {
  variable_list out(arguments);
  out[0] = mask[0] ? std::get<0>(grads) : at::Tensor();
  out[1] = mask[1] ? std::get<1>(grads) : at::Tensor();
  out[2] = mask[2] ? std::get<2>(grads) : at::Tensor();
  return out;
}

std::vector<int64_t> ints(AutogradContext* ctx, const char* name) {
  return ctx->saved_data[name].toIntVector();
}

class Conv2dFunction : public torch::autograd::Function<Conv2dFunction> {
 public:
  static at::Tensor forward(AutogradContext* ctx, const at::Tensor& input, const at::Tensor& weight,
                            const std::optional<at::Tensor>& bias, at::IntArrayRef stride,
                            at::IntArrayRef padding, at::IntArrayRef dilation, int64_t groups,
                            c10::string_view activation, double negative_slope) {
    static auto op =
        c10::Dispatcher::singleton()
            .findSchemaOrThrow("fastgen::conv2d", "")
            .typed<at::Tensor(const at::Tensor&, const at::Tensor&,
                              const std::optional<at::Tensor>&, at::IntArrayRef, at::IntArrayRef,
                              at::IntArrayRef, int64_t, c10::string_view, double)>();
    at::AutoDispatchBelowADInplaceOrView guard;
    at::Tensor output =
        op.call(input, weight, bias, stride, padding, dilation, groups, activation, negative_slope);
    save(ctx, input, weight, bias, output, stride, padding, {0, 0}, dilation, groups, activation,
         negative_slope);
    return output;
  }

  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    static auto op = c10::Dispatcher::singleton()
                         .findSchemaOrThrow("fastgen::conv2d_backward", "")
                         .typed<std::tuple<at::Tensor, at::Tensor, at::Tensor>(
                             const at::Tensor&, const at::Tensor&, const at::Tensor&,
                             const at::Tensor&, at::IntArrayRef, at::IntArrayRef, at::IntArrayRef,
                             int64_t, c10::string_view, double, std::array<bool, 3>)>();
    const variable_list saved = ctx->get_saved_variables();
    const auto stride = ints(ctx, "stride"), padding = ints(ctx, "padding"),
               dilation = ints(ctx, "dilation");
    const int64_t groups = ctx->saved_data["groups"].toInt();
    const std::array<bool, 3> mask = output_mask(ctx);
    std::tuple<at::Tensor, at::Tensor, at::Tensor> result;
    if (differentiable(grads[0], saved)) {
      result = differentiable_backward(ctx, grads[0], saved, /*transposed=*/false, stride, padding,
                                       {0, 0}, dilation, groups);
    } else {
      at::AutoDispatchBelowADInplaceOrView guard;
      result = op.call(grads[0], saved[0], saved[1], saved[2], stride, padding, dilation, groups,
                       ctx->saved_data["activation"].toStringRef(),
                       ctx->saved_data["negative_slope"].toDouble(), mask);
    }
    return gradients(result, mask, 9);
  }
};

class ConvTranspose2dFunction : public torch::autograd::Function<ConvTranspose2dFunction> {
 public:
  static at::Tensor forward(AutogradContext* ctx, const at::Tensor& input, const at::Tensor& weight,
                            const std::optional<at::Tensor>& bias, at::IntArrayRef stride,
                            at::IntArrayRef padding, at::IntArrayRef output_padding, int64_t groups,
                            at::IntArrayRef dilation, c10::string_view activation,
                            double negative_slope) {
    static auto op = c10::Dispatcher::singleton()
                         .findSchemaOrThrow("fastgen::conv_transpose2d", "")
                         .typed<at::Tensor(const at::Tensor&, const at::Tensor&,
                                           const std::optional<at::Tensor>&, at::IntArrayRef,
                                           at::IntArrayRef, at::IntArrayRef, int64_t,
                                           at::IntArrayRef, c10::string_view, double)>();
    at::AutoDispatchBelowADInplaceOrView guard;
    at::Tensor output = op.call(input, weight, bias, stride, padding, output_padding, groups,
                                dilation, activation, negative_slope);
    save(ctx, input, weight, bias, output, stride, padding, output_padding, dilation, groups,
         activation, negative_slope);
    return output;
  }

  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    static auto op =
        c10::Dispatcher::singleton()
            .findSchemaOrThrow("fastgen::conv_transpose2d_backward", "")
            .typed<std::tuple<at::Tensor, at::Tensor, at::Tensor>(
                const at::Tensor&, const at::Tensor&, const at::Tensor&, const at::Tensor&,
                at::IntArrayRef, at::IntArrayRef, at::IntArrayRef, int64_t, at::IntArrayRef,
                c10::string_view, double, std::array<bool, 3>)>();
    const variable_list saved = ctx->get_saved_variables();
    const auto stride = ints(ctx, "stride"), padding = ints(ctx, "padding"),
               output_padding = ints(ctx, "output_padding"), dilation = ints(ctx, "dilation");
    const int64_t groups = ctx->saved_data["groups"].toInt();
    const std::array<bool, 3> mask = output_mask(ctx);
    std::tuple<at::Tensor, at::Tensor, at::Tensor> result;
    if (differentiable(grads[0], saved)) {
      result = differentiable_backward(ctx, grads[0], saved, /*transposed=*/true, stride, padding,
                                       output_padding, dilation, groups);
    } else {
      at::AutoDispatchBelowADInplaceOrView guard;
      result = op.call(grads[0], saved[0], saved[1], saved[2], stride, padding, output_padding,
                       groups, dilation, ctx->saved_data["activation"].toStringRef(),
                       ctx->saved_data["negative_slope"].toDouble(), mask);
    }
    return gradients(result, mask, 10);
  }
};

at::Tensor conv2d_autograd(const at::Tensor& input, const at::Tensor& weight,
                           const std::optional<at::Tensor>& bias, at::IntArrayRef stride,
                           at::IntArrayRef padding, at::IntArrayRef dilation, int64_t groups,
                           c10::string_view activation, double negative_slope) {
  return Conv2dFunction::apply(input, weight, bias, stride, padding, dilation, groups, activation,
                               negative_slope);
}

at::Tensor conv_transpose2d_autograd(const at::Tensor& input, const at::Tensor& weight,
                                     const std::optional<at::Tensor>& bias, at::IntArrayRef stride,
                                     at::IntArrayRef padding, at::IntArrayRef output_padding,
                                     int64_t groups, at::IntArrayRef dilation,
                                     c10::string_view activation, double negative_slope) {
  return ConvTranspose2dFunction::apply(input, weight, bias, stride, padding, output_padding,
                                        groups, dilation, activation, negative_slope);
}

}  // namespace

TORCH_LIBRARY_IMPL(fastgen, Autograd, m) {
  m.impl("conv2d", &conv2d_autograd);
  m.impl("conv_transpose2d", &conv_transpose2d_autograd);
}

}  // namespace fastgen::conv
