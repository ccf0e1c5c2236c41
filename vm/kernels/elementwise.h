// Elementwise op kernels: one functor per operation named in
// vm/opcodes.def (its FUNCTOR column), and the loops that apply a functor
// over a block: BinaryVV / BinaryVS / BinarySV and UnaryV; and the fused
// multiply-add loop FusedMultiplyAddV.
//
// A functor has a scalar operator() for each storage type it serves (float
// for F32, int32_t for S32, uint32_t for U32, uint8_t for PRED) and, where
// xsimd computes exactly the same thing, a batch form. The loops use the
// batch form for whole batches and for the tail (through a padded buffer),
// so an element's result never depends on its position in the block.
// Transcendentals are xsimd's approximations (1-2 ulp), and their scalar
// form evaluates the batch form on a broadcast for the same reason: `_S`,
// `_V` and the tail of a `_V` all agree bit for bit.
//
// Subnormals: the functors assume the thread runs with denormals-are-zero
// and flush-to-zero (FlushDenormals, vm/kernels/flush_denormals.h), as
// XLA:CPU's threads do, so arithmetic reads subnormals as zero for free.
// Where XLA:CPU's result is not plain arithmetic on flushed inputs (max, min
// and sign flush; tanh, sin and tan return a subnormal unchanged), the
// functor says so.
//
// Integer semantics are XLA's (see vm/opcodes.def): arithmetic wraps and is
// done in uint32_t so C++ sees no signed overflow; division and remainder by
// zero and INT_MIN / -1 have defined results and never trap; shifts by
// amounts outside [0, 32) are defined.
//
// Knows nothing of the frame, instructions or programs.
#ifndef PALLASVM_VM_KERNELS_ELEMENTWISE_H_
#define PALLASVM_VM_KERNELS_ELEMENTWISE_H_

#include <algorithm>
#include <bit>
#include <cmath>
#include <concepts>
#include <cstdint>
#include <cstring>
#include <limits>
#include <type_traits>

#include "vm/kernels/flush_denormals.h"
#include "vm/kernels/simd.h"

