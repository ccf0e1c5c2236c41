// Reductions (REDUCE_*, ARGMAX_*, ARGMIN_*) over one axis of a value viewed
// as [outer, size, inner]: dst[o, i] := reduce over r of src[o, r, i].
//
// With inner > 1 the reduction is vectorised across `inner` (rows combined
// with the same loops as the binary ops); with inner == 1 it is a
// horizontal reduction with several batch accumulators, so sums are not in
// sequential order (as in XLA, which vectorises them too). Max and min use
// the elementwise functors, so F32 max/min propagate NaN like XLA.
//
// dst may be src (in place): row o of dst never lies past the part of src
// already consumed.
#ifndef PALLASVM_VM_KERNELS_REDUCE_H_
#define PALLASVM_VM_KERNELS_REDUCE_H_

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <type_traits>

#include "vm/kernels/elementwise.h"

namespace pallasvm::vm::kernels {

// f over x[0..n), starting from `init`.
template <class F, class T>
inline T HorizontalReduce(const T* x, int64_t n, T init) {
  F f;
  T result = init;
  int64_t i = 0;
  if constexpr (HasBatchBinary<F, T>) {
    using B = xsimd::batch<T>;
    constexpr int64_t kW = B::size;
    if (n >= kW) {
      // Four accumulators hide the latency of the combining op.
      B acc[4] = {B(init), B(init), B(init), B(init)};
      for (; i + 4 * kW <= n; i += 4 * kW) {
        for (int a = 0; a < 4; ++a) {
          acc[a] = f(acc[a], B::load_unaligned(x + i + a * kW));
        }
      }
      for (; i + kW <= n; i += kW) acc[0] = f(acc[0], B::load_unaligned(x + i));
      B all = f(f(acc[0], acc[1]), f(acc[2], acc[3]));
      alignas(64) T lanes[kW];
      all.store_aligned(lanes);
      for (int64_t l = 0; l < kW; ++l) result = f(result, lanes[l]);
    }
  }
  for (; i < n; ++i) result = f(result, x[i]);
  return result;
}

// REDUCE_*: f is an exact combining op (sum, max, min, and, or), so its
// scalar and batch forms agree and the narrow-row path may use either.
template <class F, class T>
[[gnu::noinline]] void Reduce(T* dst, const T* src, int64_t outer, int64_t size,
                              int64_t inner, T init) {
  F f;
  if (size == 0) {
    std::fill(dst, dst + outer * inner, init);
    return;
  }
  if (inner == 1) {
    for (int64_t o = 0; o < outer; ++o) {
      dst[o] = HorizontalReduce<F>(src + o * size, size, init);
    }
    return;
  }
  constexpr int64_t kWide = 16;  // rows at least this long use batch loops
  for (int64_t o = 0; o < outer; ++o) {
    const T* s = src + o * size * inner;
    T* d = dst + o * inner;
    std::memmove(d, s, inner * sizeof(T));
    for (int64_t r = 1; r < size; ++r) {
      const T* row = s + r * inner;
      if (inner >= kWide) {
        BinaryVV<F, T, T>(d, d, row, inner);
      } else {
        for (int64_t i = 0; i < inner; ++i) d[i] = f(d[i], row[i]);
      }
    }
  }
}

// Whether v replaces best in an arg-reduction: strictly better, and the
// first NaN wins for floats (as jnp.argmax / argmin do).
template <bool kMax, class T>
inline bool ArgBetter(T v, T best) {
  if constexpr (std::is_floating_point_v<T>) {
    if (std::isnan(best)) return false;
    if (std::isnan(v)) return true;
  }
  return kMax ? v > best : v < best;
}

// ARGMAX_* (kMax) / ARGMIN_*: dst[o, i] := the first r that is best.
template <bool kMax, class T>
[[gnu::noinline]] void ArgReduce(int32_t* dst, const T* src, int64_t outer,
                                 int64_t size, int64_t inner) {
  if (size == 0) {
    std::fill(dst, dst + outer * inner, 0);
    return;
  }
  constexpr int64_t kChunk = 64;  // columns tracked at once, on the stack
  T best[kChunk];
  int32_t index[kChunk];
  for (int64_t o = 0; o < outer; ++o) {
    const T* s = src + o * size * inner;
    for (int64_t i0 = 0; i0 < inner; i0 += kChunk) {
      const int64_t m = std::min(kChunk, inner - i0);
      for (int64_t i = 0; i < m; ++i) {
        best[i] = s[i0 + i];
        index[i] = 0;
      }
      for (int64_t r = 1; r < size; ++r) {
        const T* row = s + r * inner + i0;
        for (int64_t i = 0; i < m; ++i) {
          if (ArgBetter<kMax>(row[i], best[i])) {
            best[i] = row[i];
            index[i] = static_cast<int32_t>(r);
          }
        }
      }
      std::memcpy(dst + o * inner + i0, index, m * sizeof(int32_t));
    }
  }
}

}  // namespace pallasvm::vm::kernels

#endif  // PALLASVM_VM_KERNELS_REDUCE_H_
