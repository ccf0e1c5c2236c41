// Data-layout kernels: N-d strided copies between a strided region and a
// dense buffer (STRIDED_COPY, and the copy half of LOAD / STORE /
// ADDUPDATE in vm/kernels/access.h), and IOTA.
//
// A region is a shape and element strides from a base pointer; the dense side
// is the region in row-major order. Walks merge dimensions that are
// contiguous in the region and drop size-1 ones, then go row by row over the
// innermost dimension, so a full-row copy is one memcpy.
//
// Knows nothing of instructions; the descriptors come from vm/program.h.
#ifndef PALLASVM_VM_KERNELS_LAYOUT_H_
#define PALLASVM_VM_KERNELS_LAYOUT_H_

#include <cstdint>
#include <cstring>

#include "vm/program.h"

namespace pallasvm::vm::kernels {

// A strided region after merging: `rank` dims (possibly 0, meaning one
// element), `shape` and element `strides`.
struct StridedRegion {
  int rank = 0;
  int64_t shape[kMaxRank];
  int64_t strides[kMaxRank];
  bool empty = false;  // some dimension has size 0
};

// Merges dim i into dim i-1 when stepping the outer one is the same as
// running the inner one to its end; drops size-1 dims.
inline StridedRegion MergeDims(int rank, const int64_t* shape,
                               const int64_t* strides) {
  StridedRegion r;
  for (int i = 0; i < rank; ++i) {
    if (shape[i] == 0) r.empty = true;
    if (shape[i] == 1) continue;
    if (r.rank > 0 && r.strides[r.rank - 1] == strides[i] * shape[i]) {
      r.shape[r.rank - 1] *= shape[i];
      r.strides[r.rank - 1] = strides[i];
    } else {
      r.shape[r.rank] = shape[i];
      r.strides[r.rank] = strides[i];
      ++r.rank;
    }
  }
  return r;
}

// Calls row(region_offset, dense_offset, count, stride) for each innermost
// row, in row-major order; offsets and stride are in elements.
template <class Row>
inline void ForEachRow(const StridedRegion& r, Row&& row) {
  if (r.empty) return;
  if (r.rank == 0) {
    row(int64_t{0}, int64_t{0}, int64_t{1}, int64_t{1});
    return;
  }
  const int inner = r.rank - 1;
  const int64_t count = r.shape[inner];
  const int64_t stride = r.strides[inner];
  int64_t index[kMaxRank] = {};
  int64_t offset = 0;
  for (int64_t dense = 0;; dense += count) {
    row(offset, dense, count, stride);
    int d = inner - 1;
    for (; d >= 0; --d) {
      offset += r.strides[d];
      if (++index[d] < r.shape[d]) break;
      offset -= r.strides[d] * r.shape[d];
      index[d] = 0;
    }
    if (d < 0) return;
  }
}

// dst[0..count) := src[0], src[stride], ... for elements of `elem_size`
// bytes (1, 2 or 4).
void GatherRow(uint8_t* dst, const uint8_t* src, int64_t count, int64_t stride,
               int elem_size);
// dst[0], dst[stride], ... := src[0..count); stride >= 1.
void ScatterRow(uint8_t* dst, const uint8_t* src, int64_t count, int64_t stride,
                int elem_size);

// dense dst := the region of `src` (its element 0 at src) in row-major order.
void CopyRegionToDense(uint8_t* dst, const uint8_t* src,
                       const StridedRegion& region, int elem_size);
// the region of `dst` := dense src.
void CopyDenseToRegion(uint8_t* dst, const uint8_t* src,
                       const StridedRegion& region, int elem_size);

// STRIDED_COPY: dst := dense copy of `layout` applied to src.
void StridedCopy(uint8_t* dst, const uint8_t* src, const LayoutDesc& layout);

// IOTA_S32: dst[idx] := idx[dim] over layout.shape.
void IotaS32(int32_t* dst, const LayoutDesc& layout, int dim);

}  // namespace pallasvm::vm::kernels

#endif  // PALLASVM_VM_KERNELS_LAYOUT_H_
