// CPU epilogues of both convolutions (conv2d, conv_transpose2d), compiled once per CPU
// capability (FASTGEN_CPU_NS: baseline, avx2, avx512; common/cpu_capability.h) so the loops
// vectorize at the width of the CPU they run on; conv_epilogue_cpu.cpp picks the copy.
//
// Forward: one in-place pass over the convolution's output adds the bias and applies the
// activation. NCHW walks H*W planes (one bias value per plane); channels_last walks rows of
// C values (the bias vector along the row). Backward: one pass computing
// grad_out * act'(output) elementwise. Half types compute in float32 (bfloat16 through
// float runs of common/bfloat16_chunks.h, so its loops vectorize too).
//
// Two things make these loops vectorize on every capability, and both are needed: the slope
// and the plane's bias are copied into locals inside each task (read through the lambda's
// captured references, the compiler must assume a store to the output may change them), and
// the kernel files are compiled with -fno-trapping-math (setup.py: otherwise GCC keeps the
// activation's compare-and-branch, except with AVX-512 masks). Measured: the baseline copy of
// the DCGAN discriminator's first layer spent ~6 ms a call in a mispredicted branch per
// element, against ~0.5 ms vectorized.

#include "common/bfloat16_chunks.h"
#include "common/parallel.h"
#include "conv/conv_common.h"

#include <ATen/Parallel.h>
#include <ATen/core/Tensor.h>
#include <ATen/ops/empty_like.h>

#include <algorithm>
#include <type_traits>
#include <vector>

#include "common/dispatch.h"

namespace fastgen::conv_epilogue::FASTGEN_CPU_NS {
namespace {

using bfloat16_chunks::kChunk;

template <typename scalar_t>
constexpr bool kIsBFloat16 = std::is_same_v<scalar_t, c10::BFloat16>;

template <Activation act, typename scalar_t>
void bias_activation_nchw(scalar_t* data, const scalar_t* bias, int64_t planes, int64_t channels,
                          int64_t plane_size, acc_t<scalar_t> negative_slope) {
  using acc = acc_t<scalar_t>;
  at::parallel_for(0, planes, parallel::grain(plane_size), [&](int64_t begin, int64_t end) {
    const acc slope = negative_slope;
    for (int64_t plane = begin; plane < end; ++plane) {
      const acc b = bias ? static_cast<acc>(bias[plane % channels]) : acc(0);
      scalar_t* __restrict__ row = data + plane * plane_size;
      if constexpr (kIsBFloat16<scalar_t>) {
        bfloat16_chunks::update_in_float(row, plane_size, [&](float* v, int64_t, int64_t count) {
          for (int64_t i = 0; i < count; ++i) v[i] = apply_activation<act>(v[i] + b, slope);
        });
      } else {
        for (int64_t i = 0; i < plane_size; ++i) {
          row[i] =
              static_cast<scalar_t>(apply_activation<act>(static_cast<acc>(row[i]) + b, slope));
        }
      }
    }
  });
}

template <Activation act, typename scalar_t>
void bias_activation_channels_last(scalar_t* data, const scalar_t* bias, int64_t pixels,
                                   int64_t channels, acc_t<scalar_t> negative_slope) {
  using acc = acc_t<scalar_t>;
  // The bias row in the compute type once, so the inner loop is a plain vectorisable add.
  std::vector<acc> bias_acc(channels, acc(0));
  if (bias) {
    for (int64_t c = 0; c < channels; ++c) bias_acc[c] = static_cast<acc>(bias[c]);
  }
  const acc* __restrict__ b = bias_acc.data();
  at::parallel_for(0, pixels, parallel::grain(channels), [&](int64_t begin, int64_t end) {
    const acc slope = negative_slope;
    for (int64_t pixel = begin; pixel < end; ++pixel) {
      scalar_t* __restrict__ row = data + pixel * channels;
      if constexpr (kIsBFloat16<scalar_t>) {
        bfloat16_chunks::update_in_float(
            row, channels, [&](float* v, int64_t first, int64_t count) {
              for (int64_t c = 0; c < count; ++c)
                v[c] = apply_activation<act>(v[c] + b[first + c], slope);
            });
      } else {
        for (int64_t c = 0; c < channels; ++c) {
          row[c] =
              static_cast<scalar_t>(apply_activation<act>(static_cast<acc>(row[c]) + b[c], slope));
        }
      }
    }
  });
}

template <Activation act, typename scalar_t>
void activation_backward_typed(const scalar_t* __restrict__ grad_out,
                               const scalar_t* __restrict__ output, scalar_t* __restrict__ grad_pre,
                               int64_t numel, double negative_slope) {
  using acc = acc_t<scalar_t>;
  at::parallel_for(0, numel, parallel::kGrainElements, [&](int64_t begin, int64_t end) {
    const acc slope = static_cast<acc>(negative_slope);
    if constexpr (kIsBFloat16<scalar_t>) {
      float grad[kChunk], out[kChunk];
      for (int64_t start = begin; start < end; start += kChunk) {
        const int64_t m = std::min(kChunk, end - start);
        bfloat16_chunks::widen(grad_out + start, grad, m);
        bfloat16_chunks::widen(output + start, out, m);
        for (int64_t i = 0; i < m; ++i) grad[i] *= activation_grad_from_output<act>(out[i], slope);
        bfloat16_chunks::narrow(grad, grad_pre + start, m);
      }
    } else {
      for (int64_t i = begin; i < end; ++i) {
        grad_pre[i] = static_cast<scalar_t>(
            static_cast<acc>(grad_out[i]) *
            activation_grad_from_output<act>(static_cast<acc>(output[i]), slope));
      }
    }
  });
}

}  // namespace

void bias_activation(at::Tensor& out, const at::Tensor& bias, Activation activation,
                     double negative_slope) {
  FASTGEN_DISPATCH_FLOATING_TYPES(out.scalar_type(), "fastgen::conv_transpose2d", [&] {
    dispatch_activation(activation, [&]<Activation act>() {
      const int64_t channels = out.size(1);
      const int64_t plane_size = out.size(2) * out.size(3);
      const scalar_t* bias_ptr = bias.defined() ? bias.const_data_ptr<scalar_t>() : nullptr;
      const auto slope = static_cast<acc_t<scalar_t>>(negative_slope);
      if (out.is_contiguous()) {
        bias_activation_nchw<act>(out.mutable_data_ptr<scalar_t>(), bias_ptr,
                                  out.size(0) * channels, channels, plane_size, slope);
      } else {
        TORCH_CHECK(out.is_contiguous(c10::MemoryFormat::ChannelsLast),
                    "fastgen::conv_transpose2d: internal: output neither NCHW nor channels_last");
        bias_activation_channels_last<act>(out.mutable_data_ptr<scalar_t>(), bias_ptr,
                                           out.size(0) * plane_size, channels, slope);
      }
    });
  });
}

at::Tensor activation_backward(const at::Tensor& grad_out, const at::Tensor& output,
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

}  // namespace fastgen::conv_epilogue::FASTGEN_CPU_NS
