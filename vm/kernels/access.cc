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

namespace {

// The one walk over the dimensions, shared by the fast path and the error
// path: on a bad start it reports the dimension and stops. `padded`: the
// bounds are extent + padding (the region may use the ref's padding).
inline bool WalkStarts(const AccessDesc& access, const uint8_t* frame,
                       ResolvedAccess* out, AccessFault* fault,
                       bool padded = false) {
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
      } else if (start < 0 ||
                 start + last >= dim.extent + (padded ? dim.padding : 0)) {
        fault->dim = d;
        fault->start = start;
        return false;
      }
      offset += start * buffer_stride;
    }
    count *= dim.size;
    buffer_stride *= dim.extent;
  }
  out->byte_offset = offset * access.elem_size;
  out->count = count;
  return true;
}

}  // namespace

ResolvedAccess ResolveAccess(const AccessDesc& access, const uint8_t* frame) {
  ResolvedAccess r;
  AccessFault fault;
  if (!WalkStarts(access, frame, &r, &fault)) r.count = -1;
  return r;
}

bool InsidePadding(const AccessDesc& access, const uint8_t* frame) {
  if (!HasPadding(access)) return false;
  ResolvedAccess r;
  AccessFault fault;
  return WalkStarts(access, frame, &r, &fault, /*padded=*/true);
}

bool ResolveStarts(const AccessDesc& access, const uint8_t* frame,
                   AccessDesc* out, int* bad_dim) {
  CopyAccess(access, out);
  bool ok = true;
  for (int d = 0; d < access.rank; ++d) {
    AccessDim& dim = out->dims[d];
    if (dim.start_slot >= 0) {
      dim.start = LoadScalar<int32_t>(frame + dim.start_slot);
      dim.start_slot = -1;
    }
    if (dim.size_slot >= 0) {
      const int64_t size = LoadScalar<int32_t>(frame + dim.size_slot);
      if ((size < 0 || size > dim.size) && ok) {
        ok = false;
        if (bad_dim != nullptr) *bad_dim = d;
      }
      dim.size = std::clamp<int64_t>(size, 0, dim.size);
      dim.size_slot = -1;
    }
    if (access.clamp && dim.size > 0) {
      dim.start = std::clamp<int64_t>(
          dim.start, 0, dim.extent - (dim.size - 1) * dim.stride - 1);
    }
  }
  out->clamp = 0;
  return ok;
}

SemaphoreAt ResolveSemaphore(const AccessDesc& access, const uint8_t* frame) {
  const ResolvedAccess r = ResolveAccess(access, frame);
  SemaphoreAt s;
  s.ref = access.base;
  s.index = r.count < 0 ? -1 : r.byte_offset / access.elem_size;
  return s;
}

AccessFault FindAccessFault(const AccessDesc& access, const uint8_t* frame) {
  ResolvedAccess r;
  AccessFault fault;
  WalkStarts(access, frame, &r, &fault, /*padded=*/true);
  return fault;
}

StridedRegion PlanRegion(const AccessDesc& access) {
  int64_t shape[kMaxRank];
  int64_t strides[kMaxRank];
  int64_t buffer_stride = 1;
  for (int d = access.rank - 1; d >= 0; --d) {
    shape[d] = access.dims[d].size;
    strides[d] = access.dims[d].stride * buffer_stride;
    buffer_stride *= access.dims[d].extent;
  }
  return MergeDims(access.rank, shape, strides);
}

