#include "tools/npy.h"

#include <cstring>
#include <filesystem>
#include <fstream>
#include <sstream>

#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"

namespace pallasvm::tools {
namespace {

struct DescrInfo {
  const char* descr;
  std::optional<vm::DType> dtype;
  int size;
};

// '|' and '<' are both accepted for one-byte types; '=' means native
// (little-endian here).
const DescrInfo kDescrs[] = {
    {"b1", vm::DType::PRED, 1}, {"i1", vm::DType::S8, 1},
    {"u1", vm::DType::U8, 1},   {"i2", vm::DType::S16, 2},
    {"u2", vm::DType::U16, 2},  {"i4", vm::DType::S32, 4},
    {"u4", vm::DType::U32, 4},  {"f2", vm::DType::F16, 2},
    {"f4", vm::DType::F32, 4},  {"V2", std::nullopt, 2},
};

const char* DescrFor(vm::DType t) {
  switch (t) {
    case vm::DType::PRED:
      return "|b1";
    case vm::DType::S8:
      return "|i1";
    case vm::DType::U8:
      return "|u1";
    case vm::DType::S16:
      return "<i2";
    case vm::DType::U16:
      return "<u2";
    case vm::DType::S32:
      return "<i4";
    case vm::DType::U32:
      return "<u4";
    case vm::DType::F16:
      return "<f2";
    case vm::DType::BF16:
      return "<V2";
    case vm::DType::F32:
      return "<f4";
  }
  return "";
}

// Value of `key` in the header dict, e.g. 'descr': '<f4'.
std::optional<std::string> HeaderField(absl::string_view header,
                                       absl::string_view key) {
  const std::string needle = absl::StrCat("'", key, "':");
  size_t at = header.find(needle);
  if (at == absl::string_view::npos) return std::nullopt;
  absl::string_view rest = header.substr(at + needle.size());
  rest = absl::StripLeadingAsciiWhitespace(rest);
  if (rest.empty()) return std::nullopt;
  if (rest[0] == '\'') {
    size_t end = rest.find('\'', 1);
    if (end == absl::string_view::npos) return std::nullopt;
    return std::string(rest.substr(1, end - 1));
  }
  if (rest[0] == '(') {
    size_t end = rest.find(')');
    if (end == absl::string_view::npos) return std::nullopt;
    return std::string(rest.substr(1, end - 1));
  }
  size_t end = rest.find_first_of(",}");
  return std::string(absl::StripAsciiWhitespace(rest.substr(0, end)));
}

}  // namespace

absl::StatusOr<NpyArray> ParseNpy(absl::string_view bytes,
                                  absl::string_view origin) {
  auto bad = [&](absl::string_view why) {
    return absl::InvalidArgumentError(
        absl::StrCat(origin, ": not a valid .npy file: ", why));
  };
  if (bytes.size() < 10 || bytes.substr(0, 6) != "\x93NUMPY") {
    return bad("missing the \\x93NUMPY magic");
  }
  const uint8_t major = static_cast<uint8_t>(bytes[6]);
  size_t header_len, header_start;
  if (major == 1) {
    header_len = static_cast<uint8_t>(bytes[8]) |
                 (static_cast<size_t>(static_cast<uint8_t>(bytes[9])) << 8);
    header_start = 10;
  } else if (major == 2 || major == 3) {
    if (bytes.size() < 12) return bad("truncated header");
    header_len = 0;
    for (int i = 0; i < 4; ++i) {
      header_len |= static_cast<size_t>(static_cast<uint8_t>(bytes[8 + i]))
                    << (8 * i);
    }
    header_start = 12;
  } else {
    return bad(absl::StrCat("unsupported format version ", major));
  }
  if (bytes.size() < header_start + header_len) return bad("truncated header");
  absl::string_view header = bytes.substr(header_start, header_len);
  std::optional<std::string> descr = HeaderField(header, "descr");
  std::optional<std::string> fortran = HeaderField(header, "fortran_order");
  std::optional<std::string> shape = HeaderField(header, "shape");
  if (!descr || !fortran || !shape) return bad("header lacks descr/shape");
  if (*fortran != "False") {
    return bad("Fortran-ordered arrays are not supported (use C order)");
  }
  NpyArray a;
  a.descr = *descr;
  std::string body = *descr;
  char order = body.empty() ? '?' : body[0];
  if (order == '<' || order == '|' || order == '=') {
    body = body.substr(1);
  } else if (order == '>') {
    return bad("big-endian arrays are not supported");
  }
  bool known = false;
  for (const DescrInfo& d : kDescrs) {
    if (body == d.descr) {
      a.dtype = d.dtype;
      a.element_size = d.size;
      known = true;
    }
  }
  if (!known) {
    return bad(absl::StrCat("dtype '", *descr,
                            "' is not supported (64-bit types included)"));
  }
  int64_t count = 1;
  for (absl::string_view part : absl::StrSplit(*shape, ',')) {
    part = absl::StripAsciiWhitespace(part);
    if (part.empty()) continue;
    int64_t d;
    if (!absl::SimpleAtoi(part, &d) || d < 0 ||
        (d > 0 && count > (int64_t{1} << 40) / d)) {
      return bad(absl::StrCat("bad shape (", *shape, ")"));
    }
    a.shape.push_back(d);
    count *= d;
  }
  const size_t need = static_cast<size_t>(count) * a.element_size;
  const size_t have = bytes.size() - header_start - header_len;
  if (have != need) {
    return bad(absl::StrCat("data is ", have, " bytes, shape (", *shape,
                            ") of '", *descr, "' needs ", need));
  }
  const uint8_t* p = reinterpret_cast<const uint8_t*>(bytes.data()) +
                     header_start + header_len;
  a.data.assign(p, p + need);
  return a;
}

absl::StatusOr<std::string> ReadFileBytes(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  if (!f) return absl::NotFoundError(absl::StrCat("cannot open ", path));
  std::ostringstream ss;
  ss << f.rdbuf();
  if (f.bad()) return absl::DataLossError(absl::StrCat("cannot read ", path));
  return ss.str();
}

absl::StatusOr<NpyArray> ReadNpy(const std::string& path) {
  absl::StatusOr<std::string> bytes = ReadFileBytes(path);
  if (!bytes.ok()) return bytes.status();
  return ParseNpy(*bytes, path);
}

absl::Status ResolveDType(NpyArray& array, vm::DType expected,
                          absl::string_view what) {
  if (!array.dtype) {
    if (vm::SizeOf(expected) == 2 && vm::Info(expected).is_float) {
      array.dtype = expected;
      return absl::OkStatus();
    }
  } else if (*array.dtype == expected) {
    return absl::OkStatus();
  }
  return absl::InvalidArgumentError(
      absl::StrCat(what, " has dtype '", array.descr,
                   "' but the kernel expects ", vm::Name(expected)));
}

std::string SerializeNpy(vm::DType dtype, const std::vector<int64_t>& shape,
                         const void* data) {
  std::string shape_str = absl::StrJoin(shape, ", ");
  if (shape.size() == 1) absl::StrAppend(&shape_str, ",");
  std::string header =
      absl::StrCat("{'descr': '", DescrFor(dtype),
                   "', 'fortran_order': False, 'shape': (", shape_str, "), }");
  // Pad so that the data starts at a multiple of 64 bytes.
  const size_t total = 10 + header.size() + 1;
  header.append((64 - total % 64) % 64, ' ');
  header.push_back('\n');
  std::string out = "\x93NUMPY";
  out.push_back('\x01');
  out.push_back('\x00');
  out.push_back(static_cast<char>(header.size() & 0xff));
  out.push_back(static_cast<char>(header.size() >> 8));
  out += header;
  int64_t count = 1;
  for (int64_t d : shape) count *= d;
  out.append(static_cast<const char*>(data),
             static_cast<size_t>(count) * vm::SizeOf(dtype));
  return out;
}

absl::Status WriteNpy(const std::string& path, vm::DType dtype,
                      const std::vector<int64_t>& shape, const void* data) {
  const std::string bytes = SerializeNpy(dtype, shape, data);
  const std::string tmp = path + ".tmp";
  {
    std::ofstream f(tmp, std::ios::binary | std::ios::trunc);
    f.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
    if (!f) return absl::DataLossError(absl::StrCat("cannot write ", tmp));
  }
  std::error_code ec;
  std::filesystem::rename(tmp, path, ec);
  if (ec) {
    return absl::DataLossError(
        absl::StrCat("cannot write ", path, ": ", ec.message()));
  }
  return absl::OkStatus();
}

}  // namespace pallasvm::tools
