// Conversions (vm/kernels/convert.h): bf16 and f16 rounding (nearest even,
// ties, NaN, inf, subnormals), float -> int saturation with NaN -> 0,
// integer wrapping, PRED both ways, and the block loop for every dtype pair.
#include "vm/kernels/convert.h"

#include <gtest/gtest.h>

#include <bit>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <random>
#include <vector>

namespace pallasvm::vm {
namespace {

using kernels::Convert;

constexpr float kInf = std::numeric_limits<float>::infinity();
constexpr float kNaN = std::numeric_limits<float>::quiet_NaN();

float FromBits(uint32_t bits) { return std::bit_cast<float>(bits); }

bool IsBf16NaN(uint16_t h) { return (h & 0x7f80) == 0x7f80 && (h & 0x7f); }
bool IsF16NaN(uint16_t h) { return (h & 0x7c00) == 0x7c00 && (h & 0x3ff); }

TEST(ConvertBf16, RoundsToNearestEven) {
  EXPECT_EQ(F32ToBf16(1.0f), 0x3f80);
  EXPECT_EQ(F32ToBf16(-2.0f), 0xc000);
  EXPECT_EQ(F32ToBf16(FromBits(0x3f807fff)), 0x3f80);  // below half: down
  EXPECT_EQ(F32ToBf16(FromBits(0x3f808001)), 0x3f81);  // above half: up
  EXPECT_EQ(F32ToBf16(FromBits(0x3f808000)), 0x3f80);  // tie, even stays
  EXPECT_EQ(F32ToBf16(FromBits(0x3f818000)), 0x3f82);  // tie, odd goes up
  EXPECT_EQ(F32ToBf16(FromBits(0xbf818000)), 0xbf82);  // same, negative
  EXPECT_EQ(F32ToBf16(FromBits(0x3fff8000)), 0x4000);  // carry into exponent
  EXPECT_EQ(F32ToBf16(0.f), 0x0000);
  EXPECT_EQ(F32ToBf16(-0.f), 0x8000);
  EXPECT_EQ(F32ToBf16(FromBits(0x00018000)), 0x0002);  // subnormal tie, odd
  EXPECT_EQ(F32ToBf16(FromBits(0x00008000)), 0x0000);  // subnormal tie, even
}

TEST(ConvertBf16, InfinityAndOverflow) {
  EXPECT_EQ(F32ToBf16(kInf), 0x7f80);
  EXPECT_EQ(F32ToBf16(-kInf), 0xff80);
  EXPECT_EQ(F32ToBf16(std::numeric_limits<float>::max()), 0x7f80);
  EXPECT_EQ(F32ToBf16(FromBits(0x7f7f7fff)), 0x7f7f);  // largest that stays
}

TEST(ConvertBf16, NaNStaysQuietNaN) {
  const uint32_t nans[] = {0x7fc00000, 0xffc00000, 0x7f800001,
                           0x7fffffff, 0xff800001, 0x7f80ffff};
  for (uint32_t bits : nans) {
    const uint16_t h = F32ToBf16(FromBits(bits));
    EXPECT_TRUE(IsBf16NaN(h)) << std::hex << bits << " -> " << h;
    EXPECT_TRUE(h & 0x40) << "quiet bit, from " << std::hex << bits;
    EXPECT_EQ(h & 0x8000, (bits >> 16) & 0x8000) << "sign kept";
  }
  EXPECT_TRUE(std::isnan(Bf16ToF32(0x7fc0)));
}

TEST(ConvertBf16, EveryValueRoundTrips) {
  for (uint32_t i = 0; i < 0x10000; ++i) {
    const uint16_t h = static_cast<uint16_t>(i);
    const float f = Bf16ToF32(h);
    EXPECT_EQ(std::bit_cast<uint32_t>(f), i << 16);
    if (IsBf16NaN(h)) {
      EXPECT_TRUE(IsBf16NaN(F32ToBf16(f)));
    } else {
      ASSERT_EQ(F32ToBf16(f), h) << std::hex << i;
    }
  }
}

// IEEE half by its definition, for checking the bit manipulation.
double F16Value(uint16_t h) {
  const int sign = (h >> 15) ? -1 : 1;
  const int exp = (h >> 10) & 0x1f;
  const int mant = h & 0x3ff;
  if (exp == 0) return sign * std::ldexp(mant, -24);
  if (exp == 31) return mant ? std::nan("") : sign * INFINITY;
  return sign * std::ldexp(1024 + mant, exp - 25);
}

TEST(ConvertF16, EveryValueWidensExactly) {
  for (uint32_t i = 0; i < 0x10000; ++i) {
    const uint16_t h = static_cast<uint16_t>(i);
    const float f = F16ToF32(h);
    const double want = F16Value(h);
    if (std::isnan(want)) {
      ASSERT_TRUE(std::isnan(f)) << std::hex << i;
      EXPECT_TRUE(std::bit_cast<uint32_t>(f) & 0x00400000) << "quiet";
      ASSERT_TRUE(IsF16NaN(F32ToF16(f))) << std::hex << i;
    } else {
      ASSERT_EQ(double(f), want) << std::hex << i;
      ASSERT_EQ(std::signbit(f), bool(h & 0x8000)) << std::hex << i;
      ASSERT_EQ(F32ToF16(f), h) << std::hex << i;
    }
  }
}

TEST(ConvertF16, RoundsToNearestEven) {
  EXPECT_EQ(F32ToF16(1.0f), 0x3c00);
  EXPECT_EQ(F32ToF16(-2.0f), 0xc000);
  EXPECT_EQ(F32ToF16(65504.f), 0x7bff);
  EXPECT_EQ(F32ToF16(65519.99f), 0x7bff);
  EXPECT_EQ(F32ToF16(65520.f), 0x7c00);  // tie with odd 0x7bff: up to inf
  EXPECT_EQ(F32ToF16(1e10f), 0x7c00);
  EXPECT_EQ(F32ToF16(-kInf), 0xfc00);
  EXPECT_EQ(F32ToF16(std::ldexp(1.f, -14)), 0x0400);  // smallest normal
  EXPECT_EQ(F32ToF16(std::ldexp(1.f, -24)), 0x0001);  // smallest subnormal
  EXPECT_EQ(F32ToF16(std::ldexp(1.f, -25)), 0x0000);  // tie: to even zero
  EXPECT_EQ(F32ToF16(std::ldexp(1.5f, -25)), 0x0001);
  EXPECT_EQ(F32ToF16(std::ldexp(3.f, -25)), 0x0002);  // tie 1.5 ulp: to 2
  EXPECT_EQ(F32ToF16(-std::ldexp(1.f, -26)), 0x8000);
  EXPECT_EQ(F32ToF16(1.f + std::ldexp(1.f, -11)), 0x3c00);  // tie, even
  EXPECT_EQ(F32ToF16(1.f + std::ldexp(3.f, -11)), 0x3c02);  // tie, odd up
  EXPECT_TRUE(IsF16NaN(F32ToF16(kNaN)));
  EXPECT_TRUE(IsF16NaN(F32ToF16(FromBits(0x7f800001))));
}

#ifdef __FLT16_MAX__
// The compiler's own conversion (F16C's vcvtps2ph on x86) as a reference.
TEST(ConvertF16, MatchesCompilerOnRandomFloats) {
  std::mt19937 rng(3);
  for (int i = 0; i < 1000000; ++i) {
    // Exponents around the half range, so subnormals and overflow are hit.
    const uint32_t bits = (rng() & 0x807fffffu) | ((100u + rng() % 50u) << 23);
    const float f = FromBits(bits);
    const _Float16 h = static_cast<_Float16>(f);
    ASSERT_EQ(F32ToF16(f), std::bit_cast<uint16_t>(h)) << std::hex << bits;
  }
}
#endif

TEST(ConvertFloatToInt, SaturatesAndZeroesNaN) {
  using F32 = Storage<DType::F32>;
  auto s32 = [](F32 f) { return Convert<DType::F32, DType::S32>(f); };
  EXPECT_EQ(s32(2.7f), 2);
  EXPECT_EQ(s32(-2.7f), -2);
  EXPECT_EQ(s32(-0.f), 0);
  EXPECT_EQ(s32(3e9f), INT32_MAX);
  EXPECT_EQ(s32(-3e9f), INT32_MIN);
  EXPECT_EQ(s32(2147483648.f), INT32_MAX);
  EXPECT_EQ(s32(2147483520.f), 2147483520);  // largest float below 2^31
  EXPECT_EQ(s32(-2147483648.f), INT32_MIN);
  EXPECT_EQ(s32(kInf), INT32_MAX);
  EXPECT_EQ(s32(-kInf), INT32_MIN);
  EXPECT_EQ(s32(kNaN), 0);
  EXPECT_EQ(s32(-kNaN), 0);
  auto u32 = [](F32 f) { return Convert<DType::F32, DType::U32>(f); };
  EXPECT_EQ(u32(-1.f), 0u);
  EXPECT_EQ(u32(-0.5f), 0u);
  EXPECT_EQ(u32(5e9f), UINT32_MAX);
  EXPECT_EQ(u32(4294967040.f), 4294967040u);
  EXPECT_EQ(u32(kNaN), 0u);
  EXPECT_EQ((Convert<DType::F32, DType::S8>(200.f)), 127);
  EXPECT_EQ((Convert<DType::F32, DType::S8>(-200.f)), -128);
  EXPECT_EQ((Convert<DType::F32, DType::S8>(127.9f)), 127);
  EXPECT_EQ((Convert<DType::F32, DType::S8>(-128.9f)), -128);
  EXPECT_EQ((Convert<DType::F32, DType::U8>(300.f)), 255);
  EXPECT_EQ((Convert<DType::F32, DType::U8>(-5.f)), 0);
  EXPECT_EQ((Convert<DType::F32, DType::S16>(40000.f)), 32767);
  EXPECT_EQ((Convert<DType::F32, DType::U16>(70000.f)), 65535);
  EXPECT_EQ((Convert<DType::BF16, DType::S32>(F32ToBf16(-3.5f))), -3);
  EXPECT_EQ((Convert<DType::BF16, DType::S32>(0x7fc0)), 0);  // NaN
  EXPECT_EQ((Convert<DType::F16, DType::U8>(F32ToF16(300.f))), 255);
  EXPECT_EQ((Convert<DType::F16, DType::S32>(0xfc00)), INT32_MIN);  // -inf
}

TEST(ConvertIntToInt, Wraps) {
  EXPECT_EQ((Convert<DType::S32, DType::S8>(300)), 44);
  EXPECT_EQ((Convert<DType::S32, DType::S8>(-129)), 127);
  EXPECT_EQ((Convert<DType::S32, DType::U32>(-1)), UINT32_MAX);
  EXPECT_EQ((Convert<DType::U32, DType::S32>(UINT32_MAX)), -1);
  EXPECT_EQ((Convert<DType::S8, DType::U16>(-1)), 65535);  // sign-extends
  EXPECT_EQ((Convert<DType::U8, DType::S8>(255)), -1);
  EXPECT_EQ((Convert<DType::S16, DType::S32>(-32768)), -32768);
  EXPECT_EQ((Convert<DType::U16, DType::S32>(65535)), 65535);
  EXPECT_EQ((Convert<DType::U32, DType::U8>(0x12345678u)), 0x78);
}

TEST(ConvertIntToFloat, RoundsToNearestEven) {
  EXPECT_EQ((Convert<DType::S32, DType::F32>(16777217)), 16777216.f);
  EXPECT_EQ((Convert<DType::S32, DType::F32>(16777219)), 16777220.f);
  EXPECT_EQ((Convert<DType::U32, DType::F32>(UINT32_MAX)), 4294967296.f);
  EXPECT_EQ((Convert<DType::S32, DType::F32>(INT32_MIN)), -2147483648.f);
  EXPECT_EQ((Convert<DType::S32, DType::BF16>(1)), 0x3f80);
  EXPECT_EQ((Convert<DType::S32, DType::BF16>(257)), 0x4380);  // 257 -> 256
  EXPECT_EQ((Convert<DType::S32, DType::BF16>(259)), 0x4382);  // 259 -> 260
  EXPECT_EQ((Convert<DType::S32, DType::F16>(2049)), 0x6800);  // 2049 -> 2048
  EXPECT_EQ((Convert<DType::S32, DType::F16>(70000)), 0x7c00);
  EXPECT_EQ((Convert<DType::S8, DType::F32>(-128)), -128.f);
}

TEST(ConvertFloatToFloat, OneRounding) {
  // BF16 -> F16 and back go through f32, which holds both exactly.
  const uint16_t third = F32ToBf16(1.f / 3.f);
  EXPECT_EQ((Convert<DType::BF16, DType::F16>(third)),
            F32ToF16(Bf16ToF32(third)));
  EXPECT_EQ((Convert<DType::F16, DType::BF16>(F32ToF16(1.f / 3.f))),
            F32ToBf16(F16ToF32(F32ToF16(1.f / 3.f))));
  EXPECT_EQ((Convert<DType::F16, DType::F32>(0x7c00)), kInf);
  EXPECT_EQ((Convert<DType::BF16, DType::F16>(0x7f80)), 0x7c00);
  EXPECT_EQ((Convert<DType::BF16, DType::F16>(0x4780)), 0x7c00);  // 65536
  EXPECT_TRUE(IsF16NaN(Convert<DType::BF16, DType::F16>(0x7fc1)));
  EXPECT_EQ((Convert<DType::F32, DType::F32>(-0.f)), -0.f);
}

TEST(ConvertPred, NonzeroIsTrueAndTrueIsOne) {
  EXPECT_EQ((Convert<DType::F32, DType::PRED>(kNaN)), 1);
  EXPECT_EQ((Convert<DType::F32, DType::PRED>(-0.f)), 0);
  EXPECT_EQ((Convert<DType::F32, DType::PRED>(0.5f)), 1);
  EXPECT_EQ((Convert<DType::F32, DType::PRED>(1e-40f)), 1);
  EXPECT_EQ((Convert<DType::BF16, DType::PRED>(0x8000)), 0);
  EXPECT_EQ((Convert<DType::BF16, DType::PRED>(0x0001)), 1);
  EXPECT_EQ((Convert<DType::F16, DType::PRED>(0x7e00)), 1);
  EXPECT_EQ((Convert<DType::S32, DType::PRED>(-5)), 1);
  EXPECT_EQ((Convert<DType::S32, DType::PRED>(0)), 0);
  EXPECT_EQ((Convert<DType::U8, DType::PRED>(0x80)), 1);
  EXPECT_EQ((Convert<DType::PRED, DType::F32>(1)), 1.f);
  EXPECT_EQ((Convert<DType::PRED, DType::F32>(0)), 0.f);
  EXPECT_EQ((Convert<DType::PRED, DType::BF16>(1)), 0x3f80);
  EXPECT_EQ((Convert<DType::PRED, DType::F16>(1)), 0x3c00);
  EXPECT_EQ((Convert<DType::PRED, DType::S32>(1)), 1);
  EXPECT_EQ((Convert<DType::PRED, DType::U8>(1)), 1);
  EXPECT_EQ((Convert<DType::PRED, DType::PRED>(1)), 1);
}

// The block loop agrees with the scalar conversion for every pair, on
// random bit patterns (PRED sources only 0/1).
template <DType From, DType To>
void CheckConvertLoop() {
  using In = Storage<From>;
  using Out = Storage<To>;
  std::mt19937 rng(11);
  const int n = 53;
  std::vector<In> src(n);
  for (In& v : src) {
    const uint32_t bits = rng();
    if constexpr (From == DType::PRED) {
      v = bits & 1;
    } else {
      std::memcpy(&v, &bits, sizeof(In));
    }
  }
  std::vector<Out> dst(n);
  kernels::ConvertV<From, To>(dst.data(), src.data(), n);
  for (int i = 0; i < n; ++i) {
    const Out want = Convert<From, To>(src[i]);
    ASSERT_EQ(std::memcmp(&dst[i], &want, sizeof(Out)), 0)
        << "CVT " << Name(From) << " -> " << Name(To) << " at " << i;
  }
}

TEST(ConvertLoop, EveryPairMatchesScalar) {
#define CHECK_PAIR(FROM, TO) CheckConvertLoop<DType::FROM, DType::TO>();
#define CHECK_FROM(FROM) PALLASVM_DTYPE_NAMES_INNER(CHECK_PAIR, FROM)
  PALLASVM_DTYPE_NAMES_OUTER(CHECK_FROM)
#undef CHECK_FROM
#undef CHECK_PAIR
}

}  // namespace
}  // namespace pallasvm::vm
