// The DMA engine; see dma_engine.h.
#include "runtime/dma_engine.h"

#include <algorithm>
#include <cstring>

#include "absl/strings/str_cat.h"
#include "vm/kernels/access.h"

namespace pallasvm::runtime {

DmaEngine::DmaEngine(Semaphores& semaphores, uint8_t* const* refs)
    : semaphores_(semaphores), refs_(refs), tasks_(semaphores.size()) {}

void DmaEngine::Reset(DmaExecutionMode mode, const uint64_t* fills) {
  mode_ = mode;
  fills_ = fills;
  next_serial_ = 0;
  free_.clear();
  for (size_t i = 0; i < dmas_.size(); ++i) {
    dmas_[i].live = false;
    free_.push_back(static_cast<int>(i));
  }
  for (std::vector<int>& t : tasks_) t.clear();
}

absl::Status DmaEngine::Start(const vm::DmaRegion& src,
                              const vm::DmaRegion& dst,
                              const vm::SemaphoreId* src_sem,
                              vm::SemaphoreId dst_sem, uint32_t pc,
                              uint64_t* serial, const OtherCore* other) {
  int index;
  if (free_.empty() && dmas_.size() >= kMaxInFlight) {
    return absl::ResourceExhaustedError(absl::StrCat(
        "more than ", kMaxInFlight,
        " DMAs in flight on one core (started and never waited for)"));
  }
  if (free_.empty()) {
    index = static_cast<int>(dmas_.size());
    dmas_.emplace_back();
  } else {
    index = free_.back();
    free_.pop_back();
  }
  Dma& d = dmas_[index];
  d.one_run = src.count >= 0 && dst.count >= 0 &&
              vm::kernels::IsContiguous(src.access) &&
              vm::kernels::IsContiguous(dst.access);
  if (d.one_run) {
    // One memmove needs only the refs: the descriptors are not copied.
    d.src.base = src.access.base;
    d.dst.base = dst.access.base;
  } else {
    vm::kernels::CopyAccess(src.access, &d.src);
    vm::kernels::CopyAccess(dst.access, &d.dst);
  }
  d.src_offset = src.byte_offset;
  d.dst_offset = dst.byte_offset;
  // The whole region counts, its part in the padding too: interpret mode's
  // semaphores count the bytes it copies, padding included.
  d.bytes = vm::kernels::RegionCount(dst.access) * dst.access.elem_size;
  d.dst_sem = dst_sem;
  d.src_sem = src_sem ? *src_sem : vm::SemaphoreId{};
  d.pc = pc;
  d.serial = *serial = next_serial_++;
  d.live = true;
  if (mode_ == DmaExecutionMode::kEager || other != nullptr) {
    const absl::Status s = Execute(d, other);
    Forget(index);
    return s;
  }
  // On wait: a waiter on either semaphore carries it out.
  tasks_[semaphores_.Number(dst_sem)].push_back(index);
  if (src_sem) tasks_[semaphores_.Number(*src_sem)].push_back(index);
  return absl::OkStatus();
}

absl::Status DmaEngine::RunOneFor(vm::SemaphoreId sem, bool* ran) {
  std::vector<int>& tasks = tasks_[semaphores_.Number(sem)];
  *ran = false;
  while (!tasks.empty()) {
    const int index = tasks.back();
    tasks.pop_back();
    Dma& d = dmas_[index];
    if (!d.live) continue;  // carried out through its other semaphore
    *ran = true;
    const absl::Status s = Execute(d);
    // Off the other semaphore's list too.
    const vm::SemaphoreId other =
        d.src_sem.ref >= 0 && semaphores_.Number(d.src_sem) ==
                                  semaphores_.Number(sem)
            ? d.dst_sem
            : d.src_sem;
    if (other.ref >= 0) {
      std::vector<int>& o = tasks_[semaphores_.Number(other)];
      o.erase(std::remove(o.begin(), o.end(), index), o.end());
    }
    Forget(index);
    return s;
  }
  return absl::OkStatus();
}

absl::Status DmaEngine::Execute(Dma& d, const OtherCore* other) {
  const uint8_t* src = refs_[d.src.base];
  uint8_t* dst = (other ? other->refs : refs_)[d.dst.base];
  const int64_t bytes = d.bytes;
  if (d.one_run) {
    // memmove: a DMA within one ref may overlap itself.
    std::memmove(dst + d.dst_offset, src + d.src_offset, bytes);
  } else {
    const vm::kernels::ResolvedAccess from =
        vm::kernels::ResolveAccess(d.src, nullptr);
    const vm::kernels::ResolvedAccess to =
        vm::kernels::ResolveAccess(d.dst, nullptr);
    if (staging_.size() < static_cast<size_t>(bytes)) staging_.resize(bytes);
    if (from.count < 0) {
      // In the padding or under out_of_bounds_reads="uninitialized" (the VM
      // checked).
      vm::kernels::LoadRegionFilled(
          staging_.data(), src, d.src, nullptr,
          reinterpret_cast<const uint8_t*>(&fills_[d.src.base]));
    } else {
      vm::kernels::LoadRegion(staging_.data(), src, d.src, from);
    }
    if (to.count < 0) {
      vm::kernels::StoreRegionClipped(dst, staging_.data(), d.dst, nullptr);
    } else {
      vm::kernels::StoreRegion(dst, staging_.data(), d.dst, to);
    }
  }
  // The checkers follow this core's own DMAs, not those into another
  // core's buffers (they never saw them start).
  if (on_done_ != nullptr && other == nullptr) {
    on_done_(on_done_context_, d.serial);
  }
  if (d.src_sem.ref >= 0) {
    if (absl::Status s = semaphores_.Add(d.src_sem, bytes); !s.ok()) return s;
  }
  return (other ? *other->semaphores : semaphores_).Add(d.dst_sem, bytes);
}

void DmaEngine::Forget(int index) {
  dmas_[index].live = false;
  free_.push_back(index);
}

}  // namespace pallasvm::runtime
