#pragma once
// Which convolution a CPU call of conv2d / conv_transpose2d runs: fastgen's own kernel for the
// shape (Winograd F(4x4, 2x2), one of the GEMM shapes of conv/gemm/gemm_conv_cpu.h, or the
// loops and GEMMs of a layer to or from an image, conv/few_channels) or aten's (oneDNN). Neither
// wins everywhere: on the DCGAN layers fastgen's kernels are up to 2.4x faster in float32, while
// aten's bfloat16 convolutions (AVX-512 BF16 on CPUs that have it) beat them on others, and which
// one wins moves with the batch, the channels, the threads and the CPU. So the choice is measured,
// as torch.backends.cudnn.benchmark does on CUDA: the first call of a new key (op and pass, every
// operand's sizes, dtype and layout, the geometry, the backward's mask, the thread count and the
// CPU copy) runs both candidates a few times in the process itself and remembers the faster for the
// rest of the process; fastgen's must be at least 5% faster (a close call goes to aten:
// conv_select_cpu.cpp says why). The epilogue (bias + activation) stays fused whichever convolution
// runs: the drivers add it around this choice.
//
// The GEMM shapes and the image layers take half-precision operands as they come (Own's
// native candidates: bfloat16 GEMMs and loops sum in float32). For the Winograd kernels,
// bfloat16 and float16 operands (torch.autocast) are converted to float32 on load and the
// result rounded back: the float32 kernels then do the work, and their
// products of half-precision values are exact in float32, so the result is at least as close
// to the exact one as aten's half-precision convolution (numbers in the README). The one
// exception: on CPUs with AVX-512 BF16 the Winograd kernels multiply bfloat16 operands' transforms
// in bfloat16 (winograd::Products), within the contract the README's "bf16 on CPU" states.
//
// Policy, read from the environment on every call (so tests can switch it):
//   FASTGEN_CONV_CPU=fastgen  fastgen's kernel wherever it has one, no timing;
//   FASTGEN_CONV_CPU=aten     aten's convolution always;
//   FASTGEN_AUTOTUNE=0        the fixed rules of earlier versions: fastgen's kernel for float32 /
//                             float64 where it has one, aten for half-precision calls;
//   otherwise                 measured per key (the default).
// FASTGEN_AUTOTUNE_LOG=1 prints one line per measured key to stderr.

#include <ATen/core/Tensor.h>

#include <array>
#include <optional>
#include <string>
#include <tuple>
#include <vector>

#include "conv/conv_engine.h"

namespace fastgen::conv::select {

enum class Policy { Autotune, FixedRules, Fastgen, Aten };

// The policy the environment asks for now (errors name the variable and its values).
Policy policy();

using Grads = std::tuple<at::Tensor, at::Tensor, at::Tensor>;

// fastgen's own convolution of a call for float32/float64 operands, or nullopt where it has
// none for the shape; it may still fall back to aten for the call's values (Winograd's range
// check), which counts as its own. `operands` is the dtype the call's operands had before
// they were converted to float32 (the tensors' own dtype for float32/float64 calls): a kernel
// may multiply bfloat16 operands in bfloat16 (winograd::Products).
// (The function types, so a kernel's header can declare a candidate as `ForwardCandidate name;`.)
using ForwardCandidate = std::optional<at::Tensor>(const at::Tensor& input,
                                                   const at::Tensor& weight,
                                                   const Geometry& geometry,
                                                   at::ScalarType operands);
using BackwardCandidate = std::optional<Grads>(const at::Tensor& grad_pre, const at::Tensor& input,
                                               const at::Tensor& weight, const Geometry& geometry,
                                               std::array<bool, 3> output_mask,
                                               at::ScalarType operands);
using OwnForward = ForwardCandidate*;
using OwnBackward = BackwardCandidate*;

// fastgen's candidates for a call: `forward` / `backward` as above (half-precision operands
// converted around them), and the native ones, tried first in order, which take the operands
// in any dtype as they come (the GEMM shapes, conv/gemm, and the image layers,
// conv/few_channels: bfloat16 GEMMs and loops sum in float32) and have the same contract
// otherwise. Any may be null.
struct Own {
  OwnForward forward = nullptr;
  std::array<OwnForward, 2> native_forward{};
  OwnBackward backward = nullptr;
  std::array<OwnBackward, 2> native_backward{};
};

// The convolution (without bias) of `op` ("conv2d" or "conv_transpose2d"), by the policy.
at::Tensor forward(const char* op, const at::Tensor& input, const at::Tensor& weight,
                   const Geometry& geometry, const Own& own);
// Its backward, as conv::Convolution::backward (conv/conv_common.h) returns it.
Grads backward(const char* op, const at::Tensor& grad_pre, const at::Tensor& input,
               const at::Tensor& weight, const Geometry& geometry, std::array<bool, 3> output_mask,
               const Own& own);

// Whether the process has measured `op`'s forward for these operands, and its backward with
// `backward_mask` (nullopt: no backward wanted), and aten's convolution won every one of them
// (or fastgen has no kernel for the shape). Only under the measured policy; any other policy,
// or a pass not measured yet, answers false. The backward's key assumes grad_out in the
// output's layout (conv_format), as a training step passes it. The Python ops then call the
// stock functional op directly where nothing is left to fuse (fastgen/ops/_conv.py). `dtype`
// is the dtype the operands will have (a layer under autocast asks before casting them).
bool measured_aten(const char* op, const at::Tensor& input, const at::Tensor& weight,
                   at::ScalarType dtype, const Geometry& geometry,
                   std::optional<std::array<bool, 3>> backward_mask);

// What the process has measured so far, for `fastgen info`, tests and the benchmarks.
struct Record {
  std::string key;
  std::string choice;      // "fastgen" or "aten"
  double fastgen_ms = -1;  // best of the timed runs; -1 where fastgen has no kernel
  double aten_ms = -1;
  int64_t measurements = 0;  // how often this key was timed (1: a key seen again is not)
};
std::vector<Record> records();
// Forgets every choice (tests; a process otherwise keeps them for its life).
void reset();
// Takes `choice` ("fastgen" or "aten") for `key` without timing it: a resumed training run
// restores the choices its checkpoint recorded, so it runs the same kernels as the run it
// continues and stays bit-for-bit identical to an uninterrupted one.
void prefer(const std::string& key, const std::string& choice);

}  // namespace fastgen::conv::select
