// The bytecode verifier: run once when a program is loaded, it is what lets
// the dispatch loop trust the code. After Verify succeeds, no instruction
// can read or write outside the frame or a ref except through an access
// whose dynamic starts are checked when it runs.
//
// Rules per instruction, by its Format (vm/opcodes.h):
//   - every frame operand's byte range [offset, offset + extent) lies in the
//     frame, the extent being the element count times the dtype's size from
//     kOpInfo (n bytes for COPY, descriptor-derived for LAYOUT, ACCESS and
//     DOT), and the offset is aligned to the element size;
//   - nothing writes into the constant region [0, constants.size());
//   - a block destination either is disjoint from each block source or
//     starts at the same offset with elements no wider (in-place
//     elementwise ops); DOT and STRIDED_COPY destinations, and the dense
//     side of a frame-based access, must be disjoint from their sources;
//   - an operand that names a whole ref (the aux bits kOperandRef{A,B,C} of
//     the DOT and ACCESS_STORE formats and of the block sources of
//     elementwise ops) names an existing ref whose known size holds it, and
//     a destination ref is not also a source; no other aux bits are set in
//     those formats, the scalar elementwise ones or TERNARY (whose operands
//     are all frame blocks);
//   - descriptor indices are in range and descriptors are sane: rank,
//     element size, shapes, static starts of unclamped accesses in bounds,
//     every region fitting in its buffer, ref regions within the ref's known
//     size, start slots in the frame;
//   - jump targets are instructions, and no path from a function's entry
//     runs off the end of the code without a RETURN.
// Sizes are computed in 128-bit integers, so no descriptor can overflow them.
#include <algorithm>
#include <initializer_list>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/string_view.h"
#include "vm/interpreter.h"

namespace pallasvm::vm {
namespace {

using Int = __int128;

// Element width of the untyped data-movement opcodes.
int MoveWidth(Op op) {
  switch (op) {
    case Op::MOV_B1:
    case Op::FILL_B1:
    case Op::SELECT_B1:
    case Op::GATHER_B1:
      return 1;
    case Op::MOV_B2:
    case Op::FILL_B2:
    case Op::SELECT_B2:
    case Op::GATHER_B2:
      return 2;
    default:
      return 4;
  }
}

std::string Decimal(Int v) {
  if (v == 0) return "0";
  const bool negative = v < 0;
  unsigned __int128 u = negative ? -static_cast<unsigned __int128>(v)
                                 : static_cast<unsigned __int128>(v);
  std::string digits;
  for (; u != 0; u /= 10) digits.insert(digits.begin(), '0' + int(u % 10));
  return negative ? "-" + digits : digits;
}

// A byte range of the frame used by one operand.
struct Range {
  absl::string_view name;  // "a (dst)", ...
  Int offset = 0;
  Int bytes = 0;
};

class Verifier {
 public:
  explicit Verifier(const Program& program) : p_(program) {}

  // The end of the highest frame byte an operand or slot uses (or the
  // constants), once Run has succeeded.
  int64_t frame_used() const {
    return static_cast<int64_t>(
        std::max(frame_used_, Int{static_cast<int64_t>(p_.constants.size())}));
  }

  absl::Status Run() {
    if (p_.constants.size() > p_.frame_size) {
      return Error(absl::StrCat("the constants (", p_.constants.size(),
                                " bytes) do not fit in the frame (",
                                p_.frame_size, " bytes)"));
    }
    if (!p_.ref_sizes.empty() && p_.ref_sizes.size() != p_.num_refs) {
      return Error(absl::StrCat("ref_sizes has ", p_.ref_sizes.size(),
                                " entries for ", p_.num_refs, " refs"));
    }
    if (!p_.ref_spaces.empty() && p_.ref_spaces.size() != p_.num_refs) {
      return Error(absl::StrCat("ref_spaces has ", p_.ref_spaces.size(),
                                " entries for ", p_.num_refs, " refs"));
    }
    for (size_t r = 0; r < p_.ref_spaces.size(); ++r) {
      if (static_cast<uint8_t>(p_.ref_spaces[r]) >
          static_cast<uint8_t>(MemorySpace::VMEM_SHARED)) {
        return Error(absl::StrCat("ref ", r, " has memory space ",
                                  int(p_.ref_spaces[r])));
      }
    }
    if (!p_.debug_index.empty()) {
      if (p_.debug_index.size() != p_.code.size()) {
        return Error(absl::StrCat("debug_index has ", p_.debug_index.size(),
                                  " entries for ", p_.code.size(),
                                  " instructions"));
      }
      for (size_t pc = 0; pc < p_.debug_index.size(); ++pc) {
        if (p_.debug_index[pc] >= p_.debug_locs.size()) {
          return Error(absl::StrCat(
              "debug_index[", pc, "] = ", p_.debug_index[pc], " but there are ",
              p_.debug_locs.size(), " debug_locs"));
        }
      }
    }
    for (size_t pc = 0; pc < p_.code.size(); ++pc) {
      if (absl::Status s = VerifyInstr(pc); !s.ok()) return s;
    }
    for (size_t f = 0; f < p_.functions.size(); ++f) {
      if (absl::Status s = VerifyFunction(f); !s.ok()) return s;
    }
    return absl::OkStatus();
  }

 private:
  absl::Status Error(absl::string_view what) const {
    return absl::InvalidArgumentError(absl::StrCat("invalid program: ", what));
  }

