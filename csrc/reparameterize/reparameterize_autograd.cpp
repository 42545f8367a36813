// Autograd kernel of fastgen::reparameterize, in C++ so that eager calls skip Python's
// autograd layer (torch.library's wrapper or an autograd.Function apply, and a Python
// backward): at VAE latent sizes that layer cost as much as the kernels. Device-neutral: it
// calls the forward and backward ops through the dispatcher, which picks the CPU or CUDA
// kernel (and under torch.compile the fake kernels registered from Python).
//
// Saved for backward: mu, logvar, eps (if given) and the (seed, offset) key the forward used,
// never the noise: the backward op regenerates it. reparameterize_backward has its own
// (Python) autograd registration, which is what makes double backward work; a plain
// backward (no create_graph) calls below autograd and so skips that Python layer.

#include <ATen/core/dispatch/Dispatcher.h>
#include <torch/autograd.h>
#include <torch/library.h>

#include <vector>

namespace fastgen::reparameterize {
namespace {

using torch::autograd::AutogradContext;
using torch::autograd::variable_list;

std::tuple<at::Tensor, at::Tensor, at::Tensor> call_forward(
    const at::Tensor& mu, const at::Tensor& logvar, const std::optional<at::Tensor>& eps,
    const std::optional<at::Tensor>& rng_state, bool compute_kl) {
  static auto op = c10::Dispatcher::singleton()
                       .findSchemaOrThrow("fastgen::reparameterize", "")
                       .typed<std::tuple<at::Tensor, at::Tensor, at::Tensor>(
                           const at::Tensor&, const at::Tensor&, const std::optional<at::Tensor>&,
                           const std::optional<at::Tensor>&, bool)>();
  return op.call(mu, logvar, eps, rng_state, compute_kl);
}

std::tuple<at::Tensor, at::Tensor> call_backward(const at::Tensor& grad_z,
                                                 const at::Tensor& grad_kl, const at::Tensor& mu,
                                                 const at::Tensor& logvar,
                                                 const std::optional<at::Tensor>& eps,
                                                 const at::Tensor& rng_state) {
  static auto op =
      c10::Dispatcher::singleton()
          .findSchemaOrThrow("fastgen::reparameterize_backward", "")
          .typed<std::tuple<at::Tensor, at::Tensor>(
              const at::Tensor&, const at::Tensor&, const at::Tensor&, const at::Tensor&,
              const std::optional<at::Tensor>&, const at::Tensor&)>();
  return op.call(grad_z, grad_kl, mu, logvar, eps, rng_state);
}

class ReparameterizeFunction : public torch::autograd::Function<ReparameterizeFunction> {
 public:
  static variable_list forward(AutogradContext* ctx, const at::Tensor& mu, const at::Tensor& logvar,
                               const std::optional<at::Tensor>& eps,
                               const std::optional<at::Tensor>& rng_state, bool compute_kl) {
    at::AutoDispatchBelowADInplaceOrView guard;
    auto [z, kl, key] = call_forward(mu, logvar, eps, rng_state, compute_kl);
    const bool has_eps = eps.has_value() && eps->defined();
    ctx->save_for_backward({mu, logvar, has_eps ? *eps : at::Tensor(), key});
    ctx->saved_data["has_eps"] = has_eps;
    ctx->mark_non_differentiable({key});
    ctx->set_materialize_grads(false);  // backward fills in only what it needs
    return {z, kl, key};
  }

  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    const variable_list saved = ctx->get_saved_variables();
    const at::Tensor& mu = saved[0];
    const at::Tensor& logvar = saved[1];
    const bool has_eps = ctx->saved_data["has_eps"].toBool();
    const std::optional<at::Tensor> eps =
        has_eps ? std::optional<at::Tensor>(saved[2]) : std::nullopt;
    at::Tensor grad_z = grads[0];
    at::Tensor grad_kl = grads[1];
    if (!grad_z.defined() && !grad_kl.defined()) {
      return {at::Tensor(), at::Tensor(), at::Tensor(), at::Tensor(), at::Tensor()};
    }
    if (!grad_z.defined()) {
      // Only kl reaches the loss. Stock autograd then has no z path at all, where a zero
      // grad_z would give 0 * inf = NaN (an infinite eps or exp(logvar / 2)): the KL gradient
      // alone, with stock's operations (issue 24.8); eps gets none.
      std::vector<int64_t> shape(mu.dim(), 1);
      shape[0] = mu.size(0);
      const at::Tensor q = grad_kl.mul(-0.5).view(shape);
      return {ctx->needs_input_grad(0) ? q.neg().mul(mu.mul(2)) : at::Tensor(),
              ctx->needs_input_grad(1) ? q.sub(q.mul(logvar.exp())) : at::Tensor(), at::Tensor(),
              at::Tensor(), at::Tensor()};
    }
    if (!grad_kl.defined()) grad_kl = mu.new_empty({0});
    at::Tensor grad_mu, grad_logvar;
    if (at::GradMode::is_enabled()) {
      // create_graph: through the backward op's own autograd (double backward).
      std::tie(grad_mu, grad_logvar) = call_backward(grad_z, grad_kl, mu, logvar, eps, saved[3]);
    } else {
      // Plain backward: skip that (Python) autograd layer, straight to the kernel.
      at::AutoDispatchBelowADInplaceOrView guard;
      std::tie(grad_mu, grad_logvar) = call_backward(grad_z, grad_kl, mu, logvar, eps, saved[3]);
    }
    at::Tensor grad_eps;
    if (has_eps && ctx->needs_input_grad(2)) grad_eps = grad_z.mul(logvar.mul(0.5).exp());
    return {ctx->needs_input_grad(0) ? grad_mu : at::Tensor(),
            ctx->needs_input_grad(1) ? grad_logvar : at::Tensor(), grad_eps, at::Tensor(),
            at::Tensor()};
  }
};

std::tuple<at::Tensor, at::Tensor, at::Tensor> reparameterize_autograd(
    const at::Tensor& mu, const at::Tensor& logvar, const std::optional<at::Tensor>& eps,
    const std::optional<at::Tensor>& rng_state, bool compute_kl) {
  const variable_list out = ReparameterizeFunction::apply(mu, logvar, eps, rng_state, compute_kl);
  return {out[0], out[1], out[2]};
}

}  // namespace

TORCH_LIBRARY_IMPL(fastgen, Autograd, m) {
  m.impl("reparameterize", &reparameterize_autograd);
}

}  // namespace fastgen::reparameterize
