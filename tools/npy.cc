#include "tools/npy.h"

#include <fcntl.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <utility>

#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"
#include "format/module_limits.h"
#include "vm/memory_limit.h"

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

namespace {

// The fixed part of a .npy file before its header text: magic, version,
// header length (2 bytes in version 1, 4 in versions 2 and 3).
constexpr size_t kPrefixV1 = 10, kPrefixV2 = 12;
// Longer header texts are refused (numpy writes a few hundred bytes).
constexpr size_t kMaxHeader = size_t{1} << 20;

struct NpyLayout {
  NpyArray array;  // without data
  size_t data_offset = 0;
  size_t data_bytes = 0;
};

// Parses the magic and the header of a .npy file from its first bytes:
// `head` holds at least the prefix, and then as much of the header as
// `*need_head` says (it is set to the prefix + header length when `head`
// is too short; call again with that much).
absl::StatusOr<NpyLayout> ParseHeader(absl::string_view head,
                                      absl::string_view origin,
                                      size_t* need_head) {
  auto bad = [&](absl::string_view why) {
    return absl::InvalidArgumentError(
        absl::StrCat(origin, ": not a valid .npy file: ", why));
  };
  if (head.size() < kPrefixV1 || head.substr(0, 6) != "\x93NUMPY") {
    return bad("missing the \\x93NUMPY magic");
  }
  const uint8_t major = static_cast<uint8_t>(head[6]);
  size_t header_len, header_start;
  if (major == 1) {
    header_len = static_cast<uint8_t>(head[8]) |
                 (static_cast<size_t>(static_cast<uint8_t>(head[9])) << 8);
    header_start = kPrefixV1;
  } else if (major == 2 || major == 3) {
    if (head.size() < kPrefixV2) return bad("truncated header");
    header_len = 0;
    for (int i = 0; i < 4; ++i) {
      header_len |= static_cast<size_t>(static_cast<uint8_t>(head[8 + i]))
                    << (8 * i);
    }
    header_start = kPrefixV2;
  } else {
    return bad(absl::StrCat("unsupported format version ", major));
  }
  if (header_len > kMaxHeader) {
    return bad(absl::StrCat("a header of ", header_len, " bytes"));
  }
  if (head.size() < header_start + header_len) {
    if (need_head != nullptr) *need_head = header_start + header_len;
    return bad("truncated header");
  }
  absl::string_view header = head.substr(header_start, header_len);
  std::optional<std::string> descr = HeaderField(header, "descr");
  std::optional<std::string> fortran = HeaderField(header, "fortran_order");
  std::optional<std::string> shape = HeaderField(header, "shape");
  if (!descr || !fortran || !shape) return bad("header lacks descr/shape");
  if (*fortran != "False") {
    return bad("Fortran-ordered arrays are not supported (use C order)");
  }
  NpyLayout layout;
  NpyArray& a = layout.array;
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
  for (absl::string_view part : absl::StrSplit(*shape, ',')) {
    part = absl::StripAsciiWhitespace(part);
    if (part.empty()) continue;
    int64_t d;
    if (!absl::SimpleAtoi(part, &d)) {
      return bad(absl::StrCat("bad shape (", *shape, ")"));
    }
    a.shape.push_back(d);
  }
  // The limits of a kernel's operands (format/module_limits.h): an array
  // outside them fits no kernel, and within them its size cannot overflow.
  if (absl::Status s = format::CheckArrayShape(a.shape, "the array"); !s.ok()) {
    return bad(s.message());
  }
  int64_t count = 1;
  for (int64_t d : a.shape) count *= d;
  layout.data_offset = header_start + header_len;
  layout.data_bytes = static_cast<size_t>(count) * a.element_size;
  return layout;
}

absl::Status SizeError(absl::string_view origin, size_t have, size_t need,
                       const NpyArray& a) {
  return absl::InvalidArgumentError(absl::StrCat(
      origin, ": not a valid .npy file: data is ", have, " bytes, shape (",
      absl::StrJoin(a.shape, ", "), ") of '", a.descr, "' needs ", need));
}

}  // namespace

absl::StatusOr<NpyArray> ParseNpy(absl::string_view bytes,
                                  absl::string_view origin) {
  absl::StatusOr<NpyLayout> layout = ParseHeader(bytes, origin, nullptr);
  if (!layout.ok()) return layout.status();
  const size_t have = bytes.size() - layout->data_offset;
  if (have != layout->data_bytes) {
    return SizeError(origin, have, layout->data_bytes, layout->array);
  }
  const uint8_t* p =
      reinterpret_cast<const uint8_t*>(bytes.data()) + layout->data_offset;
  layout->array.data.assign(p, p + layout->data_bytes);
  return std::move(layout->array);
}

