// What the lowering rules that touch refs share (lower_ref.cc's get, swap
// and masked accesses; lower_machine.cc's DMAs and semaphores): building an
// access descriptor from an equation's indexers, finding the operands the
// exporter names by param, and refusing direct access to HBM and semaphore
// refs.
#ifndef PALLASVM_COMPILER_REF_ACCESS_H_
#define PALLASVM_COMPILER_REF_ACCESS_H_

#include <cstdint>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "compiler/lowering.h"

namespace pallasvm::compiler {

inline constexpr int64_t kDynamicSize = -1;

struct RefAccess {
  uint32_t access;  // descriptor index
  Shape shape;      // shape of the accessed value (kDynamicSize: dynamic)
  vm::DType dtype;  // its dtype (a bitcast transform changes the ref's)
  // A bitcast to a wider dtype packs `pack` consecutive rows of the
  // narrow `stored` dtype into one wide element (pltpu.bitcast's layout):
  // the descriptor then reads the region as [..., rows, pack, lanes] of
  // `stored` elements, which PackRows / UnpackRows convert.
  int64_t pack = 1;
  vm::DType stored = vm::DType::F32;
  Shape stored_shape;  // the region's dense shape, of `stored` elements
  // Per dynamic dimension of `shape`, the frame slot of its S32 size.
  std::vector<uint32_t> size_slots;
};

struct AccessOptions {
  // The INDEXERS param applied to the ref (absent or empty: the whole ref).
  absl::string_view param = "indexers";
  // A masked store's region may hang over its ref: only its span must fit.
  bool clipped = false;
  // Static starts go to constant slots, checked when the access runs: a
  // DMA's source may leave its ref under out_of_bounds_reads=
  // "uninitialized", which only the run knows.
  bool runtime_bounds = false;
  // A slice may have a dynamic size (DMAs only): its dimension of the
  // result's shape is kDynamicSize, and its slot is in `size_slots`.
  bool dynamic_sizes = false;
};

// The access descriptor for `ref` indexed by the equation's indexers.
// `kind` ("read", "write", "masked swap") names the access in errors, as
// interpret mode names it. Static starts are bounds-checked here.
absl::StatusOr<RefAccess> BuildAccess(Lowerer& l, const Lowerer::Eqn& e,
                                      const Value& ref, absl::string_view kind,
                                      const AccessOptions& options = {});

// The operand that the param `<slot>_operand` names (the exporter's
// encoding of a primitive's args_tree / tree); nullptr if the param is
// NONE (an absent mask, semaphore or device id).
absl::StatusOr<const Value*> NamedOperand(Lowerer& l, const Lowerer::Eqn& e,
                                          absl::string_view slot);

// An error unless the kernel may read and write `ref` itself: HBM refs are
// reached through DMAs, semaphores through the semaphore primitives. The
// HBM message is interpret mode's.
absl::Status CheckDirectlyAccessible(Lowerer& l, const Lowerer::Eqn& e,
                                     const Value& ref);

}  // namespace pallasvm::compiler

#endif  // PALLASVM_COMPILER_REF_ACCESS_H_
