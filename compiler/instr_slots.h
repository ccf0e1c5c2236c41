// Which operands of an instruction are frame slots: the one place the
// compiler's passes over emitted code (slot packing in program_builder.cc,
// ref fusion in ref_fusion.cc) learn it from, by instruction format.
#ifndef PALLASVM_COMPILER_INSTR_SLOTS_H_
#define PALLASVM_COMPILER_INSTR_SLOTS_H_

#include <cstdint>

#include "vm/opcodes.h"
#include "vm/program.h"

namespace pallasvm::compiler {

// clang-format off
// Calls f(slot) for every frame-slot operand of `in` (descriptors aside;
// operands that name refs, by their aux bits, are not slots).
template <typename F>
inline void ForEachInstrSlot(vm::Instr& in, F&& f) {
  using vm::Format;
  switch (vm::Info(in.op).format) {
    case Format::BINARY_VV: case Format::BINARY_VS: case Format::BINARY_SV:
    case Format::BINARY_SS:
      f(in.a);
      if (!(in.aux & vm::kOperandRefB)) f(in.b);
      if (!(in.aux & vm::kOperandRefC)) f(in.c);
      break;
    case Format::DOT:
      if (!(in.aux & vm::kOperandRefA)) f(in.a);
      if (!(in.aux & vm::kOperandRefB)) f(in.b);
      if (!(in.aux & vm::kOperandRefC)) f(in.c);
      break;
    case Format::UNARY_V:
      f(in.a);
      if (!(in.aux & vm::kOperandRefB)) f(in.b);
      break;
    case Format::UNARY_S: case Format::COPY:
    case Format::MOV: case Format::FILL: case Format::REDUCE:
      f(in.a); f(in.b);
      break;
    case Format::GATHER:
      f(in.a); f(in.b); f(in.c);
      break;
    case Format::SORT:
      f(in.a); f(in.b);
      break;
    case Format::SELECT: case Format::TERNARY:
      f(in.a); f(in.b); f(in.c); f(in.d);
      break;
    case Format::LAYOUT:
      f(in.a);
      if (in.op == vm::Op::STRIDED_COPY) f(in.b);
      break;
    case Format::ACCESS_LOAD: case Format::GRID: case Format::BRANCH:
    case Format::CHECK:
      f(in.a);
      break;
    case Format::ACCESS_STORE:
      if (!(in.aux & vm::kOperandRefB)) f(in.b);
      break;
    case Format::ACCESS_MASKED_STORE:
      f(in.b); f(in.c);
      break;
    case Format::SEMAPHORE:
      f(in.b);
      if (in.aux & 1) f(in.c);  // SEM_SIGNAL's core
      if (in.aux & 2) f(in.n);  // and device
      break;
    case Format::SEMAPHORE_READ: case Format::PRINT_ARG: case Format::PRINT:
      f(in.a);
      break;
    case Format::DMA:
      if (in.aux != 0) f(in.n);  // the destination's core or device
      break;
    case Format::JUMP: case Format::NONE: case Format::SCOPE:
      break;
  }
}
// clang-format on

inline bool IsAccess(const vm::Instr& in) {
  const vm::Format f = vm::Info(in.op).format;
  return f == vm::Format::ACCESS_LOAD || f == vm::Format::ACCESS_STORE ||
         f == vm::Format::ACCESS_MASKED_STORE;
}

// Calls f(slot) for every frame slot an access descriptor names.
template <typename F>
inline void ForEachAccessSlot(vm::AccessDesc& a, F&& f) {
  if (a.base_kind == vm::AccessBase::FRAME) {
    uint32_t base = static_cast<uint32_t>(a.base);
    f(base);
    a.base = static_cast<int32_t>(base);
  }
  for (int i = 0; i < a.rank; ++i) {
    if (a.dims[i].start_slot >= 0) {
      uint32_t s = static_cast<uint32_t>(a.dims[i].start_slot);
      f(s);
      a.dims[i].start_slot = static_cast<int32_t>(s);
    }
    if (a.dims[i].size_slot >= 0) {
      uint32_t s = static_cast<uint32_t>(a.dims[i].size_slot);
      f(s);
      a.dims[i].size_slot = static_cast<int32_t>(s);
    }
  }
}

}  // namespace pallasvm::compiler

#endif  // PALLASVM_COMPILER_INSTR_SLOTS_H_