absl::StatusOr<std::string> ReadFileBytes(const std::string& path,
                                          int64_t max_bytes) {
  std::error_code ec;
  if (std::filesystem::is_directory(path, ec)) {
    return absl::InvalidArgumentError(
        absl::StrCat(path, " is a directory, not a file"));
  }
  const int64_t limit = vm::ResolveMemoryLimit(max_bytes);
  std::ifstream f(path, std::ios::binary);
  if (!f) return absl::NotFoundError(absl::StrCat("cannot open ", path));
  // Read in chunks, so that a file without a size (a pipe, /dev/zero) is
  // held to the limit too.
  std::string out;
  std::vector<char> chunk(1 << 20);
  while (f) {
    f.read(chunk.data(), static_cast<std::streamsize>(chunk.size()));
    const size_t got = static_cast<size_t>(f.gcount());
    if (static_cast<int64_t>(out.size() + got) > limit) {
      return absl::ResourceExhaustedError(
          absl::StrCat(path, " is larger than ", vm::FormatBytes(limit),
                       ", the most pallasvm reads"));
    }
    out.append(chunk.data(), got);
  }
  if (f.bad()) return absl::DataLossError(absl::StrCat("cannot read ", path));
  return out;
}

absl::StatusOr<NpyArray> ReadNpy(const std::string& path,
                                 int64_t memory_limit) {
  std::error_code ec;
  if (std::filesystem::is_directory(path, ec)) {
    return absl::InvalidArgumentError(
        absl::StrCat(path, " is a directory, not a .npy file"));
  }
  std::ifstream f(path, std::ios::binary);
  if (!f) return absl::NotFoundError(absl::StrCat("cannot open ", path));
  // The header first: it says how much data there is, which is checked
  // against the limit before anything is allocated or read.
  std::string head(kPrefixV2, '\0');
  f.read(head.data(), static_cast<std::streamsize>(head.size()));
  head.resize(static_cast<size_t>(f.gcount()));
  size_t need_head = 0;
  absl::StatusOr<NpyLayout> layout = ParseHeader(head, path, &need_head);
  if (!layout.ok() && need_head > head.size()) {
    const size_t had = head.size();
    head.resize(need_head);
    f.read(head.data() + had, static_cast<std::streamsize>(need_head - had));
    head.resize(had + static_cast<size_t>(f.gcount()));
    layout = ParseHeader(head, path, nullptr);
  }
  if (!layout.ok()) return layout.status();
  const size_t bytes = layout->data_bytes;
  if (absl::Status s = vm::CheckMemory(
          absl::StrCat(path, " (", layout->array.descr, " array of shape (",
                       absl::StrJoin(layout->array.shape, ", "), "))"),
          static_cast<int64_t>(bytes), memory_limit);
      !s.ok()) {
    return s;
  }
  // What was read past the header is the start of the data.
  NpyArray& a = layout->array;
  const size_t early = head.size() - layout->data_offset;
  if (early > bytes) return SizeError(path, early, bytes, a);
  a.data.resize(bytes);
  if (early > 0) {
    std::memcpy(a.data.data(), head.data() + layout->data_offset, early);
  }
  f.read(reinterpret_cast<char*>(a.data.data()) + early,
         static_cast<std::streamsize>(bytes - early));
  const size_t got = early + static_cast<size_t>(f.gcount());
  if (f.bad()) return absl::DataLossError(absl::StrCat("cannot read ", path));
  if (got < bytes) return SizeError(path, got, bytes, a);
  if (f.peek() != std::ifstream::traits_type::eof()) {
    return absl::InvalidArgumentError(
        absl::StrCat(path, ": not a valid .npy file: more data than shape (",
                     absl::StrJoin(a.shape, ", "), ") of '", a.descr,
                     "' holds (", bytes, " bytes)"));
  }
  return std::move(layout->array);
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

absl::Status WriteFileBytes(const std::string& path, absl::string_view bytes) {
  namespace fs = std::filesystem;
  std::error_code ec;
  if (fs::is_directory(path, ec)) {
    return absl::FailedPreconditionError(
        absl::StrCat("cannot write ", path, ": it is a directory"));
  }
  // A fresh temporary beside the target (so that the rename stays on one
  // file system), never one that exists: nothing of the user's is touched
  // until the rename, which replaces only the target.
  std::string tmp = path + ".XXXXXX";
  const int fd = mkstemp(tmp.data());
  if (fd < 0) {
    return absl::DataLossError(
        absl::StrCat("cannot write ", path, ": ", std::strerror(errno)));
  }
  size_t done = 0;
  while (done < bytes.size()) {
    const ssize_t n = write(fd, bytes.data() + done, bytes.size() - done);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) break;
    done += static_cast<size_t>(n);
  }
  const int write_errno = errno;
  const bool closed = close(fd) == 0;
  if (done < bytes.size() || !closed) {
    fs::remove(tmp, ec);
    return absl::DataLossError(
        absl::StrCat("cannot write ", path, ": ",
                     std::strerror(done < bytes.size() ? write_errno : errno)));
  }
  // mkstemp makes the file 0600; give it the usual permissions.
  const mode_t mask = umask(0);
  umask(mask);
  chmod(tmp.c_str(), 0666 & ~mask);
  fs::rename(tmp, path, ec);
  if (ec) {
    std::error_code ignored;
    fs::remove(tmp, ignored);
    return absl::DataLossError(
        absl::StrCat("cannot write ", path, ": ", ec.message()));
  }
  return absl::OkStatus();
}

absl::Status WriteNpy(const std::string& path, vm::DType dtype,
                      const std::vector<int64_t>& shape, const void* data) {
  return WriteFileBytes(path, SerializeNpy(dtype, shape, data));
}

}  // namespace pallasvm::tools
