// Element types as the VM sees them, with their properties: the one place
// where a dtype's size, signedness and name are written.
//
// Knows nothing of the interchange or bytecode schemas; the compiler and the
// runtime map their enums onto this one by name.
#ifndef PALLASVM_VM_DTYPE_H_
#define PALLASVM_VM_DTYPE_H_

#include "absl/strings/string_view.h"
#include <cstdint>
#include <optional>
#include <string_view>

namespace pallasvm::vm {

// X(ENUM, name, size_in_bytes, is_float, is_signed)   /* ORDER DTYPE */
#define PALLASVM_FOR_EACH_DTYPE(X) \
  X(PRED, "bool", 1, false, false) \
  X(S8, "int8", 1, false, true)    \
  X(U8, "uint8", 1, false, false)  \
  X(S16, "int16", 2, false, true)  \
  X(U16, "uint16", 2, false, false) \
  X(S32, "int32", 4, false, true)  \
  X(U32, "uint32", 4, false, false) \
  X(F16, "float16", 2, true, true) \
  X(BF16, "bfloat16", 2, true, true) \
  X(F32, "float32", 4, true, true)

// The enum names alone, twice, so that conversions can nest one inside the
// other (a macro cannot expand itself).            /* ORDER DTYPE */
#define PALLASVM_DTYPE_NAMES_OUTER(X) \
  X(PRED) X(S8) X(U8) X(S16) X(U16) X(S32) X(U32) X(F16) X(BF16) X(F32)
#define PALLASVM_DTYPE_NAMES_INNER(X, A)                                    \
  X(A, PRED) X(A, S8) X(A, U8) X(A, S16) X(A, U16) X(A, S32) X(A, U32)     \
  X(A, F16) X(A, BF16) X(A, F32)

enum class DType : uint8_t {
#define PALLASVM_DTYPE_ENUM(E, name, size, is_float, is_signed) E,
  PALLASVM_FOR_EACH_DTYPE(PALLASVM_DTYPE_ENUM)
#undef PALLASVM_DTYPE_ENUM
};

inline constexpr int kNumDTypes = 0
#define PALLASVM_DTYPE_COUNT(E, name, size, is_float, is_signed) +1
    PALLASVM_FOR_EACH_DTYPE(PALLASVM_DTYPE_COUNT)
#undef PALLASVM_DTYPE_COUNT
    ;

struct DTypeInfo {
  absl::string_view name;  // numpy's name
  int size;               // bytes per element
  bool is_float;
  bool is_signed;
};

inline constexpr DTypeInfo kDTypeInfo[] = {
#define PALLASVM_DTYPE_INFO(E, name, size, is_float, is_signed) \
  {name, size, is_float, is_signed},
    PALLASVM_FOR_EACH_DTYPE(PALLASVM_DTYPE_INFO)
#undef PALLASVM_DTYPE_INFO
};

constexpr const DTypeInfo& Info(DType t) {
  return kDTypeInfo[static_cast<int>(t)];
}
constexpr int SizeOf(DType t) { return Info(t).size; }
constexpr absl::string_view Name(DType t) { return Info(t).name; }

inline std::optional<DType> DTypeFromName(absl::string_view name) {
  for (int i = 0; i < kNumDTypes; ++i) {
    if (kDTypeInfo[i].name == name) return static_cast<DType>(i);
  }
  return std::nullopt;
}

}  // namespace pallasvm::vm

#endif  // PALLASVM_VM_DTYPE_H_