  absl::Status InstrError(size_t pc, absl::string_view what) const {
    return absl::InvalidArgumentError(
        absl::StrCat("invalid program: instruction ", pc, " (",
                     std::string(Info(p_.code[pc].op).name), "): ", what));
  }

  // The operand's bytes lie in the frame, aligned to `align`, and (for a
  // destination) outside the constants.
  absl::Status CheckRange(size_t pc, const Range& r, int align,
                          bool written) const {
    if (r.offset < 0 || r.offset + r.bytes > Int{p_.frame_size}) {
      return InstrError(
          pc,
          absl::StrCat("operand ", r.name, ": ", Decimal(r.bytes),
                       " bytes at frame offset ", Decimal(r.offset),
                       " are outside the frame (", p_.frame_size, " bytes)"));
    }
    frame_used_ = std::max(frame_used_, r.offset + r.bytes);
    if (r.offset % align != 0) {
      return InstrError(
          pc, absl::StrCat("operand ", r.name, " at frame offset ",
                           Decimal(r.offset), " is not aligned to its ", align,
                           "-byte elements"));
    }
    if (written && r.bytes > 0 && r.offset < Int(p_.constants.size())) {
      return InstrError(
          pc, absl::StrCat("operand ", r.name, " writes frame offset ",
                           Decimal(r.offset), ", inside the constants [0, ",
                           p_.constants.size(), ")"));
    }
    return absl::OkStatus();
  }

  static bool Overlap(const Range& x, const Range& y) {
    return x.bytes > 0 && y.bytes > 0 && x.offset < y.offset + y.bytes &&
           y.offset < x.offset + x.bytes;
  }

  // dst and src are disjoint, or (in_place_ok) the same start with dst's
  // elements no wider than src's: elementwise loops read each element
  // before writing it.
  absl::Status CheckAliasing(size_t pc, const Range& dst, int dst_elem,
                             const Range& src, int src_elem,
                             bool in_place_ok) const {
    if (!Overlap(dst, src)) return absl::OkStatus();
    if (in_place_ok && dst.offset == src.offset && dst_elem <= src_elem) {
      return absl::OkStatus();
    }
    return InstrError(
        pc,
        absl::StrCat("destination ", dst.name, " [", Decimal(dst.offset), ", ",
                     Decimal(dst.offset + dst.bytes), ") overlaps source ",
                     src.name, " [", Decimal(src.offset), ", ",
                     Decimal(src.offset + src.bytes), ")",
                     in_place_ok ? " other than exactly in place" : ""));
  }

  absl::Status CheckTarget(size_t pc, absl::string_view name,
                           uint32_t target) const {
    if (target >= p_.code.size()) {
      return InstrError(pc, absl::StrCat("jump target ", name, " = ", target,
                                         " is past the code (", p_.code.size(),
                                         " instructions)"));
    }
    return absl::OkStatus();
  }

  static bool ValidElemSize(int s) { return s == 1 || s == 2 || s == 4; }

  // Only the operand-location bits `allowed` may be set in aux.
  absl::Status CheckRefBits(size_t pc, uint16_t aux, uint16_t allowed) const {
    if ((aux & ~allowed) == 0) return absl::OkStatus();
    return InstrError(pc, absl::StrCat("aux = ", aux, " sets bits other than ",
                                       "the operand-ref bits ", allowed));
  }

  // An operand naming a whole ref: the ref exists and its known size holds
  // the operand's `bytes`.
  absl::Status CheckRefOperand(size_t pc, absl::string_view name, uint32_t ref,
                               Int bytes) const {
    if (ref >= p_.num_refs) {
      return InstrError(
          pc, absl::StrCat("operand ", name, " names ref ", ref,
                           " but the program has ", p_.num_refs, " refs"));
    }
    if (p_.ref_sizes.empty() || p_.ref_sizes[ref] < 0) {
      return InstrError(pc, absl::StrCat("operand ", name, " names ref ", ref,
                                         ", whose size is unknown"));
    }
    if (absl::Status s = CheckDirectlyAccessible(pc, ref); !s.ok()) return s;
    if (bytes > p_.ref_sizes[ref]) {
      return InstrError(
          pc, absl::StrCat("operand ", name, " needs ", Decimal(bytes),
                           " bytes but ref ", ref, " has ", p_.ref_sizes[ref]));
    }
    return absl::OkStatus();
  }

  // A block source of an elementwise op: a whole ref holding it (its aux
  // bit set), or a frame range disjoint from the destination or exactly in
  // place.
  absl::Status CheckElementwiseSource(size_t pc, const Instr& in,
                                      uint16_t ref_bit, const Range& src,
                                      int src_elem, const Range& dst,
                                      int dst_elem) const {
    if (in.aux & ref_bit) {
      return CheckRefOperand(pc, src.name, static_cast<uint32_t>(src.offset),
                             src.bytes);
    }
    if (absl::Status s = CheckRange(pc, src, src_elem, false); !s.ok()) {
      return s;
    }
    return CheckAliasing(pc, dst, dst_elem, src, src_elem, true);
  }

  // A destination that is a whole ref overlaps a source only if the source
  // is the same ref (refs are disjoint buffers, apart from the frame).
  absl::Status CheckRefAliasing(size_t pc, absl::string_view dst_name,
                                uint32_t dst_ref, absl::string_view src_name,
                                uint32_t src_ref) const {
    if (dst_ref != src_ref) return absl::OkStatus();
    return InstrError(pc, absl::StrCat("destination ", dst_name, " and source ",
                                       src_name, " are both ref ", dst_ref));
  }

