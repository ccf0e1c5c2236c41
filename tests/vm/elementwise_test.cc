// The elementwise functors and loops (vm/kernels/elementwise.h): every
// binary and unary functor on edge values per dtype, transcendentals against
// the C library within a few ulp, and the block loops (all opcodes of the
// families, generated from vm/opcodes.def) against the scalar forms, bit for
// bit, at sizes that exercise the batch tail.
#include "vm/kernels/elementwise.h"

#include <gtest/gtest.h>

#include <bit>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <random>
#include <string>
#include <vector>

#include "vm/kernels/storage.h"
#include "vm/opcodes.def"

namespace pallasvm::vm::kernels {
namespace {

constexpr float kInf = std::numeric_limits<float>::infinity();
constexpr float kNaN = std::numeric_limits<float>::quiet_NaN();
constexpr int32_t kMinS32 = std::numeric_limits<int32_t>::min();
constexpr int32_t kMaxS32 = std::numeric_limits<int32_t>::max();
constexpr uint32_t kMaxU32 = std::numeric_limits<uint32_t>::max();

// Distance in representable floats; NaN matches only NaN.
int64_t UlpDistance(float a, float b) {
  if (std::isnan(a) || std::isnan(b)) {
    return std::isnan(a) && std::isnan(b) ? 0 : INT64_MAX;
  }
  auto ordered = [](float f) {
    const int32_t i = std::bit_cast<int32_t>(f);
    return i < 0 ? int64_t{kMinS32} - i : int64_t{i};
  };
  return std::llabs(ordered(a) - ordered(b));
}

// Same float, bit for bit, except any NaN equals any NaN.
bool SameFloat(float a, float b) {
  if (std::isnan(a) || std::isnan(b)) return std::isnan(a) && std::isnan(b);
  return std::bit_cast<uint32_t>(a) == std::bit_cast<uint32_t>(b);
}

#define EXPECT_SAME_FLOAT(a, b)                                          \
  EXPECT_TRUE(SameFloat((a), (b)))                                       \
      << #a " = " << (a) << " (bits 0x" << std::hex                      \
      << std::bit_cast<uint32_t>(float(a)) << std::dec << "), expected " \
      << (b)

// ---------------------------------------------------------- F32 binary

TEST(ElementwiseF32, Arithmetic) {
  EXPECT_SAME_FLOAT(Add()(1.5f, 2.25f), 3.75f);
  EXPECT_SAME_FLOAT(Add()(-0.f, -0.f), -0.f);
  EXPECT_SAME_FLOAT(Add()(kInf, -kInf), kNaN);
  EXPECT_SAME_FLOAT(Sub()(1.f, 3.f), -2.f);
  EXPECT_SAME_FLOAT(Sub()(0.f, 0.f), 0.f);
  EXPECT_SAME_FLOAT(Mul()(3.f, -0.5f), -1.5f);
  EXPECT_SAME_FLOAT(Mul()(0.f, kInf), kNaN);
  EXPECT_SAME_FLOAT(Div()(1.f, 0.f), kInf);
  EXPECT_SAME_FLOAT(Div()(-1.f, 0.f), -kInf);
  EXPECT_SAME_FLOAT(Div()(0.f, 0.f), kNaN);
  EXPECT_SAME_FLOAT(Div()(7.f, 2.f), 3.5f);
}

TEST(ElementwiseF32, Rem) {
  EXPECT_SAME_FLOAT(Rem()(5.5f, 2.f), 1.5f);
  EXPECT_SAME_FLOAT(Rem()(-5.5f, 2.f), -1.5f);
  EXPECT_SAME_FLOAT(Rem()(5.5f, -2.f), 1.5f);
  EXPECT_SAME_FLOAT(Rem()(-4.f, 2.f), -0.f);
  EXPECT_SAME_FLOAT(Rem()(1.f, 0.f), kNaN);
  EXPECT_SAME_FLOAT(Rem()(kInf, 1.f), kNaN);
  EXPECT_SAME_FLOAT(Rem()(1.f, kInf), 1.f);
  // Exact even for a huge quotient.
  EXPECT_SAME_FLOAT(Rem()(1e30f, 0.7f), std::fmod(1e30f, 0.7f));
}

TEST(ElementwiseF32, MaxMinPropagateNaNAndOrderZeros) {
  EXPECT_SAME_FLOAT(Max()(1.f, 2.f), 2.f);
  EXPECT_SAME_FLOAT(Max()(kNaN, 1.f), kNaN);
  EXPECT_SAME_FLOAT(Max()(1.f, kNaN), kNaN);
  EXPECT_SAME_FLOAT(Max()(-kInf, 3.f), 3.f);
  EXPECT_SAME_FLOAT(Max()(-0.f, 0.f), 0.f);
  EXPECT_SAME_FLOAT(Max()(0.f, -0.f), 0.f);
  EXPECT_SAME_FLOAT(Min()(1.f, 2.f), 1.f);
  EXPECT_SAME_FLOAT(Min()(kNaN, 1.f), kNaN);
  EXPECT_SAME_FLOAT(Min()(1.f, kNaN), kNaN);
  EXPECT_SAME_FLOAT(Min()(0.f, -0.f), -0.f);
  EXPECT_SAME_FLOAT(Min()(-0.f, 0.f), -0.f);
  EXPECT_SAME_FLOAT(Min()(kInf, -3.f), -3.f);
}

TEST(ElementwiseF32, Pow) {
  EXPECT_SAME_FLOAT(Pow()(2.f, 10.f), 1024.f);
  EXPECT_SAME_FLOAT(Pow()(0.f, 0.f), 1.f);
  EXPECT_SAME_FLOAT(Pow()(kNaN, 0.f), 1.f);
  EXPECT_SAME_FLOAT(Pow()(1.f, kNaN), 1.f);
  EXPECT_SAME_FLOAT(Pow()(-2.f, 3.f), -8.f);
  EXPECT_SAME_FLOAT(Pow()(-8.f, 1.f / 3.f), kNaN);
  EXPECT_SAME_FLOAT(Pow()(0.f, -1.f), kInf);
  EXPECT_SAME_FLOAT(Pow()(4.f, 0.5f), 2.f);
  EXPECT_SAME_FLOAT(Pow()(kInf, 0.f), 1.f);
}

TEST(ElementwiseF32, Atan2) {
  const float values[] = {0.f,    -0.f,  1.f,  -1.f,  0.5f, -3.f,
                          1e-30f, 1e30f, kInf, -kInf, kNaN};
  for (float x : values) {
    for (float y : values) {
      const float got = Atan2()(x, y);
      const float want = std::atan2(x, y);
      EXPECT_LE(UlpDistance(got, want), 2)
          << "atan2(" << x << ", " << y << ") = " << got << ", want " << want;
      if (want == 0.f) {
        EXPECT_EQ(std::signbit(got), std::signbit(want))
            << "atan2(" << x << ", " << y << ")";
      }
    }
  }
}

TEST(ElementwiseF32, Compare) {
  EXPECT_EQ(Eq()(1.f, 1.f), 1);
  EXPECT_EQ(Eq()(0.f, -0.f), 1);
  EXPECT_EQ(Eq()(kNaN, kNaN), 0);
  EXPECT_EQ(Ne()(kNaN, kNaN), 1);
  EXPECT_EQ(Ne()(kNaN, 1.f), 1);
  EXPECT_EQ(Ne()(1.f, 1.f), 0);
  for (float y : {kNaN, 1.f}) {
    EXPECT_EQ(Lt()(kNaN, y), 0);
    EXPECT_EQ(Le()(kNaN, y), 0);
    EXPECT_EQ(Gt()(kNaN, y), 0);
    EXPECT_EQ(Ge()(kNaN, y), 0);
    EXPECT_EQ(Lt()(y, kNaN), 0);
    EXPECT_EQ(Ge()(y, kNaN), 0);
  }
  EXPECT_EQ(Lt()(-kInf, 1.f), 1);
  EXPECT_EQ(Le()(1.f, 1.f), 1);
  EXPECT_EQ(Gt()(1.f, 1.f), 0);
  EXPECT_EQ(Ge()(-0.f, 0.f), 1);
}

// ---------------------------------------------------------- S32 / U32

TEST(ElementwiseS32, ArithmeticWraps) {
  EXPECT_EQ(Add()(kMaxS32, 1), kMinS32);
  EXPECT_EQ(Sub()(kMinS32, 1), kMaxS32);
  EXPECT_EQ(Mul()(kMaxS32, 2), -2);
  EXPECT_EQ(Mul()(65536, 65536), 0);
  EXPECT_EQ(Mul()(-3, 7), -21);
  EXPECT_EQ(Neg()(kMinS32), kMinS32);
  EXPECT_EQ(Neg()(5), -5);
  EXPECT_EQ(Abs()(kMinS32), kMinS32);
  EXPECT_EQ(Abs()(-5), 5);
  EXPECT_EQ(Abs()(5), 5);
}

TEST(ElementwiseS32, DivisionNeverTraps) {
  EXPECT_EQ(Div()(7, 2), 3);
  EXPECT_EQ(Div()(-7, 2), -3);
  EXPECT_EQ(Div()(7, -2), -3);
  EXPECT_EQ(Div()(-7, -2), 3);
  EXPECT_EQ(Div()(5, 0), -1);
  EXPECT_EQ(Div()(-5, 0), -1);
  EXPECT_EQ(Div()(0, 0), -1);
  EXPECT_EQ(Div()(kMinS32, -1), kMinS32);
  EXPECT_EQ(Div()(kMinS32, 1), kMinS32);
  EXPECT_EQ(Div()(kMaxS32, -1), -kMaxS32);
  EXPECT_EQ(Rem()(7, 2), 1);
  EXPECT_EQ(Rem()(-7, 2), -1);
  EXPECT_EQ(Rem()(7, -2), 1);
  EXPECT_EQ(Rem()(5, 0), 5);
  EXPECT_EQ(Rem()(-5, 0), -5);
  EXPECT_EQ(Rem()(kMinS32, -1), 0);
  EXPECT_EQ(Rem()(kMinS32, 0), kMinS32);
}

TEST(ElementwiseS32, MaxMinPow) {
  EXPECT_EQ(Max()(-1, 1), 1);
  EXPECT_EQ(Max()(kMinS32, kMaxS32), kMaxS32);
  EXPECT_EQ(Min()(-1, 1), -1);
  EXPECT_EQ(Pow()(2, 10), 1024);
  EXPECT_EQ(Pow()(3, 0), 1);
  EXPECT_EQ(Pow()(0, 0), 1);
  EXPECT_EQ(Pow()(-2, 3), -8);
  EXPECT_EQ(Pow()(-2, 4), 16);
  EXPECT_EQ(Pow()(2, 31), kMinS32);
  EXPECT_EQ(Pow()(2, 32), 0);
  EXPECT_EQ(Pow()(2, -1), 0);
  EXPECT_EQ(Pow()(1, -5), 1);
  EXPECT_EQ(Pow()(-1, -1), 0);  // XLA: only 1 survives a negative exponent
  EXPECT_EQ(Pow()(0, -1), 0);
  uint32_t expected = 1;
  for (int i = 0; i < 40; ++i) expected *= 3u;
  EXPECT_EQ(Pow()(3, 40), static_cast<int32_t>(expected));
}

TEST(ElementwiseS32, BitsAndShifts) {
  EXPECT_EQ(And()(0x0ff0, 0x00ff), 0x00f0);
  EXPECT_EQ(Or()(0x0ff0, 0x00ff), 0x0fff);
  EXPECT_EQ(Xor()(0x0ff0, 0x00ff), 0x0f0f);
  EXPECT_EQ(Not()(0), -1);
  EXPECT_EQ(Shl()(1, 31), kMinS32);
  EXPECT_EQ(Shl()(1, 32), 0);
  EXPECT_EQ(Shl()(1, 100), 0);
  EXPECT_EQ(Shl()(1, -1), 0);
  EXPECT_EQ(Shl()(-1, 4), -16);
  EXPECT_EQ(ShrA()(-16, 2), -4);
  EXPECT_EQ(ShrA()(-16, 32), -1);
  EXPECT_EQ(ShrA()(16, 32), 0);
  EXPECT_EQ(ShrA()(-16, -1), -1);
  EXPECT_EQ(ShrA()(kMinS32, 31), -1);
  EXPECT_EQ(ShrL()(-16, 28), 15);
  EXPECT_EQ(ShrL()(-1, 32), 0);
  EXPECT_EQ(ShrL()(-1, -1), 0);
  EXPECT_EQ(ShrL()(-1, 0), -1);
  EXPECT_EQ(Popcnt()(-1), 32);
  EXPECT_EQ(Popcnt()(0), 0);
  EXPECT_EQ(Popcnt()(0x0f0f), 8);
  EXPECT_EQ(Clz()(0), 32);
  EXPECT_EQ(Clz()(1), 31);
  EXPECT_EQ(Clz()(-1), 0);
  EXPECT_EQ(Sign()(-7), -1);
  EXPECT_EQ(Sign()(0), 0);
  EXPECT_EQ(Sign()(kMinS32), -1);
  EXPECT_EQ(Sign()(9), 1);
}

TEST(ElementwiseS32, Compare) {
  EXPECT_EQ(Lt()(-1, 1), 1);
  EXPECT_EQ(Gt()(kMaxS32, kMinS32), 1);
  EXPECT_EQ(Le()(3, 3), 1);
  EXPECT_EQ(Ge()(2, 3), 0);
  EXPECT_EQ(Eq()(kMinS32, kMinS32), 1);
  EXPECT_EQ(Ne()(1, 2), 1);
}

TEST(ElementwiseU32, Everything) {
  EXPECT_EQ(Add()(kMaxU32, 1u), 0u);
  EXPECT_EQ(Sub()(0u, 1u), kMaxU32);
  EXPECT_EQ(Mul()(0x10000u, 0x10000u), 0u);
  EXPECT_EQ(Div()(7u, 2u), 3u);
  EXPECT_EQ(Div()(7u, 0u), kMaxU32);
  EXPECT_EQ(Rem()(7u, 0u), 7u);
  EXPECT_EQ(Rem()(7u, 4u), 3u);
  EXPECT_EQ(Max()(kMaxU32, 1u), kMaxU32);
  EXPECT_EQ(Min()(kMaxU32, 1u), 1u);
  EXPECT_EQ(Pow()(2u, 32u), 0u);
  EXPECT_EQ(Pow()(3u, 4u), 81u);
  EXPECT_EQ(Shl()(1u, 32u), 0u);
  EXPECT_EQ(Shl()(1u, 31u), 0x80000000u);
  EXPECT_EQ(ShrL()(0x80000000u, 31u), 1u);
  EXPECT_EQ(ShrL()(0x80000000u, 32u), 0u);
  EXPECT_EQ(ShrA()(0x80000000u, 4u), 0xf8000000u);
  EXPECT_EQ(ShrA()(0x80000000u, 40u), kMaxU32);
  EXPECT_EQ(ShrA()(0x40000000u, 40u), 0u);
  EXPECT_EQ(And()(6u, 3u), 2u);
  EXPECT_EQ(Or()(6u, 3u), 7u);
  EXPECT_EQ(Xor()(6u, 3u), 5u);
  EXPECT_EQ(Neg()(1u), kMaxU32);
  EXPECT_EQ(Not()(0u), kMaxU32);
  EXPECT_EQ(Popcnt()(kMaxU32), 32u);
  EXPECT_EQ(Clz()(0u), 32u);
  EXPECT_EQ(Clz()(0x80000000u), 0u);
  EXPECT_EQ(Gt()(kMaxU32, 1u), 1);
  EXPECT_EQ(Lt()(kMaxU32, 1u), 0);
}

TEST(ElementwisePred, TruthTables) {
  const uint8_t f = 0, t = 1;
  EXPECT_EQ(And()(t, t), t);
  EXPECT_EQ(And()(t, f), f);
  EXPECT_EQ(Or()(f, f), f);
  EXPECT_EQ(Or()(t, f), t);
  EXPECT_EQ(Xor()(t, t), f);
  EXPECT_EQ(Xor()(t, f), t);
  EXPECT_EQ(Not()(t), f);
  EXPECT_EQ(Not()(f), t);
  EXPECT_EQ(Lt()(f, t), 1);
  EXPECT_EQ(Lt()(t, f), 0);
  EXPECT_EQ(Le()(t, t), 1);
  EXPECT_EQ(Gt()(t, f), 1);
  EXPECT_EQ(Ge()(f, t), 0);
  EXPECT_EQ(Eq()(t, t), 1);
  EXPECT_EQ(Ne()(t, f), 1);
}

// ----------------------------------------------------------- F32 unary

TEST(ElementwiseF32, ExactUnary) {
  EXPECT_SAME_FLOAT(Neg()(0.f), -0.f);
  EXPECT_SAME_FLOAT(Neg()(-kInf), kInf);
  EXPECT_SAME_FLOAT(Abs()(-0.f), 0.f);
  EXPECT_SAME_FLOAT(Abs()(-kInf), kInf);
  EXPECT_SAME_FLOAT(Sign()(-3.f), -1.f);
  EXPECT_SAME_FLOAT(Sign()(1e-40f), 1.f);
  EXPECT_SAME_FLOAT(Sign()(-0.f), -0.f);
  EXPECT_SAME_FLOAT(Sign()(0.f), 0.f);
  EXPECT_SAME_FLOAT(Sign()(kNaN), kNaN);
  EXPECT_SAME_FLOAT(Sign()(-kInf), -1.f);
  EXPECT_SAME_FLOAT(Sqrt()(4.f), 2.f);
  EXPECT_SAME_FLOAT(Sqrt()(-1.f), kNaN);
  EXPECT_SAME_FLOAT(Sqrt()(-0.f), -0.f);
  EXPECT_SAME_FLOAT(Rsqrt()(4.f), 0.5f);
  EXPECT_SAME_FLOAT(Rsqrt()(0.f), kInf);
  EXPECT_SAME_FLOAT(Rsqrt()(kInf), 0.f);
  EXPECT_SAME_FLOAT(Rsqrt()(3.f), 1.f / std::sqrt(3.f));  // not approximate
  EXPECT_SAME_FLOAT(Floor()(-0.5f), -1.f);
  EXPECT_SAME_FLOAT(Floor()(2.5f), 2.f);
  EXPECT_SAME_FLOAT(Ceil()(-0.5f), -0.f);
  EXPECT_SAME_FLOAT(Ceil()(2.1f), 3.f);
  EXPECT_SAME_FLOAT(RoundEven()(2.5f), 2.f);
  EXPECT_SAME_FLOAT(RoundEven()(3.5f), 4.f);
  EXPECT_SAME_FLOAT(RoundEven()(-2.5f), -2.f);
  EXPECT_SAME_FLOAT(RoundEven()(-0.5f), -0.f);
  EXPECT_SAME_FLOAT(RoundEven()(1.4f), 1.f);
  EXPECT_SAME_FLOAT(RoundAway()(2.5f), 3.f);
  EXPECT_SAME_FLOAT(RoundAway()(-2.5f), -3.f);
  EXPECT_SAME_FLOAT(RoundAway()(0.49999997f), 0.f);
  EXPECT_SAME_FLOAT(RoundAway()(kInf), kInf);
  EXPECT_EQ(IsFinite()(1.f), 1);
  EXPECT_EQ(IsFinite()(1e-40f), 1);
  EXPECT_EQ(IsFinite()(kInf), 0);
  EXPECT_EQ(IsFinite()(-kInf), 0);
  EXPECT_EQ(IsFinite()(kNaN), 0);
}

TEST(ElementwiseF32, TranscendentalSpecialValues) {
  EXPECT_SAME_FLOAT(Exp()(0.f), 1.f);
  EXPECT_SAME_FLOAT(Exp()(-kInf), 0.f);
  EXPECT_SAME_FLOAT(Exp()(kInf), kInf);
  EXPECT_SAME_FLOAT(Exp()(kNaN), kNaN);
  EXPECT_SAME_FLOAT(Exp()(100.f), kInf);
  EXPECT_SAME_FLOAT(Exp2()(10.f), 1024.f);
  EXPECT_SAME_FLOAT(Exp2()(-kInf), 0.f);
  EXPECT_SAME_FLOAT(Log()(1.f), 0.f);
  EXPECT_SAME_FLOAT(Log()(0.f), -kInf);
  EXPECT_SAME_FLOAT(Log()(-0.f), -kInf);
  EXPECT_SAME_FLOAT(Log()(-1.f), kNaN);
  EXPECT_SAME_FLOAT(Log()(kInf), kInf);
  EXPECT_SAME_FLOAT(Log1p()(-1.f), -kInf);
  EXPECT_SAME_FLOAT(Log1p()(-0.f), -0.f);
  EXPECT_SAME_FLOAT(Log1p()(0.f), 0.f);
  EXPECT_SAME_FLOAT(Log1p()(-2.f), kNaN);
  EXPECT_SAME_FLOAT(Expm1()(-0.f), -0.f);
  EXPECT_SAME_FLOAT(Expm1()(-kInf), -1.f);
  EXPECT_SAME_FLOAT(Expm1()(kInf), kInf);
  EXPECT_SAME_FLOAT(Tanh()(kInf), 1.f);
  EXPECT_SAME_FLOAT(Tanh()(-kInf), -1.f);
  EXPECT_SAME_FLOAT(Tanh()(-0.f), -0.f);
  EXPECT_SAME_FLOAT(Tanh()(kNaN), kNaN);
  EXPECT_SAME_FLOAT(Logistic()(0.f), 0.5f);
  EXPECT_SAME_FLOAT(Logistic()(-kInf), 0.f);
  EXPECT_SAME_FLOAT(Logistic()(kInf), 1.f);
  EXPECT_SAME_FLOAT(Logistic()(-200.f), 0.f);
  EXPECT_SAME_FLOAT(Logistic()(kNaN), kNaN);
  EXPECT_SAME_FLOAT(Cbrt()(-8.f), -2.f);
  EXPECT_SAME_FLOAT(Cbrt()(27.f), 3.f);
  EXPECT_SAME_FLOAT(Cbrt()(-0.f), -0.f);
  EXPECT_SAME_FLOAT(Cbrt()(-kInf), -kInf);
  EXPECT_SAME_FLOAT(Sin()(-0.f), -0.f);
  EXPECT_SAME_FLOAT(Sin()(kInf), kNaN);
  EXPECT_SAME_FLOAT(Cos()(0.f), 1.f);
  EXPECT_SAME_FLOAT(Cos()(kInf), kNaN);
  EXPECT_SAME_FLOAT(Tan()(-0.f), -0.f);
  EXPECT_SAME_FLOAT(Erf()(0.f), 0.f);
  EXPECT_SAME_FLOAT(Erf()(-0.f), -0.f);
  EXPECT_SAME_FLOAT(Erf()(kInf), 1.f);
  EXPECT_SAME_FLOAT(Erf()(-kInf), -1.f);
  EXPECT_SAME_FLOAT(Erf()(10.f), 1.f);
}

// Transcendentals against the C library in double precision, rounded.
struct UlpCase {
  const char* name;
  float (*vm)(float);
  double (*reference)(double);
  float lo, hi;
  int64_t max_ulp;
};

TEST(ElementwiseF32, TranscendentalsWithinFewUlp) {
  const UlpCase cases[] = {
      {"exp", [](float x) { return Exp()(x); },
       [](double x) { return std::exp(x); }, -87.f, 88.f, 2},
      {"exp subnormal", [](float x) { return Exp()(x); },
       [](double x) { return std::exp(x); }, -103.f, -87.f, 2},
      {"exp2", [](float x) { return Exp2()(x); },
       [](double x) { return std::exp2(x); }, -126.f, 127.f, 2},
      {"exp2 subnormal", [](float x) { return Exp2()(x); },
       [](double x) { return std::exp2(x); }, -149.f, -126.f, 2},
      {"log", [](float x) { return Log()(x); },
       [](double x) { return std::log(x); }, 1e-30f, 1e30f, 2},
      {"log1p", [](float x) { return Log1p()(x); },
       [](double x) { return std::log1p(x); }, -0.99f, 10.f, 2},
      {"log1p small", [](float x) { return Log1p()(x); },
       [](double x) { return std::log1p(x); }, -1e-4f, 1e-4f, 2},
      {"expm1", [](float x) { return Expm1()(x); },
       [](double x) { return std::expm1(x); }, -10.f, 10.f, 2},
      {"expm1 small", [](float x) { return Expm1()(x); },
       [](double x) { return std::expm1(x); }, -1e-3f, 1e-3f, 2},
      {"tanh", [](float x) { return Tanh()(x); },
       [](double x) { return std::tanh(x); }, -10.f, 10.f, 2},
      {"logistic", [](float x) { return Logistic()(x); },
       [](double x) { return 1.0 / (1.0 + std::exp(-x)); }, -20.f, 20.f, 4},
      {"cbrt", [](float x) { return Cbrt()(x); },
       [](double x) { return std::cbrt(x); }, -1e10f, 1e10f, 2},
      {"sin", [](float x) { return Sin()(x); },
       [](double x) { return std::sin(x); }, -100.f, 100.f, 3},
      {"cos", [](float x) { return Cos()(x); },
       [](double x) { return std::cos(x); }, -100.f, 100.f, 3},
      {"tan", [](float x) { return Tan()(x); },
       [](double x) { return std::tan(x); }, -1.5f, 1.5f, 3},
      {"erf", [](float x) { return Erf()(x); },
       [](double x) { return std::erf(x); }, -5.f, 5.f, 3},
      {"sqrt", [](float x) { return Sqrt()(x); },
       [](double x) { return std::sqrt(x); }, 0.f, 1e20f, 0},
  };
  std::mt19937 rng(42);
  for (const UlpCase& c : cases) {
    std::uniform_real_distribution<float> dist(c.lo, c.hi);
    int64_t worst = 0;
    float worst_x = 0;
    for (int i = 0; i < 20000; ++i) {
      const float x = dist(rng);
      const int64_t ulp = UlpDistance(c.vm(x), float(c.reference(x)));
      if (ulp > worst) {
        worst = ulp;
        worst_x = x;
      }
    }
    EXPECT_LE(worst, c.max_ulp) << c.name << " at x = " << worst_x;
  }
}

// ------------------------------------------- loops vs scalar, every opcode

template <class T>
std::vector<T> EdgeValues(std::mt19937& rng, int n) {
  std::vector<T> v(n);
  if constexpr (std::is_same_v<T, float>) {
    const float special[] = {0.f,    -0.f,  1.f,  -1.f,  0.5f, 2.5f, -2.5f,
                             1e-40f, 3e38f, kInf, -kInf, kNaN, 100.f};
    std::uniform_real_distribution<float> d(-10.f, 10.f);
    for (int i = 0; i < n; ++i) {
      v[i] = (i % 3 == 0) ? special[(i / 3) % std::size(special)] : d(rng);
    }
  } else if constexpr (std::is_same_v<T, uint8_t>) {
    for (int i = 0; i < n; ++i) v[i] = rng() & 1;
  } else {
    const T special[] = {0,
                         1,
                         T(-1),
                         std::numeric_limits<T>::min(),
                         std::numeric_limits<T>::max(),
                         31,
                         32,
                         33,
                         2,
                         3};
    for (int i = 0; i < n; ++i) {
      v[i] = (i % 2 == 0) ? special[(i / 2) % std::size(special)]
                          : static_cast<T>(rng() % 64 - 16);
    }
  }
  return v;
}

template <class Out>
bool SameValue(Out a, Out b) {
  if constexpr (std::is_same_v<Out, float>) {
    return SameFloat(a, b);
  } else {
    return a == b;
  }
}

template <class F, class In, class Out>
void CheckBinaryLoops(const char* name) {
  std::mt19937 rng(7);
  for (int n : {1, 5, 16, 17, 37, 64}) {
    const std::vector<In> x = EdgeValues<In>(rng, n);
    const std::vector<In> y = EdgeValues<In>(rng, n);
    std::vector<Out> vv(n), vs(n), sv(n);
    BinaryVV<F>(vv.data(), x.data(), y.data(), n);
    BinaryVS<F>(vs.data(), x.data(), y[0], n);
    BinarySV<F>(sv.data(), x[0], y.data(), n);
    for (int i = 0; i < n; ++i) {
      ASSERT_TRUE(SameValue<Out>(vv[i], F()(x[i], y[i])))
          << name << " VV n=" << n << " i=" << i;
      ASSERT_TRUE(SameValue<Out>(vs[i], F()(x[i], y[0])))
          << name << " VS n=" << n << " i=" << i;
      ASSERT_TRUE(SameValue<Out>(sv[i], F()(x[0], y[i])))
          << name << " SV n=" << n << " i=" << i;
    }
    if constexpr (std::is_same_v<In, Out>) {
      std::vector<In> in_place = x;  // dst == lhs
      BinaryVV<F>(in_place.data(), in_place.data(), y.data(), n);
      for (int i = 0; i < n; ++i) {
        ASSERT_TRUE(SameValue<Out>(in_place[i], vv[i])) << name << " in place";
      }
    }
  }
}

template <class F, class In, class Out>
void CheckUnaryLoop(const char* name) {
  std::mt19937 rng(9);
  for (int n : {1, 5, 16, 17, 37, 64}) {
    const std::vector<In> x = EdgeValues<In>(rng, n);
    std::vector<Out> out(n);
    UnaryV<F>(out.data(), x.data(), n);
    for (int i = 0; i < n; ++i) {
      ASSERT_TRUE(SameValue<Out>(out[i], F()(x[i])))
          << name << " n=" << n << " i=" << i << " x=" << +x[i];
    }
  }
}

TEST(ElementwiseLoops, EveryBinaryOpcodeMatchesItsScalarForm) {
#define CHECK_BINARY(NAME, IN, OUT, F, S) \
  CheckBinaryLoops<F, Storage<DType::IN>, Storage<DType::OUT>>(#NAME "_" #IN);
  PALLASVM_BINARY_OPS(CHECK_BINARY)
#undef CHECK_BINARY
}

TEST(ElementwiseLoops, EveryUnaryOpcodeMatchesItsScalarForm) {
#define CHECK_UNARY(NAME, IN, OUT, F, S) \
  CheckUnaryLoop<F, Storage<DType::IN>, Storage<DType::OUT>>(#NAME "_" #IN);
  PALLASVM_UNARY_OPS(CHECK_UNARY)
#undef CHECK_UNARY
}

TEST(ElementwiseLoops, SelectPicksPerElement) {
  const uint8_t pred[5] = {1, 0, 0, 1, 1};
  const uint32_t on_false[5] = {10, 11, 12, 13, 14};
  const uint32_t on_true[5] = {20, 21, 22, 23, 24};
  uint32_t out[5];
  SelectV(out, pred, on_false, on_true, 5);
  EXPECT_EQ(out[0], 20u);
  EXPECT_EQ(out[1], 11u);
  EXPECT_EQ(out[2], 12u);
  EXPECT_EQ(out[3], 23u);
  EXPECT_EQ(out[4], 24u);
}

// FMA_F32's loop, on cases derived by hand where one rounding differs from
// a rounded product then a rounded sum.
TEST(ElementwiseLoops, FusedMultiplyAddRoundsOnce) {
  const float e12 = std::ldexp(1.f, -12), e23 = std::ldexp(1.f, -23);
  struct Case {
    float x, y, z, fused, separate;
  } cases[] = {
      // (1 + 2^-12)^2 - 1 = 2^-11 + 2^-24; the rounded square drops the
      // 2^-24 (a tie, to even).
      {1.f + e12, 1.f + e12, -1.f, std::ldexp(1.f, -11) + std::ldexp(1.f, -24),
       std::ldexp(1.f, -11)},
      // (1 + 2^-23)(1 - 2^-23) - 1 = -2^-46; the rounded product is 1.
      {1.f + e23, 1.f - e23, -1.f, -std::ldexp(1.f, -46), 0.f},
      // (1 + 2^-12)(1 - 2^-12) = 1 - 2^-24 is exact in f32: both agree.
      {1.f + e12, 1.f - e12, -1.f, -std::ldexp(1.f, -24),
       -std::ldexp(1.f, -24)},
      // Plain values, and inf and NaN through.
      {3.f, 4.f, 5.f, 17.f, 17.f},
      {kInf, 2.f, 1.f, kInf, kInf},
      {0.f, kInf, 1.f, kNaN, kNaN},
      {1.f, 1.f, kNaN, kNaN, kNaN},
  };
  for (const Case& c : cases) {
    // volatile: GCC contracts x * y + z here itself (fp-contract=fast).
    volatile float product = Mul()(c.x, c.y);
    EXPECT_SAME_FLOAT(Add()(product, c.z), c.separate);
    float out;
    FusedMultiplyAddV(&out, &c.x, &c.y, &c.z, 1);
    EXPECT_SAME_FLOAT(out, c.fused);
  }
  // The product's rounding error, recovered exactly: x * y - round(x * y).
  const float x = 0.1f, y = 10.f;
  volatile float rounded = x * y;
  const float p = rounded, minus_p = -p;
  float error;
  FusedMultiplyAddV(&error, &x, &y, &minus_p, 1);
  EXPECT_SAME_FLOAT(error, static_cast<float>(double{x} * y - p));
  EXPECT_NE(error, 0.f);
}

// Whole batches and the tail alike, in place too.
TEST(ElementwiseLoops, FusedMultiplyAddBlocksMatchStdFma) {
  std::mt19937 rng(7);
  std::uniform_real_distribution<float> dist(-4.f, 4.f);
  for (int n : {1, 7, 8, 15, 16, 17, 33, 40}) {
    std::vector<float> x(n), y(n), z(n), out(n);
    for (int i = 0; i < n; ++i) x[i] = dist(rng), y[i] = dist(rng), z[i] = dist(rng);
    FusedMultiplyAddV(out.data(), x.data(), y.data(), z.data(), n);
    for (int i = 0; i < n; ++i) {
      EXPECT_SAME_FLOAT(out[i], std::fma(x[i], y[i], z[i])) << n << " " << i;
    }
    std::vector<float> in_place = z;
    FusedMultiplyAddV(in_place.data(), x.data(), y.data(), in_place.data(), n);
    for (int i = 0; i < n; ++i) EXPECT_SAME_FLOAT(in_place[i], out[i]);
  }
}

// ------------------------------------------------- subnormals (DAZ/FTZ)
// The VM runs with denormals-are-zero and flush-to-zero (FlushDenormals),
// as XLA:CPU does; these are the functors whose result is not plain
// arithmetic on flushed inputs. Expected values are XLA:CPU's, by hand: a
// subnormal reads as the zero of its sign, except where XLA returns it.
namespace subnormal_cases {

constexpr uint32_t kSub = 0x00000001u;  // smallest positive subnormal
constexpr uint32_t kNegSub = 0x80000001u;
constexpr uint32_t kBigSub = 0x007fffffu;  // largest subnormal
constexpr uint32_t kPosZero = 0x00000000u;
constexpr uint32_t kNegZero = 0x80000000u;

float F(uint32_t bits) { return std::bit_cast<float>(bits); }
uint32_t B(float f) { return std::bit_cast<uint32_t>(f); }

// f on (x, y), scalar and through BinaryVV at a size with a batch tail.
template <class Fn>
void ExpectBinary(uint32_t x, uint32_t y, uint32_t want) {
  FlushDenormals flush;
  EXPECT_EQ(B(Fn{}(F(x), F(y))), want) << std::hex << x << ", " << y;
  std::vector<float> xs(19, F(x)), ys(19, F(y)), out(19);
  BinaryVV<Fn, float, float>(out.data(), xs.data(), ys.data(), 19);
  for (float r : out) EXPECT_EQ(B(r), want) << std::hex << x << ", " << y;
}

template <class Fn>
void ExpectUnary(uint32_t x, uint32_t want) {
  FlushDenormals flush;
  EXPECT_EQ(B(Fn{}(F(x))), want) << std::hex << x;
  std::vector<float> xs(19, F(x)), out(19);
  UnaryV<Fn, float, float>(out.data(), xs.data(), 19);
  for (float r : out) EXPECT_EQ(B(r), want) << std::hex << x;
}

TEST(ElementwiseSubnormalTest, MaxAndMinReadSubnormalsAsZero) {
  ExpectBinary<Max>(kSub, kSub, kPosZero);
  ExpectBinary<Max>(kNegSub, kNegSub, kNegZero);
  ExpectBinary<Max>(kSub, B(-1.f), kPosZero);
  ExpectBinary<Max>(kNegSub, kPosZero, kPosZero);
  ExpectBinary<Max>(kPosZero, kNegZero, kPosZero);
  ExpectBinary<Max>(kNegZero, kPosZero, kPosZero);
  ExpectBinary<Max>(kBigSub, B(2.f), B(2.f));
  ExpectBinary<Min>(kPosZero, kSub, kPosZero);
  ExpectBinary<Min>(kNegZero, kSub, kNegZero);
  ExpectBinary<Min>(kNegSub, B(1.f), kNegZero);
  ExpectBinary<Min>(kPosZero, kNegZero, kNegZero);
  ExpectBinary<Min>(kNegZero, kPosZero, kNegZero);
  ExpectBinary<Min>(kBigSub, B(-2.f), B(-2.f));
  FlushDenormals flush;
  EXPECT_TRUE(std::isnan(Max{}(kNaN, 1.f)));
  EXPECT_TRUE(std::isnan(Max{}(1.f, kNaN)));
  EXPECT_TRUE(std::isnan(Min{}(kNaN, F(kSub))));
}

TEST(ElementwiseSubnormalTest, SignAndLog1pAndCbrtGiveTheSignedZero) {
  for (uint32_t x : {kSub, kBigSub}) {
    ExpectUnary<Sign>(x, kPosZero);
    ExpectUnary<Log1p>(x, kPosZero);
    ExpectUnary<Cbrt>(x, kPosZero);
  }
  for (uint32_t x : {kNegSub, kNegSub | kBigSub}) {
    ExpectUnary<Sign>(x, kNegZero);
    ExpectUnary<Log1p>(x, kNegZero);
    ExpectUnary<Cbrt>(x, kNegZero);
  }
  ExpectUnary<Sign>(kNegZero, kNegZero);
  ExpectUnary<Sign>(B(3.f), B(1.f));
  ExpectUnary<Sign>(B(-kInf), B(-1.f));
  ExpectUnary<Log1p>(kNegZero, kNegZero);
  ExpectUnary<Cbrt>(B(8.f), B(2.f));
}

TEST(ElementwiseSubnormalTest, TanhSinTanKeepSubnormals) {
  for (uint32_t x : {kSub, kNegSub, kBigSub, kPosZero, kNegZero}) {
    ExpectUnary<Tanh>(x, x);
    ExpectUnary<Sin>(x, x);
    ExpectUnary<Tan>(x, x);
  }
}

// As XLA:CPU's vfmadd: subnormal operands read as zero, a subnormal result
// becomes zero.
TEST(ElementwiseSubnormalTest, FusedMultiplyAddFlushes) {
  FlushDenormals flush;
  auto fma = [](float x, float y, float z) {
    std::vector<float> xs(19, x), ys(19, y), zs(19, z), out(19);
    FusedMultiplyAddV(out.data(), xs.data(), ys.data(), zs.data(), 19);
    for (float r : out) EXPECT_EQ(B(r), B(out[0]));
    return out[0];
  };
  EXPECT_EQ(B(fma(F(kSub), 1.f, F(kNegZero))), kPosZero);
  EXPECT_EQ(B(fma(1.f, 1.f, F(kBigSub))), B(1.f));
  EXPECT_EQ(B(fma(std::ldexp(1.f, -64), std::ldexp(1.f, -64), 0.f)), kPosZero);
  EXPECT_EQ(B(fma(-1.f, 1.f, F(kSub))), B(-1.f));
}

}  // namespace subnormal_cases

}  // namespace
}  // namespace pallasvm::vm::kernels
