// The opcode enum and the per-opcode property table, both generated from
// vm/opcodes.def. Nothing else lists opcodes.
#ifndef PALLASVM_VM_OPCODES_H_
#define PALLASVM_VM_OPCODES_H_

#include "absl/strings/string_view.h"
#include <cstdint>
#include <optional>
#include <string_view>

#include "vm/dtype.h"
#include "vm/opcodes.def"

namespace pallasvm::vm {

// What each operand of an instruction is; the verifier's rules and the
// disassembler's layout are per format.
enum class Format : uint8_t {
  BINARY_VV,     // a: dst[n] OUT, b: lhs[n] IN, c: rhs[n] IN; aux: B, C bits
  BINARY_VS,     // a: dst[n], b: lhs[n], c: rhs[1]; aux: kOperandRefB bit
  BINARY_SV,     // a: dst[n], b: lhs[1], c: rhs[n]; aux: kOperandRefC bit
  BINARY_SS,     // a: dst[1], b: lhs[1], c: rhs[1]
  UNARY_V,       // a: dst[n] OUT, b: src[n] IN; aux: kOperandRefB bit
  UNARY_S,       // a: dst[1], b: src[1]
  COPY,          // a: dst, b: src, n bytes
  MOV,           // a: dst, b: src, one element of the opcode's width
  FILL,          // a: dst[n], b: value[1]
  SELECT,        // a: dst[n], b: pred[n] PRED, c: on_false[n], d: on_true[n]
  TERNARY,       // a: dst[n] OUT, b, c, d: src[n] IN (FMA: b * c + d)
  LAYOUT,        // a: dst, b: src (STRIDED_COPY), d: layout descriptor
  ACCESS_LOAD,   // a: dst, d: access descriptor
  ACCESS_STORE,  // b: src, d: access descriptor; aux: kOperandRefB bit
  ACCESS_MASKED_STORE,  // b: src, c: mask PRED, d: access descriptor
  REDUCE,        // a: dst[c*n] OUT, b: src[c*d*n] IN
  DOT,           // a: dst[M*N], b: lhs[M*K], c: rhs[K*N], d: layout {M,K,N};
                 //   aux: kOperandRef{A,B,C} bits
  GRID,          // a: dst[1] S32, b: grid axis
  JUMP,          // a: target pc
  BRANCH,        // a: cond[1] PRED, b: target pc
  // prims block (gathers, argsort)
  GATHER,        // a: dst[n], b: src[d], c: indices[n] S32 (element width:
                 //   the opcode's)
  SORT,          // a: dst[c*d*n] S32, b: src[c*d*n] IN
  CHECK,         // a: index[1] S32; b: its largest valid value, c: the dim
  NONE,
  // The simulated machine's operations (vm/machine.h).
  DMA,             // a: src access, b: dst access, c: src-sem access or
                   //   kNoAccess, d: dst-sem access
  SEMAPHORE,       // b: value[1] S32, d: semaphore access
  SEMAPHORE_READ,  // a: dst[1] S32, d: semaphore access
  SCOPE,           // a: first ref, n: ref count
  PRINT_ARG,       // a: value[1] of dtype aux
  PRINT,           // a: format (n bytes, a constant)
};

// Operand-location bits of Instr::aux in the DOT, ACCESS_STORE and block
// elementwise (BINARY_VV/VS/SV, UNARY_V: sources only) formats:
// a set bit says the operand is a ref index, meaning the whole of that ref's
// buffer (dense, row-major), instead of a frame offset. Ref buffers never
// overlap each other or the frame.
inline constexpr uint16_t kOperandRefA = 1;
inline constexpr uint16_t kOperandRefB = 2;
inline constexpr uint16_t kOperandRefC = 4;

// An access operand that names no access (DMA_START's c: no send semaphore).
inline constexpr uint32_t kNoAccess = 0xffffffffu;


#define PALLASVM_DT_NONE -1
#define PALLASVM_DT_PRED 0
#define PALLASVM_DT_S32 static_cast<int>(DType::S32)
#define PALLASVM_DT_U32 static_cast<int>(DType::U32)
#define PALLASVM_DT_F32 static_cast<int>(DType::F32)
#define PALLASVM_DT_BF16 static_cast<int>(DType::BF16)

enum class Op : uint16_t {
#define PALLASVM_OP_BINARY_ENUM(NAME, IN, OUT, F, S) \
  NAME##_##IN##_VV, NAME##_##IN##_VS, NAME##_##IN##_SV, NAME##_##IN##_SS,
  PALLASVM_BINARY_OPS(PALLASVM_OP_BINARY_ENUM)
#undef PALLASVM_OP_BINARY_ENUM
#define PALLASVM_OP_UNARY_ENUM(NAME, IN, OUT, F, S) \
  NAME##_##IN##_V, NAME##_##IN##_S,
  PALLASVM_UNARY_OPS(PALLASVM_OP_UNARY_ENUM)
#undef PALLASVM_OP_UNARY_ENUM
#define PALLASVM_OP_CVT_ENUM(FROM, TO) CVT_##FROM##_##TO##_V, CVT_##FROM##_##TO##_S,
#define PALLASVM_OP_CVT_FROM(FROM) \
  PALLASVM_DTYPE_NAMES_INNER(PALLASVM_OP_CVT_ENUM, FROM)
  PALLASVM_DTYPE_NAMES_OUTER(PALLASVM_OP_CVT_FROM)
#undef PALLASVM_OP_CVT_FROM
#undef PALLASVM_OP_CVT_ENUM
#define PALLASVM_OP_OTHER_ENUM(NAME, FMT, IN, OUT, S) NAME,
  PALLASVM_OTHER_OPS(PALLASVM_OP_OTHER_ENUM)
#undef PALLASVM_OP_OTHER_ENUM
  kNumOps
};

inline constexpr int kNumOps = static_cast<int>(Op::kNumOps);

struct OpInfo {
  absl::string_view name;
  Format format;
  int8_t in;   // operand dtype (a DType), or -1 where the format says none
  int8_t out;  // result dtype, or -1
  absl::string_view semantics;
};

// Indexed by Op.
extern const OpInfo kOpInfo[kNumOps];

inline const OpInfo& Info(Op op) { return kOpInfo[static_cast<int>(op)]; }

// Opcode lookup by family, for the compiler: nullopt when the combination
// does not exist (e.g. SHL on F32).
enum class Layout : uint8_t { VV, VS, SV, SS };
std::optional<Op> BinaryOp(absl::string_view name, DType in, Layout layout);
std::optional<Op> UnaryOp(absl::string_view name, DType in, bool scalar);
Op ConvertOp(DType from, DType to, bool scalar);

// Whether `op` hands its work to the simulated machine (vm/machine.h): such
// an instruction may read or write any ref (a DMA in flight lands when
// someone waits), so the compiler moves no ref access across one.
inline bool IsMachineOp(Op op) {
  const Format f = Info(op).format;
  return f == Format::DMA || f == Format::SEMAPHORE ||
         f == Format::SEMAPHORE_READ || f == Format::SCOPE;
}

}  // namespace pallasvm::vm

#endif  // PALLASVM_VM_OPCODES_H_