  // Shape sanity for a LayoutDesc; returns its element count in *count.
  absl::Status CheckLayout(size_t pc, const LayoutDesc& l, Int* count) const {
    if (l.rank < 0 || l.rank > kMaxRank) {
      return InstrError(pc, absl::StrCat("layout ", p_.code[pc].d, " has rank ",
                                         l.rank, " (max ", kMaxRank, ")"));
    }
    Int c = 1;
    for (int i = 0; i < l.rank; ++i) {
      if (l.shape[i] < 0 || l.shape[i] > Int{p_.frame_size}) {
        return InstrError(
            pc, absl::StrCat("layout ", p_.code[pc].d, " has shape[", i,
                             "] = ", l.shape[i]));
      }
      c *= l.shape[i];
      if (c > Int{p_.frame_size}) c = Int{p_.frame_size} + 1;  // too big
    }
    *count = c;
    return absl::OkStatus();
  }

  absl::Status VerifyLayout(size_t pc, const Instr& in) const {
    if (in.d >= p_.layouts.size()) {
      return InstrError(
          pc, absl::StrCat("layout index d = ", in.d, " but there are ",
                           p_.layouts.size(), " layouts"));
    }
    const LayoutDesc& l = p_.layouts[in.d];
    Int count = 0;
    if (absl::Status s = CheckLayout(pc, l, &count); !s.ok()) return s;
    if (in.op == Op::IOTA_S32) {
      if (in.aux >= l.rank) {
        return InstrError(
            pc, absl::StrCat("iota dimension aux = ", in.aux, " but layout ",
                             in.d, " has rank ", l.rank));
      }
      return CheckRange(pc, {"a (dst)", in.a, count * 4}, 4, true);
    }
    if (!ValidElemSize(l.elem_size)) {
      return InstrError(pc, absl::StrCat("layout ", in.d, " has elem_size ",
                                         l.elem_size, " (must be 1, 2 or 4)"));
    }
    const Range dst{"a (dst)", in.a, count * l.elem_size};
    if (absl::Status s = CheckRange(pc, dst, l.elem_size, true); !s.ok()) {
      return s;
    }
    if (count == 0) return absl::OkStatus();
    // The source elements span [offset + lowest, offset + highest].
    Int lowest = l.offset, highest = l.offset;
    for (int i = 0; i < l.rank; ++i) {
      const Int reach = Int{l.shape[i] - 1} * l.strides[i];
      (reach < 0 ? lowest : highest) += reach;
    }
    const Range src{"b (src) as viewed by the layout",
                    Int{in.b} + lowest * l.elem_size,
                    (highest - lowest + 1) * l.elem_size};
    if (absl::Status s = CheckRange(pc, src, 1, false); !s.ok()) return s;
    if (in.b % l.elem_size != 0) {
      return InstrError(pc, absl::StrCat("operand b (src) at frame offset ",
                                         in.b, " is not aligned to its ",
                                         l.elem_size, "-byte elements"));
    }
    return CheckAliasing(pc, dst, l.elem_size, src, l.elem_size, false);
  }

  // The kernel reads and writes VMEM and SMEM refs itself; HBM refs only
  // through DMAs, semaphores only through the semaphore instructions.
  absl::Status CheckDirectlyAccessible(size_t pc, uint32_t ref) const {
    const MemorySpace space = p_.ref_space(ref);
    if (space == MemorySpace::HBM || space == MemorySpace::SEMAPHORE) {
      return InstrError(
          pc, absl::StrCat("reads or writes ref ", ref, ", a ",
                           space == MemorySpace::HBM ? "HBM" : "semaphore",
                           " ref, directly"));
    }
    return absl::OkStatus();
  }

  // Access `index` of a DMA_START (a region moved by a DMA) or of a
  // semaphore operation (one element of a SEMAPHORE ref).
  absl::Status CheckMachineAccess(size_t pc, absl::string_view operand,
                                  uint32_t index, bool semaphore,
                                  Int* dense_bytes) const {
    if (index >= p_.accesses.size()) {
      return InstrError(pc, absl::StrCat("access index ", operand, " = ", index,
                                         " but there are ", p_.accesses.size(),
                                         " accesses"));
    }
    const AccessDesc& acc = p_.accesses[index];
    Int buffer_bytes = 0;
    if (absl::Status s = CheckAccess(pc, acc, dense_bytes, &buffer_bytes,
                                     /*clipped=*/false,
                                     /*dynamic_sizes=*/!semaphore);
        !s.ok()) {
      return s;
    }
    if (acc.base_kind != AccessBase::REF) {
      return InstrError(pc, absl::StrCat("access ", index, " (", operand,
                                         ") is not of a ref"));
    }
    const bool is_semaphore =
        p_.ref_space(acc.base) == MemorySpace::SEMAPHORE;
    if (semaphore != is_semaphore) {
      return InstrError(
          pc, absl::StrCat("access ", index, " (", operand, ") is of ref ",
                           acc.base, ", which is ", is_semaphore ? "" : "not ",
                           "a semaphore"));
    }
    if (semaphore && (acc.elem_size != 4 || *dense_bytes != 4)) {
      return InstrError(pc, absl::StrCat("access ", index, " (", operand,
                                         ") must be one 4-byte semaphore"));
    }
    return absl::OkStatus();
  }

