// The sizes a module may describe (array shapes, the grid, block
// dimensions) and the other rules between its parts that both its writer
// and its reader check (input_output_aliases). The compiler refuses a kernel
// outside them and the runtime's loader a module outside them, both through
// these functions, so whatever the compiler writes the runtime loads. The
// limits keep every offset the runtime computes from them inside int64 (a block
// start is an int32 block index times a block size; an element offset is below
// 2^40 times an element size). Memory limits are separate (vm/memory_limit.h):
// they depend on the machine, these do not.
#ifndef PALLASVM_FORMAT_MODULE_LIMITS_H_
#define PALLASVM_FORMAT_MODULE_LIMITS_H_

#include <cstdint>

#include "absl/functional/function_ref.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/types/span.h"
#include "bytecode_generated.h"

namespace pallasvm::format {

// Dimensions of an array: the length of bytecode.fbs's LayoutDesc.shape
// and AccessDesc.dims, = vm::kMaxRank (asserted where both are seen).
inline constexpr int kMaxRank = 8;
// Elements of an array, counting only its non-zero dimensions, so that an
// empty array's strides fit as well as a full one's.
inline constexpr int64_t kMaxElements = int64_t{1} << 40;
// A grid dimension's size: program ids are int32, as on a TPU.
inline constexpr int64_t kMaxGridDimension = (int64_t{1} << 31) - 1;
// Points of the static dimensions of a grid.
inline constexpr int64_t kMaxGridPoints = int64_t{1} << 62;
// A grid dimension sized at run time by a dynamic grid bound operand.
inline constexpr int64_t kDynamicGridDimension = -1;
// A block dimension's size: int32 block index times it fits in 2^62.
inline constexpr int64_t kMaxBlockDimension = (int64_t{1} << 31) - 1;

// OK, or an error "<what> has shape [...]: <why>": UNIMPLEMENTED for a rank
// over kMaxRank, INVALID_ARGUMENT for a negative dimension, OUT_OF_RANGE for
// more than kMaxElements elements.
absl::Status CheckArrayShape(absl::Span<const int64_t> shape,
                             absl::string_view what);

// The number of dynamic dimensions of `grid`, or INVALID_ARGUMENT naming the
// dimension that is not kDynamicGridDimension nor in [1,
// kMaxGridDimension], or saying that the static dimensions have more than
// kMaxGridPoints points (UNIMPLEMENTED for more than kMaxRank dimensions).
absl::StatusOr<int> CheckGrid(absl::Span<const int64_t> grid);

// OK, or INVALID_ARGUMENT "<what> ...": a kind outside the BlockDimKind
// enum, a size outside [1, kMaxBlockDimension], or a SQUEEZED dimension
// whose size is not 1.
absl::Status CheckBlockDim(bytecode::BlockDimKind kind, int64_t size,
                           absl::string_view what);

// OK if entry `alias` of input_output_aliases maps operand `input` (of
// `num_operands`: dynamic grid bounds, scalar prefetch and inputs) to
// result `output` (of `num_results`) and same_type(input, output) says
// they have the same dtype and shape; else INVALID_ARGUMENT saying which.
absl::Status CheckAlias(int alias, int64_t input, int64_t output,
                        int num_operands, int num_results,
                        absl::FunctionRef<bool(int, int)> same_type);

}  // namespace pallasvm::format

#endif  // PALLASVM_FORMAT_MODULE_LIMITS_H_
