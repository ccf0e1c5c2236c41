// Debug print formatting; see debug_format.h.
#include "vm/debug_format.h"

#include <charconv>
#include <cmath>
#include <cstring>

#include "absl/status/statusor.h"
#include "absl/strings/str_cat.h"
#include "vm/kernels/convert.h"

namespace pallasvm::vm {

namespace {

// What interpret mode prints for a float of any width: its value as a
// Python float (a double), in Python's repr: the shortest digits that read
// back as the same double, positional unless |x| < 1e-4 or >= 1e16 (then
// "1e-05" style). So float32 0.1 prints as 0.10000000149011612.
std::string FormatFloat(double x) {
  if (std::isnan(x)) return "nan";
  if (std::isinf(x)) return x < 0 ? "-inf" : "inf";
  if (x == 0) return std::signbit(x) ? "-0.0" : "0.0";
  char buf[64];
  const double a = std::fabs(x);
  if (a < 1e-4 || a >= 1e16) {
    // "1e-05", "1.5e+16": to_chars writes the exponent as Python does.
    auto r = std::to_chars(buf, buf + sizeof(buf), x,
                           std::chars_format::scientific);
    return std::string(buf, r.ptr);
  }
  auto r = std::to_chars(buf, buf + sizeof(buf), x, std::chars_format::fixed);
  std::string s(buf, r.ptr);
  if (s.find('.') == std::string::npos) s += ".0";
  return s;
}

}  // namespace

std::string FormatScalar(const DebugValue& v) {
  auto get = [&](auto zero) {
    decltype(zero) x;
    std::memcpy(&x, v.bytes, sizeof(x));
    return x;
  };
  switch (v.dtype) {
    case DType::PRED:
      return v.bytes[0] ? "True" : "False";
    case DType::S8:
      return absl::StrCat(get(int8_t{}));
    case DType::U8:
      return absl::StrCat(get(uint8_t{}));
    case DType::S16:
      return absl::StrCat(get(int16_t{}));
    case DType::U16:
      return absl::StrCat(get(uint16_t{}));
    case DType::S32:
      return absl::StrCat(get(int32_t{}));
    case DType::U32:
      return absl::StrCat(get(uint32_t{}));
    case DType::F32:
      return FormatFloat(get(float{}));
    case DType::F16:
      return FormatFloat(F16ToF32(get(uint16_t{})));
    case DType::BF16:
      return FormatFloat(Bf16ToF32(get(uint16_t{})));
  }
  return "?";
}

absl::StatusOr<int> CheckDebugFormat(std::string_view f) {
  int fields = 0;
  for (size_t i = 0; i < f.size(); ++i) {
    if (f[i] == '{') {
      if (i + 1 < f.size() && f[i + 1] == '{') {
        ++i;
      } else if (i + 1 < f.size() && f[i + 1] == '}') {
        ++fields;
        ++i;
      } else {
        return absl::UnimplementedError(absl::StrCat(
            "debug print format \"", std::string(f), "\": only empty {} fields are "
            "supported (no names, indices or format specs)"));
      }
    } else if (f[i] == '}') {
      if (i + 1 < f.size() && f[i + 1] == '}') {
        ++i;
      } else {
        return absl::InvalidArgumentError(
            absl::StrCat("debug print format \"", std::string(f), "\": unmatched }"));
      }
    }
  }
  return fields;
}

std::string FormatDebugPrint(std::string_view f, const DebugValue* values,
                             int count) {
  std::string out;
  int next = 0;
  for (size_t i = 0; i < f.size(); ++i) {
    const bool pair = i + 1 < f.size() && f[i + 1] == f[i];
    if ((f[i] == '{' || f[i] == '}') && pair) {
      out += f[i];
      ++i;
    } else if (f[i] == '{' && i + 1 < f.size() && f[i + 1] == '}') {
      out += next < count ? FormatScalar(values[next]) : std::string("{}");
      ++next;
      ++i;
    } else {
      out += f[i];
    }
  }
  return out;
}

}  // namespace pallasvm::vm
