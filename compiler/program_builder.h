// Accumulates a vm::Program while the lowering walks a jaxpr: frame slots,
// constants, instructions with their source locations, descriptors, jumps.
#ifndef PALLASVM_COMPILER_PROGRAM_BUILDER_H_
#define PALLASVM_COMPILER_PROGRAM_BUILDER_H_

#include "absl/strings/string_view.h"
#include <cstdint>
#include <string>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/status/statusor.h"
#include "vm/program.h"

namespace pallasvm::compiler {

class ProgramBuilder {
 public:
  // A frame slot of `bytes` bytes: 64-byte aligned for blocks, 8 for
  // scalars. While code is emitted every slot is distinct; Finish() then
  // packs them by liveness (see AssignSlotsByLiveness in the .cc).
  uint32_t Alloc(int64_t bytes);
  // A slot that no other value ever shares, whatever its liveness: its
  // contents persist from one run of the code to the next on the same
  // frame (the runtime keeps one zeroed frame per core for a whole call).
  uint32_t AllocPersistent(int64_t bytes);

  // A frame slot holding `data`, shared by equal constants.
  //
  // The frame is [constants | values], but constants keep appearing while
  // the code is emitted. So constants get provisional offsets from
  // kConstantBase up, values from 0 up, and Finish() relocates every slot
  // operand: constants to [0, C), values to [C, ...).
  uint32_t Constant(const void* data, size_t bytes);
  static constexpr uint32_t kConstantBase = 1u << 30;

  // Sets the source location attached to the instructions emitted next.
  void SetLocation(const vm::SourceLoc& loc);
  const vm::SourceLoc& location() const { return locs_[current_loc_]; }

  uint32_t Emit(const vm::Instr& instr);
  uint32_t pc() const { return static_cast<uint32_t>(program_.code.size()); }
  vm::Instr& at(uint32_t pc) { return program_.code[pc]; }

  uint32_t AddLayout(const vm::LayoutDesc& layout);
  uint32_t AddAccess(const vm::AccessDesc& access);

  // A kernel's code is small (real kernels compile to a few thousand
  // instructions); a crafted file must not make the compiler emit
  // gigabytes. Past these counts Emit/AddLayout/AddAccess keep nothing and
  // CheckBudget fails; loops that emit per element or repetition stop at
  // over_budget().
  static constexpr size_t kMaxInstructions = size_t{1} << 21;  // 48 MiB
  static constexpr size_t kMaxDescriptors = size_t{1} << 17;   // 41 MiB of accesses
  bool over_budget() const { return over_budget_; }
  absl::Status CheckBudget() const;
  int AddFunction(vm::Function function);
  vm::Function& function(int index) { return program_.functions[index]; }

  // The refs of the program: the kernel's own (compiler.cc adds them
  // first, in kernel order) and those its run_scoped equations allocate.
  struct RefInfo {
    vm::DType dtype = vm::DType::F32;
    std::vector<int64_t> shape;
    vm::MemorySpace space = vm::MemorySpace::VMEM;
    std::string origin;   // for reports (bytecode.fbs Ref.origin)
    // buffer_bounds="padded": interpret mode's allocated shape, which
    // bounds its accesses (vm::AccessDim::padding); empty: not padded.
    std::vector<int64_t> padded_shape;
    bool scoped = false;  // a run_scoped allocation
    int64_t bytes = 0;
  };
  int AddRef(RefInfo info);
  const std::vector<RefInfo>& refs() const { return refs_; }

  // Frame bytes allocated so far; fails past the 32-bit operand range.
  absl::Status CheckFrameSize() const;

  // Rewrites the code to keep whole-ref values in their refs where that is
  // exact (compiler/ref_fusion.h), packs slots by liveness, relocates every
  // slot operand and returns the program.
  vm::Program Finish();

 private:
  vm::Program program_;
  std::vector<RefInfo> refs_;
  bool over_budget_ = false;
  uint64_t frame_end_ = 0;
  uint64_t constants_end_ = 0;  // relative to kConstantBase
  struct Allocation {
    uint64_t offset;  // provisional, from Alloc
    int64_t bytes;
    uint64_t align;
    bool persistent = false;
  };
  std::vector<Allocation> allocations_;
  // Final offset (relative to the values region) of each allocation.
  std::vector<uint64_t> AssignSlotsByLiveness(uint64_t* values_size);
  int FindAllocation(uint32_t slot) const;
  std::vector<std::pair<uint32_t, std::string>> constants_;
  absl::flat_hash_map<std::string, uint32_t> constant_slots_;
  std::vector<vm::SourceLoc> locs_ = {vm::SourceLoc{}};
  absl::flat_hash_map<std::string, uint32_t> loc_index_;
  uint32_t current_loc_ = 0;
};

}  // namespace pallasvm::compiler

#endif  // PALLASVM_COMPILER_PROGRAM_BUILDER_H_
