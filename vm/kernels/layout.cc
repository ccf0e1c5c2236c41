// Data-layout kernels; see layout.h.
#include "vm/kernels/layout.h"

#include <algorithm>

namespace pallasvm::vm::kernels {
namespace {

template <class T>
void GatherRowOf(uint8_t* dst, const uint8_t* src, int64_t count,
                 int64_t stride) {
  T* d = reinterpret_cast<T*>(dst);
  const T* s = reinterpret_cast<const T*>(src);
  if (stride == 0) {
    std::fill(d, d + count, *s);
    return;
  }
  for (int64_t i = 0; i < count; ++i) d[i] = s[i * stride];
}

template <class T>
void ScatterRowOf(uint8_t* dst, const uint8_t* src, int64_t count,
                  int64_t stride) {
  T* d = reinterpret_cast<T*>(dst);
  const T* s = reinterpret_cast<const T*>(src);
  for (int64_t i = 0; i < count; ++i) d[i * stride] = s[i];
}

}  // namespace

void GatherRow(uint8_t* dst, const uint8_t* src, int64_t count, int64_t stride,
               int elem_size) {
  if (stride == 1) {
    std::memcpy(dst, src, count * elem_size);
    return;
  }
  switch (elem_size) {
    case 1:
      return GatherRowOf<uint8_t>(dst, src, count, stride);
    case 2:
      return GatherRowOf<uint16_t>(dst, src, count, stride);
    default:
      return GatherRowOf<uint32_t>(dst, src, count, stride);
  }
}

void ScatterRow(uint8_t* dst, const uint8_t* src, int64_t count, int64_t stride,
                int elem_size) {
  if (stride == 1) {
    std::memcpy(dst, src, count * elem_size);
    return;
  }
  switch (elem_size) {
    case 1:
      return ScatterRowOf<uint8_t>(dst, src, count, stride);
    case 2:
      return ScatterRowOf<uint16_t>(dst, src, count, stride);
    default:
      return ScatterRowOf<uint32_t>(dst, src, count, stride);
  }
}

void CopyRegionToDense(uint8_t* dst, const uint8_t* src,
                       const StridedRegion& region, int elem_size) {
  ForEachRow(region,
             [&](int64_t offset, int64_t dense, int64_t count, int64_t stride) {
               GatherRow(dst + dense * elem_size, src + offset * elem_size,
                         count, stride, elem_size);
             });
}

void CopyDenseToRegion(uint8_t* dst, const uint8_t* src,
                       const StridedRegion& region, int elem_size) {
  ForEachRow(region,
             [&](int64_t offset, int64_t dense, int64_t count, int64_t stride) {
               ScatterRow(dst + offset * elem_size, src + dense * elem_size,
                          count, stride, elem_size);
             });
}

void StridedCopy(uint8_t* dst, const uint8_t* src, const LayoutDesc& layout) {
  const StridedRegion region =
      MergeDims(layout.rank, layout.shape, layout.strides);
  CopyRegionToDense(dst, src + layout.offset * layout.elem_size, region,
                    layout.elem_size);
}

void IotaS32(int32_t* dst, const LayoutDesc& layout, int dim) {
  int64_t outer = 1, inner = 1;
  for (int i = 0; i < dim; ++i) outer *= layout.shape[i];
  for (int i = dim + 1; i < layout.rank; ++i) inner *= layout.shape[i];
  const int64_t size = layout.shape[dim];
  for (int64_t o = 0; o < outer; ++o) {
    for (int64_t i = 0; i < size; ++i) {
      std::fill(dst, dst + inner, static_cast<int32_t>(i));
      dst += inner;
    }
  }
}

}  // namespace pallasvm::vm::kernels
