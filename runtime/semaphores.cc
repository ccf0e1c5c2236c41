// Semaphore counters; see semaphores.h.
#include "runtime/semaphores.h"

#include <limits>

#include "absl/strings/str_cat.h"

namespace pallasvm::runtime {

Semaphores::Semaphores(const Kernel& kernel, uint8_t* const* refs)
    : kernel_(kernel), refs_(refs), first_(kernel.refs.size(), -1) {
  for (size_t r = 0; r < kernel.refs.size(); ++r) {
    if (kernel.refs[r].memory_space != vm::MemorySpace::SEMAPHORE) continue;
    first_[r] = total_;
    total_ += static_cast<int>(kernel.refs[r].type.num_elements());
  }
}

absl::Status Semaphores::Add(vm::SemaphoreId sem, int64_t inc) {
  const int64_t v = int64_t{Count(sem)} + inc;
  if (v > std::numeric_limits<int32_t>::max() ||
      v < std::numeric_limits<int32_t>::min()) {
    return absl::OutOfRangeError(absl::StrCat(
        "semaphore ", Name(sem), " overflows: it holds ", Count(sem),
        " and is signalled by ", inc));
  }
  SetCount(sem, static_cast<int32_t>(v));
  return absl::OkStatus();
}

void Semaphores::Zero(int ref) {
  std::memset(refs_[ref], 0, kernel_.refs[ref].type.bytes());
}

void Semaphores::ZeroAll() {
  for (size_t r = 0; r < first_.size(); ++r) {
    if (first_[r] >= 0) Zero(static_cast<int>(r));
  }
}

std::string Semaphores::Name(vm::SemaphoreId sem) const {
  const RefSpec& ref = kernel_.refs[sem.ref];
  const std::string base =
      ref.origin.empty() ? absl::StrCat("ref ", sem.ref) : ref.origin;
  if (ref.type.shape.empty()) return base;
  // The element as an index into the semaphore array.
  std::vector<int64_t> index(ref.type.shape.size());
  int64_t rest = sem.index;
  for (int d = static_cast<int>(index.size()) - 1; d >= 0; --d) {
    index[d] = rest % ref.type.shape[d];
    rest /= ref.type.shape[d];
  }
  std::string out = absl::StrCat(base, "[");
  for (size_t d = 0; d < index.size(); ++d) {
    absl::StrAppend(&out, d ? ", " : "", index[d]);
  }
  return absl::StrCat(out, "]");
}

}  // namespace pallasvm::runtime