  absl::Status VerifyDma(size_t pc, const Instr& in) const {
    Int src = 0, dst = 0, sem = 0;
    if (absl::Status s = CheckMachineAccess(pc, "a (src)", in.a, false, &src);
        !s.ok()) {
      return s;
    }
    if (absl::Status s = CheckMachineAccess(pc, "b (dst)", in.b, false, &dst);
        !s.ok()) {
      return s;
    }
    auto dynamic = [&](const AccessDesc& a) {
      for (int i = 0; i < a.rank && i < kMaxRank; ++i) {
        if (a.dims[i].size_slot >= 0) return true;
      }
      return false;
    };
    // Dynamic sizes are compared when the DMA starts.
    const bool sized_at_run_time =
        dynamic(p_.accesses[in.a]) || dynamic(p_.accesses[in.b]);
    if ((src != dst && !sized_at_run_time) ||
        p_.accesses[in.a].elem_size != p_.accesses[in.b].elem_size) {
      return InstrError(pc, absl::StrCat("copies ", Decimal(src), " bytes of ",
                                         int(p_.accesses[in.a].elem_size),
                                         "-byte elements into ", Decimal(dst),
                                         " bytes of ",
                                         int(p_.accesses[in.b].elem_size)));
    }
    if (in.c != kNoAccess) {
      if (absl::Status s = CheckMachineAccess(pc, "c (send sem)", in.c, true, &sem);
          !s.ok()) {
        return s;
      }
    }
    if (in.aux > 2 || (in.aux == 0 && in.n != 0)) {
      return InstrError(pc, "DMA_START has a bad aux or n");
    }
    if (in.aux != 0) {
      if (absl::Status s = CheckRange(pc, {"n (target)", in.n, 4}, 4, false);
          !s.ok()) {
        return s;
      }
    }
    return CheckMachineAccess(pc, "d (sem)", in.d, true, &sem);
  }

  // An access descriptor's own consistency; returns the dense value's bytes
  // and the underlying buffer's bytes.
  // `clipped`: an access of LOAD_CLIPPED / MASKED_STORE, whose region may
  // leave its buffer (those elements are skipped), so a static start needs
  // not put it inside.
  // `dynamic_sizes`: a DMA region, whose sizes may come from the frame.
  absl::Status CheckAccess(size_t pc, const AccessDesc& acc, Int* dense_bytes,
                           Int* buffer_bytes, bool clipped = false,
                           bool dynamic_sizes = false) const {
    // acc is an element of p_.accesses.
    const size_t d = &acc - p_.accesses.data();
    auto bad = [&](absl::string_view what) {
      return InstrError(pc, absl::StrCat("access ", d, ": ", what));
    };
    if (acc.base_kind != AccessBase::REF &&
        acc.base_kind != AccessBase::FRAME) {
      return bad(absl::StrCat("base_kind ", int(acc.base_kind),
                              " is neither REF nor FRAME"));
    }
    if (acc.clamp > 1) return bad(absl::StrCat("clamp = ", int(acc.clamp)));
    if (acc.rank > kMaxRank) {
      return bad(absl::StrCat("rank ", int(acc.rank), " (max ", kMaxRank, ")"));
    }
    if (!ValidElemSize(acc.elem_size)) {
      return bad(absl::StrCat("elem_size ", int(acc.elem_size),
                              " (must be 1, 2 or 4)"));
    }
    Int dense = 1, buffer = 1;
    // Capping factors and products at 2^62 keeps every product below 2^124;
    // anything that large fails a range check anyway.
    const Int cap = Int{1} << 62;
    for (int i = 0; i < acc.rank; ++i) {
      const AccessDim& dim = acc.dims[i];
      auto bad_dim = [&](absl::string_view what) {
        return bad(absl::StrCat("dim ", i, ": ", what));
      };
      if (dim.extent < 0) {
        return bad_dim(absl::StrCat("extent ", dim.extent));
      }
      if (dim.size < 0) return bad_dim(absl::StrCat("size ", dim.size));
      if (dim.stride < 1) {
        return bad_dim(absl::StrCat("stride ", dim.stride, " (must be >= 1)"));
      }
      if (dim.squeezed != 0 && (dim.squeezed != 1 || dim.size != 1)) {
        return bad_dim(absl::StrCat("squeezed = ", dim.squeezed, " with size ",
                                    dim.size, " (a squeezed dim has size 1)"));
      }
      // Padding is virtual (nothing in the buffer backs it), so only the
      // bounds grow: a region may reach into it, never a clamped one.
      if (dim.padding < 0 ||
          (dim.padding > 0 &&
           (acc.base_kind != AccessBase::REF || acc.clamp))) {
        return bad_dim(absl::StrCat("padding ", dim.padding,
                                    " (must be >= 0, and 0 unless the access "
                                    "is an unclamped ref access)"));
      }
      const Int bound = Int{dim.extent} + dim.padding;
      const std::string padded =
          dim.padding ? absl::StrCat(" + padding ", dim.padding) : "";
      const absl::string_view plus = dim.padding ? " + padding" : "";
      if (dim.size > 0) {
        const Int last = Int{dim.size - 1} * dim.stride;
        if (last >= bound) {
          return bad_dim(absl::StrCat("size ", dim.size, " stride ", dim.stride,
                                      " cannot fit in extent ", dim.extent,
                                      padded, " (needs (size-1)*stride < extent",
                                      plus, ")"));
        }
        if (dim.start_slot < 0 && dim.size_slot < 0 && !acc.clamp && !clipped &&
            (dim.start < 0 || dim.start + last >= bound)) {
          return bad_dim(absl::StrCat(
              "static start ", dim.start, " size ", dim.size, " stride ",
              dim.stride, " leaves extent ", dim.extent, padded,
              " (needs 0 <= start and start + (size-1)*stride < extent", plus,
              ")"));
        }
      }
      if (dim.start_slot >= 0) {
        if (absl::Status s =
                CheckRange(pc, {"start slot", dim.start_slot, 4}, 4, false);
            !s.ok()) {
          return s;
        }
      }
      if (dim.size_slot >= 0) {
        if (!dynamic_sizes || dim.squeezed) {
          return bad_dim("a dynamic size, which only a DMA's region may have");
        }
        if (absl::Status s =
                CheckRange(pc, {"size slot", dim.size_slot, 4}, 4, false);
            !s.ok()) {
          return s;
        }
      } else if (dim.size_slot != -1) {
        return bad_dim(absl::StrCat("size_slot ", dim.size_slot));
      }
      dense = std::min(dense * std::min(Int{dim.size}, cap), cap);
      buffer = std::min(buffer * std::min(Int{dim.extent}, cap), cap);
    }
    *dense_bytes = dense * acc.elem_size;
    *buffer_bytes = buffer * acc.elem_size;
    // Run-time offsets are int64 products of extents: keep them far from
    // overflow even when the ref's size is unknown.
    if (*buffer_bytes >= cap) {
      return bad("its extents describe a buffer of 2^62 bytes or more");
    }
    if (acc.base_kind == AccessBase::REF) {
      if (acc.base < 0 || static_cast<uint32_t>(acc.base) >= p_.num_refs) {
        return bad(absl::StrCat("ref ", acc.base, " but the program has ",
                                p_.num_refs, " refs"));
      }
      if (!p_.ref_sizes.empty() && p_.ref_sizes[acc.base] >= 0 &&
          *buffer_bytes > p_.ref_sizes[acc.base]) {
        return bad(absl::StrCat("its extents cover ", Decimal(*buffer_bytes),
                                " bytes but ref ", acc.base, " has ",
                                p_.ref_sizes[acc.base]));
      }
    }
    return absl::OkStatus();
  }

