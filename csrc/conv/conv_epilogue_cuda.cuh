#pragma once
// The CUDA epilogues of fastgen::conv2d and fastgen::conv_transpose2d: the kernels and their
// launchers, compiled by nvcc (conv_epilogue_cuda.cu) and against the SIMT emulator
// (conv_epilogue_emulated.cpp) from this one source. Their CPU twins are
// conv_epilogue_cpu.cpp and conv_epilogue_cpu_kernels.cpp.
//
// On the library route the convolution itself is cuDNN's, reached through the public aten
// ops (conv::library_forward, conv_common.cpp); these kernels are the one extra pass that adds
// the bias and applies the activation in place, and the one pass of the backward that turns
// grad_out into the pre-activation gradient. The implicit-GEMM engine (implicit_gemm_cuda.cuh)
// fuses both and does not use them.
//
// Layouts: NCHW launches a 2-D grid, blockIdx.y walking (n, c) planes so the bias value is
// read once per thread and no per-element division is needed; channels_last is a flat loop
// where the channel is index % C. Half types compute in float32.

#include <ATen/core/Tensor.h>
#include <ATen/ops/empty_like.h>

#include <algorithm>

#include "common/parallel.h"
#include "common/activation.h"
#include "common/dispatch.h"
#include "conv/conv_common.h"
#include "simt/simt.h"

namespace fastgen::FASTGEN_DEVICE_NS {

namespace conv_epilogue {

constexpr int kThreads = 256;

inline int64_t blocks_for(int64_t work) {
  // Enough blocks to fill the GPU a few times over; the kernels grid-stride beyond that.
  const int64_t sms = simt::multiprocessor_count();
  return std::max<int64_t>(1, std::min<int64_t>((work + kThreads - 1) / kThreads, sms * 32));
}

template <Activation act, typename scalar_t>
__global__ void bias_activation_nchw_kernel(scalar_t* __restrict__ data,
                                            const scalar_t* __restrict__ bias, int64_t planes,
                                            int64_t channels, int64_t plane_size,
                                            acc_t<scalar_t> slope) {
  using acc = acc_t<scalar_t>;
  for (int64_t plane = blockIdx.y; plane < planes; plane += gridDim.y) {
    const acc b = bias != nullptr ? static_cast<acc>(bias[plane % channels]) : acc(0);
    scalar_t* row = data + plane * plane_size;
    for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < plane_size;
         i += int64_t(gridDim.x) * blockDim.x) {
      row[i] = static_cast<scalar_t>(apply_activation<act>(static_cast<acc>(row[i]) + b, slope));
    }
  }
}

template <Activation act, typename scalar_t>
__global__ void bias_activation_channels_last_kernel(scalar_t* __restrict__ data,
                                                     const scalar_t* __restrict__ bias,
                                                     int64_t numel, int64_t channels,
                                                     acc_t<scalar_t> slope) {
  using acc = acc_t<scalar_t>;
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < numel;
       i += int64_t(gridDim.x) * blockDim.x) {
    const acc b = bias != nullptr ? static_cast<acc>(bias[i % channels]) : acc(0);
    data[i] = static_cast<scalar_t>(apply_activation<act>(static_cast<acc>(data[i]) + b, slope));
  }
}

template <Activation act, typename scalar_t>
__global__ void activation_backward_kernel(const scalar_t* __restrict__ grad_out,
                                           const scalar_t* __restrict__ output,
                                           scalar_t* __restrict__ grad_pre, int64_t numel,
                                           acc_t<scalar_t> slope) {
  using acc = acc_t<scalar_t>;
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < numel;
       i += int64_t(gridDim.x) * blockDim.x) {
    grad_pre[i] =
        static_cast<scalar_t>(static_cast<acc>(grad_out[i]) *
                              activation_grad_from_output<act>(static_cast<acc>(output[i]), slope));
  }
}

}  // namespace conv_epilogue

// Defined (not inline) here: the header is compiled once per build, by the .cu or the
// emulated .cpp, and both ops reach them through conv::Epilogues (conv_common.h).
void bias_activation(at::Tensor& out, const at::Tensor& bias, Activation activation,
                     double negative_slope) {
  using namespace conv_epilogue;
  if (out.numel() == 0) return;
  const simt::DeviceGuard guard(out.device());
  const simt::Stream stream = simt::current_stream();
  const int64_t channels = out.size(1);
  const int64_t plane_size = out.size(2) * out.size(3);
  const bool nchw = out.is_contiguous();
  TORCH_CHECK(nchw || out.is_contiguous(c10::MemoryFormat::ChannelsLast),
              "fastgen::conv_transpose2d: internal: output neither NCHW nor channels_last");
  FASTGEN_DISPATCH_FLOATING_TYPES(out.scalar_type(), "fastgen::conv_transpose2d", [&] {
    const auto slope = static_cast<acc_t<scalar_t>>(negative_slope);
    scalar_t* data = out.mutable_data_ptr<scalar_t>();
    const scalar_t* bias_ptr = bias.defined() ? bias.const_data_ptr<scalar_t>() : nullptr;
    dispatch_activation(activation, [&]<Activation act>() {
      if (nchw) {
        const int64_t planes = out.size(0) * channels;
        const dim3 grid(
            static_cast<unsigned>(std::min<int64_t>((plane_size + kThreads - 1) / kThreads, 1024)),
            static_cast<unsigned>(std::min(planes, parallel::kMaxGridYZ)));
        simt::launch<bias_activation_nchw_kernel<act, scalar_t>>(
            {grid, kThreads, 0, stream}, data, bias_ptr, planes, channels, plane_size, slope);
      } else {
        simt::launch<bias_activation_channels_last_kernel<act, scalar_t>>(
            {dim3(blocks_for(out.numel())), kThreads, 0, stream}, data, bias_ptr, out.numel(),
            channels, slope);
      }
    });
  });
}

at::Tensor activation_backward(const at::Tensor& grad_out, const at::Tensor& output,
                               Activation activation, double negative_slope) {
  using namespace conv_epilogue;
  const simt::DeviceGuard guard(output.device());
  const auto format = conv_memory_format(output);
  at::Tensor grad = grad_out.contiguous(format);
  at::Tensor out = output.contiguous(format);
  at::Tensor grad_pre = at::empty_like(out, out.options().memory_format(format));
  if (out.numel() == 0) return grad_pre;
  const simt::Stream stream = simt::current_stream();
  FASTGEN_DISPATCH_FLOATING_TYPES(out.scalar_type(), "fastgen::conv_transpose2d_backward", [&] {
    const auto slope = static_cast<acc_t<scalar_t>>(negative_slope);
    dispatch_activation(activation, [&]<Activation act>() {
      simt::launch<activation_backward_kernel<act, scalar_t>>(
          {dim3(blocks_for(out.numel())), kThreads, 0, stream}, grad.const_data_ptr<scalar_t>(),
          out.const_data_ptr<scalar_t>(), grad_pre.mutable_data_ptr<scalar_t>(), out.numel(),
          slope);
    });
  });
  return grad_pre;
}

}  // namespace fastgen::FASTGEN_DEVICE_NS
