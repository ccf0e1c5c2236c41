// Conversions between every pair of dtypes (the CVT_FROM_TO opcodes), and
// the scalar bf16 / f16 helpers the runtime reuses for fill values and I/O.
//
// Semantics are XLA's on CPU:
//   float -> narrower float   round to nearest even; NaN stays NaN (quiet)
//   float -> int              truncate; NaN -> 0; out of range saturates
//   int -> float              round to nearest even; to BF16 goes through
//                             F32 first, as XLA does
//   int -> int                two's complement truncation (wraps)
//   anything -> PRED          x != 0 (NaN -> true)
//   PRED -> anything          0 or 1
// The functions are branch-free integer and float arithmetic so that the
// compiler vectorises the block loop.
#ifndef PALLASVM_VM_KERNELS_CONVERT_H_
#define PALLASVM_VM_KERNELS_CONVERT_H_

#include <bit>
#include <cmath>
#include <cstdint>
#include <limits>
#include <type_traits>

#include "vm/dtype.h"
#include "vm/kernels/storage.h"

namespace pallasvm::vm {

// bf16 is the top half of an f32, so widening is a shift.
inline float Bf16ToF32(uint16_t h) {
  return std::bit_cast<float>(static_cast<uint32_t>(h) << 16);
}

// Round to nearest even on the 16 dropped bits; a NaN keeps its sign and top
// payload bits and gets the quiet bit, so it cannot round to infinity.
inline uint16_t F32ToBf16(float f) {
  const uint32_t bits = std::bit_cast<uint32_t>(f);
  const uint32_t rounded = (bits + 0x7fffu + ((bits >> 16) & 1u)) >> 16;
  const uint32_t quiet_nan = (bits >> 16) | 0x40u;
  const bool is_nan = (bits & 0x7fffffffu) > 0x7f800000u;
  return static_cast<uint16_t>(is_nan ? quiet_nan : rounded);
}

// IEEE binary16. Subnormal halves become normal floats through a magic
// subtraction; NaNs get the quiet bit.
inline float F16ToF32(uint16_t h) {
  constexpr uint32_t kShiftedExp = 0x7c00u << 13;  // f16 exponent mask in f32
  const float magic = std::bit_cast<float>(113u << 23);
  uint32_t o = (static_cast<uint32_t>(h) & 0x7fffu) << 13;
  const uint32_t exp = o & kShiftedExp;
  o += (127u - 15u) << 23;  // rebias
  if (exp == kShiftedExp) {
    o += (128u - 16u) << 23;  // inf / NaN: exponent all ones
    if (o & 0x007fffffu) o |= 0x00400000u;
  } else if (exp == 0) {
    o += 1u << 23;  // zero / subnormal: renormalise by float arithmetic
    o = std::bit_cast<uint32_t>(std::bit_cast<float>(o) - magic);
  }
  o |= (static_cast<uint32_t>(h) & 0x8000u) << 16;
  return std::bit_cast<float>(o);
}

// Round to nearest even. Results that would be subnormal halves are
// produced by adding a magic number in float, which rounds them to nearest
// even in the default rounding mode.
inline uint16_t F32ToF16(float f) {
  constexpr uint32_t kF32Inf = 255u << 23;
  constexpr uint32_t kF16Overflow = (127u + 16u) << 23;  // 2^16
  constexpr uint32_t kDenormMagic = ((127u - 15u) + (23u - 10u) + 1u) << 23;
  uint32_t bits = std::bit_cast<uint32_t>(f);
  const uint32_t sign = bits & 0x80000000u;
  bits ^= sign;
  uint32_t o;
  if (bits >= kF16Overflow) {
    o = bits > kF32Inf ? (0x7e00u | ((bits >> 13) & 0x3ffu)) : 0x7c00u;
  } else if (bits < (113u << 23)) {  // below 2^-14: subnormal half or zero
    const float sum =
        std::bit_cast<float>(bits) + std::bit_cast<float>(kDenormMagic);
    o = std::bit_cast<uint32_t>(sum) - kDenormMagic;
  } else {
    const uint32_t mantissa_odd = (bits >> 13) & 1u;
    bits += ((15u - 127u) << 23) + 0xfffu;  // rebias, add half an ulp - 1
    bits += mantissa_odd;
    o = bits >> 13;  // a carry out of the mantissa rounds up to inf
  }
  return static_cast<uint16_t>(o | (sign >> 16));
}

namespace kernels {

inline constexpr bool IsFloatDType(DType t) {
  return t == DType::F32 || t == DType::BF16 || t == DType::F16;
}

// A float dtype's stored value, as f32 (exactly: F16 and BF16 widen
// without loss).
template <DType From>
inline float ToF32(Storage<From> v) {
  if constexpr (From == DType::BF16) {
    return Bf16ToF32(v);
  } else if constexpr (From == DType::F16) {
    return F16ToF32(v);
  } else {
    return v;
  }
}

template <DType To>
inline Storage<To> FromF32(float f) {
  if constexpr (To == DType::BF16) {
    return F32ToBf16(f);
  } else if constexpr (To == DType::F16) {
    return F32ToF16(f);
  } else {
    return f;
  }
}

// Truncation toward zero with NaN -> 0 and saturation, like llvm's
// fptosi.sat / fptoui.sat that XLA emits. Written as clamps and selects
// (no branches, no out-of-range cast) so that the block loop vectorises.
template <class Int>
inline Int SaturatingFloatToInt(float f) {
  using Limits = std::numeric_limits<Int>;
  // Int's min is 0 or minus a power of two: exact in float.
  constexpr float kLo = static_cast<float>(Limits::min());
  // The float just past Int's max (a power of two), and the largest float
  // below it, which truncates into range.
  constexpr float kTop = static_cast<float>(Limits::max()) + 1.0f;
  constexpr float kHi =
      std::bit_cast<float>(std::bit_cast<uint32_t>(kTop) - 1u);
  float c = f > kLo ? f : kLo;  // NaN -> kLo, fixed below
  c = c < kHi ? c : kHi;
  Int r = static_cast<Int>(c);
  r = f >= kTop ? Limits::max() : r;
  return f != f ? Int{0} : r;
}

template <DType From, DType To>
inline Storage<To> Convert(Storage<From> v) {
  using Out = Storage<To>;
  if constexpr (From == To) {
    return v;
  } else if constexpr (From == DType::PRED) {
    // 0 or 1 in the target type; goes through F32 for float targets.
    if constexpr (IsFloatDType(To)) {
      return FromF32<To>(v != 0 ? 1.f : 0.f);
    } else {
      return static_cast<Out>(v != 0);
    }
  } else if constexpr (To == DType::PRED) {
    if constexpr (IsFloatDType(From)) {
      return static_cast<uint8_t>(ToF32<From>(v) != 0.f);  // NaN -> true
    } else {
      return static_cast<uint8_t>(v != 0);
    }
  } else if constexpr (IsFloatDType(From)) {
    const float f = ToF32<From>(v);
    if constexpr (IsFloatDType(To)) {
      return FromF32<To>(f);  // f32 holds F16/BF16 exactly: one rounding
    } else {
      return SaturatingFloatToInt<Out>(f);
    }
  } else if constexpr (IsFloatDType(To)) {
    return FromF32<To>(static_cast<float>(v));
  } else {
    return static_cast<Out>(v);  // C++20: modular, two's complement
  }
}

// dst[i] = Convert(src[i]). In place only when To is no wider than From.
template <DType From, DType To>
[[gnu::noinline]] void ConvertV(Storage<To>* dst, const Storage<From>* src,
                                int64_t n) {
  for (int64_t i = 0; i < n; ++i) dst[i] = Convert<From, To>(src[i]);
}

}  // namespace kernels
}  // namespace pallasvm::vm

#endif  // PALLASVM_VM_KERNELS_CONVERT_H_
