// How each dtype is stored in the frame and in refs: the C++ type the
// kernels read and write for it, and unaligned-safe scalar access.
//
// PRED is one byte holding 0 or 1; BF16 and F16 are their raw 16-bit
// patterns (only vm/kernels/convert.h interprets them). Knows nothing of
// opcodes or programs.
#ifndef PALLASVM_VM_KERNELS_STORAGE_H_
#define PALLASVM_VM_KERNELS_STORAGE_H_

#include <cstdint>
#include <cstring>

#include "vm/dtype.h"

namespace pallasvm::vm {

template <DType T>
struct StorageOf;
// clang-format off
template <> struct StorageOf<DType::PRED> { using type = uint8_t; };
template <> struct StorageOf<DType::S8> { using type = int8_t; };
template <> struct StorageOf<DType::U8> { using type = uint8_t; };
template <> struct StorageOf<DType::S16> { using type = int16_t; };
template <> struct StorageOf<DType::U16> { using type = uint16_t; };
template <> struct StorageOf<DType::S32> { using type = int32_t; };
template <> struct StorageOf<DType::U32> { using type = uint32_t; };
template <> struct StorageOf<DType::F16> { using type = uint16_t; };
template <> struct StorageOf<DType::BF16> { using type = uint16_t; };
template <> struct StorageOf<DType::F32> { using type = float; };
// clang-format on

template <DType T>
using Storage = typename StorageOf<T>::type;

// memcpy compiles to a single move; it keeps scalar reads of the byte frame
// free of alignment and aliasing assumptions.
template <class T>
inline T LoadScalar(const uint8_t* p) {
  T v;
  std::memcpy(&v, p, sizeof(T));
  return v;
}

template <class T>
inline void StoreScalar(uint8_t* p, T v) {
  std::memcpy(p, &v, sizeof(T));
}

}  // namespace pallasvm::vm

#endif  // PALLASVM_VM_KERNELS_STORAGE_H_
