// Copies between a whole array in HBM and one block of it in VMEM. The
// block may hang over the array's edge: on the way in, the overhang reads
// the fill value; on the way out, only the in-bounds part is written.
#ifndef PALLASVM_RUNTIME_BLOCK_COPY_H_
#define PALLASVM_RUNTIME_BLOCK_COPY_H_

#include <cstdint>

#include "absl/functional/function_ref.h"
#include "vm/program.h"

namespace pallasvm::runtime {

struct BlockRegion {
  int rank = 0;
  int elem_size = 0;
  int64_t array_shape[vm::kMaxRank] = {};
  int64_t block_shape[vm::kMaxRank] = {};  // squeezed dims are 1
  int64_t start[vm::kMaxRank] = {};        // element offsets, >= 0
};

// With `limit`, at most limit[d] elements of dimension d are copied (the
// block's first ones), the rest of the block is fill.
void CopyBlockIn(const BlockRegion& r, const uint8_t* array,
                 const uint8_t* fill, uint8_t* block,
                 const int64_t* limit = nullptr);
void CopyBlockOut(const BlockRegion& r, const uint8_t* block, uint8_t* array);
// Writes the fill value over the block's in-bounds part of the array.
void FillBlockOut(const BlockRegion& r, const uint8_t* fill, uint8_t* array);

// Calls run(first, count) for each run of consecutive array elements
// (element offsets) of the block's in-bounds part, in row-major order:
// race detection's view of what a block copy touches.
void ForEachBlockRun(const BlockRegion& r,
                     absl::FunctionRef<void(int64_t, int64_t)> run);

// Fills `count` elements of `size` bytes with `value`.
void FillElements(uint8_t* dst, int64_t count, const uint8_t* value, int size);

}  // namespace pallasvm::runtime

#endif  // PALLASVM_RUNTIME_BLOCK_COPY_H_
