// Ref accesses (LOAD, STORE, ADDUPDATE_*): resolve an AccessDesc's starts,
// check the region once against the buffer's extents (or clamp the starts,
// lax.dynamic_slice style), then copy between the region and a dense value.
//
// This is the only place where the VM checks memory bounds at run time:
// starts read from the frame are not known to the verifier. Static starts
// were checked at load, but resolving them again costs a compare per
// dimension, so all starts take the same path.
//
// Knows nothing of instructions or where the base pointer came from (a ref
// table entry or a frame value).
#ifndef PALLASVM_VM_KERNELS_ACCESS_H_
#define PALLASVM_VM_KERNELS_ACCESS_H_

#include <cstdint>
#include <string>
#include <string_view>

#include "vm/dtype.h"
#include "vm/kernels/layout.h"
#include "vm/program.h"

namespace pallasvm::vm::kernels {

// Where an access lands once its starts are resolved: the byte offset of
// the region's first element from the base, and its element count (-1 when
// a start puts the region out of its buffer). Small enough to travel in
// registers, which matters for one-element SMEM reads in scalar code.
struct ResolvedAccess {
  int64_t byte_offset = 0;
  int64_t count = 0;
};

// Why an access was refused: the first dimension (innermost first) whose
// start put the region out of its buffer, and that start.
struct AccessFault {
  int dim = -1;
  int64_t start = 0;
};

// Reads dynamic starts (S32 at frame + start_slot), then checks or clamps.
ResolvedAccess ResolveAccess(const AccessDesc& access, const uint8_t* frame);

// Whether any dimension of `access` has padding (AccessDim::padding).
inline bool HasPadding(const AccessDesc& access) {
  for (int d = 0; d < access.rank; ++d) {
    if (access.dims[d].padding != 0) return true;
  }
  return false;
}

// For a region ResolveAccess refused: whether it lies inside its ref's
// extents and padding (buffer_bounds="padded"), so that it is in bounds
// after all, its elements in the padding reading the fill value
// (LoadRegionFilled) and dropped when written (StoreRegionClipped,
// AddUpdateRegionClipped). False for a ref without padding.
bool InsidePadding(const AccessDesc& access, const uint8_t* frame);

// `out` := `access` with every start and size resolved: dynamic ones read
// from the frame become static (start_slot, size_slot -1), so the region
// stays put whatever the frame holds later (a DMA in flight). Clamped
// accesses are clamped here. Starts are not checked (ResolveAccess on `out`
// does that); false if a dynamic size lies outside [0, its bound], and
// then *bad_dim is the dimension.
bool ResolveStarts(const AccessDesc& access, const uint8_t* frame,
                   AccessDesc* out, int* bad_dim = nullptr);

// to := from, copying only the dimensions in use (an AccessDesc holds
// kMaxRank of them; DMAs copy descriptors on their fast path).
inline void CopyAccess(const AccessDesc& from, AccessDesc* to) {
  to->base_kind = from.base_kind;
  to->clamp = from.clamp;
  to->elem_size = from.elem_size;
  to->rank = from.rank;
  to->base = from.base;
  for (int d = 0; d < from.rank; ++d) to->dims[d] = from.dims[d];
}

// Whether the region of `access` (starts aside) is one run of consecutive
// elements of its buffer: past the leading size-1 dimensions, the first
// has stride 1 and every later one is whole.
inline bool IsContiguous(const AccessDesc& access) {
  int d = 0;
  while (d < access.rank && access.dims[d].size == 1) ++d;
  if (d == access.rank) return true;
  if (access.dims[d].size == 0) return true;
  if (access.dims[d].stride != 1) return false;
  for (int e = d + 1; e < access.rank; ++e) {
    const AccessDim& dim = access.dims[e];
    if (dim.size == 0) return true;
    if (dim.size != dim.extent || dim.stride != 1) return false;
  }
  return true;
}

// The number of elements of `access`'s region (its sizes' product).
inline int64_t RegionCount(const AccessDesc& access) {
  int64_t n = 1;
  for (int d = 0; d < access.rank; ++d) n *= access.dims[d].size;
  return n;
}

// The semaphore a one-element access of a SEMAPHORE ref names: its ref and
// row-major element index (-1 when a start puts it outside the ref).
struct SemaphoreAt {
  int32_t ref = -1;
  int64_t index = -1;
};
SemaphoreAt ResolveSemaphore(const AccessDesc& access, const uint8_t* frame);

// For the error path, after ResolveAccess refused: which start was bad
// (against the extents and padding, where the ref has padding).
AccessFault FindAccessFault(const AccessDesc& access, const uint8_t* frame);

// "Out-of-bounds read of ref 2 (dims [8, 128]): dim 0 start 12 size 8
// (needs start + (size-1)*stride < 8)", for `kind` "read"; the caller adds
// where it happened. (Interpret mode's messages start the same way, and
// JAX's tests match on them: "Out-of-bounds read", "Out-of-bounds write",
// "Out-of-bounds masked swap".)
std::string DescribeAccessFault(const AccessDesc& access,
                                const AccessFault& fault,
                                std::string_view kind);

// The walk over an access's region, which depends only on the descriptor
// (sizes, strides, extents), not on where the starts put it.
StridedRegion PlanRegion(const AccessDesc& access);

// LOAD: dense dst := region of base.
void LoadRegion(uint8_t* dst, const uint8_t* base, const AccessDesc& access,
                ResolvedAccess r);
// LOAD of a region that leaves its buffer, for out_of_bounds_reads =
// "uninitialized" or a region in the ref's padding: elements outside the
// buffer read `fill` (elem_size bytes), the rest the buffer. Element by
// element: the rare, slow path.
void LoadRegionFilled(uint8_t* dst, const uint8_t* base,
                      const AccessDesc& access, const uint8_t* frame,
                      const uint8_t* fill);
// MASKED_STORE: region of base := mask ? src : region, elementwise, where
// the region may leave its buffer: elements outside are skipped. Returns
// false, writing nothing, if a masked-in element lies outside the buffer
// and its padding (and sets *fault to the first such element's dimension
// and index).
bool MaskedStoreRegion(uint8_t* base, const uint8_t* src, const uint8_t* mask,
                       const AccessDesc& access, const uint8_t* frame,
                       AccessFault* fault);
// STORE: region of base := dense src.
void StoreRegion(uint8_t* base, const uint8_t* src, const AccessDesc& access,
                 ResolvedAccess r);
// STORE of a region InsidePadding accepted: the elements in the buffer are
// written, those in its padding dropped (interpret mode's padded buffers
// keep only writes inside the logical shape). Element by element.
void StoreRegionClipped(uint8_t* base, const uint8_t* src,
                        const AccessDesc& access, const uint8_t* frame);
// ADDUPDATE_T: region of base += dense src, in T's arithmetic (BF16 adds in
// f32 and rounds to nearest even). Instantiated for F32, S32, U32, BF16.
template <DType T>
void AddUpdateRegion(uint8_t* base, const uint8_t* src,
                     const AccessDesc& access, ResolvedAccess r);
// ADDUPDATE_T of a region InsidePadding accepted, as StoreRegionClipped.
template <DType T>
void AddUpdateRegionClipped(uint8_t* base, const uint8_t* src,
                            const AccessDesc& access, const uint8_t* frame);

}  // namespace pallasvm::vm::kernels

#endif  // PALLASVM_VM_KERNELS_ACCESS_H_