std::string DescribeAccessFault(const AccessDesc& access,
                                const AccessFault& fault,
                                std::string_view kind) {
  std::vector<int64_t> extents, padded;
  for (int d = 0; d < access.rank; ++d) {
    extents.push_back(access.dims[d].extent);
    padded.push_back(access.dims[d].extent + access.dims[d].padding);
  }
  const AccessDim& dim = access.dims[fault.dim];
  const std::string padding =
      HasPadding(access)
          ? absl::StrCat(" padded to [", absl::StrJoin(padded, ", "), "]")
          : "";
  std::string what =
      access.base_kind == AccessBase::REF
          ? absl::StrCat("ref ", access.base)
          : absl::StrCat("the value at frame offset ", access.base);
  std::string step =
      dim.stride == 1 ? "" : absl::StrCat(" stride ", dim.stride);
  std::string needs =
      fault.start < 0 ? std::string("start >= 0")
                      : absl::StrCat("start + (size-1)*stride < ",
                                     dim.extent + dim.padding);
  return absl::StrCat("Out-of-bounds ", absl::string_view(kind.data(), kind.size()), " of ",
                      what, " (dims [", absl::StrJoin(extents, ", "), "]",
                      padding, "): dim ", fault.dim, " start ", fault.start, " size ",
                      dim.size, step, " (needs ", needs, ")");
}

namespace {

// One element by its width: fixed-size copies are single moves, where a
// memcpy of a run-time size is a library call.
inline void CopyElement(uint8_t* dst, const uint8_t* src, int elem_size) {
  switch (elem_size) {
    case 4:
      std::memcpy(dst, src, 4);
      return;
    case 2:
      std::memcpy(dst, src, 2);
      return;
    default:
      *dst = *src;
      return;
  }
}

}  // namespace

void LoadRegion(uint8_t* dst, const uint8_t* base, const AccessDesc& access,
                ResolvedAccess r) {
  // One element (an SMEM scalar, say) is the common case in scalar code.
  if (r.count == 1) {
    CopyElement(dst, base + r.byte_offset, access.elem_size);
    return;
  }
  CopyRegionToDense(dst, base + r.byte_offset, PlanRegion(access),
                    access.elem_size);
}

namespace {

// Walks an access's region element by element, in row-major order, where
// the region may leave its buffer: calls visit(e, offset, outside_dim,
// outside_at) with the element's dense index, its element offset in the
// buffer (-1 if it is not in the buffer: in its padding or beyond), and
// the first dimension in which it lies beyond the extent and padding (-1
// if none) with its index there. Returns false as soon as visit does.
template <typename Visit>
bool ForEachRegionElement(const AccessDesc& access, const uint8_t* frame,
                          Visit visit) {
  int64_t start[kMaxRank], buffer_stride[kMaxRank];
  int64_t total = 1, stride = 1;
  for (int d = access.rank - 1; d >= 0; --d) {
    const AccessDim& dim = access.dims[d];
    start[d] = dim.start_slot < 0 ? dim.start
                                  : LoadScalar<int32_t>(frame + dim.start_slot);
    buffer_stride[d] = stride;
    stride *= dim.extent;
    total *= dim.size;
  }
  int64_t idx[kMaxRank] = {};
  for (int64_t e = 0; e < total; ++e) {
    int64_t offset = 0;
    int outside_dim = -1;
    int64_t outside_at = 0;
    bool in_buffer = true;
    for (int d = 0; d < access.rank; ++d) {
      const AccessDim& dim = access.dims[d];
      const int64_t at = start[d] + idx[d] * dim.stride;
      in_buffer &= at >= 0 && at < dim.extent;
      if (outside_dim < 0 && (at < 0 || at >= dim.extent + dim.padding)) {
        outside_dim = d;
        outside_at = at;
      }
      offset += at * buffer_stride[d];
    }
    if (!visit(e, in_buffer ? offset : int64_t{-1}, outside_dim, outside_at)) {
      return false;
    }
    for (int d = access.rank - 1; d >= 0; --d) {
      if (++idx[d] < access.dims[d].size) break;
      idx[d] = 0;
    }
  }
  return true;
}

}  // namespace

void LoadRegionFilled(uint8_t* dst, const uint8_t* base,
                      const AccessDesc& access, const uint8_t* frame,
                      const uint8_t* fill) {
  const int es = access.elem_size;
  ForEachRegionElement(access, frame,
                       [&](int64_t e, int64_t offset, int, int64_t) {
                         CopyElement(dst + e * es,
                                     offset >= 0 ? base + offset * es : fill,
                                     es);
                         return true;
                       });
}