namespace pallasvm::vm::kernels {

using BatchF32 = xsimd::batch<float>;
using BatchS32 = xsimd::batch<int32_t>;
using BatchU32 = xsimd::batch<uint32_t>;

template <class T>
concept Scalar = std::is_arithmetic_v<T>;

inline uint32_t AsU32(int32_t x) { return static_cast<uint32_t>(x); }
inline int32_t AsS32(uint32_t x) { return static_cast<int32_t>(x); }

// Lane 0 of a batch function applied to a broadcast scalar: the scalar form
// of every approximated function, so scalar and block results agree.
template <class F>
inline float ViaBatch(F f, float x) {
  return f(BatchF32(x)).get(0);
}
template <class F>
inline float ViaBatch(F f, float x, float y) {
  return f(BatchF32(x), BatchF32(y)).get(0);
}

// True in the lanes whose sign bit is set (so -0.0 and negative NaNs too).
inline xsimd::batch_bool<float> SignBitSet(BatchF32 x) {
  return xsimd::bool_cast(xsimd::bitwise_cast<BatchS32>(x) < BatchS32(0));
}

// The signed zero where x compares equal to zero (so, under
// denormals-are-zero, for subnormals too), x elsewhere: what XLA:CPU's
// arithmetic makes of a subnormal that a select would pass through.
inline BatchF32 ZeroIfZero(BatchF32 x) {
  return xsimd::select(x == BatchF32(0.f), xsimd::bitwise_and(x, BatchF32(-0.f)),
                       x);
}

// x itself where x compares equal to zero (±0 and, under
// denormals-are-zero, the subnormals), else r: XLA:CPU's tanh, sin and tan
// return such inputs unchanged (f(x) = x near 0), subnormal bits included.
inline BatchF32 KeepIfZero(BatchF32 x, BatchF32 r) {
  return xsimd::select(x == BatchF32(0.f), x, r);
}

// ------------------------------------------------------------ arithmetic

struct Add {
  float operator()(float x, float y) const { return x + y; }
  int32_t operator()(int32_t x, int32_t y) const {
    return AsS32(AsU32(x) + AsU32(y));
  }
  uint32_t operator()(uint32_t x, uint32_t y) const { return x + y; }
  BatchF32 operator()(BatchF32 x, BatchF32 y) const { return x + y; }
  BatchS32 operator()(BatchS32 x, BatchS32 y) const { return x + y; }
  BatchU32 operator()(BatchU32 x, BatchU32 y) const { return x + y; }
};

struct Sub {
  float operator()(float x, float y) const { return x - y; }
  int32_t operator()(int32_t x, int32_t y) const {
    return AsS32(AsU32(x) - AsU32(y));
  }
  uint32_t operator()(uint32_t x, uint32_t y) const { return x - y; }
  BatchF32 operator()(BatchF32 x, BatchF32 y) const { return x - y; }
  BatchS32 operator()(BatchS32 x, BatchS32 y) const { return x - y; }
  BatchU32 operator()(BatchU32 x, BatchU32 y) const { return x - y; }
};

struct Mul {
  float operator()(float x, float y) const { return x * y; }
  int32_t operator()(int32_t x, int32_t y) const {
    return AsS32(AsU32(x) * AsU32(y));
  }
  uint32_t operator()(uint32_t x, uint32_t y) const { return x * y; }
  BatchF32 operator()(BatchF32 x, BatchF32 y) const { return x * y; }
  BatchS32 operator()(BatchS32 x, BatchS32 y) const { return x * y; }
  BatchU32 operator()(BatchU32 x, BatchU32 y) const { return x * y; }
};

// No integer batch form: x86 has no SIMD integer division, and the special
// cases would cost more than the scalar loop saves.
struct Div {
  float operator()(float x, float y) const { return x / y; }
  int32_t operator()(int32_t x, int32_t y) const {
    if (y == 0) return -1;
    if (y == -1) return AsS32(0u - AsU32(x));  // MIN / -1 wraps to MIN
    return x / y;
  }
  uint32_t operator()(uint32_t x, uint32_t y) const {
    return y == 0 ? 0xffffffffu : x / y;
  }
  BatchF32 operator()(BatchF32 x, BatchF32 y) const { return x / y; }
};

// F32 uses std::fmod, which is exact; xsimd's fmod loses precision for
// large quotients.
struct Rem {
  float operator()(float x, float y) const { return std::fmod(x, y); }
  int32_t operator()(int32_t x, int32_t y) const {
    if (y == 0) return x;
    if (y == -1) return 0;  // MIN % -1 would trap
    return x % y;
  }
  uint32_t operator()(uint32_t x, uint32_t y) const {
    return y == 0 ? x : x % y;
  }
};

// F32 max/min are IEEE 754-2019 maximum/minimum, as XLA emits them: NaN if
// either operand is NaN, and -0 < +0. Like XLA:CPU's they read subnormal
// operands as zero: maxps/minps honour denormals-are-zero (set by
// FlushDenormals, vm/kernels/flush_denormals.h) and return the flushed zero,
// where a select would pass the subnormal's bits through. maxps(a, b)
// returns b on ties, so the AND (max) or OR (min) of both orders prefers +0
// (max) or -0 (min). The scalar form is the batch form on a broadcast.
struct Max {
  float operator()(float x, float y) const { return ViaBatch(*this, x, y); }
  int32_t operator()(int32_t x, int32_t y) const { return std::max(x, y); }
  uint32_t operator()(uint32_t x, uint32_t y) const { return std::max(x, y); }
  BatchF32 operator()(BatchF32 x, BatchF32 y) const {
    BatchF32 ordered = xsimd::bitwise_and(xsimd::max(x, y), xsimd::max(y, x));
    return xsimd::select(xsimd::isnan(x) || xsimd::isnan(y), x + y, ordered);
  }
  BatchS32 operator()(BatchS32 x, BatchS32 y) const { return xsimd::max(x, y); }
  BatchU32 operator()(BatchU32 x, BatchU32 y) const { return xsimd::max(x, y); }
};

struct Min {
  float operator()(float x, float y) const { return ViaBatch(*this, x, y); }
  int32_t operator()(int32_t x, int32_t y) const { return std::min(x, y); }
  uint32_t operator()(uint32_t x, uint32_t y) const { return std::min(x, y); }
  BatchF32 operator()(BatchF32 x, BatchF32 y) const {
    BatchF32 ordered = xsimd::bitwise_or(xsimd::min(x, y), xsimd::min(y, x));
    return xsimd::select(xsimd::isnan(x) || xsimd::isnan(y), x + y, ordered);
  }
  BatchS32 operator()(BatchS32 x, BatchS32 y) const { return xsimd::min(x, y); }
  BatchU32 operator()(BatchU32 x, BatchU32 y) const { return xsimd::min(x, y); }
};

// F32 uses std::pow: xsimd's pow is 10-20 ulp off and gets pow(0, 0) and
// pow(inf, 0) wrong.
struct Pow {
  float operator()(float x, float y) const { return std::pow(x, y); }
  uint32_t operator()(uint32_t x, uint32_t y) const {
    uint32_t acc = 1;
    for (; y != 0; y >>= 1) {
      if (y & 1) acc *= x;
      x *= x;
    }
    return acc;
  }
  // XLA: a negative exponent gives 0, except 1 ** y == 1.
  int32_t operator()(int32_t x, int32_t y) const {
    if (y < 0) return x == 1 ? 1 : 0;
    return AsS32((*this)(AsU32(x), AsU32(y)));
  }
};

// atan2(x, y) = the angle of (y, x). xsimd's atan2 returns NaN for
// (+-0, +-0) and is patched there and at (+-inf, +-inf) to the C values.
// Subnormal operands read as zero. XLA:CPU's atan2 has no consistent rule
// for them (atan2(1e-45, 0) = pi/2 but atan2(1e-45, 1e-45) = NaN and
// atan2(1e-45, 0.5) = 0), so pallasvm does not follow it there (README).
struct Atan2 {
  float operator()(float x, float y) const { return ViaBatch(*this, x, y); }
  BatchF32 operator()(BatchF32 x, BatchF32 y) const {
    const BatchF32 pi(3.14159265358979323846f);
    const BatchF32 quarter_pi(0.785398163397448309616f);
    const BatchF32 three_quarter_pi(2.35619449019234492885f);
    auto y_negative = SignBitSet(y);
    BatchF32 r = xsimd::atan2(x, y);
    r = xsimd::select(
        (x == BatchF32(0.f)) && (y == BatchF32(0.f)),
        xsimd::copysign(xsimd::select(y_negative, pi, BatchF32(0.f)), x), r);
    r = xsimd::select(
        xsimd::isinf(x) && xsimd::isinf(y),
        xsimd::copysign(xsimd::select(y_negative, three_quarter_pi, quarter_pi),
                        x),
        r);
    return r;
  }
};

// ---------------------------------------------------------- bits, shifts

struct And {
  template <std::integral T>
  T operator()(T x, T y) const {
    return x & y;
  }
  BatchS32 operator()(BatchS32 x, BatchS32 y) const { return x & y; }
  BatchU32 operator()(BatchU32 x, BatchU32 y) const { return x & y; }
};

struct Or {
  template <std::integral T>
  T operator()(T x, T y) const {
    return x | y;
  }
  BatchS32 operator()(BatchS32 x, BatchS32 y) const { return x | y; }
  BatchU32 operator()(BatchU32 x, BatchU32 y) const { return x | y; }
};

struct Xor {
  template <std::integral T>
  T operator()(T x, T y) const {
    return x ^ y;
  }
  BatchS32 operator()(BatchS32 x, BatchS32 y) const { return x ^ y; }
  BatchU32 operator()(BatchU32 x, BatchU32 y) const { return x ^ y; }
};

// Shift amounts are read as unsigned, like XLA and like x86's variable
// shifts (which the compiler vectorises these loops into): a negative amount
// is a huge one. xsimd 8's batch-by-batch shifts are scalar C++ shifts on
// AVX-512, undefined past 31, so there is no batch form.
struct Shl {
  int32_t operator()(int32_t x, int32_t y) const {
    return AsS32((*this)(AsU32(x), AsU32(y)));
  }
  uint32_t operator()(uint32_t x, uint32_t y) const {
    return y < 32 ? x << y : 0;
  }
};

struct ShrA {
  int32_t operator()(int32_t x, int32_t y) const {
    return x >> std::min(AsU32(y), 31u);
  }
  uint32_t operator()(uint32_t x, uint32_t y) const {
    return AsU32(AsS32(x) >> std::min(y, 31u));
  }
};

struct ShrL {
  int32_t operator()(int32_t x, int32_t y) const {
    return AsS32((*this)(AsU32(x), AsU32(y)));
  }
  uint32_t operator()(uint32_t x, uint32_t y) const {
    return y < 32 ? x >> y : 0;
  }
};

// ------------------------------------------------------------ comparisons
// Results are PRED (uint8_t 0/1); the loops leave them to the compiler's
// vectoriser, since the result is narrower than the operands.

struct Eq {
  template <Scalar T>
  uint8_t operator()(T x, T y) const {
    return x == y;
  }
};
struct Ne {
  template <Scalar T>
  uint8_t operator()(T x, T y) const {
    return x != y;
  }
};
struct Lt {
  template <Scalar T>
  uint8_t operator()(T x, T y) const {
    return x < y;
  }
};
struct Le {
  template <Scalar T>
  uint8_t operator()(T x, T y) const {
    return x <= y;
  }
};
struct Gt {
  template <Scalar T>
  uint8_t operator()(T x, T y) const {
    return x > y;
  }
};
struct Ge {
  template <Scalar T>
  uint8_t operator()(T x, T y) const {
    return x >= y;
  }
};

// ------------------------------------------------------------------ unary

struct Neg {
  float operator()(float x) const { return -x; }
  int32_t operator()(int32_t x) const { return AsS32(0u - AsU32(x)); }
  uint32_t operator()(uint32_t x) const { return 0u - x; }
  // Flips the sign bit: xsimd's unary minus computes 0 - x, giving +0 for
  // -(+0).
  BatchF32 operator()(BatchF32 x) const {
    return xsimd::bitwise_xor(x, BatchF32(-0.f));
  }
  BatchS32 operator()(BatchS32 x) const { return BatchS32(0) - x; }
  BatchU32 operator()(BatchU32 x) const { return BatchU32(0u) - x; }
};

struct Abs {
  float operator()(float x) const { return std::fabs(x); }
  int32_t operator()(int32_t x) const {
    return x < 0 ? AsS32(0u - AsU32(x)) : x;  // MIN stays MIN
  }
  BatchF32 operator()(BatchF32 x) const { return xsimd::abs(x); }
  BatchS32 operator()(BatchS32 x) const { return xsimd::abs(x); }
};

// Zeros (of either sign) and NaN are returned unchanged; a subnormal gives
// the zero of its sign, as in XLA:CPU (under denormals-are-zero it compares
// equal to 0, and AND with -0 keeps only its sign bit).
struct Sign {
  float operator()(float x) const { return ViaBatch(*this, x); }
  int32_t operator()(int32_t x) const { return (x > 0) - (x < 0); }
  BatchF32 operator()(BatchF32 x) const {
    return xsimd::select(
        x > BatchF32(0.f), BatchF32(1.f),
        xsimd::select(x < BatchF32(0.f), BatchF32(-1.f), ZeroIfZero(x)));
  }
};

struct Not {
  int32_t operator()(int32_t x) const { return ~x; }
  uint32_t operator()(uint32_t x) const { return ~x; }
  uint8_t operator()(uint8_t x) const { return x == 0; }
  BatchS32 operator()(BatchS32 x) const { return ~x; }
  BatchU32 operator()(BatchU32 x) const { return ~x; }
};

struct Popcnt {
  int32_t operator()(int32_t x) const { return std::popcount(AsU32(x)); }
  uint32_t operator()(uint32_t x) const { return std::popcount(x); }
};

struct Clz {
  int32_t operator()(int32_t x) const { return std::countl_zero(AsU32(x)); }
  uint32_t operator()(uint32_t x) const { return std::countl_zero(x); }
};

struct IsFinite {
  uint8_t operator()(float x) const { return std::isfinite(x); }
};

// Exact operations: the scalar C function and the batch instruction agree.
struct Sqrt {
  float operator()(float x) const { return std::sqrt(x); }
  BatchF32 operator()(BatchF32 x) const { return xsimd::sqrt(x); }
};

// Computed as written, not with the approximate reciprocal instruction.
struct Rsqrt {
  float operator()(float x) const { return 1.f / std::sqrt(x); }
  BatchF32 operator()(BatchF32 x) const {
    return BatchF32(1.f) / xsimd::sqrt(x);
  }
};

struct Floor {
  float operator()(float x) const { return std::floor(x); }
  BatchF32 operator()(BatchF32 x) const { return xsimd::floor(x); }
};

struct Ceil {
  float operator()(float x) const { return std::ceil(x); }
  BatchF32 operator()(BatchF32 x) const { return xsimd::ceil(x); }
};

// nearbyint in the default rounding mode is round-half-to-even.
struct RoundEven {
  float operator()(float x) const { return std::nearbyint(x); }
  BatchF32 operator()(BatchF32 x) const { return xsimd::nearbyint(x); }
};

struct RoundAway {
  float operator()(float x) const { return std::round(x); }
  BatchF32 operator()(BatchF32 x) const { return xsimd::round(x); }
};

// xsimd's exp and exp2 flush results below FLT_MIN to zero. Where x is below
// `threshold`, f(x) = f(x/2)^2 instead: x/2 is exact, f(x/2) a normal float,
// and the square rounds once into the subnormal range, within 2 ulp.
template <class F>
inline BatchF32 WithSubnormalResults(BatchF32 x, float threshold,
                                     BatchF32 result, F f) {
  const auto tiny = x < BatchF32(threshold);
  if (!xsimd::any(tiny)) return result;
  const BatchF32 half = f(x * BatchF32(0.5f));
  return xsimd::select(tiny, half * half, result);
}

// Approximated functions: the batch form is the definition.
#define PALLASVM_XSIMD_UNARY(FUNCTOR, EXPR)                        \
  struct FUNCTOR {                                                 \
    float operator()(float x) const { return ViaBatch(*this, x); } \
    BatchF32 operator()(BatchF32 x) const { return EXPR; }         \
  };
PALLASVM_XSIMD_UNARY(Exp, WithSubnormalResults(x, -87.f, xsimd::exp(x),
                                               [](BatchF32 h) {
                                                 return xsimd::exp(h);
                                               }))
PALLASVM_XSIMD_UNARY(Exp2, WithSubnormalResults(x, -126.f, xsimd::exp2(x),
                                                [](BatchF32 h) {
                                                  return xsimd::exp2(h);
                                                }))
PALLASVM_XSIMD_UNARY(Log, xsimd::log(x))
// xsimd returns +0 for log1p(-0) and expm1(-0); IEEE says -0. XLA:CPU's
// log1p of a subnormal is the zero of its sign; its expm1 keeps the
// subnormal.
PALLASVM_XSIMD_UNARY(Log1p,
                     xsimd::select(x == BatchF32(0.f),
                                   xsimd::bitwise_and(x, BatchF32(-0.f)),
                                   xsimd::log1p(x)))
PALLASVM_XSIMD_UNARY(Expm1,
                     xsimd::select(x == BatchF32(0.f), x, xsimd::expm1(x)))
PALLASVM_XSIMD_UNARY(Tanh, KeepIfZero(x, xsimd::tanh(x)))
PALLASVM_XSIMD_UNARY(Logistic, BatchF32(1.f) / (BatchF32(1.f) + xsimd::exp(-x)))
// A subnormal reads as zero: XLA:CPU's cbrt returns -5.6e-16 for every
// subnormal (its algorithm breaks under denormals-are-zero); pallasvm gives
// the signed zero (a documented difference).
PALLASVM_XSIMD_UNARY(Cbrt, xsimd::select(x == BatchF32(0.f),
                                         xsimd::bitwise_and(x, BatchF32(-0.f)),
                                         xsimd::cbrt(x)))
PALLASVM_XSIMD_UNARY(Sin, KeepIfZero(x, xsimd::sin(x)))
PALLASVM_XSIMD_UNARY(Cos, xsimd::cos(x))
PALLASVM_XSIMD_UNARY(Tan, KeepIfZero(x, xsimd::tan(x)))
PALLASVM_XSIMD_UNARY(Erf, xsimd::erf(x))
PALLASVM_XSIMD_UNARY(Erfc, xsimd::erfc(x))
#undef PALLASVM_XSIMD_UNARY

// ------------------------------------------------------------------ loops

template <class F, class T>
concept HasBatchBinary = requires(F f, xsimd::batch<T> b) {
  { f(b, b) } -> std::same_as<xsimd::batch<T>>;
};
template <class F, class T>
concept HasBatchUnary = requires(F f, xsimd::batch<T> b) {
  { f(b) } -> std::same_as<xsimd::batch<T>>;
};

// Runs `f` on the last m (< batch size) elements through zero-padded
// buffers, so the tail gets the batch form like the rest of the block.
template <class T, class F>
inline void BatchTail(T* dst, const T* x, const T* y, int64_t m, F f) {
  using B = xsimd::batch<T>;
  alignas(64) T bx[B::size] = {};
  alignas(64) T by[B::size] = {};
  alignas(64) T out[B::size];
  std::memcpy(bx, x, m * sizeof(T));
  if (y != nullptr) std::memcpy(by, y, m * sizeof(T));
  f(B::load_aligned(bx), B::load_aligned(by)).store_aligned(out);
  std::memcpy(dst, out, m * sizeof(T));
}

// dst[i] = f(x[i], y[i]). dst may be x or y (in place), not overlap them
// otherwise.
template <class F, class In, class Out>
[[gnu::noinline]] void BinaryVV(Out* dst, const In* x, const In* y, int64_t n) {
  F f;
  if constexpr (std::is_same_v<In, Out> && HasBatchBinary<F, In>) {
    using B = xsimd::batch<In>;
    constexpr int64_t kW = B::size;
    int64_t i = 0;
    for (; i + kW <= n; i += kW) {
      f(B::load_unaligned(x + i), B::load_unaligned(y + i))
          .store_unaligned(dst + i);
    }
    if (i < n) BatchTail(dst + i, x + i, y + i, n - i, f);
  } else {
    for (int64_t i = 0; i < n; ++i) dst[i] = f(x[i], y[i]);
  }
}

// dst[i] = f(x[i], y): the right operand broadcast.
template <class F, class In, class Out>
[[gnu::noinline]] void BinaryVS(Out* dst, const In* x, In y, int64_t n) {
  F f;
  if constexpr (std::is_same_v<In, Out> && HasBatchBinary<F, In>) {
    using B = xsimd::batch<In>;
    constexpr int64_t kW = B::size;
    const B yb(y);
    int64_t i = 0;
    for (; i + kW <= n; i += kW) {
      f(B::load_unaligned(x + i), yb).store_unaligned(dst + i);
    }
    if (i < n) {
      BatchTail(dst + i, x + i, static_cast<const In*>(nullptr), n - i,
                [&](B xb, B) { return f(xb, yb); });
    }
  } else {
    for (int64_t i = 0; i < n; ++i) dst[i] = f(x[i], y);
  }
}

// dst[i] = f(x, y[i]): the left operand broadcast.
template <class F, class In, class Out>
[[gnu::noinline]] void BinarySV(Out* dst, In x, const In* y, int64_t n) {
  F f;
  if constexpr (std::is_same_v<In, Out> && HasBatchBinary<F, In>) {
    using B = xsimd::batch<In>;
    constexpr int64_t kW = B::size;
    const B xb(x);
    int64_t i = 0;
    for (; i + kW <= n; i += kW) {
      f(xb, B::load_unaligned(y + i)).store_unaligned(dst + i);
    }
    if (i < n) {
      BatchTail(dst + i, y + i, static_cast<const In*>(nullptr), n - i,
                [&](B yb, B) { return f(xb, yb); });
    }
  } else {
    for (int64_t i = 0; i < n; ++i) dst[i] = f(x, y[i]);
  }
}

// dst[i] = f(x[i]).
template <class F, class In, class Out>
[[gnu::noinline]] void UnaryV(Out* dst, const In* x, int64_t n) {
  F f;
  if constexpr (std::is_same_v<In, Out> && HasBatchUnary<F, In>) {
    using B = xsimd::batch<In>;
    constexpr int64_t kW = B::size;
    int64_t i = 0;
    for (; i + kW <= n; i += kW) {
      f(B::load_unaligned(x + i)).store_unaligned(dst + i);
    }
    if (i < n) {
      BatchTail(dst + i, x + i, static_cast<const In*>(nullptr), n - i,
                [&](B xb, B) { return f(xb); });
    }
  } else {
    for (int64_t i = 0; i < n; ++i) dst[i] = f(x[i]);
  }
}

// SELECT_B*: dst[i] := pred[i] ? on_true[i] : on_false[i]. T is the
// element's width only (uint8_t, uint16_t, uint32_t): select moves bits.
template <class T>
[[gnu::noinline]] void SelectV(T* dst, const uint8_t* pred, const T* on_false,
                               const T* on_true, int64_t n) {
  for (int64_t i = 0; i < n; ++i) dst[i] = pred[i] ? on_true[i] : on_false[i];
}

// FMA_F32: dst[i] := x[i] * y[i] + z[i], rounded once (the hardware's
// fused multiply-add, so reading subnormals as zero like the other float
// ops). dst may be x, y or z (in place), not overlap them otherwise. The
// tail goes through padded buffers so it gets the same instruction.
[[gnu::noinline]] inline void FusedMultiplyAddV(float* dst, const float* x,
                                                const float* y, const float* z,
                                                int64_t n) {
  constexpr int64_t kW = BatchF32::size;
  int64_t i = 0;
  for (; i + kW <= n; i += kW) {
    FusedMultiplyAdd(BatchF32::load_unaligned(x + i),
                     BatchF32::load_unaligned(y + i),
                     BatchF32::load_unaligned(z + i))
        .store_unaligned(dst + i);
  }
  if (i < n) {
    const int64_t m = n - i;
    alignas(64) float bx[kW] = {}, by[kW] = {}, bz[kW] = {};
    std::memcpy(bx, x + i, m * sizeof(float));
    std::memcpy(by, y + i, m * sizeof(float));
    std::memcpy(bz, z + i, m * sizeof(float));
    FusedMultiplyAdd(BatchF32::load_aligned(bx), BatchF32::load_aligned(by),
                     BatchF32::load_aligned(bz))
        .store_aligned(bx);
    std::memcpy(dst + i, bx, m * sizeof(float));
  }
}

}  // namespace pallasvm::vm::kernels

#endif  // PALLASVM_VM_KERNELS_ELEMENTWISE_H_
