// The disassembler: a readable listing of a program, one instruction per
// line, for debugging the compiler and for error reports.
//
//   ; function 0 'kernel'  entry 0  params []  results []
//       0  ADD_F32_VV          r@128 := r@0, r@64  n=1024        ; add
//       kernel.py:12
//
// Frame operands print as r@<byte offset>, whole-ref operands as ref<i>;
// access regions as
// `ref2[ds(r@16, 8), ds(0, 128, 2)]`, like pl.ds(start, size, stride).
// It tolerates unverified programs (bad indices print as such), since a
// listing is most wanted when something is wrong.
#include <algorithm>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "vm/interpreter.h"

namespace pallasvm::vm {
namespace {

std::string Slot(uint32_t offset) { return absl::StrCat("r@", offset); }

// An operand that is a frame slot, or with its aux bit set a whole ref.
std::string SlotOrRef(const Instr& in, uint32_t operand, uint16_t ref_bit) {
  return (in.aux & ref_bit) ? absl::StrCat("ref", operand) : Slot(operand);
}

std::string Dims(const int64_t* dims, int rank) {
  return absl::StrCat("[", absl::StrJoin(dims, dims + rank, ", "), "]");
}

std::string DescribeLayout(const Program& p, uint32_t d) {
  if (d >= p.layouts.size()) return absl::StrCat("<bad layout ", d, ">");
  const LayoutDesc& l = p.layouts[d];
  const int rank = std::clamp(l.rank, 0, kMaxRank);
  return absl::StrCat("{elem ", l.elem_size, ", offset ", l.offset, ", shape ",
                      Dims(l.shape, rank), ", strides ", Dims(l.strides, rank),
                      "}");
}

std::string DescribeAccess(const Program& p, uint32_t d) {
  if (d >= p.accesses.size()) return absl::StrCat("<bad access ", d, ">");
  const AccessDesc& acc = p.accesses[d];
  const int rank = std::min<int>(acc.rank, kMaxRank);
  std::vector<std::string> index;
  std::vector<int64_t> extents, padded;
  bool has_padding = false;
  for (int i = 0; i < rank; ++i) {
    const AccessDim& dim = acc.dims[i];
    const std::string start =
        dim.start_slot >= 0 ? Slot(dim.start_slot) : absl::StrCat(dim.start);
    extents.push_back(dim.extent);
    padded.push_back(dim.extent + dim.padding);
    has_padding |= dim.padding != 0;
    if (dim.squeezed) {
      index.push_back(start);
    } else if (dim.stride == 1) {
      index.push_back(absl::StrCat("ds(", start, ", ", dim.size, ")"));
    } else {
      index.push_back(
          absl::StrCat("ds(", start, ", ", dim.size, ", ", dim.stride, ")"));
    }
  }
  const std::string base = acc.base_kind == AccessBase::REF
                               ? absl::StrCat("ref", acc.base)
                               : absl::StrCat("frame", Slot(acc.base));
  return absl::StrCat(
      base, "[", absl::StrJoin(index, ", "), "] of [",
      absl::StrJoin(extents, ", "), "]",
      has_padding ? absl::StrCat(" padded to [", absl::StrJoin(padded, ", "), "]")
                  : "",
      " elem ", int(acc.elem_size), acc.clamp ? " clamped" : "");
}

std::string Operands(const Program& p, const Instr& in) {
  const OpInfo& info = Info(in.op);
  const std::string n = absl::StrCat("  n=", in.n);
  switch (info.format) {
    case Format::BINARY_VV:
    case Format::BINARY_VS:
    case Format::BINARY_SV:
      return absl::StrCat(Slot(in.a), " := ", SlotOrRef(in, in.b, kOperandRefB),
                          ", ", SlotOrRef(in, in.c, kOperandRefC), n);
    case Format::BINARY_SS:
      return absl::StrCat(Slot(in.a), " := ", Slot(in.b), ", ", Slot(in.c));
    case Format::UNARY_V:
      return absl::StrCat(Slot(in.a), " := ", SlotOrRef(in, in.b, kOperandRefB),
                          n);
    case Format::UNARY_S:
    case Format::MOV:
      return absl::StrCat(Slot(in.a), " := ", Slot(in.b));
    case Format::COPY:
      return absl::StrCat(Slot(in.a), " := ", Slot(in.b), "  bytes=", in.n);
    case Format::FILL:
      return absl::StrCat(Slot(in.a), " := fill ", Slot(in.b), n);
    case Format::SELECT:
      return absl::StrCat(Slot(in.a), " := ", Slot(in.b), " ? ", Slot(in.d),
                          " : ", Slot(in.c), n);
    case Format::TERNARY:  // FMA_F32
      return absl::StrCat(Slot(in.a), " := ", Slot(in.b), " * ", Slot(in.c),
                          " + ", Slot(in.d), n);
    case Format::LAYOUT:
      if (in.op == Op::IOTA_S32) {
        return absl::StrCat(Slot(in.a), " := iota dim ", in.aux, " of ",
                            DescribeLayout(p, in.d), "  (layout ", in.d, ")");
      }
      return absl::StrCat(Slot(in.a), " := ", Slot(in.b), " viewed as ",
                          DescribeLayout(p, in.d), "  (layout ", in.d, ")");
    case Format::ACCESS_LOAD:
      return absl::StrCat(Slot(in.a), " := ", DescribeAccess(p, in.d),
                          "  (access ", in.d, ")");
    case Format::ACCESS_STORE:
      return absl::StrCat(
          DescribeAccess(p, in.d), in.op == Op::STORE ? " := " : " += ",
          SlotOrRef(in, in.b, kOperandRefB), "  (access ", in.d, ")");
    case Format::ACCESS_MASKED_STORE:
      return absl::StrCat(DescribeAccess(p, in.d), " := ", Slot(in.c), " ? ",
                          Slot(in.b), " : itself", n, "  (access ", in.d,
                          ")");
    case Format::REDUCE:
      return absl::StrCat(Slot(in.a), " := ", Slot(in.b), " as [", in.c, ", ",
                          in.d, ", ", in.n, "] over axis 1");
    case Format::DOT: {
      std::string mkn = "<bad layout>";
      if (in.d < p.layouts.size() && p.layouts[in.d].rank == 3) {
        const LayoutDesc& l = p.layouts[in.d];
        mkn = absl::StrCat("M=", l.shape[0], " K=", l.shape[1],
                           " N=", l.shape[2]);
      }
      const std::string dst = SlotOrRef(in, in.a, kOperandRefA);
      return absl::StrCat(dst,
                          " := ", in.op == Op::DOT_ADD_F32 ? dst + " + " : "",
                          SlotOrRef(in, in.b, kOperandRefB), " @ ",
                          SlotOrRef(in, in.c, kOperandRefC), "  ", mkn);
    }
    case Format::GRID:
      return absl::StrCat(Slot(in.a), " := axis ", in.b);
    case Format::GATHER:
      return absl::StrCat(Slot(in.a), " := ", Slot(in.b), "[", Slot(in.c),
                          "] of ", in.d, n);
    case Format::CHECK:
      return absl::StrCat("0 <= ", Slot(in.a), " <= ", in.b, "  (dim ", in.c,
                          in.aux & 1 ? ", write)" : ", read)");
    case Format::SORT:
      return absl::StrCat(Slot(in.a), " := argsort ", Slot(in.b), " as [",
                          in.c, ", ", in.d, ", ", in.n, "] along axis 1");
    case Format::JUMP:
      return absl::StrCat("-> ", in.a);
    case Format::BRANCH:
      return absl::StrCat("if ", in.op == Op::JUMP_IF_FALSE ? "!" : "",
                          Slot(in.a), " -> ", in.b);
    case Format::NONE:
      return "";
    case Format::DMA:
      return absl::StrCat(
          DescribeAccess(p, in.a), " -> ", DescribeAccess(p, in.b), "  sem ",
          DescribeAccess(p, in.d),
          in.c == kNoAccess ? std::string()
                            : absl::StrCat("  send sem ", DescribeAccess(p, in.c)),
          in.aux == 1 ? absl::StrCat("  on core ", Slot(in.n))
          : in.aux == 2 ? absl::StrCat("  on device ", Slot(in.n)) : "");
    case Format::SEMAPHORE:
      return absl::StrCat(DescribeAccess(p, in.d), in.op == Op::SEM_WAIT ? " wait " : " signal ",
                          Slot(in.b),
                          (in.aux & 1) ? absl::StrCat(" on core ", Slot(in.c)) : "",
                          (in.aux & 2) ? absl::StrCat(" on device ", Slot(in.n)) : "");
    case Format::SEMAPHORE_READ:
      return absl::StrCat(Slot(in.a), " := ", DescribeAccess(p, in.d));
    case Format::PRINT_ARG:
      return absl::StrCat(Slot(in.a), " (", Name(static_cast<DType>(in.aux)),
                          ")");
    case Format::PRINT:
      return absl::StrCat("format ", Slot(in.a), "  bytes=", in.n);
    case Format::SCOPE:
      return absl::StrCat("refs [", in.a, ", ", uint64_t{in.a} + in.n, ")");
  }
  return "";
}

std::string Source(const Program& p, size_t pc) {
  if (pc >= p.debug_index.size()) return "";
  const uint32_t i = p.debug_index[pc];
  if (i >= p.debug_locs.size()) return "";
  const SourceLoc& loc = p.debug_locs[i];
  if (loc.file.empty()) return absl::StrCat("; ", loc.primitive);
  return absl::StrCat("; ", loc.primitive, "  ", loc.file, ":", loc.line);
}

}  // namespace

std::string Disassemble(const Program& program) {
  std::string out = absl::StrCat("; frame ", program.frame_size,
                                 " bytes, constants ", program.constants.size(),
                                 " bytes, ", program.num_refs, " refs\n");
  for (size_t pc = 0; pc < program.code.size(); ++pc) {
    for (size_t f = 0; f < program.functions.size(); ++f) {
      const Function& fn = program.functions[f];
      if (fn.entry_pc != pc) continue;
      std::vector<std::string> params, results;
      for (uint32_t s : fn.param_slots) params.push_back(Slot(s));
      for (uint32_t s : fn.result_slots) results.push_back(Slot(s));
      absl::StrAppend(&out, "; function ", f, " '", fn.name, "'  entry ",
                      fn.entry_pc, "  params [", absl::StrJoin(params, ", "),
                      "]  results [", absl::StrJoin(results, ", "), "]\n");
    }
    const Instr& in = program.code[pc];
    std::string line;
    if (static_cast<uint32_t>(in.op) >= static_cast<uint32_t>(kNumOps)) {
      line =
          absl::StrFormat("%5d  <bad opcode %d>", pc, static_cast<int>(in.op));
    } else {
      line = absl::StrFormat("%5d  %-20s%s", pc, std::string(Info(in.op).name),
                             Operands(program, in));
    }
    const std::string source = Source(program, pc);
    if (!source.empty()) {
      if (line.size() < 72) line.resize(72, ' ');
      absl::StrAppend(&line, "  ", source);
    }
    absl::StrAppend(&out, line, "\n");
  }
  return out;
}

}  // namespace pallasvm::vm
