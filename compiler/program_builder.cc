#include "compiler/program_builder.h"

#include <algorithm>
#include <cstring>

#include "absl/strings/str_cat.h"

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
  return static_cast<uint32_t>(std::min<uint64_t>(slot, kConstantBase - 1));
}

uint32_t ProgramBuilder::Constant(const void* data, size_t bytes) {
  std::string key(static_cast<const char*>(data), bytes);
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
  program_.code.push_back(instr);
  program_.debug_index.push_back(current_loc_);
  return pc() - 1;
}

uint32_t ProgramBuilder::AddLayout(const vm::LayoutDesc& layout) {
  program_.layouts.push_back(layout);
  return static_cast<uint32_t>(program_.layouts.size() - 1);
}

uint32_t ProgramBuilder::AddAccess(const vm::AccessDesc& access) {
  program_.accesses.push_back(access);
  return static_cast<uint32_t>(program_.accesses.size() - 1);
}

int ProgramBuilder::AddFunction(vm::Function function) {
  program_.functions.push_back(std::move(function));
  return static_cast<int>(program_.functions.size() - 1);
}

void ProgramBuilder::SetRefs(std::vector<int64_t> ref_sizes) {
  program_.num_refs = static_cast<uint32_t>(ref_sizes.size());
  program_.ref_sizes = std::move(ref_sizes);
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

uint32_t ProgramBuilder::Relocate(uint32_t slot, uint32_t values_base) const {
  return slot >= kConstantBase ? slot - kConstantBase : slot + values_base;
}

vm::Program ProgramBuilder::Finish() {
  const uint32_t values_base = static_cast<uint32_t>(
      (constants_end_ + vm::kSlotAlignment - 1) / vm::kSlotAlignment *
      vm::kSlotAlignment);
  auto reloc = [&](uint32_t& slot) { slot = Relocate(slot, values_base); };
  using vm::Format;
  for (vm::Instr& in : program_.code) {
    switch (vm::Info(in.op).format) {
      case Format::BINARY_VV: case Format::BINARY_VS: case Format::BINARY_SV:
      case Format::BINARY_SS: case Format::DOT:
        reloc(in.a); reloc(in.b); reloc(in.c);
        break;
      case Format::UNARY_V: case Format::UNARY_S: case Format::COPY:
      case Format::MOV: case Format::FILL: case Format::REDUCE:
        reloc(in.a); reloc(in.b);
        break;
      case Format::SELECT:
        reloc(in.a); reloc(in.b); reloc(in.c); reloc(in.d);
        break;
      case Format::LAYOUT:
        reloc(in.a);
        if (in.op == vm::Op::STRIDED_COPY) reloc(in.b);
        break;
      case Format::ACCESS_LOAD: case Format::GRID: case Format::BRANCH:
        reloc(in.a);
        break;
      case Format::ACCESS_STORE:
        reloc(in.b);
        break;
      case Format::JUMP: case Format::NONE:
        break;
    }
  }
  for (vm::AccessDesc& a : program_.accesses) {
    if (a.base_kind == vm::AccessBase::FRAME) {
      uint32_t base = static_cast<uint32_t>(a.base);
      reloc(base);
      a.base = static_cast<int32_t>(base);
    }
    for (int i = 0; i < a.rank; ++i) {
      if (a.dims[i].start_slot >= 0) {
        uint32_t s = static_cast<uint32_t>(a.dims[i].start_slot);
        reloc(s);
        a.dims[i].start_slot = static_cast<int32_t>(s);
      }
    }
  }
  for (vm::Function& f : program_.functions) {
    for (uint32_t& s : f.param_slots) reloc(s);
    for (uint32_t& s : f.result_slots) reloc(s);
  }
  program_.frame_size = static_cast<uint32_t>(
      (values_base + frame_end_ + vm::kSlotAlignment - 1) /
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
