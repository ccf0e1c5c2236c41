#include "vm/memory_limit.h"

#include <sys/resource.h>
#include <unistd.h>

#include <algorithm>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"

namespace pallasvm::vm {

namespace {

int64_t ComputeDefaultMemoryLimit() {
  int64_t limit = int64_t{1} << 62;
  const long pages = sysconf(_SC_PHYS_PAGES);
  const long page_size = sysconf(_SC_PAGE_SIZE);
  if (pages > 0 && page_size > 0) {
    if (std::optional<int64_t> phys = CheckedMul(pages, page_size)) {
      limit = std::min(limit, *phys);
    }
  }
  rlimit as;
  if (getrlimit(RLIMIT_AS, &as) == 0 && as.rlim_cur != RLIM_INFINITY &&
      as.rlim_cur < static_cast<rlim_t>(limit)) {
    limit = static_cast<int64_t>(as.rlim_cur);
  }
  return limit;
}

}  // namespace

int64_t DefaultMemoryLimit() {
  // Computed once: it takes system calls, and every Run resolves it.
  static const int64_t limit = ComputeDefaultMemoryLimit();
  return limit;
}

int64_t ResolveMemoryLimit(int64_t limit) {
  return limit > 0 ? limit : DefaultMemoryLimit();
}

std::string FormatBytes(int64_t bytes) {
  static const char* const kUnits[] = {"KiB", "MiB", "GiB",
                                       "TiB", "PiB", "EiB"};
  if (bytes < 1024) return absl::StrCat(bytes, " bytes");
  double v = static_cast<double>(bytes);
  int unit = -1;
  while (v >= 1024 && unit < 5) {
    v /= 1024;
    ++unit;
  }
  return absl::StrFormat("%.4g %s", v, kUnits[unit]);
}

std::optional<int64_t> CheckedMul(int64_t a, int64_t b) {
  int64_t r;
  if (a < 0 || b < 0 || __builtin_mul_overflow(a, b, &r)) return std::nullopt;
  return r;
}

std::optional<int64_t> CheckedAdd(int64_t a, int64_t b) {
  int64_t r;
  if (a < 0 || b < 0 || __builtin_add_overflow(a, b, &r)) return std::nullopt;
  return r;
}

absl::Status CheckMemory(absl::string_view what, int64_t bytes, int64_t limit) {
  limit = ResolveMemoryLimit(limit);
  if (bytes >= 0 && bytes <= limit) return absl::OkStatus();
  return absl::ResourceExhaustedError(absl::StrCat(
      what, " needs ", bytes < 0 ? "more than 2^63 bytes" : FormatBytes(bytes),
      ", more than the memory limit of ", FormatBytes(limit)));
}

}  // namespace pallasvm::vm
