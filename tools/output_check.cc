#include "tools/output_check.h"

#include <cmath>
#include <cstring>

#include "absl/strings/str_format.h"

namespace pallasvm::tools {
namespace {

float HalfBitsToFloat(uint16_t h) {
  const uint32_t sign = (h & 0x8000u) << 16;
  const int exp = (h >> 10) & 0x1f;
  const uint32_t mant = h & 0x3ffu;
  if (exp == 0) {
    float v = std::ldexp(static_cast<float>(mant), -24);
    return sign ? -v : v;
  }
  uint32_t bits;
  if (exp == 31) {
    bits = sign | 0x7f800000u | (mant << 13);
  } else {
    bits = sign | (static_cast<uint32_t>(exp - 15 + 127) << 23) | (mant << 13);
  }
  float f;
  std::memcpy(&f, &bits, 4);
  return f;
}

}  // namespace

Tolerance DefaultTolerance(vm::DType dtype) {
  switch (dtype) {
    case vm::DType::F32:
      return {1e-5, 1e-5};
    case vm::DType::BF16:
      return {1e-2, 1e-2};
    case vm::DType::F16:
      return {1e-3, 1e-3};
    default:
      return {0, 0};
  }
}

double ElementAsDouble(vm::DType dtype, const void* data, int64_t i) {
  const uint8_t* p = static_cast<const uint8_t*>(data);
  switch (dtype) {
    case vm::DType::PRED:
      return p[i] != 0;
    case vm::DType::S8:
      return static_cast<int8_t>(p[i]);
    case vm::DType::U8:
      return p[i];
    case vm::DType::S16: {
      int16_t v;
      std::memcpy(&v, p + 2 * i, 2);
      return v;
    }
    case vm::DType::U16: {
      uint16_t v;
      std::memcpy(&v, p + 2 * i, 2);
      return v;
    }
    case vm::DType::S32: {
      int32_t v;
      std::memcpy(&v, p + 4 * i, 4);
      return v;
    }
    case vm::DType::U32: {
      uint32_t v;
      std::memcpy(&v, p + 4 * i, 4);
      return v;
    }
    case vm::DType::F32: {
      float v;
      std::memcpy(&v, p + 4 * i, 4);
      return v;
    }
    case vm::DType::BF16: {
      uint16_t h;
      std::memcpy(&h, p + 2 * i, 2);
      uint32_t bits = static_cast<uint32_t>(h) << 16;
      float f;
      std::memcpy(&f, &bits, 4);
      return f;
    }
    case vm::DType::F16: {
      uint16_t h;
      std::memcpy(&h, p + 2 * i, 2);
      return HalfBitsToFloat(h);
    }
  }
  return 0;
}

CheckResult CompareArrays(vm::DType dtype, const void* actual,
                          const void* expected, int64_t count, Tolerance tol) {
  CheckResult r;
  r.count = count;
  double worst_excess = -1;
  for (int64_t i = 0; i < count; ++i) {
    const double a = ElementAsDouble(dtype, actual, i);
    const double e = ElementAsDouble(dtype, expected, i);
    bool match;
    double diff = 0;
    if (std::isnan(a) || std::isnan(e)) {
      match = std::isnan(a) && std::isnan(e);
      diff = match ? 0 : INFINITY;
    } else if (std::isinf(a) || std::isinf(e)) {
      match = a == e;
      diff = match ? 0 : INFINITY;
    } else {
      diff = std::fabs(a - e);
      match = diff <= tol.atol + tol.rtol * std::fabs(e);
    }
    if (diff > r.max_abs_diff) r.max_abs_diff = diff;
    if (e != 0 && std::isfinite(diff)) {
      r.max_rel_diff = std::max(r.max_rel_diff, diff / std::fabs(e));
    }
    if (!match) {
      ++r.mismatches;
      const double excess = diff - (tol.atol + tol.rtol * std::fabs(e));
      if (excess > worst_excess || r.worst_index < 0) {
        worst_excess = excess;
        r.worst_index = i;
        r.worst_actual = a;
        r.worst_expected = e;
      }
    }
  }
  return r;
}

std::string CheckResult::Summary() const {
  std::string s =
      absl::StrFormat("max |diff| = %.3g, max rel diff = %.3g over %d elements",
                      max_abs_diff, max_rel_diff, count);
  if (mismatches > 0) {
    absl::StrAppendFormat(&s,
                          "; %d outside tolerance, worst at flat index %d: "
                          "got %.9g, expected %.9g",
                          mismatches, worst_index, worst_actual,
                          worst_expected);
  }
  return s;
}

}  // namespace pallasvm::tools
