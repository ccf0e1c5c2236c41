// The dispatch loop: one function, Execute, with one case per opcode.
//
// Cases for the opcode families (binary, unary, conversions) are generated
// from vm/opcodes.def with the same X-macros that generate the enum; the
// other cases are written by hand, each with a comment saying what it does.
// Operands are frame byte offsets, so an operand is `frame + offset`; the
// verifier has checked every offset, descriptor index and jump target, and
// the loop checks only what it cannot know: dynamic ref-access starts and
// the grid axis of PROGRAM_ID / NUM_PROGRAMS.
//
// Dispatch is by computed goto (GCC and Clang's `&&label`): each case ends
// in its own indirect jump, which predicts better than the single jump of a
// switch. Define PALLASVM_SWITCH_DISPATCH=1 to build the switch instead.
// Measured on a scalar loop (LT_S32_SS, JUMP_IF_FALSE, 2x ADD_S32_SS, JUMP;
// Ice Lake Xeon, GCC 12 -O3): computed goto 1.16 ns per instruction,
// switch 1.66 ns.
// Scalar forms (_SS, _S, MOV, jumps, PROGRAM_ID) are inline in the loop;
// block forms call the kernels in vm/kernels/.
#include "vm/interpreter.h"

#include <algorithm>
#include <cstring>
#include <limits>
#include <string>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "vm/debug_format.h"
#include "vm/kernels/access.h"
#include "vm/kernels/convert.h"
#include "vm/kernels/dot.h"
#include "vm/kernels/elementwise.h"
#include "vm/kernels/gather.h"
#include "vm/kernels/layout.h"
#include "vm/kernels/reduce.h"
#include "vm/kernels/sort.h"
#include "vm/kernels/storage.h"

#if !defined(PALLASVM_SWITCH_DISPATCH)
#if defined(__GNUC__)
#define PALLASVM_SWITCH_DISPATCH 0
#else
#define PALLASVM_SWITCH_DISPATCH 1
#endif
#endif

