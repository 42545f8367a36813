#pragma once
// nvcuda::wmma for both builds: CUDA's <mma.h>, or its emulation.
//
// Emulated: a fragment holds num_elements values per lane; element e of lane l is element
// e * 32 + l of the tile in row-major order (CUDA leaves the mapping unspecified, so portable
// code only applies the same operation to every element of x[]). load_matrix_sync,
// store_matrix_sync and mma_sync are warp-wide: all 32 lanes must call the same one with the
// same pointer, leading dimension and layout (as CUDA requires), or the emulator reports the
// kernel; every element read or written is bounds- and race-checked as an access of the lane
// that holds it. Pointers must be 32-byte aligned and ldm a multiple of 16 bytes.
//
// Numerics: products of A and B accumulate in float (double for double fragments) in k order,
// rounded once per step; tf32 inputs keep their top 19 bits (__float_to_tf32 rounds to
// nearest, ties away from zero, like cvt.rna.tf32.f32). A GPU's tensor cores sum in their own
// order and internal precision: only a GPU run shows those last bits.
//
// Shapes: m16n16k16, m32n8k16, m8n32k16 for __half (float or __half accumulator) and
// __nv_bfloat16 (float accumulator); m16n16k8 for precision::tf32; m8n8k4 for double.

#if defined(__CUDACC__)

#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <mma.h>

#else

#include <c10/util/BFloat16.h>
#include <c10/util/Half.h>

#include <cstring>
#include <type_traits>

#include "simt/simt.h"

using __half = c10::Half;
using __nv_bfloat16 = c10::BFloat16;

inline float __float_to_tf32(float value) {
  uint32_t bits = __builtin_bit_cast(uint32_t, value);
  if ((bits & 0x7F800000u) != 0x7F800000u) bits += 0x1000u;  // ties away from zero
  return __builtin_bit_cast(float, bits & 0xFFFFE000u);
}