  absl::Status VerifyAccess(size_t pc, const Instr& in, const OpInfo& info,
                            bool is_load) const {
    if (in.d >= p_.accesses.size()) {
      return InstrError(
          pc, absl::StrCat("access index d = ", in.d, " but there are ",
                           p_.accesses.size(), " accesses"));
    }
    const AccessDesc& acc = p_.accesses[in.d];
    Int dense_bytes = 0, buffer_bytes = 0;
    const bool clipped = in.op == Op::LOAD_CLIPPED;
    if (clipped && (acc.clamp || acc.base_kind != AccessBase::REF)) {
      return InstrError(pc, "LOAD_CLIPPED needs an unclamped ref access");
    }
    if (absl::Status s =
            CheckAccess(pc, acc, &dense_bytes, &buffer_bytes, clipped);
        !s.ok()) {
      return s;
    }
    if (acc.base_kind == AccessBase::REF) {
      if (absl::Status s = CheckDirectlyAccessible(pc, acc.base); !s.ok()) {
        return s;
      }
    }
    if (info.in >= 0 && acc.elem_size != SizeOf(static_cast<DType>(info.in))) {
      return InstrError(
          pc, absl::StrCat("access ", in.d, " has elem_size ",
                           int(acc.elem_size), " but the op's ",
                           Name(static_cast<DType>(info.in)), " elements are ",
                           SizeOf(static_cast<DType>(info.in)), " bytes"));
    }
    if (absl::Status s = CheckRefBits(pc, in.aux, is_load ? 0 : kOperandRefB);
        !s.ok()) {
      return s;
    }
    if (in.aux & kOperandRefB) {
      // The dense source is a whole ref.
      if (absl::Status s = CheckRefOperand(pc, "b (src)", in.b, dense_bytes);
          !s.ok()) {
        return s;
      }
      if (acc.base_kind == AccessBase::REF) {
        return CheckRefAliasing(pc, "access", acc.base, "b (src)", in.b);
      }
      const Range buffer{"accessed frame value", acc.base, buffer_bytes};
      return CheckRange(pc, buffer, acc.elem_size, true);
    }
    const Range dense = is_load ? Range{"a (dst)", in.a, dense_bytes}
                                : Range{"b (src)", in.b, dense_bytes};
    if (absl::Status s = CheckRange(pc, dense, acc.elem_size, is_load);
        !s.ok()) {
      return s;
    }
    if (acc.base_kind == AccessBase::FRAME) {
      const Range buffer{"accessed frame value", acc.base, buffer_bytes};
      if (absl::Status s = CheckRange(pc, buffer, acc.elem_size, !is_load);
          !s.ok()) {
        return s;
      }
      // The region moves at run time, so the whole buffer must be clear.
      return is_load ? CheckAliasing(pc, dense, 1, buffer, 1, false)
                     : CheckAliasing(pc, buffer, 1, dense, 1, false);
    }
    return absl::OkStatus();
  }

