#pragma once
// Convolution shapes that are better done as plain GEMMs on CPU than by the convolution
// primitives (measured on the 2-core CI CPU, DCGAN/VAE layers at batch 64, float32):
//   * a transposed convolution of a 1x1 input (the generator's first layer): one GEMM;
//   * a convolution whose output is 1x1 (the discriminator's head): one GEMM;
//   * a transposed convolution of an NCHW input to ONE channel (the grayscale output layer,
//     and the data gradient of a first convolution from one channel): GEMM + col2im, 1.2 ms
//     where oneDNN took 6.4 ms for 64 -> 1 channels at 16x16 -> 32x32. To 3 channels (RGB)
//     or from a channels_last input oneDNN was faster (up to 2x), so those stay with it.
// All of them use public aten ops only, for float32 and float64.

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
bool is_transposed_to_one_channel(const at::Tensor& input, const at::Tensor& weight,
                                  int64_t groups);

// input [N, C_in, 1, 1], weight [C_in, C_out, kH, kW] -> [N, C_out, kH, kW].
at::Tensor transposed_single_pixel(const at::Tensor& input, const at::Tensor& weight);
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

// The transposed convolution (groups 1, no bias) as cols = weight^T @ input per sample, then
// col2im onto an output of `output_size`. Returns NCHW.
at::Tensor transposed_by_col2im(const at::Tensor& input, const at::Tensor& weight,
                                std::array<int64_t, 2> output_size, std::array<int64_t, 2> stride,
                                std::array<int64_t, 2> padding, std::array<int64_t, 2> dilation);

// Its backward: cols = im2col(grad_out) [N, C_out * kH * kW, H * W] once, then
// grad_input[n] = weight [C_in, C_out * kH * kW] @ cols[n] and
// grad_weight = sum over n of input[n] [C_in, H * W] @ cols[n]^T.
std::tuple<at::Tensor, at::Tensor> transposed_by_col2im_backward(
    const at::Tensor& grad_out, const at::Tensor& input, const at::Tensor& weight,
    std::array<int64_t, 2> stride, std::array<int64_t, 2> padding, std::array<int64_t, 2> dilation,
    std::array<bool, 2> mask);

}  // namespace fastgen
