#pragma once
// Convolution shapes that are better done as plain GEMMs on CPU than by the convolution
// primitives (measured on the 2-core CI CPU, DCGAN/VAE layers at batch 64, float32):
//   * a transposed convolution of a 1x1 input (the generator's first layer): one GEMM;
//   * a convolution whose output is 1x1 (the discriminator's head): one GEMM.
// (Layers to or from an image, 1-4 channels, have loops of their own: conv/few_channels.)
// All of them are one at::mm in the operands' own dtype (any floating dtype: a bfloat16 GEMM
// sums in float32 and rounds once, as aten's bfloat16 convolution does), reading NCHW or
// channels_last operands in place: the GEMM's columns run (h, w, c) for channels_last ones,
// and the weight, the small operand, is read in that order too.

#include <ATen/core/Tensor.h>

#include <array>
#include <tuple>

namespace fastgen {

bool is_transposed_single_pixel(const at::Tensor& input, const at::Tensor& weight,
                                std::array<int64_t, 2> padding,
                                std::array<int64_t, 2> output_padding,
                                std::array<int64_t, 2> dilation, int64_t groups);
bool is_single_pixel_output(const at::Tensor& input, const at::Tensor& weight,
                            std::array<int64_t, 2> padding, std::array<int64_t, 2> dilation,
                            int64_t groups);
// input [N, C_in, 1, 1], weight [C_in, C_out, kH, kW] -> [N, C_out, kH, kW], written
// channels_last if `channels_last` (the op's layout rule for the call) else NCHW.
at::Tensor transposed_single_pixel(const at::Tensor& input, const at::Tensor& weight,
                                   bool channels_last);
// (grad_input, grad_weight); undefined where the mask is false.
std::tuple<at::Tensor, at::Tensor> transposed_single_pixel_backward(const at::Tensor& grad_out,
                                                                    const at::Tensor& input,
                                                                    const at::Tensor& weight,
                                                                    std::array<bool, 2> mask);

// input [N, C_in, kH, kW], weight [C_out, C_in, kH, kW] -> [N, C_out, 1, 1].
at::Tensor single_pixel_output(const at::Tensor& input, const at::Tensor& weight);
std::tuple<at::Tensor, at::Tensor> single_pixel_output_backward(const at::Tensor& grad_out,
                                                                const at::Tensor& input,
                                                                const at::Tensor& weight,
                                                                std::array<bool, 2> mask);

}  // namespace fastgen
