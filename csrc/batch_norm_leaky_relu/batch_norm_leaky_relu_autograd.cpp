// Autograd kernel of fastgen::batch_norm_leaky_relu, in C++ like the convolutions' and
// reparameterize's, so that eager calls skip Python's autograd layer (an autograd.Function
// apply and a Python backward: tens of microseconds a layer, more once a training step's
// convolutions have pushed the interpreter out of the caches). Device-neutral: the forward and
// backward ops go through the dispatcher (under torch.compile, to the fake kernels registered
// from Python).
//
// Saved for backward: input, weight, bias and the statistics the forward normalised with. A
// plain backward calls batch_norm_leaky_relu_backward below autograd. With create_graph
// (double backward) it runs the closed form in differentiable aten ops instead, the batch
// statistics recomputed from x in training so that their dependence on x is differentiated
// too: the same operations, in the same order, as batch_norm_leaky_relu_backward in
// fastgen/reference/batch_norm_leaky_relu.py. (memory_saving=True and the batch_stats= form
// keep their Python autograd: fastgen/ops/_batch_norm_leaky_relu_autograd.py.)

#include <ATen/ATen.h>
#include <ATen/core/dispatch/Dispatcher.h>
#include <torch/autograd.h>
#include <torch/library.h>

#include <tuple>

