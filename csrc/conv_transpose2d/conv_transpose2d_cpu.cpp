// CPU epilogues of fastgen::conv_transpose2d and its CPU registration.
//
// Forward: one in-place pass over the convolution's output adds the bias and applies the
// activation. NCHW walks H*W planes (one bias value per plane); channels_last walks rows of
// C values (the bias vector along the row). Backward: one pass computing
// grad_out * act'(output) elementwise. Half types compute in float32.

#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include "common/parallel.h"
#include "common/activation.h"
#include "common/dispatch.h"
#include "common/emulated_cuda.h"
#include "conv_transpose2d/conv_transpose2d.h"

namespace fastgen {

namespace {

template <Activation act, typename scalar_t>
void bias_activation_nchw(scalar_t* data, const scalar_t* bias, int64_t planes, int64_t channels,
                          int64_t plane_size, acc_t<scalar_t> slope) {
  using acc = acc_t<scalar_t>;
  const int64_t grain = parallel::grain(plane_size);
  at::parallel_for(0, planes, grain, [&](int64_t begin, int64_t end) {
    for (int64_t plane = begin; plane < end; ++plane) {
      const acc b = bias ? static_cast<acc>(bias[plane % channels]) : acc(0);
      scalar_t* row = data + plane * plane_size;
      for (int64_t i = 0; i < plane_size; ++i) {
        row[i] = static_cast<scalar_t>(apply_activation<act>(static_cast<acc>(row[i]) + b, slope));
      }
    }
  });
}

template <Activation act, typename scalar_t>
void bias_activation_channels_last(scalar_t* data, const scalar_t* bias, int64_t pixels,
                                   int64_t channels, acc_t<scalar_t> slope) {
  using acc = acc_t<scalar_t>;
  // The bias row in the compute type once, so the inner loop is a plain vectorisable add.
  std::vector<acc> bias_acc(channels, acc(0));
  if (bias) {
    for (int64_t c = 0; c < channels; ++c) bias_acc[c] = static_cast<acc>(bias[c]);
  }
  const acc* b = bias_acc.data();
  const int64_t grain = parallel::grain(channels);
  at::parallel_for(0, pixels, grain, [&](int64_t begin, int64_t end) {
    for (int64_t pixel = begin; pixel < end; ++pixel) {
      scalar_t* row = data + pixel * channels;
      for (int64_t c = 0; c < channels; ++c) {
        row[c] =
            static_cast<scalar_t>(apply_activation<act>(static_cast<acc>(row[c]) + b[c], slope));
      }
    }
  });
}

template <Activation act, typename scalar_t>
void bias_activation_typed(at::Tensor& out, const at::Tensor& bias, double negative_slope) {
  const int64_t channels = out.size(1);
  const int64_t plane_size = out.size(2) * out.size(3);
  const scalar_t* bias_ptr = bias.defined() ? bias.const_data_ptr<scalar_t>() : nullptr;
  const auto slope = static_cast<acc_t<scalar_t>>(negative_slope);
  if (out.is_contiguous()) {
    bias_activation_nchw<act>(out.mutable_data_ptr<scalar_t>(), bias_ptr, out.size(0) * channels,
                              channels, plane_size, slope);
  } else {
    TORCH_CHECK(out.is_contiguous(c10::MemoryFormat::ChannelsLast),
                "fastgen::conv_transpose2d: internal: output neither NCHW nor channels_last");
    bias_activation_channels_last<act>(out.mutable_data_ptr<scalar_t>(), bias_ptr,
                                       out.size(0) * plane_size, channels, slope);
  }
}

template <Activation act, typename scalar_t>
void activation_backward_typed(const scalar_t* grad_out, const scalar_t* output, scalar_t* grad_pre,
                               int64_t numel, double negative_slope) {
  using acc = acc_t<scalar_t>;
  const auto slope = static_cast<acc>(negative_slope);
  at::parallel_for(0, numel, parallel::kGrainElements, [&](int64_t begin, int64_t end) {
    for (int64_t i = begin; i < end; ++i) {
      grad_pre[i] = static_cast<scalar_t>(
          static_cast<acc>(grad_out[i]) *
          activation_grad_from_output<act>(static_cast<acc>(output[i]), slope));
    }
  });
}

}  // namespace

void bias_activation_cpu(at::Tensor& out, const at::Tensor& bias, Activation activation,
                         double negative_slope) {
  if (activation == Activation::Tanh || activation == Activation::Sigmoid) {
    // The extension is compiled for baseline x86-64, where a scalar std::tanh/exp per
    // element costs several times the memory pass; ATen's in-place tanh_/sigmoid_ pick
    // AVX2/AVX-512 code at run time. So: the bias pass here, then ATen's activation pass.
    // Measured on the 2-core CI CPU (DCGAN output layer 16->3, 32x32 -> 64x64, N=16):
    // one scalar pass 4.7 ms vs 2.7 ms for stock conv + tanh.
    if (bias.defined()) bias_activation_cpu(out, bias, Activation::Identity, negative_slope);
    if (activation == Activation::Tanh) {
      out.tanh_();
    } else {
      out.sigmoid_();
    }
    return;
  }
  FASTGEN_DISPATCH_FLOATING_TYPES(out.scalar_type(), "fastgen::conv_transpose2d", [&] {
    dispatch_activation(activation, [&]<Activation act>() {
      bias_activation_typed<act, scalar_t>(out, bias, negative_slope);
    });
  });
}

at::Tensor activation_backward_cpu(const at::Tensor& grad_out, const at::Tensor& output,
                                   Activation activation, double negative_slope) {
  // Same layout as output, so one flat elementwise loop pairs the right elements.
  const auto format = conv_memory_format(output);
  at::Tensor grad = grad_out.contiguous(format);
  at::Tensor out = output.contiguous(format);
  at::Tensor grad_pre = at::empty_like(out, out.options().memory_format(format));
  FASTGEN_DISPATCH_FLOATING_TYPES(out.scalar_type(), "fastgen::conv_transpose2d_backward", [&] {
    dispatch_activation(activation, [&]<Activation act>() {
      activation_backward_typed<act, scalar_t>(
          grad.const_data_ptr<scalar_t>(), out.const_data_ptr<scalar_t>(),
          grad_pre.mutable_data_ptr<scalar_t>(), out.numel(), negative_slope);
    });
  });
  return grad_pre;
}

// The CPU backend's epilogues, or, while the emulated-cuda backend is on, the CUDA ones run
// by the emulator around the aten convolution (what the CUDA build does with cuDNN).
ConvTranspose2dEpilogues cpu_epilogues() {
  if (const emulation::Kernels* kernels = emulation::active()) {
    return {kernels->bias_activation, kernels->activation_backward, /*cpu_convolutions=*/false,
            &kernels->conv_engine};
  }
  return {bias_activation_cpu, activation_backward_cpu, /*cpu_convolutions=*/true};
}

TORCH_LIBRARY_IMPL(fastgen, CPU, m) {
  m.impl("conv_transpose2d", &conv_transpose2d_op<cpu_epilogues>);
  m.impl("conv_transpose2d_backward", &conv_transpose2d_backward_op<cpu_epilogues>);
  m.impl("conv_transpose2d_with_stats", &conv_transpose2d_with_stats_op<cpu_epilogues>);
  emulation::note_routed("conv_transpose2d");
  emulation::note_routed("conv_transpose2d_backward");
  emulation::note_routed("conv_transpose2d_with_stats");
}

}  // namespace fastgen
