// Gathers by flat index (GATHER_Bw): dst[i] := src[clamp(idx[i], 0, n-1)].
//
// The compiler computes the indices (lax.gather's start indices, clamped
// or masked as the gather's mode says, and sort's permutations); the clamp
// here only keeps a wrong index inside the source, so the VM never reads
// outside a verified slot.
#ifndef PALLASVM_VM_KERNELS_GATHER_H_
#define PALLASVM_VM_KERNELS_GATHER_H_

#include <algorithm>
#include <cstdint>

namespace pallasvm::vm::kernels {

template <class T>
[[gnu::noinline]] void GatherV(T* dst, const T* src, int64_t src_count,
                               const int32_t* index, int64_t n) {
  const int64_t last = src_count - 1;
  for (int64_t i = 0; i < n; ++i) {
    dst[i] = src[std::clamp<int64_t>(index[i], 0, last)];
  }
}

}  // namespace pallasvm::vm::kernels

#endif  // PALLASVM_VM_KERNELS_GATHER_H_
