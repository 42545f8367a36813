// The emulator's self-test kernels (selftest.h). Each bug_ case plants one bug of a class
// issue 11 asks the emulator to catch; each clean case is the same kernel done right, so a
// test shows the emulator tells them apart (an emulator that rejected everything would fail
// the clean cases).

#include "simt/selftest.h"

#include <ATen/ops/empty.h>
#include <ATen/ops/zeros.h>
#include <c10/util/Exception.h>

#include <functional>
#include <map>

#include "simt/simt.h"
#include "simt/wmma.h"

namespace fastgen::simt {
namespace {

constexpr int kThreads = 64;

// Each thread publishes its id in shared memory and reads its neighbour's.
template <bool synchronised>
__global__ void neighbour_exchange(float* out) {
  FASTGEN_SHARED(values, float[kThreads]);
  const int i = int(threadIdx.x);
  values[i] = float(i);
  if constexpr (synchronised) __syncthreads();
  out[i] = values[(i + 1) % kThreads];
}

// Every thread adds one to a block counter.
template <bool atomic>
__global__ void count_threads(float* out) {
  FASTGEN_SHARED(count, int);
  if (threadIdx.x == 0) count = 0;
  __syncthreads();
  if constexpr (atomic) {
    atomicAdd(&count, 1);
  } else {
    count = count + 1;
  }
  __syncthreads();
  if (threadIdx.x == 0) out[0] = float(count);
}

// The same in global memory.
template <bool atomic>
__global__ void count_threads_global(int* counter) {
  if constexpr (atomic) {
    atomicAdd(counter, 1);
  } else {
    *counter = *counter + 1;
  }
}

// Each thread reads the value its mirror image wrote, after the barrier; in the divergent
// version only the even threads reach it (the odd ones read their own value and leave).
template <bool divergent>
__global__ void barrier(float* out) {
  FASTGEN_SHARED(values, float[kThreads]);
  const int i = int(threadIdx.x);
  values[i] = float(i);
  if (divergent && i % 2 == 1) {
    out[i] = values[i];
    return;
  }
  __syncthreads();
  out[i] = values[kThreads - 1 - i];
}

__global__ void write_index(float* out, int count) {
  const int i = int(blockIdx.x * blockDim.x + threadIdx.x);
  if (i < count) out[i] = float(i);
}

__global__ void write_index_unguarded(float* out, int) {
  const int i = int(blockIdx.x * blockDim.x + threadIdx.x);
  out[i] = float(i);
}

__global__ void block_row(float* out) {
  if (threadIdx.x == 0) out[blockIdx.y] = float(blockIdx.y);
}

template <bool early_exit>
__global__ void warp_sum(float* out) {
  if (early_exit && threadIdx.x >= 16) return;
  float v = float(threadIdx.x);
  for (int offset = 16; offset > 0; offset /= 2) v += __shfl_down_sync(0xffffffffu, v, offset);
  if (threadIdx.x == 0) out[0] = v;
}

__global__ void uninitialised_shared(float* out) {
  FASTGEN_SHARED(values, float[kThreads]);
  out[threadIdx.x] = values[threadIdx.x];
}

__global__ void big_static_shared(float* out) {
  FASTGEN_SHARED(values, float[12 * 1024 + 1]);  // 48 KiB + 4 bytes
  values[threadIdx.x] = 1.0f;
  out[threadIdx.x] = values[threadIdx.x];
}

__global__ void dynamic_shared_copy(float* out) {
  FASTGEN_DYNAMIC_SHARED(values, float);
  values[threadIdx.x] = float(threadIdx.x);
  __syncthreads();
  out[threadIdx.x] = values[threadIdx.x];
}

__global__ void empty_kernel(float*) {}

// One warp multiplies a 16x16 (A, row-major) by a 16x16 (B, column-major) tile of halves in
// 16x16x16 steps over K, accumulating in float; C = A * B is stored row-major. With
// `divergent`, only half the warp takes part: an error.
template <typename T, int M, int N, int K, bool divergent = false>
__global__ void wmma_gemm(const T* a, const T* b, float* c, int depth) {
  namespace wmma = nvcuda::wmma;
  using Input = std::conditional_t<std::is_same_v<T, float>, wmma::precision::tf32, T>;
  using Acc = std::conditional_t<std::is_same_v<T, double>, double, float>;
  if (divergent && threadIdx.x >= 16) return;
  wmma::fragment<wmma::matrix_a, M, N, K, Input, wmma::row_major> fa;
  wmma::fragment<wmma::matrix_b, M, N, K, Input, wmma::col_major> fb;
  wmma::fragment<wmma::accumulator, M, N, K, Acc> acc;
  wmma::fill_fragment(acc, Acc(0));
  for (int k = 0; k < depth; k += K) {
    wmma::load_matrix_sync(fa, a + k, depth);  // A is M x depth, row-major
    wmma::load_matrix_sync(fb, b + k, depth);  // B is depth x N, column-major
    wmma::mma_sync(acc, fa, fb, acc);
  }
  if constexpr (std::is_same_v<Acc, double>) {
    FASTGEN_SHARED(tile, double[M * N]);
    wmma::store_matrix_sync(tile, acc, N, wmma::mem_row_major);
    __syncthreads();
    for (int i = threadIdx.x; i < M * N; i += 32) c[i] = float(tile[i]);
  } else {
    wmma::store_matrix_sync(c, acc, N, wmma::mem_row_major);
  }
}

template <typename T = float>
at::Tensor zeros(int64_t n) {
  return at::zeros({n}, at::TensorOptions().dtype(c10::CppTypeToScalarType<T>::value));
}

std::vector<float> values(const at::Tensor& t) {
  const at::Tensor f = t.to(at::kFloat).contiguous();
  const float* data = f.const_data_ptr<float>();
  return {data, data + f.numel()};
}

// A case's run: kernel launched on n zeros of type T (its first argument, then args); returns
// what the kernel left in them, as floats.
template <auto kernel, typename T = float, typename... Args>
std::function<std::vector<float>()> on_zeros(int64_t n, LaunchConfig config, Args... args) {
  return [=] {
    at::Tensor out = zeros<T>(n);
    launch<kernel>(config, out.mutable_data_ptr<T>(), args...);
    return values(out);
  };
}

// The self-test's matrices: small multiples of powers of two, exact in every input type
// (tests/gpu/test_simt.py builds the same).
double matrix_value(int64_t index, int salt) {
  return double((index * (7 + 2 * salt) + salt) % 11 - 5) / 4.0;
}

template <typename T, int M, int N, int K, bool divergent = false>
std::vector<float> run_wmma(int depth) {
  const auto scalar = c10::CppTypeToScalarType<T>::value;
  at::Tensor a = at::empty({M * depth}, at::TensorOptions().dtype(at::kDouble));
  at::Tensor b = at::empty({N * depth}, at::TensorOptions().dtype(at::kDouble));
  for (int64_t i = 0; i < a.numel(); ++i) a.mutable_data_ptr<double>()[i] = matrix_value(i, 0);
  for (int64_t i = 0; i < b.numel(); ++i) b.mutable_data_ptr<double>()[i] = matrix_value(i, 1);
  a = a.to(scalar);
  b = b.to(scalar);
  at::Tensor c = zeros(M * N);
  launch<wmma_gemm<T, M, N, K, divergent>>({dim3(1), dim3(32)}, a.const_data_ptr<T>(),
                                           b.const_data_ptr<T>(), c.mutable_data_ptr<float>(),
                                           depth);
  return values(c);
}

struct Case {
  std::string description;
  std::function<std::vector<float>()> run;
};

const std::map<std::string, Case>& cases() {
  static const std::map<std::string, Case> table = {
      {"neighbour_exchange",
       {"shared memory written, __syncthreads, then read by another thread",
        on_zeros<neighbour_exchange<true>>(kThreads, {dim3(1), dim3(kThreads)})}},
      {"bug_read_shared_without_syncthreads",
       {"a read of shared memory another thread writes, with no __syncthreads before it",
        on_zeros<neighbour_exchange<false>>(kThreads, {dim3(1), dim3(kThreads)})}},
      {"atomic_counter",
       {"a shared counter every thread increments with atomicAdd",
        on_zeros<count_threads<true>>(1, {dim3(1), dim3(kThreads)})}},
      {"bug_racy_counter",
       {"a shared counter every thread increments without an atomic",
        on_zeros<count_threads<false>>(1, {dim3(1), dim3(kThreads)})}},
      {"atomic_counter_global",
       {"a global counter every thread increments with atomicAdd",
        on_zeros<count_threads_global<true>, int>(1, {dim3(2), dim3(kThreads)})}},
      {"bug_racy_counter_global",
       {"a global counter every thread increments without an atomic",
        on_zeros<count_threads_global<false>, int>(1, {dim3(2), dim3(kThreads)})}},
      {"uniform_barrier",
       {"a __syncthreads every thread reaches",
        on_zeros<barrier<false>>(kThreads, {dim3(1), dim3(kThreads)})}},
      {"bug_divergent_barrier",
       {"a __syncthreads inside a branch only half the threads take",
        on_zeros<barrier<true>>(kThreads, {dim3(1), dim3(kThreads)})}},
      {"guarded_write",
       {"a grid larger than the data, with the bounds check",
        on_zeros<write_index>(100, {dim3(2), dim3(kThreads)}, 100)}},
      {"bug_out_of_bounds_write",
       {"the same grid without the bounds check: writes past the tensor's end",
        on_zeros<write_index_unguarded>(100, {dim3(2), dim3(kThreads)}, 100)}},
      {"grid_y_65535",
       {"gridDim.y = 65535, sm_90's largest",
        [] {
          at::Tensor out = zeros(65535);
          launch<block_row>({dim3(1, 65535), dim3(1)}, out.mutable_data_ptr<float>());
          return std::vector<float>{values(out).back()};
        }}},
      {"bug_grid_y_70000",
       {"gridDim.y = 70000, over sm_90's 65535",
        on_zeros<block_row>(70000, {dim3(1, 70000), dim3(1)})}},
      {"bug_block_of_1025_threads",
       {"1025 threads per block, over the 1024 limit",
        on_zeros<empty_kernel>(1, {dim3(1), dim3(1025)})}},
      {"bug_zero_grid",
       {"a grid with a zero dimension (an empty tensor's launch)",
        on_zeros<empty_kernel>(1, {dim3(0), dim3(32)})}},
      {"warp_shuffle",
       {"a warp reduction by __shfl_down_sync with every lane present",
        on_zeros<warp_sum<false>>(1, {dim3(1), dim3(32)})}},
      {"bug_shuffle_with_exited_lanes",
       {"__shfl_down_sync with a full mask after half the warp returned",
        on_zeros<warp_sum<true>>(1, {dim3(1), dim3(32)})}},
      {"bug_shuffle_in_partial_warp",
       {"__shfl_down_sync with a full mask in a block of 20 threads (lanes 20..31 do not exist)",
        on_zeros<warp_sum<false>>(1, {dim3(1), dim3(20)})}},
      {"bug_uninitialised_shared_read",
       {"a read of shared memory no thread wrote",
        on_zeros<uninitialised_shared>(kThreads, {dim3(1), dim3(kThreads)})}},
      {"bug_static_shared_over_48k",
       {"48 KiB + 4 bytes of static shared memory",
        on_zeros<big_static_shared>(kThreads, {dim3(1), dim3(kThreads)})}},
      {"dynamic_shared_with_opt_in",
       {"64 KiB of dynamic shared memory after the opt-in",
        [] {
          at::Tensor out = zeros(kThreads);
          set_max_dynamic_shared<dynamic_shared_copy>(64 * 1024);
          launch<dynamic_shared_copy>({dim3(1), dim3(kThreads), 64 * 1024},
                                      out.mutable_data_ptr<float>());
          return values(out);
        }}},
      {"wmma_half",
       {"a 16x48 by 48x16 product of halves on the WMMA API (m16n16k16, float accumulator)",
        [] { return run_wmma<c10::Half, 16, 16, 16>(48); }}},
      {"wmma_bfloat16",
       {"the same with bfloat16 inputs", [] { return run_wmma<c10::BFloat16, 16, 16, 16>(32); }}},
      {"wmma_tf32",
       {"a 16x24 by 24x16 product in tf32 (m16n16k8)",
        [] { return run_wmma<float, 16, 16, 8>(24); }}},
      {"wmma_double",
       {"an 8x12 by 12x8 product of doubles (m8n8k4)",
        [] { return run_wmma<double, 8, 8, 4>(12); }}},
      {"bug_wmma_in_half_a_warp",
       {"wmma::load_matrix_sync called by 16 of the warp's 32 lanes",
        [] { return run_wmma<c10::Half, 16, 16, 16, true>(16); }}},
      {"bug_dynamic_shared_without_opt_in",
       {"64 KiB of dynamic shared memory without the opt-in",
        on_zeros<empty_kernel>(kThreads, {dim3(1), dim3(kThreads), 64 * 1024})}},
  };
  return table;
}

}  // namespace

std::vector<std::pair<std::string, std::string>> selftest_cases() {
  std::vector<std::pair<std::string, std::string>> list;
  for (const auto& [name, c] : cases()) list.emplace_back(name, c.description);
  return list;
}

std::vector<float> run_selftest(const std::string& name) {
  auto it = cases().find(name);
  TORCH_CHECK_VALUE(it != cases().end(), "fastgen._emulated_cuda.run_selftest: no case '", name,
                    "'");
  return it->second.run();
}

}  // namespace fastgen::simt
