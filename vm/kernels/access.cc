// Ref accesses; see access.h.
#include "vm/kernels/access.h"

#include <algorithm>
#include <cstring>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "vm/kernels/convert.h"
#include "vm/kernels/elementwise.h"
#include "vm/kernels/storage.h"

namespace pallasvm::vm::kernels {

bool ResolveAccess(const AccessDesc& access, const uint8_t* frame,
                   ResolvedAccess* out, AccessFault* fault) {
  int64_t shape[kMaxRank];
  int64_t strides[kMaxRank];
  int64_t buffer_stride = 1;  // elements per step of dim d in the buffer
  int64_t offset = 0;
  int64_t count = 1;
  for (int d = access.rank - 1; d >= 0; --d) {
    const AccessDim& dim = access.dims[d];
    int64_t start = dim.start_slot < 0
                        ? dim.start
                        : LoadScalar<int32_t>(frame + dim.start_slot);
    if (dim.size > 0) {
      const int64_t last = (dim.size - 1) * dim.stride;
      if (access.clamp) {
        // The verifier guarantees last < extent, so the range is non-empty.
        start = std::clamp<int64_t>(start, 0, dim.extent - last - 1);
      } else if (start < 0 || start + last >= dim.extent) {
        fault->dim = d;
        fault->start = start;
        return false;
      }
      offset += start * buffer_stride;
    }
    shape[d] = dim.size;
    strides[d] = dim.stride * buffer_stride;
    count *= dim.size;
    buffer_stride *= dim.extent;
  }
  out->byte_offset = offset * access.elem_size;
  out->count = count;
  // A single element (an SMEM scalar) is copied directly; skip the walk plan.
  if (count != 1) out->region = MergeDims(access.rank, shape, strides);
  return true;
}

std::string DescribeAccessFault(const AccessDesc& access,
                                const AccessFault& fault, bool is_write) {
  std::vector<int64_t> extents;
  for (int d = 0; d < access.rank; ++d) extents.push_back(access.dims[d].extent);
  const AccessDim& dim = access.dims[fault.dim];
  std::string what =
      access.base_kind == AccessBase::REF
          ? absl::StrCat("ref ", access.base)
          : absl::StrCat("the value at frame offset ", access.base);
  std::string step =
      dim.stride == 1 ? "" : absl::StrCat(" stride ", dim.stride);
  std::string needs =
      fault.start < 0
          ? std::string("start >= 0")
          : absl::StrCat("start + (size-1)*stride < ", dim.extent);
  return absl::StrCat("out-of-bounds ", is_write ? "write" : "read", " of ",
                      what, " (dims [", absl::StrJoin(extents, ", "),
                      "]): dim ", fault.dim, " start ", fault.start, " size ",
                      dim.size, step, " (needs ", needs, ")");
}

void LoadRegion(uint8_t* dst, const uint8_t* base, const ResolvedAccess& r,
                int elem_size) {
  // One element (an SMEM scalar, say) is the common case in scalar code.
  if (r.count == 1) {
    std::memcpy(dst, base + r.byte_offset, elem_size);
    return;
  }
  CopyRegionToDense(dst, base + r.byte_offset, r.region, elem_size);
}

void StoreRegion(uint8_t* base, const uint8_t* src, const ResolvedAccess& r,
                 int elem_size) {
  if (r.count == 1) {
    std::memcpy(base + r.byte_offset, src, elem_size);
    return;
  }
  CopyDenseToRegion(base + r.byte_offset, src, r.region, elem_size);
}

namespace {

// The element update of ADDUPDATE_T, in T's arithmetic.
template <DType T>
inline Storage<T> AddElement(Storage<T> x, Storage<T> y) {
  if constexpr (T == DType::BF16) {
    return F32ToBf16(Bf16ToF32(x) + Bf16ToF32(y));
  } else {
    return Add()(x, y);
  }
}

}  // namespace

template <DType T>
void AddUpdateRegion(uint8_t* base, const uint8_t* src,
                     const ResolvedAccess& r) {
  using E = Storage<T>;
  E* dst = reinterpret_cast<E*>(base + r.byte_offset);
  const E* s = reinterpret_cast<const E*>(src);
  if (r.count == 1) {
    *dst = AddElement<T>(*dst, *s);
    return;
  }
  ForEachRow(r.region, [&](int64_t offset, int64_t dense, int64_t count,
                           int64_t stride) {
    E* d = dst + offset;
    const E* v = s + dense;
    if (stride == 1) {
      for (int64_t i = 0; i < count; ++i) d[i] = AddElement<T>(d[i], v[i]);
    } else {
      for (int64_t i = 0; i < count; ++i) {
        d[i * stride] = AddElement<T>(d[i * stride], v[i]);
      }
    }
  });
}

template void AddUpdateRegion<DType::F32>(uint8_t*, const uint8_t*,
                                          const ResolvedAccess&);
template void AddUpdateRegion<DType::S32>(uint8_t*, const uint8_t*,
                                          const ResolvedAccess&);
template void AddUpdateRegion<DType::U32>(uint8_t*, const uint8_t*,
                                          const ResolvedAccess&);
template void AddUpdateRegion<DType::BF16>(uint8_t*, const uint8_t*,
                                           const ResolvedAccess&);

}  // namespace pallasvm::vm::kernels
