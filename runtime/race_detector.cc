// Race detection between a core's kernel and its DMAs; see race_detector.h.
#include "runtime/race_detector.h"

#include <algorithm>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "runtime/access_elements.h"

namespace pallasvm::runtime {

namespace {

constexpr int kDescribed = 5;

bool SameBuffer(const vm::AccessDesc& a, const vm::AccessDesc& b,
                uint8_t* const* refs) {
  if (refs[a.base] != refs[b.base] || a.rank != b.rank ||
      a.elem_size != b.elem_size) {
    return false;
  }
  for (int d = 0; d < a.rank; ++d) {
    if (a.dims[d].extent != b.dims[d].extent) return false;
  }
  return true;
}

}  // namespace

RaceDetector::RaceDetector(const Kernel& kernel, uint8_t* const* refs)
    : kernel_(kernel), refs_(refs) {}

void RaceDetector::Reset() {
  in_flight_.clear();
  racy_elements_ = 0;
  described_ = 0;
  description_.clear();
}

int64_t RaceDetector::SharedElements(const vm::AccessDesc& a,
                                     const vm::AccessDesc& b,
                                     std::vector<int64_t>* first) {
  int64_t total = 1;
  first->assign(a.rank, 0);
  for (int d = 0; d < a.rank; ++d) {
    const vm::AccessDim& x = a.dims[d];
    const vm::AccessDim& y = b.dims[d];
    // Walk the shorter progression, test membership in the other.
    const vm::AccessDim& walk = x.size <= y.size ? x : y;
    const vm::AccessDim& other = x.size <= y.size ? y : x;
    int64_t count = 0;
    for (int64_t i = 0; i < walk.size; ++i) {
      const int64_t e = walk.start + i * walk.stride;
      const int64_t off = e - other.start;
      if (off < 0 || off % other.stride != 0 || off / other.stride >= other.size) {
        continue;
      }
      if (count++ == 0) (*first)[d] = e;
    }
    if (count == 0) return 0;
    total *= count;
  }
  return total;
}

std::string RaceDetector::PointString() const {
  if (point_ == nullptr) return "()";
  return absl::StrCat("(", absl::StrJoin(point_, point_ + rank_, ", "), ")");
}

void RaceDetector::Report(int64_t elements, const std::vector<int64_t>& first,
                          int32_t ref, const InFlight& dma, bool dma_writes,
                          const std::string& other) {
  racy_elements_ += elements;
  if (described_++ >= kDescribed) return;
  const RefSpec& spec = kernel_.refs[ref];
  absl::StrAppend(
      &description_, "race on ", spec.origin.empty() ? "ref" : spec.origin,
      " (ref ", ref, ", ", spec.type.ToString(), ") element (",
      absl::StrJoin(first, ", "), ")", elements > 1
          ? absl::StrCat(" and ", elements - 1, " more")
          : "",
      ": the DMA started by ", InstructionSource(kernel_.program, dma.pc), " at grid point ", dma.point,
      dma_writes ? " writes it" : " reads it", ", and ", other,
      ", with no wait for the DMA in between\n");
}

void RaceDetector::OnDmaStart(uint64_t serial, const vm::AccessDesc& src,
                              const vm::AccessDesc& dst, int dst_sem,
                              int src_sem, uint32_t pc) {
  std::vector<int64_t> first;
  const std::string here =
      absl::StrCat("the DMA started by ", InstructionSource(kernel_.program, pc), " at grid point ",
                   PointString());
  for (const InFlight& f : in_flight_) {
    // Our writes against its reads and writes, our reads against its
    // writes.
    struct Pair {
      const vm::AccessDesc& ours;
      const vm::AccessDesc& theirs;
      bool we_write, they_write;
    };
    for (const Pair& p : {Pair{dst, f.dst, true, true},
                          Pair{dst, f.src, true, false},
                          Pair{src, f.dst, false, true}}) {
      if (!SameBuffer(p.ours, p.theirs, refs_)) continue;
      const int64_t n = SharedElements(p.ours, p.theirs, &first);
      if (n == 0) continue;
      Report(n, first, p.theirs.base, f, p.they_write,
             absl::StrCat(here, p.we_write ? " writes it" : " reads it"));
    }
  }
  in_flight_.push_back(
      InFlight{serial, src, dst, dst_sem, src_sem, false, pc, PointString()});
}

void RaceDetector::OnDmaDone(uint64_t serial) {
  for (InFlight& f : in_flight_) {
    if (f.serial == serial) f.done = true;
  }
}

void RaceDetector::OnWait(int sem) {
  in_flight_.erase(
      std::remove_if(in_flight_.begin(), in_flight_.end(),
                     [&](const InFlight& f) {
                       return f.done && (f.dst_sem == sem || f.src_sem == sem);
                     }),
      in_flight_.end());
}

void RaceDetector::OnAccess(int32_t ref, const vm::AccessDesc* region,
                            bool is_write, uint32_t pc) {
  if (in_flight_.empty()) return;
  const vm::AccessDesc whole =
      region == nullptr ? WholeRef(kernel_.refs[ref], ref) : vm::AccessDesc();
  const vm::AccessDesc& access = region == nullptr ? whole : *region;
  std::vector<int64_t> first;
  for (const InFlight& f : in_flight_) {
    for (const bool dma_writes : {true, false}) {
      if (!dma_writes && !is_write) continue;  // two reads never race
      const vm::AccessDesc& theirs = dma_writes ? f.dst : f.src;
      if (!SameBuffer(access, theirs, refs_)) continue;
      const int64_t n = SharedElements(access, theirs, &first);
      if (n == 0) continue;
      Report(n, first, ref, f, dma_writes,
             absl::StrCat("the kernel ", is_write ? "writes" : "reads",
                          " it at ", InstructionSource(kernel_.program, pc), " at grid point ",
                          PointString()));
    }
  }
}

}  // namespace pallasvm::runtime
