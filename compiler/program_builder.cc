#include "compiler/program_builder.h"

#include <algorithm>
#include <cstring>

#include "absl/strings/str_cat.h"
#include "compiler/instr_slots.h"
#include "compiler/ref_fusion.h"

namespace pallasvm::compiler {

namespace {

uint64_t Bump(uint64_t& end, int64_t bytes) {
  const uint64_t align = bytes > 8 ? vm::kSlotAlignment : 8;
  end = (end + align - 1) / align * align;
  const uint64_t slot = end;
  end += static_cast<uint64_t>(bytes > 0 ? bytes : 1);
  return slot;
}

}  // namespace

uint32_t ProgramBuilder::Alloc(int64_t bytes) {
  // Saturate: CheckFrameSize() reports frames past the operand range.
  const uint64_t slot = Bump(frame_end_, bytes);
  allocations_.push_back({slot, bytes > 0 ? bytes : 1,
                          bytes > 8 ? uint64_t{vm::kSlotAlignment} : 8});
  return static_cast<uint32_t>(std::min<uint64_t>(slot, kConstantBase - 1));
}

uint32_t ProgramBuilder::AllocPersistent(int64_t bytes) {
  const uint32_t slot = Alloc(bytes);
  allocations_.back().persistent = true;
  return slot;
}

int ProgramBuilder::FindAllocation(uint32_t slot) const {
  auto it = std::upper_bound(
      allocations_.begin(), allocations_.end(), uint64_t{slot},
      [](uint64_t s, const Allocation& a) { return s < a.offset; });
  if (it == allocations_.begin()) return -1;
  --it;
  if (slot >= it->offset + static_cast<uint64_t>(it->bytes)) return -1;
  return static_cast<int>(it - allocations_.begin());
}

// Liveness: an allocation lives from its first to its last mention in the
// instruction stream (operands, access descriptors, function parameters and
// results). A loop (a backward JUMP from j to t) stretches every allocation
// that is live across its boundary to cover the whole loop, since the next
// iteration runs [t, j] again. Then a linear scan gives each allocation the
// lowest offset not used by an allocation alive at the same time; two
// allocations mentioned by one instruction are both alive at it, so an
// instruction's result never shares bytes with its operands.
std::vector<uint64_t> ProgramBuilder::AssignSlotsByLiveness(
    uint64_t* values_size) {
  const size_t n = allocations_.size();
  constexpr int64_t kUnused = -1;
  std::vector<int64_t> first(n, kUnused), last(n, kUnused);
  auto mention = [&](uint32_t slot, int64_t pc) {
    if (slot >= kConstantBase) return;
    const int a = FindAllocation(slot);
    if (a < 0) return;
    if (first[a] == kUnused || pc < first[a]) first[a] = pc;
    if (pc > last[a]) last[a] = pc;
  };
  std::vector<std::pair<int64_t, int64_t>> loops;
  for (size_t pc = 0; pc < program_.code.size(); ++pc) {
    vm::Instr& in = program_.code[pc];
    ForEachInstrSlot(in, [&](uint32_t& s) { mention(s, pc); });
    vm::ForEachAccessOperand(in, [&](uint32_t d) {
      if (d >= program_.accesses.size()) return;
      vm::AccessDesc copy = program_.accesses[d];
      ForEachAccessSlot(copy, [&](uint32_t& s) { mention(s, pc); });
    });
    if (in.op == vm::Op::JUMP && in.a <= pc) loops.emplace_back(in.a, pc);
  }
  for (size_t f = 0; f < program_.functions.size(); ++f) {
    const vm::Function& fn = program_.functions[f];
    const int64_t end = f + 1 < program_.functions.size()
                            ? program_.functions[f + 1].entry_pc - 1
                            : static_cast<int64_t>(program_.code.size()) - 1;
    for (uint32_t s : fn.param_slots) mention(s, fn.entry_pc);
    for (uint32_t s : fn.result_slots) mention(s, std::max<int64_t>(end, 0));
  }
  // Persistent allocations live through all of the code: no other value
  // ever shares their bytes, so they keep their contents between calls.
  for (size_t a = 0; a < n; ++a) {
    if (allocations_[a].persistent && !program_.code.empty()) {
      first[a] = 0;
      last[a] = static_cast<int64_t>(program_.code.size()) - 1;
    }
  }
  for (bool changed = true; changed;) {
    changed = false;
    for (auto [t, j] : loops) {
      for (size_t a = 0; a < n; ++a) {
        if (first[a] == kUnused || last[a] < t || first[a] > j) continue;
        if (first[a] < t || last[a] > j) {
          if (first[a] > t) { first[a] = t; changed = true; }
          if (last[a] < j) { last[a] = j; changed = true; }
        }
      }
    }
  }
  std::vector<size_t> order;
  for (size_t a = 0; a < n; ++a) {
    if (first[a] != kUnused) order.push_back(a);
  }
  std::stable_sort(order.begin(), order.end(),
                   [&](size_t x, size_t y) { return first[x] < first[y]; });
  std::vector<uint64_t> placed(n, 0);
  std::vector<size_t> active;  // allocations alive at the current start
  uint64_t end = 0;
  for (size_t a : order) {
    active.erase(std::remove_if(active.begin(), active.end(),
                                [&](size_t b) { return last[b] < first[a]; }),
                 active.end());
    std::sort(active.begin(), active.end(),
              [&](size_t x, size_t y) { return placed[x] < placed[y]; });
    const uint64_t align = allocations_[a].align;
    const uint64_t size = static_cast<uint64_t>(allocations_[a].bytes);
    uint64_t at = 0;
    for (size_t b : active) {
      if (at + size <= placed[b]) break;  // fits in the gap before b
      const uint64_t b_end = placed[b] + static_cast<uint64_t>(allocations_[b].bytes);
      at = std::max(at, (b_end + align - 1) / align * align);
    }
    placed[a] = at;
    end = std::max(end, at + size);
    active.push_back(a);
  }
  *values_size = end;
  return placed;
}

uint32_t ProgramBuilder::Constant(const void* data, size_t bytes) {
  std::string key =
      bytes ? std::string(static_cast<const char*>(data), bytes) : "";
  auto it = constant_slots_.find(key);
  if (it != constant_slots_.end()) return it->second;
  const uint64_t offset = Bump(constants_end_, static_cast<int64_t>(bytes));
  const uint32_t slot = kConstantBase + static_cast<uint32_t>(offset);
  constants_.emplace_back(static_cast<uint32_t>(offset), key);
  constant_slots_.emplace(std::move(key), slot);
  return slot;
}

void ProgramBuilder::SetLocation(const vm::SourceLoc& loc) {
  std::string key = absl::StrCat(loc.primitive, "\x1f", loc.file, "\x1f",
                                 loc.line, "\x1f", loc.function);
  auto [it, inserted] =
      loc_index_.emplace(key, static_cast<uint32_t>(locs_.size()));
  if (inserted) locs_.push_back(loc);
  current_loc_ = it->second;
}

uint32_t ProgramBuilder::Emit(const vm::Instr& instr) {
  // Past the budget nothing more is kept (the compile fails): pc 0 stands
  // in for the instruction, so callers that patch it stay in range.
  if (program_.code.size() >= kMaxInstructions) {
    over_budget_ = true;
    return 0;
  }
  program_.code.push_back(instr);
  program_.debug_index.push_back(current_loc_);
  return pc() - 1;
}

uint32_t ProgramBuilder::AddLayout(const vm::LayoutDesc& layout) {
  if (program_.layouts.size() >= kMaxDescriptors) {
    over_budget_ = true;
    return 0;
  }
  program_.layouts.push_back(layout);
  return static_cast<uint32_t>(program_.layouts.size() - 1);
}

uint32_t ProgramBuilder::AddAccess(const vm::AccessDesc& access) {
  if (program_.accesses.size() >= kMaxDescriptors) {
    over_budget_ = true;
    return 0;
  }
  program_.accesses.push_back(access);
  return static_cast<uint32_t>(program_.accesses.size() - 1);
}

absl::Status ProgramBuilder::CheckBudget() const {
  if (!over_budget_) return absl::OkStatus();
  return absl::ResourceExhaustedError(absl::StrCat(
      "the kernel compiles to more than ", kMaxInstructions,
      " instructions or ", kMaxDescriptors,
      " access or layout descriptors (pallasvm's limit on a kernel's code)"));
}

int ProgramBuilder::AddFunction(vm::Function function) {
  program_.functions.push_back(std::move(function));
  return static_cast<int>(program_.functions.size() - 1);
}

int ProgramBuilder::AddRef(RefInfo info) {
  program_.ref_sizes.push_back(info.bytes);
  program_.ref_spaces.push_back(info.space);
  program_.num_refs = static_cast<uint32_t>(program_.ref_sizes.size());
  refs_.push_back(std::move(info));
  return static_cast<int>(refs_.size()) - 1;
}

absl::Status ProgramBuilder::CheckFrameSize() const {
  if (frame_end_ + constants_end_ >= kConstantBase - vm::kSlotAlignment) {
    return absl::ResourceExhaustedError(absl::StrCat(
        "kernel needs a frame of ", frame_end_,
        " bytes of values and ", constants_end_,
        " of constants; the VM addresses at most 1 GiB"));
  }
  return absl::OkStatus();
}

vm::Program ProgramBuilder::Finish() {
  FuseRefAccesses(program_, [this](uint32_t slot) {
    return slot >= kConstantBase ? -1 : FindAllocation(slot);
  });
  const uint32_t values_base = static_cast<uint32_t>(
      (constants_end_ + vm::kSlotAlignment - 1) / vm::kSlotAlignment *
      vm::kSlotAlignment);
  uint64_t values_size = 0;
  const std::vector<uint64_t> placed = AssignSlotsByLiveness(&values_size);
  // Every slot operand, once: constants to [0, C), values to their packed
  // offsets after the constants (an operand may point inside a value, e.g.
  // one batch of a batched dot, so the offset within it is kept).
  auto reloc = [&](uint32_t& slot) {
    if (slot >= kConstantBase) {
      slot -= kConstantBase;
      return;
    }
    const int a = FindAllocation(slot);
    if (a < 0) return;  // mentioned nowhere else: a placeholder
    slot = static_cast<uint32_t>(values_base + placed[a] +
                                 (slot - allocations_[a].offset));
  };
  for (vm::Instr& in : program_.code) ForEachInstrSlot(in, reloc);
  for (vm::AccessDesc& a : program_.accesses) ForEachAccessSlot(a, reloc);
  for (vm::Function& f : program_.functions) {
    for (uint32_t& s : f.param_slots) reloc(s);
    for (uint32_t& s : f.result_slots) reloc(s);
  }
  program_.frame_size = static_cast<uint32_t>(
      (values_base + values_size + vm::kSlotAlignment - 1) /
      vm::kSlotAlignment * vm::kSlotAlignment);
  program_.constants.assign(constants_end_, 0);
  for (const auto& [offset, bytes] : constants_) {
    std::memcpy(program_.constants.data() + offset, bytes.data(),
                bytes.size());
  }
  program_.debug_locs = locs_;
  return std::move(program_);
}

}  // namespace pallasvm::compiler