  // MASKED_STORE: b the dense values, c their mask (PRED, one per element),
  // d an unclamped ref access whose region may leave the ref.
  absl::Status VerifyMaskedStore(size_t pc, const Instr& in) const {
    if (in.d >= p_.accesses.size()) {
      return InstrError(
          pc, absl::StrCat("access index d = ", in.d, " but there are ",
                           p_.accesses.size(), " accesses"));
    }
    const AccessDesc& acc = p_.accesses[in.d];
    if (acc.clamp || acc.base_kind != AccessBase::REF) {
      return InstrError(pc, "MASKED_STORE needs an unclamped ref access");
    }
    Int dense_bytes = 0, buffer_bytes = 0;
    if (absl::Status s = CheckAccess(pc, acc, &dense_bytes, &buffer_bytes,
                                     /*clipped=*/true);
        !s.ok()) {
      return s;
    }
    if (absl::Status s = CheckDirectlyAccessible(pc, acc.base); !s.ok()) {
      return s;
    }
    if (absl::Status s = CheckRefBits(pc, in.aux, 0); !s.ok()) return s;
    const Int count = dense_bytes / acc.elem_size;
    const Range b{"b (src)", in.b, dense_bytes}, c{"c (mask)", in.c, count};
    if (absl::Status s = CheckRange(pc, b, acc.elem_size, false); !s.ok()) {
      return s;
    }
    return CheckRange(pc, c, 1, false);
  }

  absl::Status VerifyDot(size_t pc, const Instr& in, const OpInfo& info) const {
    if (in.d >= p_.layouts.size()) {
      return InstrError(
          pc, absl::StrCat("layout index d = ", in.d, " but there are ",
                           p_.layouts.size(), " layouts"));
    }
    const LayoutDesc& l = p_.layouts[in.d];
    if (l.rank != 3) {
      return InstrError(pc, absl::StrCat("layout ", in.d, " has rank ", l.rank,
                                         "; DOT needs shape {M, K, N}"));
    }
    Int count = 0;
    if (absl::Status s = CheckLayout(pc, l, &count); !s.ok()) return s;
    if (absl::Status s = CheckRefBits(
            pc, in.aux, kOperandRefA | kOperandRefB | kOperandRefC);
        !s.ok()) {
      return s;
    }
    const int es = SizeOf(static_cast<DType>(info.in));
    const Int m = l.shape[0], k = l.shape[1], n = l.shape[2];
    const Range dst{"a (dst)", in.a, m * n * es};
    const Range lhs{"b (lhs)", in.b, m * k * es};
    const Range rhs{"c (rhs)", in.c, k * n * es};
    const bool dst_is_ref = in.aux & kOperandRefA;
    for (auto [r, bit] :
         {std::pair{&dst, kOperandRefA}, std::pair{&lhs, kOperandRefB},
          std::pair{&rhs, kOperandRefC}}) {
      const absl::Status s =
          (in.aux & bit)
              ? CheckRefOperand(pc, r->name, static_cast<uint32_t>(r->offset),
                                r->bytes)
              : CheckRange(pc, *r, es, r == &dst);
      if (!s.ok()) return s;
    }
    // The destination must not overlap either source. A ref and a frame
    // range never overlap.
    for (auto [src, bit] :
         {std::pair{&lhs, kOperandRefB}, std::pair{&rhs, kOperandRefC}}) {
      const bool src_is_ref = in.aux & bit;
      absl::Status s = absl::OkStatus();
      if (dst_is_ref && src_is_ref) {
        s = CheckRefAliasing(pc, dst.name, in.a, src->name,
                             static_cast<uint32_t>(src->offset));
      } else if (!dst_is_ref && !src_is_ref) {
        s = CheckAliasing(pc, dst, es, *src, es, false);
      }
      if (!s.ok()) return s;
    }
    return absl::OkStatus();
  }

