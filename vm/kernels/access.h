// Ref accesses (LOAD, STORE, ADDUPDATE_*): resolve an AccessDesc's starts,
// check the region once against the buffer's extents (or clamp the starts,
// lax.dynamic_slice style), then copy between the region and a dense value.
//
// This is the only place where the VM checks anything at run time: starts
// read from the frame are not known to the verifier. Static starts were
// checked at load, but resolving them again costs a compare per dimension,
// so all starts take the same path.
//
// Knows nothing of instructions or where the base pointer came from (a ref
// table entry or a frame value).
#ifndef PALLASVM_VM_KERNELS_ACCESS_H_
#define PALLASVM_VM_KERNELS_ACCESS_H_

#include <cstdint>
#include <string>

#include "vm/dtype.h"
#include "vm/kernels/layout.h"
#include "vm/program.h"

namespace pallasvm::vm::kernels {

// A region of the underlying buffer with its starts resolved: the byte
// offset of its first element and its shape and element strides.
struct ResolvedAccess {
  int64_t byte_offset = 0;
  int64_t count = 0;  // elements in the region
  StridedRegion region;  // left unset when count == 1
};

// Why an access was refused: the first dimension (innermost first) whose
// start put the region out of its buffer, and that start.
struct AccessFault {
  int dim = -1;
  int64_t start = 0;
};

// Reads dynamic starts (S32 at frame + start_slot), then checks or clamps.
// Returns false and fills `fault` when the region leaves the buffer.
bool ResolveAccess(const AccessDesc& access, const uint8_t* frame,
                   ResolvedAccess* out, AccessFault* fault);

// "out-of-bounds read of ref 2 (dims [8, 128]): dim 0 start 12 size 8
// (needs start + (size-1)*stride < 8)"; the caller adds where it happened.
std::string DescribeAccessFault(const AccessDesc& access,
                                const AccessFault& fault, bool is_write);

// LOAD: dense dst := region of base.
void LoadRegion(uint8_t* dst, const uint8_t* base, const ResolvedAccess& r,
                int elem_size);
// STORE: region of base := dense src.
void StoreRegion(uint8_t* base, const uint8_t* src, const ResolvedAccess& r,
                 int elem_size);
// ADDUPDATE_T: region of base += dense src, in T's arithmetic (BF16 adds in
// f32 and rounds to nearest even). Instantiated for F32, S32, U32, BF16.
template <DType T>
void AddUpdateRegion(uint8_t* base, const uint8_t* src,
                     const ResolvedAccess& r);

}  // namespace pallasvm::vm::kernels

#endif  // PALLASVM_VM_KERNELS_ACCESS_H_
