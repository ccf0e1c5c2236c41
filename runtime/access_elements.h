// The elements of a resolved ref region (vm::AccessDesc with static starts
// and sizes), for the checkers that keep shadow state per element or byte
// (race detection, uninitialized reads). The copies themselves go through
// vm/kernels/access.h; this walks element by element, which only a check
// that is on pays for.
#ifndef PALLASVM_RUNTIME_ACCESS_ELEMENTS_H_
#define PALLASVM_RUNTIME_ACCESS_ELEMENTS_H_

#include <cstdint>

#include "runtime/kernel.h"
#include "vm/program.h"

namespace pallasvm::runtime {

// Calls f(i, offset, index) for the i-th element of `a` (row-major over its
// sizes): `offset` its byte offset in the buffer, -1 if it lies outside;
// `index` its position in each dimension.
template <typename F>
void ForEachElement(const vm::AccessDesc& a, F&& f) {
  const int rank = a.rank;
  int64_t count = 1;
  for (int d = 0; d < rank; ++d) count *= a.dims[d].size;
  if (count <= 0) return;
  int64_t step[vm::kMaxRank] = {};  // elements per index of dimension d
  for (int d = rank - 1, s = 1; d >= 0; --d) {
    step[d] = s;
    s *= a.dims[d].extent;
  }
  int64_t i_of[vm::kMaxRank] = {};
  int64_t index[vm::kMaxRank] = {};
  for (int64_t i = 0; i < count; ++i) {
    int64_t linear = 0;
    bool inside = true;
    for (int d = 0; d < rank; ++d) {
      const vm::AccessDim& dim = a.dims[d];
      index[d] = dim.start + i_of[d] * dim.stride;
      inside &= index[d] >= 0 && index[d] < dim.extent;
      linear += index[d] * step[d];
    }
    f(i, inside ? linear * a.elem_size : int64_t{-1}, index);
    for (int d = rank - 1; d >= 0; --d) {
      if (++i_of[d] < a.dims[d].size) break;
      i_of[d] = 0;
    }
  }
}

// All of ref `ref` (spec `spec`), as the region of an instruction that
// reads or writes the whole ref in place.
inline vm::AccessDesc WholeRef(const RefSpec& spec, int32_t ref) {
  vm::AccessDesc a;
  a.base = ref;
  a.elem_size = static_cast<uint8_t>(vm::SizeOf(spec.type.dtype));
  a.rank = static_cast<uint8_t>(spec.type.shape.size());
  for (int d = 0; d < a.rank; ++d) {
    a.dims[d].extent = spec.type.shape[d];
    a.dims[d].start = 0;
    a.dims[d].size = spec.type.shape[d];
    a.dims[d].stride = 1;
  }
  return a;
}

}  // namespace pallasvm::runtime

#endif  // PALLASVM_RUNTIME_ACCESS_ELEMENTS_H_