  absl::Status VerifyInstr(size_t pc) const {
    const Instr& in = p_.code[pc];
    if (static_cast<uint32_t>(in.op) >= static_cast<uint32_t>(kNumOps)) {
      return Error(absl::StrCat("instruction ", pc, ": opcode ",
                                static_cast<uint32_t>(in.op),
                                " does not exist (there are ", kNumOps, ")"));
    }
    const OpInfo& info = Info(in.op);
    const int isz = info.in >= 0 ? SizeOf(static_cast<DType>(info.in)) : 0;
    const int osz = info.out >= 0 ? SizeOf(static_cast<DType>(info.out)) : 0;
    const Int n = in.n;
    auto check = [&](std::initializer_list<std::pair<Range, int>> reads,
                     std::pair<Range, int> write) -> absl::Status {
      if (absl::Status s = CheckRange(pc, write.first, write.second, true);
          !s.ok()) {
        return s;
      }
      for (const auto& [r, align] : reads) {
        if (absl::Status s = CheckRange(pc, r, align, false); !s.ok()) return s;
      }
      return absl::OkStatus();
    };
    switch (info.format) {
      case Format::BINARY_VV: {
        const Range a{"a (dst)", in.a, n * osz}, b{"b (lhs)", in.b, n * isz},
            c{"c (rhs)", in.c, n * isz};
        if (auto s = CheckRefBits(pc, in.aux, kOperandRefB | kOperandRefC);
            !s.ok()) {
          return s;
        }
        if (auto s = check({}, {a, osz}); !s.ok()) return s;
        if (auto s =
                CheckElementwiseSource(pc, in, kOperandRefB, b, isz, a, osz);
            !s.ok()) {
          return s;
        }
        return CheckElementwiseSource(pc, in, kOperandRefC, c, isz, a, osz);
      }
      case Format::BINARY_VS: {
        const Range a{"a (dst)", in.a, n * osz}, b{"b (lhs)", in.b, n * isz},
            c{"c (rhs scalar)", in.c, isz};
        if (auto s = CheckRefBits(pc, in.aux, kOperandRefB); !s.ok()) return s;
        if (auto s = check({{c, isz}}, {a, osz}); !s.ok()) return s;
        return CheckElementwiseSource(pc, in, kOperandRefB, b, isz, a, osz);
      }
      case Format::BINARY_SV: {
        const Range a{"a (dst)", in.a, n * osz}, b{"b (lhs scalar)", in.b, isz},
            c{"c (rhs)", in.c, n * isz};
        if (auto s = CheckRefBits(pc, in.aux, kOperandRefC); !s.ok()) return s;
        if (auto s = check({{b, isz}}, {a, osz}); !s.ok()) return s;
        return CheckElementwiseSource(pc, in, kOperandRefC, c, isz, a, osz);
      }
      case Format::BINARY_SS:
        if (auto s = CheckRefBits(pc, in.aux, 0); !s.ok()) return s;
        return check(
            {{{"b (lhs)", in.b, isz}, isz}, {{"c (rhs)", in.c, isz}, isz}},
            {{"a (dst)", in.a, osz}, osz});
      case Format::UNARY_V: {
        const Range a{"a (dst)", in.a, n * osz}, b{"b (src)", in.b, n * isz};
        if (auto s = CheckRefBits(pc, in.aux, kOperandRefB); !s.ok()) return s;
        if (auto s = check({}, {a, osz}); !s.ok()) return s;
        return CheckElementwiseSource(pc, in, kOperandRefB, b, isz, a, osz);
      }
      case Format::UNARY_S:
        if (auto s = CheckRefBits(pc, in.aux, 0); !s.ok()) return s;
        return check({{{"b (src)", in.b, isz}, isz}},
                     {{"a (dst)", in.a, osz}, osz});
      case Format::COPY:
        return check({{{"b (src)", in.b, n}, 1}}, {{"a (dst)", in.a, n}, 1});
      case Format::MOV: {
        const int w = MoveWidth(in.op);
        return check({{{"b (src)", in.b, w}, w}}, {{"a (dst)", in.a, w}, w});
      }
      case Format::FILL: {
        const int w = MoveWidth(in.op);
        return check({{{"b (value)", in.b, w}, w}},
                     {{"a (dst)", in.a, n * w}, w});
      }
      case Format::SELECT: {
        const int w = MoveWidth(in.op);
        const Range a{"a (dst)", in.a, n * w}, b{"b (pred)", in.b, n},
            c{"c (on_false)", in.c, n * w}, d{"d (on_true)", in.d, n * w};
        if (auto s = check({{b, 1}, {c, w}, {d, w}}, {a, w}); !s.ok()) return s;
        for (const Range* src : {&c, &d}) {
          if (auto s = CheckAliasing(pc, a, w, *src, w, true); !s.ok()) {
            return s;
          }
        }
        return CheckAliasing(pc, a, w, b, 1, true);
      }
      case Format::TERNARY: {
        const Range a{"a (dst)", in.a, n * osz}, b{"b (x)", in.b, n * isz},
            c{"c (y)", in.c, n * isz}, d{"d (z)", in.d, n * isz};
        if (auto s = CheckRefBits(pc, in.aux, 0); !s.ok()) return s;
        if (auto s = check({{b, isz}, {c, isz}, {d, isz}}, {a, osz}); !s.ok()) {
          return s;
        }
        for (const Range* src : {&b, &c, &d}) {
          if (auto s = CheckAliasing(pc, a, osz, *src, isz, true); !s.ok()) {
            return s;
          }
        }
        return absl::OkStatus();
      }
      case Format::LAYOUT:
        return VerifyLayout(pc, in);
      case Format::ACCESS_LOAD:
        return VerifyAccess(pc, in, info, /*is_load=*/true);
      case Format::ACCESS_STORE:
        return VerifyAccess(pc, in, info, /*is_load=*/false);
      case Format::ACCESS_MASKED_STORE:
        return VerifyMaskedStore(pc, in);
      case Format::REDUCE: {
        // c = outer, d = reduced size, n = inner: counts, not slots.
        const Range a{"a (dst)", in.a, Int{in.c} * n * osz},
            b{"b (src)", in.b, Int{in.c} * Int{in.d} * n * isz};
        if (auto s = check({{b, isz}}, {a, osz}); !s.ok()) return s;
        return CheckAliasing(pc, a, osz, b, isz, true);
      }
      case Format::DOT:
        return VerifyDot(pc, in, info);
      case Format::GRID:
        return check({}, {{"a (dst)", in.a, 4}, 4});
      case Format::GATHER: {
        // d = the source's element count (the clamp bound), not a slot.
        const int w = MoveWidth(in.op);
        if (in.d == 0 && n > 0) {
          return InstrError(pc, "gathers from an empty source (d = 0)");
        }
        const Range a{"a (dst)", in.a, n * w}, b{"b (src)", in.b, Int{in.d} * w},
            c{"c (indices)", in.c, n * 4};
        if (auto s = CheckRefBits(pc, in.aux, 0); !s.ok()) return s;
        if (auto s = check({{b, w}, {c, 4}}, {a, w}); !s.ok()) return s;
        if (auto s = CheckAliasing(pc, a, w, b, w, false); !s.ok()) return s;
        return CheckAliasing(pc, a, w, c, 4, false);
      }
      case Format::CHECK:
        if (auto s = CheckRefBits(pc, in.aux & ~uint16_t{1}, 0); !s.ok()) {
          return s;
        }
        return CheckRange(pc, {"a (index)", in.a, 4}, 4, false);
      case Format::SORT: {
        const Int count = Int{in.c} * Int{in.d} * n;
        const Range a{"a (dst)", in.a, count * 4}, b{"b (src)", in.b, count * isz};
        if (auto s = CheckRefBits(pc, in.aux, 0); !s.ok()) return s;
        if (auto s = check({{b, isz}}, {a, 4}); !s.ok()) return s;
        return CheckAliasing(pc, a, 4, b, isz, false);
      }
      case Format::JUMP:
        return CheckTarget(pc, "a", in.a);
      case Format::BRANCH:
        if (auto s = CheckRange(pc, {"a (cond)", in.a, 1}, 1, false); !s.ok()) {
          return s;
        }
        return CheckTarget(pc, "b", in.b);
      case Format::NONE:
        return absl::OkStatus();
      case Format::DMA:
        return VerifyDma(pc, in);
      case Format::SEMAPHORE: {
        Int sem = 0;
        if (auto s = CheckMachineAccess(pc, "d (sem)", in.d, true, &sem);
            !s.ok()) {
          return s;
        }
        if (in.aux > (in.op == Op::SEM_SIGNAL ? 3 : 0)) {
          return InstrError(pc, absl::StrCat("aux ", in.aux, " is no target"));
        }
        if (in.aux & 1) {
          if (auto s = CheckRange(pc, {"c (core)", in.c, 4}, 4, false);
              !s.ok()) {
            return s;
          }
        }
        if (in.aux & 2) {
          if (auto s = CheckRange(pc, {"n (device)", in.n, 4}, 4, false);
              !s.ok()) {
            return s;
          }
        }
        return CheckRange(pc, {"b (value)", in.b, 4}, 4, false);
      }
      case Format::SEMAPHORE_READ: {
        Int sem = 0;
        if (auto s = CheckMachineAccess(pc, "d (sem)", in.d, true, &sem);
            !s.ok()) {
          return s;
        }
        return CheckRange(pc, {"a (dst)", in.a, 4}, 4, true);
      }
      case Format::PRINT_ARG:
        if (in.aux > static_cast<uint16_t>(DType::F32)) {
          return InstrError(pc, absl::StrCat("aux ", in.aux, " is no dtype"));
        }
        return CheckRange(pc, {"a (value)", in.a,
                               SizeOf(static_cast<DType>(in.aux))},
                          1, false);
      case Format::PRINT:
        return CheckRange(pc, {"a (format)", in.a, Int{in.n}}, 1, false);
      case Format::SCOPE:
        if (Int{in.a} + Int{in.n} > Int{p_.num_refs}) {
          return InstrError(pc, absl::StrCat("refs [", in.a, ", ",
                                             uint64_t{in.a} + in.n,
                                             ") are past the ", p_.num_refs,
                                             " refs"));
        }
        return absl::OkStatus();
    }
    return InstrError(pc, "has an unknown format");
  }