namespace nvcuda::wmma {

using ::__float_to_tf32;  // CUDA declares it in nvcuda::wmma

struct matrix_a {};
struct matrix_b {};
struct accumulator {};
struct row_major {};
struct col_major {};
enum layout_t { mem_row_major, mem_col_major };
namespace precision {
struct tf32 {};
}  // namespace precision

namespace detail {

template <typename Use, int M, int N, int K>
struct tile_shape;
template <int M, int N, int K>
struct tile_shape<matrix_a, M, N, K> {
  static constexpr int rows = M, cols = K;
};
template <int M, int N, int K>
struct tile_shape<matrix_b, M, N, K> {
  static constexpr int rows = K, cols = N;
};
template <int M, int N, int K>
struct tile_shape<accumulator, M, N, K> {
  static constexpr int rows = M, cols = N;
};

template <typename T>
using storage_t = std::conditional_t<std::is_same_v<T, precision::tf32>, float, T>;

template <typename T, int M, int N, int K>
constexpr bool supported_shape() {
  if constexpr (std::is_same_v<T, __half> || std::is_same_v<T, __nv_bfloat16>) {
    return (M == 16 && N == 16 && K == 16) || (M == 32 && N == 8 && K == 16) ||
           (M == 8 && N == 32 && K == 16);
  } else if constexpr (std::is_same_v<T, precision::tf32>) {
    return M == 16 && N == 16 && K == 8;
  } else if constexpr (std::is_same_v<T, double>) {
    return M == 8 && N == 8 && K == 4;
  } else {
    return std::is_same_v<T, float>;  // accumulators; checked by mma_sync
  }
}

}  // namespace detail

template <typename Use, int M, int N, int K, typename T, typename Layout = void>
struct fragment {
  static_assert(detail::supported_shape<T, M, N, K>(), "wmma: shape not supported for this type");
  using element_type = detail::storage_t<T>;
  static constexpr int rows = detail::tile_shape<Use, M, N, K>::rows;
  static constexpr int cols = detail::tile_shape<Use, M, N, K>::cols;
  static constexpr int num_elements = rows * cols / 32;
  element_type x[num_elements];
};

template <typename Use, int M, int N, int K, typename T, typename Layout>
inline void fill_fragment(fragment<Use, M, N, K, T, Layout>& f,
                          const typename fragment<Use, M, N, K, T, Layout>::element_type& value) {
  for (int i = 0; i < f.num_elements; ++i) f.x[i] = value;
}

namespace detail {

// One lane's part of a warp-wide load or store.
template <typename Fragment, typename Memory>
struct Transfer {
  Fragment* fragment;
  Memory* pointer;
  unsigned ldm;
  bool row_major;
  const char* what;
};

[[noreturn]] inline void fail(const char* what, const std::string& message) {
  fastgen::simt::detail::kernel_error(std::string(what) + ": " + message);
}

template <typename Fragment, typename Memory>
void check_uniform(Transfer<Fragment, Memory>* const* lanes) {
  const auto* first = lanes[0];
  for (int lane = 1; lane < 32; ++lane) {
    if (lanes[lane]->pointer != first->pointer || lanes[lane]->ldm != first->ldm ||
        lanes[lane]->row_major != first->row_major) {
      fail(first->what, "lanes 0 and " + std::to_string(lane) +
                            " pass different pointers, leading dimensions or layouts; all 32 "
                            "lanes must pass the same");
    }
  }
  if (reinterpret_cast<uintptr_t>(first->pointer) % 32 != 0) {
    fail(first->what, "the pointer must be 32-byte (256-bit) aligned");
  }
  if ((first->ldm * sizeof(Memory)) % 16 != 0) {
    fail(first->what,
         "ldm = " + std::to_string(first->ldm) + " elements is not a multiple of 16 bytes");
  }
  const int minimum = first->row_major ? Fragment::cols : Fragment::rows;
  if (int(first->ldm) < minimum) {
    fail(first->what,
         "ldm = " + std::to_string(first->ldm) + " is below the tile's " + std::to_string(minimum));
  }
}

template <typename Fragment, typename Memory>
Memory* element_address(const Transfer<Fragment, Memory>& t, int index) {
  const int row = index / Fragment::cols, col = index % Fragment::cols;
  return t.pointer + (t.row_major ? size_t(row) * t.ldm + col : size_t(col) * t.ldm + row);
}

// The warp's load (memory to fragments) or store (fragments to memory): every element is
// checked as an access of the lane that holds it.
enum class Direction { Load, Store };
template <Direction direction, typename Fragment, typename Memory>
void transfer_all(void* const* data) {
  auto* const* lanes = reinterpret_cast<Transfer<Fragment, Memory>* const*>(data);
  check_uniform(lanes);
  for (int lane = 0; lane < 32; ++lane) {
    for (int e = 0; e < Fragment::num_elements; ++e) {
      Memory* address = element_address(*lanes[lane], e * 32 + lane);
      if constexpr (direction == Direction::Load) {
        fastgen::simt::detail::check_read(address, sizeof(Memory), lane);
        lanes[lane]->fragment->x[e] = typename Fragment::element_type(*address);
      } else {
        fastgen::simt::detail::check_write(address, sizeof(Memory), lane);
        *address = Memory(lanes[lane]->fragment->x[e]);
      }
    }
  }
}

template <typename Fragment, typename Memory>
void collective(void (*op)(void* const*), Fragment* f, Memory* pointer, unsigned ldm,
                bool row_major, const char* what, const char* file, int line) {
  Transfer<Fragment, Memory> transfer{f, pointer, ldm, row_major, what};
  fastgen::simt::detail::warp_collective(op, &transfer, what, file, line);
}

}  // namespace detail

template <typename Use, int M, int N, int K, typename T, typename Layout, typename Memory>
inline void load_matrix_sync(fragment<Use, M, N, K, T, Layout>& f, const Memory* pointer,
                             unsigned ldm, const char* file = __builtin_FILE(),
                             int line = __builtin_LINE()) {
  static_assert(!std::is_same_v<Use, accumulator>, "an accumulator load needs the memory layout");
  using Fragment = fragment<Use, M, N, K, T, Layout>;
  detail::collective(&detail::transfer_all<detail::Direction::Load, Fragment, const Memory>, &f,
                     pointer, ldm, std::is_same_v<Layout, row_major>, "wmma::load_matrix_sync",
                     file, line);
}

template <int M, int N, int K, typename T, typename Memory>
inline void load_matrix_sync(fragment<accumulator, M, N, K, T>& f, const Memory* pointer,
                             unsigned ldm, layout_t layout, const char* file = __builtin_FILE(),
                             int line = __builtin_LINE()) {
  using Fragment = fragment<accumulator, M, N, K, T>;
  detail::collective(&detail::transfer_all<detail::Direction::Load, Fragment, const Memory>, &f,
                     pointer, ldm, layout == mem_row_major, "wmma::load_matrix_sync", file, line);
}

template <int M, int N, int K, typename T, typename Memory>
inline void store_matrix_sync(Memory* pointer, const fragment<accumulator, M, N, K, T>& f,
                              unsigned ldm, layout_t layout, const char* file = __builtin_FILE(),
                              int line = __builtin_LINE()) {
  using Fragment = fragment<accumulator, M, N, K, T>;
  detail::collective(&detail::transfer_all<detail::Direction::Store, Fragment, Memory>,
                     const_cast<Fragment*>(&f), pointer, ldm, layout == mem_row_major,
                     "wmma::store_matrix_sync", file, line);
}

namespace detail {

template <typename D, typename A, typename B, typename C>
struct Product {
  D* d;
  const A* a;
  const B* b;
  const C* c;
};

template <typename T>
double input_value(T value) {
  return double(float(value));
}
inline double input_value(double value) {
  return value;
}

// Puts one lane's elements of fragment f into the row-major tile; tf32 inputs keep their top
// 19 bits.
template <bool tf32, typename acc, int rows, int cols, typename Fragment>
void unpack_lane(const Fragment& f, int lane, acc (&tile)[rows][cols]) {
  for (int e = 0; e < Fragment::num_elements; ++e) {
    const int i = e * 32 + lane;
    acc value = acc(input_value(f.x[e]));
    if constexpr (tf32) {
      value = __builtin_bit_cast(float, __builtin_bit_cast(uint32_t, value) & 0xFFFFE000u);
    }
    tile[i / cols][i % cols] = value;
  }
}

template <typename InputType, typename D, typename A, typename B, typename C>
void mma_all(void* const* data) {
  auto* const* lanes = reinterpret_cast<Product<D, A, B, C>* const*>(data);
  constexpr int M = A::rows, K = A::cols, N = B::cols;
  using acc = std::conditional_t<std::is_same_v<InputType, double>, double, float>;
  constexpr bool tf32 = std::is_same_v<InputType, precision::tf32>;
  acc a[M][K], b[K][N], c[M][N];
  for (int lane = 0; lane < 32; ++lane) {
    unpack_lane<tf32>(*lanes[lane]->a, lane, a);
    unpack_lane<tf32>(*lanes[lane]->b, lane, b);
    unpack_lane<false>(*lanes[lane]->c, lane, c);
  }
  for (int lane = 0; lane < 32; ++lane) {
    for (int e = 0; e < D::num_elements; ++e) {
      const int i = e * 32 + lane, row = i / N, col = i % N;
      acc sum = c[row][col];
      for (int k = 0; k < K; ++k) sum += a[row][k] * b[k][col];
      lanes[lane]->d->x[e] = typename D::element_type(sum);
    }
  }
}

}  // namespace detail

template <int M, int N, int K, typename T, typename LayoutA, typename LayoutB, typename AccD,
          typename AccC>
inline void mma_sync(fragment<accumulator, M, N, K, AccD>& d,
                     const fragment<matrix_a, M, N, K, T, LayoutA>& a,
                     const fragment<matrix_b, M, N, K, T, LayoutB>& b,
                     const fragment<accumulator, M, N, K, AccC>& c,
                     const char* file = __builtin_FILE(), int line = __builtin_LINE()) {
  using D = fragment<accumulator, M, N, K, AccD>;
  using A = fragment<matrix_a, M, N, K, T, LayoutA>;
  using B = fragment<matrix_b, M, N, K, T, LayoutB>;
  using C = fragment<accumulator, M, N, K, AccC>;
  static_assert(std::is_same_v<T, double> == std::is_same_v<AccD, double>,
                "wmma::mma_sync: double inputs take double accumulators");
  detail::Product<D, A, B, C> product{&d, &a, &b, &c};
  fastgen::simt::detail::warp_collective(&detail::mma_all<T, D, A, B, C>, &product,
                                         "wmma::mma_sync", file, line);
}

}  // namespace nvcuda::wmma

#endif
