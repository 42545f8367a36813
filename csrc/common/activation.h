#pragma once
// Activations fused into epilogues. The derivative is expressed through the
// activation's *output* so backward passes can save the output instead of the
// pre-activation (for leaky_relu/relu this needs slope >= 0, which every caller checks).
//
// NaN goes where stock PyTorch sends it (a diverging model must stay visible): relu keeps
// NaN (aten's clamp_min), and its gradient passes through a NaN output (aten's
// threshold_backward zeroes only where output <= 0); leaky_relu's NaN becomes NaN * slope.

#include <c10/macros/Macros.h>
#include <c10/util/Exception.h>

#include <cmath>
#include <string_view>

namespace fastgen {

enum class Activation : int { Identity = 0, ReLU = 1, LeakyReLU = 2, Tanh = 3, Sigmoid = 4 };

inline Activation parse_activation(std::string_view name) {
  if (name == "identity") return Activation::Identity;
  if (name == "relu") return Activation::ReLU;
  if (name == "leaky_relu") return Activation::LeakyReLU;
  if (name == "tanh") return Activation::Tanh;
  if (name == "sigmoid") return Activation::Sigmoid;
  TORCH_CHECK_VALUE(
      false, "fastgen: activation must be one of identity, relu, leaky_relu, tanh, sigmoid, got '",
      std::string(name), "'");
}

template <Activation act, typename T>
C10_HOST_DEVICE inline T apply_activation(T x, T negative_slope) {
  if constexpr (act == Activation::ReLU) {
    return x <= T(0) ? T(0) : x;
  } else if constexpr (act == Activation::LeakyReLU) {
    return x > T(0) ? x : x * negative_slope;
  } else if constexpr (act == Activation::Tanh) {
    return std::tanh(x);
  } else if constexpr (act == Activation::Sigmoid) {
    return T(1) / (T(1) + std::exp(-x));
  } else {
    return x;
  }
}

// d act(x) / dx written in terms of y = act(x).
template <Activation act, typename T>
C10_HOST_DEVICE inline T activation_grad_from_output(T y, T negative_slope) {
  if constexpr (act == Activation::ReLU) {
    return y <= T(0) ? T(0) : T(1);
  } else if constexpr (act == Activation::LeakyReLU) {
    return y > T(0) ? T(1) : negative_slope;
  } else if constexpr (act == Activation::Tanh) {
    return T(1) - y * y;
  } else if constexpr (act == Activation::Sigmoid) {
    return y * (T(1) - y);
  } else {
    return T(1);
  }
}

}  // namespace fastgen