  // Slots are in the frame; every path from the entry ends in RETURN (or
  // loops) rather than running past the last instruction.
  absl::Status VerifyFunction(size_t f) const {
    const Function& fn = p_.functions[f];
    auto bad = [&](absl::string_view what) {
      return Error(absl::StrCat("function ", f, " '", fn.name, "': ", what));
    };
    if (fn.entry_pc >= p_.code.size()) {
      return bad(absl::StrCat("entry_pc ", fn.entry_pc, " is past the code (",
                              p_.code.size(), " instructions)"));
    }
    auto check_slots = [&](const std::vector<uint32_t>& slots,
                           absl::string_view kind,
                           bool written) -> absl::Status {
      for (size_t i = 0; i < slots.size(); ++i) {
        const uint32_t s = slots[i];
        if (Int{s} + 4 > Int{p_.frame_size} || s % 4 != 0) {
          return bad(absl::StrCat(kind, " slot ", i, " at frame offset ", s,
                                  " is not an aligned 4-byte slot in the "
                                  "frame (",
                                  p_.frame_size, " bytes)"));
        }
        if (written && s < p_.constants.size()) {
          return bad(absl::StrCat(kind, " slot ", i, " at frame offset ", s,
                                  " is inside the constants"));
        }
        frame_used_ = std::max(frame_used_, Int{s} + 4);
      }
      return absl::OkStatus();
    };
    if (auto s = check_slots(fn.param_slots, "param", true); !s.ok()) return s;
    if (auto s = check_slots(fn.result_slots, "result", false); !s.ok()) {
      return s;
    }
    std::vector<bool> seen(p_.code.size(), false);
    std::vector<uint32_t> work = {fn.entry_pc};
    while (!work.empty()) {
      const uint32_t pc = work.back();
      work.pop_back();
      if (seen[pc]) continue;
      seen[pc] = true;
      const Instr& in = p_.code[pc];
      const Format format = Info(in.op).format;
      if (in.op == Op::RETURN) continue;
      if (format == Format::JUMP) {
        work.push_back(in.a);
        continue;
      }
      if (format == Format::BRANCH) work.push_back(in.b);
      if (pc + 1 >= p_.code.size()) {
        return InstrError(pc,
                          absl::StrCat("function ", f, " '", fn.name,
                                       "' runs past the end of the code here "
                                       "(no RETURN)"));
      }
      work.push_back(pc + 1);
    }
    return absl::OkStatus();
  }

  const Program& p_;
  mutable Int frame_used_ = 0;  // see frame_used()
};

}  // namespace

absl::Status Verify(const Program& program, int64_t* frame_bytes_used) {
  Verifier verifier(program);
  absl::Status status = verifier.Run();
  if (status.ok() && frame_bytes_used != nullptr) {
    *frame_bytes_used = verifier.frame_used();
  }
  return status;
}

}  // namespace pallasvm::vm
