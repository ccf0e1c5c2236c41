// Stable argsort along one axis (ARGSORT_*), for lax.sort.
//
// The value is viewed as [outer, size, inner]; for every (o, i) the kernel
// writes the permutation of r that sorts src[o, r, i] ascending, ties kept in
// order (a stable sort is a valid result of an unstable one too). The
// compiler applies the permutation to every sorted operand with GATHER and
// sorts by several keys as successive stable sorts, last key first.
//
// Floats sort as XLA's lax.sort comparator orders them (jax/_src/lax/lax.py,
// _sort_lt_comparator): -0 and +0 compare equal, every NaN (whatever its
// sign) equal to the others and after +inf; otherwise the usual order.
#ifndef PALLASVM_VM_KERNELS_SORT_H_
#define PALLASVM_VM_KERNELS_SORT_H_

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <type_traits>
#include <utility>
#include <vector>

namespace pallasvm::vm::kernels {

// A key whose integer order is the sort order of x.
inline int64_t SortKey(float x) {
  if (std::isnan(x)) return int64_t{1} << 40;  // after every number
  if (x == 0.f) x = 0.f;                       // -0 == +0
  int32_t bits;
  std::memcpy(&bits, &x, 4);
  // Negative floats order by decreasing magnitude bits.
  return bits < 0 ? -int64_t{bits & 0x7fffffff} : int64_t{bits};
}
inline int64_t SortKey(int32_t x) { return x; }
inline int64_t SortKey(uint32_t x) { return x; }

template <class T>
[[gnu::noinline]] void ArgSort(int32_t* dst, const T* src, int64_t outer,
                               int64_t size, int64_t inner) {
  // Reused across calls, so a grid step allocates only when a sort is
  // longer than any before it on this thread.
  thread_local std::vector<std::pair<int64_t, int32_t>> keyed;
  keyed.resize(size);
  for (int64_t o = 0; o < outer; ++o) {
    for (int64_t i = 0; i < inner; ++i) {
      const T* s = src + o * size * inner + i;
      for (int64_t r = 0; r < size; ++r) {
        keyed[r] = {SortKey(s[r * inner]), static_cast<int32_t>(r)};
      }
      std::stable_sort(
          keyed.begin(), keyed.end(),
          [](const auto& x, const auto& y) { return x.first < y.first; });
      int32_t* d = dst + o * size * inner + i;
      for (int64_t r = 0; r < size; ++r) d[r * inner] = keyed[r].second;
    }
  }
}

}  // namespace pallasvm::vm::kernels

#endif  // PALLASVM_VM_KERNELS_SORT_H_
