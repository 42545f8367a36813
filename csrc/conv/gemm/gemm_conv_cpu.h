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
#include <optional>

#include "conv/conv_engine.h"
#include "conv/conv_select_cpu.h"

namespace fastgen::gemm_shapes {

// The convolution without bias (conv2d or conv_transpose2d per geometry.transposed) as one
// GEMM where the shape is one of the above, and its backward ((grad_input, grad_weight,
// undefined): the drivers sum grad_bias); nullopt otherwise. Native candidates of
// conv/conv_select_cpu.h: operands in their own dtype, `operands` unused.
conv::select::ForwardCandidate forward;
conv::select::BackwardCandidate backward;

}  // namespace fastgen::gemm_shapes