namespace pallasvm::vm {
namespace {

// "get (kernel.py:42 in my_kernel)", or "pc 12" without debug info.
std::string SourceOf(const Program& program, size_t pc) {
  if (program.debug_index.empty()) return absl::StrCat("pc ", pc);
  const SourceLoc& loc = program.debug_locs[program.debug_index[pc]];
  if (loc.file.empty()) return absl::StrCat(loc.primitive, " (pc ", pc, ")");
  return absl::StrCat(loc.primitive, " (", loc.file, ":", loc.line,
                      loc.function.empty() ? "" : " in ", loc.function, ")");
}

[[gnu::cold, gnu::noinline]] absl::Status AccessError(const Program& program,
                                                      const Instr* ip,
                                                      const uint8_t* frame,
                                                      bool is_write) {
  const size_t pc = ip - program.code.data();
  const AccessDesc& access = program.accesses[ip->d];
  // A masked store reads its region before writing it; either fault is
  // the masked swap's, as interpret mode reports it.
  const bool masked_swap =
      program.debug_locs[program.debug_index[pc]].primitive == "masked_swap";
  return absl::OutOfRangeError(absl::StrCat(
      kernels::DescribeAccessFault(
          access, kernels::FindAccessFault(access, frame),
          masked_swap ? "masked swap" : is_write ? "write" : "read"),
      " at ", SourceOf(program, pc)));
}

[[gnu::cold, gnu::noinline]] absl::Status MaskedStoreError(
    const Program& program, const Instr* ip, const kernels::AccessFault& f) {
  const size_t pc = ip - program.code.data();
  const AccessDesc& access = program.accesses[ip->d];
  std::vector<int64_t> extents;
  for (int d = 0; d < access.rank; ++d) extents.push_back(access.dims[d].extent);
  return absl::OutOfRangeError(absl::StrCat(
      "Out-of-bounds masked swap of ref ", access.base, " (dims [",
      absl::StrJoin(extents, ", "), "]): a masked-in element lies at index ",
      f.start, " of dim ", f.dim, ", outside the ref, at ",
      SourceOf(program, pc)));
}

[[gnu::cold, gnu::noinline]] absl::Status UnreadableRefError(
    const Program& program, const Instr* ip, const ExecContext& ctx,
    uint32_t ref) {
  const size_t pc = ip - program.code.data();
  if (ctx.unreadable_ref_read != nullptr) {
    *ctx.unreadable_ref_read = static_cast<int32_t>(ref);
  }
  return absl::OutOfRangeError(absl::StrCat(
      "read of ref ", ref, ", whose block lies outside its array, at ",
      SourceOf(program, pc)));
}

// An out-of-bounds DMA region, described from its resolved copy.
[[gnu::cold, gnu::noinline]] absl::Status DmaAccessError(
    const Program& program, const Instr* ip, const AccessDesc& resolved,
    bool is_write) {
  return absl::OutOfRangeError(absl::StrCat(
      kernels::DescribeAccessFault(
          resolved, kernels::FindAccessFault(resolved, nullptr),
          is_write ? "write" : "read"),
      " by a DMA at ", SourceOf(program, ip - program.code.data())));
}

// A DMA whose dynamic slice size leaves its bound, or whose two regions
// have different sizes.
[[gnu::cold, gnu::noinline]] absl::Status DmaSizeError(
    const Program& program, const Instr* ip, const uint8_t* frame,
    const AccessDesc& src, const AccessDesc& dst, int bad_dim) {
  const std::string where =
      absl::StrCat(" at ", SourceOf(program, ip - program.code.data()));
  if (bad_dim >= 0) {
    for (uint32_t index : {ip->a, ip->b}) {
      const AccessDim& dim = program.accesses[index].dims[bad_dim];
      if (dim.size_slot < 0) continue;
      const int32_t size = LoadScalar<int32_t>(frame + dim.size_slot);
      if (size >= 0 && size <= dim.size) continue;
      return absl::OutOfRangeError(absl::StrCat(
          "DMA slice of dynamic size ", size, " in dim ", bad_dim,
          " (must be in [0, ", dim.size, "])", where));
    }
  }
  return absl::InvalidArgumentError(absl::StrCat(
      "a DMA copies ", kernels::RegionCount(src), " elements into a region of ",
      kernels::RegionCount(dst), where));
}

// A failure the simulated machine reported for the instruction at ip.
[[gnu::cold, gnu::noinline]] absl::Status MachineError(const Program& program,
                                                       const Instr* ip,
                                                       const absl::Status& s) {
  return absl::Status(
      s.code(), absl::StrCat(s.message(), " at ",
                             SourceOf(program, ip - program.code.data())));
}

// VM_OBSERVE*: tells ctx.machine of an access of ref `ref`, `acc` (null:
// the whole ref) with its starts resolved; false, with the error in
// *error, if the machine refuses it.
[[gnu::noinline]] bool ObserveAccessAt(const Program& program, const Instr* ip,
                                       const ExecContext& ctx,
                                       const AccessDesc* acc, int32_t ref,
                                       AccessKind kind, const uint8_t* mask,
                                       absl::Status* error) {
  AccessDesc resolved;
  if (acc != nullptr) kernels::ResolveStarts(*acc, ctx.frame, &resolved);
  absl::Status s = ctx.machine->ObserveAccess(
      ref, acc != nullptr ? &resolved : nullptr, kind, mask,
      static_cast<uint32_t>(ip - program.code.data()));
  if (s.ok()) return true;
  *error = MachineError(program, ip, s);
  return false;
}

[[gnu::cold, gnu::noinline]] absl::Status NoMachineError(
    const Program& program, const Instr* ip) {
  return absl::FailedPreconditionError(absl::StrCat(
      Info(ip->op).name, " needs a simulated machine (DMAs, semaphores, "
      "run_scoped), and this run has none, at ",
      SourceOf(program, ip - program.code.data())));
}

[[gnu::cold, gnu::noinline]] absl::Status GridAxisError(const Program& program,
                                                        const Instr* ip,
                                                        int32_t grid_rank) {
  const size_t pc = ip - program.code.data();
  return absl::InvalidArgumentError(absl::StrCat(
      std::string(Info(ip->op).name), " asks for grid axis ", ip->b,
      " but the grid has rank ", grid_rank, " at ", SourceOf(program, pc)));
}

[[gnu::cold, gnu::noinline]] absl::Status InterruptError(
    const Program& program, const Instr* ip, const Interrupt& interrupt) {
  const absl::Status s = interrupt.status();
  return absl::Status(
      s.code(), absl::StrCat(s.message(), " at ",
                             SourceOf(program, ip - program.code.data())));
}

[[gnu::cold, gnu::noinline]] absl::Status ViewIndexError(
    const Program& program, const Instr* ip, int32_t start) {
  return absl::OutOfRangeError(absl::StrCat(
      "Out-of-bounds ", (ip->aux & 1) ? "write" : "read",
      " of an indexed ref view: dimension ", ip->c, " takes its elements from ",
      start, " (needs 0 <= start <= ", ip->b, ") at ",
      SourceOf(program, ip - program.code.data())));
}

}  // namespace

void InitFrame(const Program& program, uint8_t* frame) {
  if (!program.constants.empty()) {
    std::memcpy(frame, program.constants.data(), program.constants.size());
  }
}

absl::Status Execute(const Program& program, int function,
                     const ExecContext& ctx) {
  if (function < 0 || function >= static_cast<int>(program.functions.size())) {
    return absl::InvalidArgumentError(absl::StrCat("no function ", function,
                                                   " in a program of ",
                                                   program.functions.size()));
  }
  uint8_t* const frame = ctx.frame;
  absl::Status observe_error;  // VM_OBSERVE*'s, when a checker refuses
  const Instr* const code = program.code.data();
  const LayoutDesc* const layouts = program.layouts.data();
  const AccessDesc* const accesses = program.accesses.data();
  const Instr* ip = code + program.functions[function].entry_pc;
  Interrupt* const interrupt = ctx.interrupt;
  // DEBUG_ARG's queue.
  constexpr int kMaxDebugValues = 16;
  DebugValue debug_values[kMaxDebugValues];
  int num_debug_values = 0;

// Frame operands: a typed pointer to a block, or a scalar's value.
#define VM_PTR(DT, off) reinterpret_cast<Storage<DType::DT>*>(frame + (off))
#define VM_CPTR(DT, off) \
  reinterpret_cast<const Storage<DType::DT>*>(frame + (off))
#define VM_GET(DT, off) LoadScalar<Storage<DType::DT>>(frame + (off))
#define VM_SET(DT, off, v) StoreScalar<Storage<DType::DT>>(frame + (off), (v))
// An operand that may name a whole ref instead of a frame slot (the aux bit
// kOperandRef{A,B,C}, see vm/opcodes.h): a typed pointer to its elements.
#define VM_OPERAND(DT, field, ref_bit)   \
  reinterpret_cast<Storage<DType::DT>*>( \
      (ip->aux & (ref_bit)) ? ctx.refs[ip->field] : frame + ip->field)
// A source operand, as VM_OPERAND, that is checked when it names a whole ref
// which this grid point must not read (ExecContext::unreadable_refs).
#define VM_SOURCE(DT, field, ref_bit)                                         \
  ({                                                                          \
    if ((ip->aux & (ref_bit)) &&                                              \
        (ctx.unreadable_refs != nullptr || ctx.observe_accesses))             \
        [[unlikely]] {                                                        \
      if (ctx.unreadable_refs != nullptr && ctx.unreadable_refs[ip->field]) { \
        return UnreadableRefError(program, ip, ctx, ip->field);               \
      }                                                                       \
      VM_OBSERVE_WHOLE(ip->field, AccessKind::kRead);                         \
    }                                                                         \
    VM_OPERAND(DT, field, ref_bit);                                           \
  })
// The checkers' view of an access (ExecContext::observe_accesses): the
// access's region with its starts resolved, or a whole ref used in place;
// `mask` is the region's mask for kMaskedWrite, else null. The work and any
// error are out of line (ObserveAccessAt), with one Status for the whole
// function: a Status at each of the many sites made clang's sanitizer
// builds of this function take minutes.
#define VM_OBSERVE_MASKED(acc, kind, mask)                                 \
  do {                                                                     \
    if (ctx.observe_accesses && (acc).base_kind == AccessBase::REF &&      \
        !ObserveAccessAt(program, ip, ctx, &(acc), (acc).base, (kind),     \
                         (mask), &observe_error)) [[unlikely]] {           \
      return observe_error;                                                \
    }                                                                      \
  } while (0)
#define VM_OBSERVE(acc, kind) VM_OBSERVE_MASKED(acc, kind, nullptr)
#define VM_OBSERVE_WHOLE(ref, kind)                                        \
  do {                                                                     \
    if (ctx.observe_accesses &&                                            \
        !ObserveAccessAt(program, ip, ctx, nullptr,                        \
                         static_cast<int32_t>(ref), (kind), nullptr,       \
                         &observe_error)) [[unlikely]] {                   \
      return observe_error;                                                \
    }                                                                      \
  } while (0)
// The base pointer of an access: a ref table entry or a frame value.
#define VM_ACCESS_BASE(acc)                                  \
  ((acc).base_kind == AccessBase::REF ? ctx.refs[(acc).base] \
                                      : frame + (acc).base)

#if PALLASVM_SWITCH_DISPATCH
#define VM_CASE(OP) case Op::OP:
#define VM_DISPATCH() goto vm_dispatch
#else
#define VM_CASE(OP) L_##OP:
#define VM_DISPATCH() goto* kLabels[static_cast<int>(ip->op)]
  // clang-format off
  static const void* const kLabels[] = {
#define VM_LABEL_BINARY(NAME, IN, OUT, F, S)                              \
    &&L_##NAME##_##IN##_VV, &&L_##NAME##_##IN##_VS,                       \
    &&L_##NAME##_##IN##_SV, &&L_##NAME##_##IN##_SS,
    PALLASVM_BINARY_OPS(VM_LABEL_BINARY)
#undef VM_LABEL_BINARY
#define VM_LABEL_UNARY(NAME, IN, OUT, F, S) \
    &&L_##NAME##_##IN##_V, &&L_##NAME##_##IN##_S,
    PALLASVM_UNARY_OPS(VM_LABEL_UNARY)
#undef VM_LABEL_UNARY
#define VM_LABEL_CVT(FROM, TO) \
    &&L_CVT_##FROM##_##TO##_V, &&L_CVT_##FROM##_##TO##_S,
#define VM_LABEL_CVT_FROM(FROM) PALLASVM_DTYPE_NAMES_INNER(VM_LABEL_CVT, FROM)
    PALLASVM_DTYPE_NAMES_OUTER(VM_LABEL_CVT_FROM)
#undef VM_LABEL_CVT_FROM
#undef VM_LABEL_CVT
#define VM_LABEL_OTHER(NAME, FMT, IN, OUT, S) &&L_##NAME,
    PALLASVM_OTHER_OPS(VM_LABEL_OTHER)
#undef VM_LABEL_OTHER
  };
  // clang-format on
  static_assert(sizeof(kLabels) / sizeof(kLabels[0]) == kNumOps,
                "/* ORDER OP */ the label table follows vm/opcodes.def");
#endif
#define VM_NEXT()  \
  do {             \
    ++ip;          \
    VM_DISPATCH(); \
  } while (0)
// A jump that may go backward: only loops can run unboundedly, so only
// back edges poll the interrupt (a countdown; see vm/interrupt.h).
#define VM_JUMP(target)                                          \
  do {                                                           \
    const Instr* const to = code + (target);                     \
    if (to <= ip && interrupt != nullptr && interrupt->Poll()) { \
      return InterruptError(program, ip, *interrupt);            \
    }                                                            \
    ip = to;                                                     \
    VM_DISPATCH();                                               \
  } while (0)

#if PALLASVM_SWITCH_DISPATCH
vm_dispatch:
  switch (ip->op) {
#else
  VM_DISPATCH();
  {
#endif

// ------------------------------------------------ generated: binary ops
// _VV / _VS / _SV call the block loops, whose block sources may be whole
// refs (aux bits, vm/opcodes.h); _SS is one functor call, inline.
#define VM_BINARY_CASES(NAME, IN, OUT, F, S)                                \
  VM_CASE(NAME##_##IN##_VV) {                                               \
    kernels::BinaryVV<kernels::F>(VM_PTR(OUT, ip->a),                       \
                                  VM_SOURCE(IN, b, kOperandRefB),          \
                                  VM_SOURCE(IN, c, kOperandRefC), ip->n);  \
    VM_NEXT();                                                              \
  }                                                                         \
  VM_CASE(NAME##_##IN##_VS) {                                               \
    kernels::BinaryVS<kernels::F>(VM_PTR(OUT, ip->a),                       \
                                  VM_SOURCE(IN, b, kOperandRefB),          \
                                  VM_GET(IN, ip->c), ip->n);                \
    VM_NEXT();                                                              \
  }                                                                         \
  VM_CASE(NAME##_##IN##_SV) {                                               \
    kernels::BinarySV<kernels::F>(VM_PTR(OUT, ip->a), VM_GET(IN, ip->b),    \
                                  VM_SOURCE(IN, c, kOperandRefC), ip->n);  \
    VM_NEXT();                                                              \
  }                                                                         \
  VM_CASE(NAME##_##IN##_SS) {                                               \
    VM_SET(OUT, ip->a, kernels::F()(VM_GET(IN, ip->b), VM_GET(IN, ip->c))); \
    VM_NEXT();                                                              \
  }
    PALLASVM_BINARY_OPS(VM_BINARY_CASES)
#undef VM_BINARY_CASES

// ------------------------------------------------- generated: unary ops
#define VM_UNARY_CASES(NAME, IN, OUT, F, S)                              \
  VM_CASE(NAME##_##IN##_V) {                                             \
    kernels::UnaryV<kernels::F>(VM_PTR(OUT, ip->a),                      \
                                VM_SOURCE(IN, b, kOperandRefB), ip->n); \
    VM_NEXT();                                                           \
  }                                                                      \
  VM_CASE(NAME##_##IN##_S) {                                             \
    VM_SET(OUT, ip->a, kernels::F()(VM_GET(IN, ip->b)));                 \
    VM_NEXT();                                                           \
  }
    PALLASVM_UNARY_OPS(VM_UNARY_CASES)
#undef VM_UNARY_CASES

// ------------------------------------------------ generated: conversions
#define VM_CVT_CASES(FROM, TO)                                               \
  VM_CASE(CVT_##FROM##_##TO##_V) {                                           \
    kernels::ConvertV<DType::FROM, DType::TO>(                               \
        VM_PTR(TO, ip->a), VM_SOURCE(FROM, b, kOperandRefB), ip->n);        \
    VM_NEXT();                                                               \
  }                                                                          \
  VM_CASE(CVT_##FROM##_##TO##_S) {                                           \
    VM_SET(TO, ip->a,                                                        \
           (kernels::Convert<DType::FROM, DType::TO>(VM_GET(FROM, ip->b)))); \
    VM_NEXT();                                                               \
  }
#define VM_CVT_FROM(FROM) PALLASVM_DTYPE_NAMES_INNER(VM_CVT_CASES, FROM)
    PALLASVM_DTYPE_NAMES_OUTER(VM_CVT_FROM)
#undef VM_CVT_FROM
#undef VM_CVT_CASES

    // ------------------------------------------------ data movement

    // COPY: n bytes; memmove, so any overlap is fine.
    VM_CASE(COPY) {
      std::memmove(frame + ip->a, frame + ip->b, ip->n);
      VM_NEXT();
    }
    // MOV_Bw: one element of w bytes (a scalar register move).
    VM_CASE(MOV_B1) {
      VM_SET(U8, ip->a, VM_GET(U8, ip->b));
      VM_NEXT();
    }
    VM_CASE(MOV_B2) {
      VM_SET(U16, ip->a, VM_GET(U16, ip->b));
      VM_NEXT();
    }
    VM_CASE(MOV_B4) {
      VM_SET(U32, ip->a, VM_GET(U32, ip->b));
      VM_NEXT();
    }
    // FILL_Bw: broadcast the w-byte scalar at b over n elements at a. The
    // value is read first, so it may live inside the destination.
    VM_CASE(FILL_B1) {
      std::memset(frame + ip->a, VM_GET(U8, ip->b), ip->n);
      VM_NEXT();
    }
    VM_CASE(FILL_B2) {
      const uint16_t v = VM_GET(U16, ip->b);
      std::fill_n(VM_PTR(U16, ip->a), ip->n, v);
      VM_NEXT();
    }
    VM_CASE(FILL_B4) {
      const uint32_t v = VM_GET(U32, ip->b);
      std::fill_n(VM_PTR(U32, ip->a), ip->n, v);
      VM_NEXT();
    }
    // SELECT_Bw: a[i] := b[i] ? d[i] : c[i], elements of w bytes.
    VM_CASE(SELECT_B1) {
      kernels::SelectV(VM_PTR(U8, ip->a), VM_CPTR(PRED, ip->b),
                       VM_CPTR(U8, ip->c), VM_CPTR(U8, ip->d), ip->n);
      VM_NEXT();
    }
    VM_CASE(SELECT_B2) {
      kernels::SelectV(VM_PTR(U16, ip->a), VM_CPTR(PRED, ip->b),
                       VM_CPTR(U16, ip->c), VM_CPTR(U16, ip->d), ip->n);
      VM_NEXT();
    }
    VM_CASE(SELECT_B4) {
      kernels::SelectV(VM_PTR(U32, ip->a), VM_CPTR(PRED, ip->b),
                       VM_CPTR(U32, ip->c), VM_CPTR(U32, ip->d), ip->n);
      VM_NEXT();
    }
    // STRIDED_COPY: a := dense copy of the view layouts[d] of the value at b
    // (broadcast, transpose, slice, reverse).
    VM_CASE(STRIDED_COPY) {
      kernels::StridedCopy(frame + ip->a, frame + ip->b, layouts[ip->d]);
      VM_NEXT();
    }
    // IOTA_S32: a[idx] := idx[aux] over the shape of layouts[d].
    VM_CASE(IOTA_S32) {
      kernels::IotaS32(VM_PTR(S32, ip->a), layouts[ip->d], ip->aux);
      VM_NEXT();
    }

    // ------------------------------------------------ ref accesses
    // Each resolves the starts of accesses[d] (reading dynamic ones from the
    // frame), fails with OutOfRange naming the source line if the region
    // leaves its buffer, then copies.

    // LOAD: a := dense copy of the region.
    VM_CASE(LOAD) {
      const AccessDesc& acc = accesses[ip->d];
      VM_OBSERVE(acc, AccessKind::kRead);
      const kernels::ResolvedAccess region = kernels::ResolveAccess(acc, frame);
      if (ctx.unreadable_refs != nullptr && acc.base_kind == AccessBase::REF &&
          ctx.unreadable_refs[acc.base] && region.count != 0) [[unlikely]] {
        return UnreadableRefError(program, ip, ctx, acc.base);
      }
      if (region.count < 0) {
        if (ctx.ref_fills == nullptr || acc.base_kind != AccessBase::REF ||
            !(ctx.fill_out_of_bounds_reads ||
              kernels::InsidePadding(acc, frame))) {
          return AccessError(program, ip, frame, /*is_write=*/false);
        }
        kernels::LoadRegionFilled(
            frame + ip->a, VM_ACCESS_BASE(acc), acc, frame,
            reinterpret_cast<const uint8_t*>(&ctx.ref_fills[acc.base]));
        VM_NEXT();
      }
      kernels::LoadRegion(frame + ip->a, VM_ACCESS_BASE(acc), acc, region);
      VM_NEXT();
    }
    // STORE: region := dense value at b (a frame slot, or with
    // kOperandRefB the whole of ref b).
    // LOAD_CLIPPED: as LOAD, but the region may leave its ref; the elements
    // outside read as the ref's fill value, or zero without fills (masked
    // stores read the region first). Only the padding's matter: the masked
    // swap's select drops the others, or its MASKED_STORE fails.
    VM_CASE(LOAD_CLIPPED) {
      const AccessDesc& acc = accesses[ip->d];
      VM_OBSERVE(acc, AccessKind::kMaskedRead);
      if (ctx.unreadable_refs != nullptr && ctx.unreadable_refs[acc.base])
          [[unlikely]] {
        return UnreadableRefError(program, ip, ctx, acc.base);
      }
      static constexpr uint64_t kZero = 0;
      kernels::LoadRegionFilled(
          frame + ip->a, VM_ACCESS_BASE(acc), acc, frame,
          reinterpret_cast<const uint8_t*>(
              ctx.ref_fills != nullptr ? &ctx.ref_fills[acc.base] : &kZero));
      VM_NEXT();
    }
    // MASKED_STORE: region := c ? b : region, elementwise; elements outside
    // the ref are skipped where c is false and an error where it is true.
    VM_CASE(MASKED_STORE) {
      const AccessDesc& acc = accesses[ip->d];
      VM_OBSERVE_MASKED(acc, AccessKind::kMaskedWrite, frame + ip->c);
      kernels::AccessFault fault;
      if (!kernels::MaskedStoreRegion(VM_ACCESS_BASE(acc), frame + ip->b,
                                      frame + ip->c, acc, frame, &fault)) {
        return MaskedStoreError(program, ip, fault);
      }
      VM_NEXT();
    }
    VM_CASE(STORE) {
      const AccessDesc& acc = accesses[ip->d];
      VM_OBSERVE(acc, AccessKind::kWrite);
      const kernels::ResolvedAccess region = kernels::ResolveAccess(acc, frame);
      if (region.count < 0) {
        if (!kernels::InsidePadding(acc, frame)) {
          return AccessError(program, ip, frame, /*is_write=*/true);
        }
        kernels::StoreRegionClipped(VM_ACCESS_BASE(acc),
                                    VM_SOURCE(U8, b, kOperandRefB), acc, frame);
        VM_NEXT();
      }
      kernels::StoreRegion(VM_ACCESS_BASE(acc), VM_SOURCE(U8, b, kOperandRefB),
                           acc, region);
      VM_NEXT();
    }
    // ADDUPDATE_T: region += dense value at b (as for STORE), in T's
    // arithmetic.
#define VM_ADDUPDATE_CASE(DT)                                                  \
  VM_CASE(ADDUPDATE_##DT) {                                                    \
    const AccessDesc& acc = accesses[ip->d];                                   \
    VM_OBSERVE(acc, AccessKind::kUpdate);                                      \
    const kernels::ResolvedAccess region = kernels::ResolveAccess(acc, frame); \
    if (region.count < 0) {                                                    \
      if (!kernels::InsidePadding(acc, frame)) {                               \
        return AccessError(program, ip, frame, /*is_write=*/true);             \
      }                                                                        \
      kernels::AddUpdateRegionClipped<DType::DT>(                              \
          VM_ACCESS_BASE(acc), VM_SOURCE(U8, b, kOperandRefB), acc, frame);    \
      VM_NEXT();                                                               \
    }                                                                          \
    kernels::AddUpdateRegion<DType::DT>(                                       \
        VM_ACCESS_BASE(acc), VM_SOURCE(U8, b, kOperandRefB), acc, region);    \
    VM_NEXT();                                                                 \
  }
    VM_ADDUPDATE_CASE(F32)
    VM_ADDUPDATE_CASE(S32)
    VM_ADDUPDATE_CASE(U32)
    VM_ADDUPDATE_CASE(BF16)
#undef VM_ADDUPDATE_CASE

    // ------------------------------------------------ reductions
    // REDUCE_OP_T: the value at b viewed as [c, d, n]; a[o, i] := OP over r,
    // starting from OP's identity.
#define VM_REDUCE_CASE(NAME, DT, F, INIT)                                     \
  VM_CASE(NAME##_##DT) {                                                      \
    kernels::Reduce<kernels::F>(VM_PTR(DT, ip->a), VM_CPTR(DT, ip->b), ip->c, \
                                ip->d, ip->n,                                 \
                                static_cast<Storage<DType::DT>>(INIT));       \
    VM_NEXT();                                                                \
  }
    VM_REDUCE_CASE(REDUCE_SUM, F32, Add, 0.f)
    VM_REDUCE_CASE(REDUCE_MAX, F32, Max,
                   -std::numeric_limits<float>::infinity())
    VM_REDUCE_CASE(REDUCE_MIN, F32, Min, std::numeric_limits<float>::infinity())
    VM_REDUCE_CASE(REDUCE_SUM, S32, Add, 0)
    VM_REDUCE_CASE(REDUCE_MAX, S32, Max, std::numeric_limits<int32_t>::min())
    VM_REDUCE_CASE(REDUCE_MIN, S32, Min, std::numeric_limits<int32_t>::max())
    VM_REDUCE_CASE(REDUCE_SUM, U32, Add, 0u)
    VM_REDUCE_CASE(REDUCE_MAX, U32, Max, 0u)
    VM_REDUCE_CASE(REDUCE_MIN, U32, Min, std::numeric_limits<uint32_t>::max())
    VM_REDUCE_CASE(REDUCE_AND, PRED, And, 1)
    VM_REDUCE_CASE(REDUCE_OR, PRED, Or, 0)
#undef VM_REDUCE_CASE
    // ARGMAX_T / ARGMIN_T: a[o, i] := the first r that is largest /
    // smallest (a NaN beats everything), as S32.
#define VM_ARG_CASE(NAME, DT, IS_MAX)                                         \
  VM_CASE(NAME##_##DT) {                                                      \
    kernels::ArgReduce<IS_MAX>(VM_PTR(S32, ip->a), VM_CPTR(DT, ip->b), ip->c, \
                               ip->d, ip->n);                                 \
    VM_NEXT();                                                                \
  }
    VM_ARG_CASE(ARGMAX, F32, true)
    VM_ARG_CASE(ARGMIN, F32, false)
    VM_ARG_CASE(ARGMAX, S32, true)
    VM_ARG_CASE(ARGMIN, S32, false)

    // ------------------------------------------------ matrix multiply
    // DOT_T: a[M,N] := b[M,K] @ c[K,N] with {M, K, N} = layouts[d].shape;
    // each of a, b, c a frame slot or (aux bits) a whole ref.
#define VM_DOT_CASE(NAME, DT, KERNEL, A_KIND)                      \
  VM_CASE(NAME) {                                                  \
    const LayoutDesc& mkn = layouts[ip->d];                        \
    if (ip->aux & kOperandRefA) VM_OBSERVE_WHOLE(ip->a, A_KIND);   \
    kernels::KERNEL(VM_OPERAND(DT, a, kOperandRefA),               \
                    VM_SOURCE(DT, b, kOperandRefB),                \
                    VM_SOURCE(DT, c, kOperandRefC), mkn.shape[0],  \
                    mkn.shape[1], mkn.shape[2]);                   \
    VM_NEXT();                                                     \
  }
    VM_DOT_CASE(DOT_F32, F32, DotF32, AccessKind::kWrite)
    VM_DOT_CASE(DOT_S32, S32, DotS32, AccessKind::kWrite)

    // ------------------------------------------------ grid queries
    // PROGRAM_ID: a := this grid point's index along axis b.
    VM_CASE(PROGRAM_ID) {
      if (static_cast<int64_t>(ip->b) >= ctx.grid_rank + ctx.num_device_axes) {
        return GridAxisError(program, ip, ctx.grid_rank);
      }
      VM_SET(S32, ip->a, ctx.program_ids[ip->b]);
      VM_NEXT();
    }
    // NUM_PROGRAMS: a := the grid's size along axis b.
    VM_CASE(NUM_PROGRAMS) {
      if (static_cast<int64_t>(ip->b) >= ctx.grid_rank) {
        return GridAxisError(program, ip, ctx.grid_rank);
      }
      VM_SET(S32, ip->a, ctx.num_programs[ip->b]);
      VM_NEXT();
    }

    // ------------------------------------------------ control flow
    // JUMP: pc := a.
    // Backward jumps poll ctx.interrupt (VM_JUMP).
    VM_CASE(JUMP) { VM_JUMP(ip->a); }
    // JUMP_IF_FALSE: if the PRED at a is false, pc := b.
    VM_CASE(JUMP_IF_FALSE) {
      if (frame[ip->a] == 0) VM_JUMP(ip->b);
      VM_NEXT();
    }
    // JUMP_IF_TRUE: if the PRED at a is true, pc := b.
    VM_CASE(JUMP_IF_TRUE) {
      if (frame[ip->a] != 0) VM_JUMP(ip->b);
      VM_NEXT();
    }
    // RETURN: the function is done; its results are in its result slots.
    VM_CASE(RETURN) { return absl::OkStatus(); }

    // ------------------------------------------------ the simulated machine
    // The VM resolves the accesses (bounds checked as for LOAD/STORE) and
    // ctx.machine carries the operation out (vm/machine.h).

    // DMA_START: region ACC[a] -> region ACC[b], semaphores ACC[c], ACC[d].
    VM_CASE(DMA_START) {
      if (ctx.machine == nullptr) return NoMachineError(program, ip);
      AccessDesc src, dst;
      int bad_dim = -1;
      if (!kernels::ResolveStarts(accesses[ip->a], frame, &src, &bad_dim) ||
          !kernels::ResolveStarts(accesses[ip->b], frame, &dst, &bad_dim) ||
          kernels::RegionCount(src) != kernels::RegionCount(dst)) [[unlikely]] {
        return DmaSizeError(program, ip, frame, src, dst, bad_dim);
      }
      const kernels::ResolvedAccess to = kernels::ResolveAccess(dst, nullptr);
      if (to.count < 0 && !kernels::InsidePadding(dst, nullptr)) {
        return DmaAccessError(program, ip, dst, /*is_write=*/true);
      }
      const kernels::ResolvedAccess from = kernels::ResolveAccess(src, nullptr);
      if (from.count < 0 &&
          !(ctx.fill_out_of_bounds_reads ||
            kernels::InsidePadding(src, nullptr))) {
        return DmaAccessError(program, ip, src, /*is_write=*/false);
      }
      kernels::SemaphoreAt dst_sem = kernels::ResolveSemaphore(accesses[ip->d], frame);
      if (dst_sem.index < 0) return AccessError(program, ip, frame, false);
      SemaphoreId send;
      if (ip->c != kNoAccess) {
        const kernels::SemaphoreAt s =
            kernels::ResolveSemaphore(accesses[ip->c], frame);
        if (s.index < 0) {
          return DmaAccessError(program, ip, accesses[ip->c], false);
        }
        send = {s.ref, s.index};
      }
      if (absl::Status s = ctx.machine->StartDma(
              {src, from.byte_offset, from.count},
              {dst, to.byte_offset, to.count},
              ip->c != kNoAccess ? &send : nullptr,
              {dst_sem.ref, dst_sem.index},
              vm::Target{ip->aux == 1 ? VM_GET(S32, ip->n) : vm::kThisCore,
                         ip->aux == 2 ? VM_GET(S32, ip->n) : vm::kThisDevice},
              static_cast<uint32_t>(ip - code));
          !s.ok()) [[unlikely]] {
        return MachineError(program, ip, s);
      }
      VM_NEXT();
    }
    // SEM_SIGNAL: sem ACC[d] += b; with aux 1, that semaphore of core R[c].
    VM_CASE(SEM_SIGNAL) {
      if (ctx.machine == nullptr) return NoMachineError(program, ip);
      const kernels::SemaphoreAt sem = kernels::ResolveSemaphore(accesses[ip->d], frame);
      if (sem.index < 0) return AccessError(program, ip, frame, false);
      if (absl::Status s = ctx.machine->SignalSemaphore(
              {sem.ref, sem.index}, VM_GET(S32, ip->b),
              vm::Target{(ip->aux & 1) ? VM_GET(S32, ip->c) : vm::kThisCore,
                         (ip->aux & 2) ? VM_GET(S32, ip->n) : vm::kThisDevice},
              static_cast<uint32_t>(ip - code));
          !s.ok()) [[unlikely]] {
        return MachineError(program, ip, s);
      }
      VM_NEXT();
    }
    // SEM_WAIT: until sem ACC[d] >= b, then sem -= b.
    VM_CASE(SEM_WAIT) {
      if (ctx.machine == nullptr) return NoMachineError(program, ip);
      const kernels::SemaphoreAt sem = kernels::ResolveSemaphore(accesses[ip->d], frame);
      if (sem.index < 0) return AccessError(program, ip, frame, false);
      if (absl::Status s = ctx.machine->WaitSemaphore(
              {sem.ref, sem.index}, VM_GET(S32, ip->b),
              static_cast<uint32_t>(ip - code));
          !s.ok()) [[unlikely]] {
        return MachineError(program, ip, s);
      }
      VM_NEXT();
    }
    // SEM_READ: a := sem ACC[d].
    VM_CASE(SEM_READ) {
      if (ctx.machine == nullptr) return NoMachineError(program, ip);
      const kernels::SemaphoreAt sem = kernels::ResolveSemaphore(accesses[ip->d], frame);
      if (sem.index < 0) return AccessError(program, ip, frame, false);
      absl::StatusOr<int32_t> v = ctx.machine->ReadSemaphore(
          {sem.ref, sem.index}, static_cast<uint32_t>(ip - code));
      if (!v.ok()) [[unlikely]] {
        return MachineError(program, ip, v.status());
      }
      VM_SET(S32, ip->a, *v);
      VM_NEXT();
    }
    // DEBUG_ARG: queue one value for the next DEBUG_PRINT (a kernel prints
    // at most kMaxDebugValues values at once; more are dropped).
    VM_CASE(DEBUG_ARG) {
      if (num_debug_values < kMaxDebugValues) {
        DebugValue& v = debug_values[num_debug_values++];
        v.dtype = static_cast<DType>(ip->aux);
        std::memcpy(v.bytes, frame + ip->a, SizeOf(v.dtype));
      }
      VM_NEXT();
    }
    // DEBUG_PRINT: the format at a (n bytes) with the queued values.
    VM_CASE(DEBUG_PRINT) {
      const std::string text = FormatDebugPrint(
          std::string_view(reinterpret_cast<const char*>(frame + ip->a), ip->n),
          debug_values, num_debug_values);
      num_debug_values = 0;
      if (ctx.machine != nullptr) {
        ctx.machine->DebugPrint(text, static_cast<uint32_t>(ip - code));
      } else {
        std::fwrite(text.data(), 1, text.size(), stdout);
        std::fputc('\n', stdout);
      }
      VM_NEXT();
    }
    // SCOPE_ENTER / SCOPE_EXIT: refs [a, a+n) of a run_scoped.
    VM_CASE(SCOPE_ENTER) {
      if (ctx.machine == nullptr) return NoMachineError(program, ip);
      if (absl::Status s = ctx.machine->EnterScope(
              ip->a, ip->n, static_cast<uint32_t>(ip - code));
          !s.ok()) [[unlikely]] {
        return MachineError(program, ip, s);
      }
      VM_NEXT();
    }
    VM_CASE(SCOPE_EXIT) {
      if (ctx.machine == nullptr) return NoMachineError(program, ip);
      if (absl::Status s = ctx.machine->ExitScope(
              ip->a, ip->n, static_cast<uint32_t>(ip - code));
          !s.ok()) [[unlikely]] {
        return MachineError(program, ip, s);
      }
      VM_NEXT();
    }

    // ------------------------------------------------ appended opcodes
    // DOT_ADD_F32: a[M,N] := a + (b @ c), the product rounded to f32 first
    // (what DOT_F32 into a temporary and ADD_F32_VV compute).
    VM_DOT_CASE(DOT_ADD_F32, F32, DotAddF32, AccessKind::kUpdate)
#undef VM_DOT_CASE
    // FMA_F32: a[i] := b[i] * c[i] + d[i] for i < n, rounded once (the
    // hardware's fused multiply-add).
    VM_CASE(FMA_F32) {
      kernels::FusedMultiplyAddV(VM_PTR(F32, ip->a), VM_CPTR(F32, ip->b),
                                 VM_CPTR(F32, ip->c), VM_CPTR(F32, ip->d),
                                 ip->n);
      VM_NEXT();
    }

    // ------------------------------------------------ prims block
    // ERFC_F32_V / _S: a := erfc(b), elementwise.
    VM_CASE(ERFC_F32_V) {
      kernels::UnaryV<kernels::Erfc>(VM_PTR(F32, ip->a),
                                     VM_SOURCE(F32, b, kOperandRefB), ip->n);
      VM_NEXT();
    }
    VM_CASE(ERFC_F32_S) {
      VM_SET(F32, ip->a, kernels::Erfc()(VM_GET(F32, ip->b)));
      VM_NEXT();
    }
    // REDUCE_PROD_T: as REDUCE_SUM_T with a product (from 1).
#define VM_REDUCE_CASE(DT, INIT)                                         \
  VM_CASE(REDUCE_PROD_##DT) {                                            \
    kernels::Reduce<kernels::Mul>(VM_PTR(DT, ip->a), VM_CPTR(DT, ip->b), \
                                  ip->c, ip->d, ip->n,                   \
                                  static_cast<Storage<DType::DT>>(INIT)); \
    VM_NEXT();                                                           \
  }
    VM_REDUCE_CASE(F32, 1.f)
    VM_REDUCE_CASE(S32, 1)
    VM_REDUCE_CASE(U32, 1u)
#undef VM_REDUCE_CASE
    VM_ARG_CASE(ARGMAX, U32, true)
    VM_ARG_CASE(ARGMIN, U32, false)
#undef VM_ARG_CASE
    // GATHER_Bw: a[i] := b[clamp(c[i], 0, d-1)], elements of w bytes.
    VM_CASE(GATHER_B1) {
      kernels::GatherV(VM_PTR(U8, ip->a), VM_CPTR(U8, ip->b), ip->d,
                       VM_CPTR(S32, ip->c), ip->n);
      VM_NEXT();
    }
    VM_CASE(GATHER_B2) {
      kernels::GatherV(VM_PTR(U16, ip->a), VM_CPTR(U16, ip->b), ip->d,
                       VM_CPTR(S32, ip->c), ip->n);
      VM_NEXT();
    }
    VM_CASE(GATHER_B4) {
      kernels::GatherV(VM_PTR(U32, ip->a), VM_CPTR(U32, ip->b), ip->d,
                       VM_CPTR(S32, ip->c), ip->n);
      VM_NEXT();
    }
    // ARGSORT_T: a := the stable sorting permutation of b viewed as
    // [c, d, n], along d.
#define VM_ARGSORT_CASE(DT)                                                \
  VM_CASE(ARGSORT_##DT) {                                                  \
    kernels::ArgSort(VM_PTR(S32, ip->a), VM_CPTR(DT, ip->b), ip->c, ip->d, \
                     ip->n);                                               \
    VM_NEXT();                                                             \
  }
    VM_ARGSORT_CASE(F32)
    VM_ARGSORT_CASE(S32)
    VM_ARGSORT_CASE(U32)
#undef VM_ARGSORT_CASE
    // CHECK_INDEX: fail unless 0 <= a <= b (a dynamic start into a view).
    VM_CASE(CHECK_INDEX) {
      const int32_t start = VM_GET(S32, ip->a);
      if (start < 0 || static_cast<int64_t>(start) > int64_t{ip->b})
          [[unlikely]] {
        return ViewIndexError(program, ip, start);
      }
      VM_NEXT();
    }

#if PALLASVM_SWITCH_DISPATCH
    case Op::kNumOps:
      break;
#endif
  }
  // Unreachable for a verified program: every path ends in RETURN.
  return absl::InternalError("fell out of the dispatch loop");

#undef VM_PTR
#undef VM_CPTR
#undef VM_GET
#undef VM_SET
#undef VM_ACCESS_BASE
#undef VM_SOURCE
#undef VM_OBSERVE
#undef VM_OBSERVE_MASKED
#undef VM_OBSERVE_WHOLE
#undef VM_OPERAND
#undef VM_CASE
#undef VM_DISPATCH
#undef VM_NEXT
#undef VM_JUMP
}

}  // namespace pallasvm::vm