bool MaskedStoreRegion(uint8_t* base, const uint8_t* src, const uint8_t* mask,
                       const AccessDesc& access, const uint8_t* frame,
                       AccessFault* fault) {
  const int es = access.elem_size;
  // First check, then write: nothing is written if a masked-in element is
  // outside, as interpret mode writes nothing then.
  const bool inside = ForEachRegionElement(
      access, frame, [&](int64_t e, int64_t, int outside, int64_t at) {
        if (!mask[e] || outside < 0) return true;
        fault->dim = outside;
        fault->start = at;
        return false;
      });
  if (!inside) return false;
  ForEachRegionElement(access, frame,
                       [&](int64_t e, int64_t offset, int, int64_t) {
                         if (mask[e] && offset >= 0) {
                           CopyElement(base + offset * es, src + e * es, es);
                         }
                         return true;
                       });
  return true;
}

void StoreRegionClipped(uint8_t* base, const uint8_t* src,
                        const AccessDesc& access, const uint8_t* frame) {
  const int es = access.elem_size;
  ForEachRegionElement(access, frame,
                       [&](int64_t e, int64_t offset, int, int64_t) {
                         if (offset >= 0) {
                           CopyElement(base + offset * es, src + e * es, es);
                         }
                         return true;
                       });
}

void StoreRegion(uint8_t* base, const uint8_t* src, const AccessDesc& access,
                 ResolvedAccess r) {
  if (r.count == 1) {
    CopyElement(base + r.byte_offset, src, access.elem_size);
    return;
  }
  CopyDenseToRegion(base + r.byte_offset, src, PlanRegion(access),
                    access.elem_size);
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
                     const AccessDesc& access, ResolvedAccess r) {
  using E = Storage<T>;
  E* dst = reinterpret_cast<E*>(base + r.byte_offset);
  const E* s = reinterpret_cast<const E*>(src);
  if (r.count == 1) {
    *dst = AddElement<T>(*dst, *s);
    return;
  }
  ForEachRow(PlanRegion(access),
             [&](int64_t offset, int64_t dense, int64_t count, int64_t stride) {
               E* d = dst + offset;
               const E* v = s + dense;
               if (stride == 1) {
                 for (int64_t i = 0; i < count; ++i)
                   d[i] = AddElement<T>(d[i], v[i]);
               } else {
                 for (int64_t i = 0; i < count; ++i) {
                   d[i * stride] = AddElement<T>(d[i * stride], v[i]);
                 }
               }
             });
}

template <DType T>
void AddUpdateRegionClipped(uint8_t* base, const uint8_t* src,
                            const AccessDesc& access, const uint8_t* frame) {
  using E = Storage<T>;
  E* dst = reinterpret_cast<E*>(base);
  const E* s = reinterpret_cast<const E*>(src);
  ForEachRegionElement(access, frame,
                       [&](int64_t e, int64_t offset, int, int64_t) {
                         if (offset >= 0) {
                           dst[offset] = AddElement<T>(dst[offset], s[e]);
                         }
                         return true;
                       });
}

template void AddUpdateRegion<DType::F32>(uint8_t*, const uint8_t*,
                                          const AccessDesc&, ResolvedAccess);
template void AddUpdateRegion<DType::S32>(uint8_t*, const uint8_t*,
                                          const AccessDesc&, ResolvedAccess);
template void AddUpdateRegion<DType::U32>(uint8_t*, const uint8_t*,
                                          const AccessDesc&, ResolvedAccess);
template void AddUpdateRegion<DType::BF16>(uint8_t*, const uint8_t*,
                                           const AccessDesc&, ResolvedAccess);

#define PALLASVM_ADDUPDATE_CLIPPED(DT)                                     \
  template void AddUpdateRegionClipped<DType::DT>(                          \
      uint8_t*, const uint8_t*, const AccessDesc&, const uint8_t*);
PALLASVM_ADDUPDATE_CLIPPED(F32)
PALLASVM_ADDUPDATE_CLIPPED(S32)
PALLASVM_ADDUPDATE_CLIPPED(U32)
PALLASVM_ADDUPDATE_CLIPPED(BF16)
#undef PALLASVM_ADDUPDATE_CLIPPED

}  // namespace pallasvm::vm::kernels