namespace fastgen::batch_norm_leaky_relu {
namespace {

using torch::autograd::AutogradContext;
using torch::autograd::variable_list;
using Stats = std::tuple<at::Tensor, at::Tensor, at::Tensor>;

at::Tensor per_channel(const at::Tensor& t) {
  return t.view({1, -1, 1, 1});
}

std::optional<at::Tensor> optional(const at::Tensor& t) {
  return t.defined() ? std::optional<at::Tensor>(t) : std::nullopt;
}

// (grad_x, grad_weight, grad_bias) in differentiable ops (see the top of the file).
Stats differentiable_backward(const at::Tensor& grad_out, const at::Tensor& input,
                              const at::Tensor& weight, const at::Tensor& bias, at::Tensor mean,
                              at::Tensor var, bool training, double eps, double negative_slope) {
  const bool half = input.scalar_type() == at::kBFloat16 || input.scalar_type() == at::kHalf;
  const at::ScalarType acc = half ? at::kFloat : input.scalar_type();
  const std::vector<int64_t> dims{0, 2, 3};
  const at::Tensor x = input.to(acc);
  if (training) {
    mean = x.mean(dims);
    var = (x - per_channel(mean)).square().mean(dims);
  }
  const at::Tensor w = weight.defined() ? weight.to(acc) : at::Tensor();
  const at::Tensor b = bias.defined() ? bias.to(acc) : at::Tensor();
  const at::Tensor dy = grad_out.to(acc);
  const at::Tensor invstd = at::rsqrt(var.add(eps));
  const at::Tensor xhat = (x - per_channel(mean)) * per_channel(invstd);
  at::Tensor v = w.defined() ? xhat * per_channel(w) : xhat;
  if (b.defined()) v = v + per_channel(b);
  const at::Tensor g = at::where(v.gt(0), dy, dy.mul(negative_slope));
  const at::Tensor scale = w.defined() ? w * invstd : invstd;
  const at::Tensor grad_bias = g.sum(dims);
  const at::Tensor grad_weight = (g * xhat).sum(dims);
  const at::Tensor grad_x =
      training ? per_channel(scale) *
                     (g - per_channel(g.mean(dims)) - xhat * per_channel((g * xhat).mean(dims)))
               : g * per_channel(scale);
  return {grad_x.to(input.scalar_type()),
          weight.defined() ? grad_weight.to(weight.scalar_type()) : grad_weight,
          bias.defined() ? grad_bias.to(bias.scalar_type()) : grad_bias};
}

class BatchNormLeakyReLUFunction : public torch::autograd::Function<BatchNormLeakyReLUFunction> {
 public:
  static variable_list forward(AutogradContext* ctx, const at::Tensor& input,
                               const std::optional<at::Tensor>& weight,
                               const std::optional<at::Tensor>& bias,
                               const std::optional<at::Tensor>& running_mean,
                               const std::optional<at::Tensor>& running_var, bool training,
                               double eps, double negative_slope) {
    static auto op =
        c10::Dispatcher::singleton()
            .findSchemaOrThrow("fastgen::batch_norm_leaky_relu", "")
            .typed<Stats(const at::Tensor&, const std::optional<at::Tensor>&,
                         const std::optional<at::Tensor>&, const std::optional<at::Tensor>&,
                         const std::optional<at::Tensor>&, bool, double, double)>();
    at::AutoDispatchBelowADInplaceOrView guard;
    auto [out, mean, var] =
        op.call(input, weight, bias, running_mean, running_var, training, eps, negative_slope);
    ctx->save_for_backward(
        {input, weight.value_or(at::Tensor()), bias.value_or(at::Tensor()), mean, var});
    ctx->saved_data["training"] = training;
    ctx->saved_data["eps"] = eps;
    ctx->saved_data["negative_slope"] = negative_slope;
    ctx->mark_non_differentiable({mean, var});
    return {out, mean, var};
  }

  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    static auto op =
        c10::Dispatcher::singleton()
            .findSchemaOrThrow("fastgen::batch_norm_leaky_relu_backward", "")
            .typed<Stats(const at::Tensor&, const at::Tensor&, const std::optional<at::Tensor>&,
                         const std::optional<at::Tensor>&, const at::Tensor&, const at::Tensor&,
                         bool, double, double, std::array<bool, 3>)>();
    const variable_list saved = ctx->get_saved_variables();
    const at::Tensor &input = saved[0], &weight = saved[1], &bias = saved[2];
    const bool training = ctx->saved_data["training"].toBool();
    const double eps = ctx->saved_data["eps"].toDouble();
    const double slope = ctx->saved_data["negative_slope"].toDouble();
    // needs_input_grad counts only the tensor arguments given (an absent weight moves bias to
    // edge 1).
    const bool weight_grad = weight.defined() && ctx->needs_input_grad(1);
    const bool bias_grad = bias.defined() && ctx->needs_input_grad(weight.defined() ? 2 : 1);
    const std::array<bool, 3> mask{ctx->needs_input_grad(0), weight_grad, bias_grad};
    Stats result;
    if (at::GradMode::is_enabled()) {
      result = differentiable_backward(grads[0], input, weight, bias, saved[3], saved[4], training,
                                       eps, slope);
    } else {
      at::AutoDispatchBelowADInplaceOrView guard;
      result = op.call(grads[0], input, optional(weight), optional(bias), saved[3], saved[4],
                       training, eps, slope, mask);
    }
    return {mask[0] ? std::get<0>(result) : at::Tensor(),
            mask[1] ? std::get<1>(result) : at::Tensor(),
            mask[2] ? std::get<2>(result) : at::Tensor(),
            at::Tensor(),
            at::Tensor(),
            at::Tensor(),
            at::Tensor(),
            at::Tensor()};
  }
};

Stats batch_norm_leaky_relu_autograd(const at::Tensor& input,
                                     const std::optional<at::Tensor>& weight,
                                     const std::optional<at::Tensor>& bias,
                                     const std::optional<at::Tensor>& running_mean,
                                     const std::optional<at::Tensor>& running_var, bool training,
                                     double eps, double negative_slope) {
  const variable_list out = BatchNormLeakyReLUFunction::apply(
      input, weight, bias, running_mean, running_var, training, eps, negative_slope);
  return {out[0], out[1], out[2]};
}

}  // namespace

TORCH_LIBRARY_IMPL(fastgen, Autograd, m) {
  m.impl("batch_norm_leaky_relu", &batch_norm_leaky_relu_autograd);
}

}  // namespace fastgen::batch_norm_leaky_relu
