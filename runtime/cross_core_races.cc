// Races between simulated cores; see cross_core_races.h.
#include "runtime/cross_core_races.h"

#include <algorithm>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "runtime/access_elements.h"

namespace pallasvm::runtime {

namespace {

constexpr int kDescribed = 5;

// A mark: flags, and the site of the last write (else read). Site 0 is a
// block copy, site s > 0 the core's DMA site s - 1.
constexpr uint32_t kWrite = uint32_t{1} << 31;
constexpr uint32_t kRead = uint32_t{1} << 30;
constexpr uint32_t kSiteMask = kRead - 1;
// Past this many DMA sites on a core in one call, DMAs are marked without
// one (a kernel running millions of DMAs would otherwise grow the table
// without bound); their races say "a DMA".
constexpr uint32_t kMaxSites = uint32_t{1} << 22;
constexpr uint32_t kUnnamedSite = kSiteMask;

void Mark(uint32_t& m, bool write, uint32_t site) {
  if (write) {
    m = kWrite | (m & kRead) | site;
  } else if (m & kWrite) {
    m |= kRead;  // the write's site names it
  } else {
    m = kRead | site;
  }
}

std::string PointString(const int32_t* point, int rank) {
  return absl::StrCat("(", absl::StrJoin(point, point + rank, ", "), ")");
}

}  // namespace

CrossCoreRaces::CrossCoreRaces(const Kernel& kernel, int num_cores,
                               std::vector<Buffer> buffers)
    : kernel_(kernel), buffers_(std::move(buffers)), cores_(num_cores) {
  for (int c = 0; c < num_cores; ++c) {
    Core& core = cores_[c];
    core.races_ = this;
    core.index_ = c;
    core.marks_.reserve(buffers_.size());
    for (const Buffer& b : buffers_) {
      core.marks_.emplace_back(TypeOf(b).num_elements(), 0);
    }
  }
}

const ArrayType& CrossCoreRaces::TypeOf(const Buffer& b) const {
  return b.is_output ? kernel_.out_types[b.operand]
                     : kernel_.in_types[b.operand];
}

int CrossCoreRaces::BufferAt(const uint8_t* address) const {
  for (size_t b = 0; b < buffers_.size(); ++b) {
    if (buffers_[b].address == address) return static_cast<int>(b);
  }
  return -1;
}

std::string CrossCoreRaces::BufferName(const Buffer& b) const {
  std::string origin;
  for (const RefSpec& ref : kernel_.refs) {
    const bool output =
        ref.kind == RefKind::OUTPUT_BLOCK || ref.kind == RefKind::OUTPUT_HBM;
    const bool input =
        ref.kind == RefKind::INPUT_BLOCK || ref.kind == RefKind::INPUT_HBM;
    if (ref.operand == b.operand && (b.is_output ? output : input) &&
        !ref.origin.empty()) {
      origin = ref.origin;
      break;
    }
  }
  std::string aliased;
  for (auto [in, out] : kernel_.aliases) {
    if (b.is_output && out == b.operand) {
      aliased = absl::StrCat(", aliased to input ", in);
    }
  }
  const std::string what =
      absl::StrCat(b.is_output ? "output " : "input ", b.operand, aliased);
  const std::string type = TypeOf(b).ToString();
  return origin.empty() ? absl::StrCat(what, " (", type, ")")
                        : absl::StrCat(origin, " (", what, ", ", type, ")");
}

void CrossCoreRaces::Core::BeginCall(uint8_t* const* refs, const int32_t* point,
                                     int rank) {
  const Kernel& k = races_->kernel_;
  point_ = point;
  rank_ = rank;
  buffer_of_ref_.assign(k.refs.size(), -1);
  for (size_t r = 0; r < k.refs.size(); ++r) {
    if (IsHbmOperand(k.refs[r].kind)) {
      buffer_of_ref_[r] = races_->BufferAt(refs[r]);
    }
  }
  site_pcs_.clear();
  site_points_.clear();
  pending_.clear();
}

void CrossCoreRaces::Core::OnBlockCopy(int buffer, const BlockRegion& r,
                                       bool writes_hbm) {
  uint32_t* marks = marks_[buffer].data();
  ForEachBlockRun(r, [&](int64_t first, int64_t count) {
    for (int64_t e = first; e < first + count; ++e) {
      Mark(marks[e], writes_hbm, 0);
    }
  });
}

void CrossCoreRaces::Core::OnDmaStart(uint64_t serial,
                                      const vm::AccessDesc& src,
                                      const vm::AccessDesc& dst, uint32_t pc) {
  const int src_buffer = buffer_of_ref_[src.base];
  const int dst_buffer = buffer_of_ref_[dst.base];
  if (src_buffer < 0 && dst_buffer < 0) return;
  uint32_t site = kUnnamedSite;
  if (site_pcs_.size() < kMaxSites) {
    site_pcs_.push_back(pc);
    site_points_.insert(site_points_.end(), point_, point_ + rank_);
    site = static_cast<uint32_t>(site_pcs_.size());
  }
  pending_.push_back(Pending{serial, src_buffer, dst_buffer, src, dst, site});
}

void CrossCoreRaces::Core::OnDmaDone(uint64_t serial) {
  for (size_t i = pending_.size(); i-- > 0;) {
    const Pending& p = pending_[i];
    if (p.serial != serial) continue;
    if (p.src_buffer >= 0) MarkRegion(p.src_buffer, p.src, false, p.site);
    if (p.dst_buffer >= 0) MarkRegion(p.dst_buffer, p.dst, true, p.site);
    pending_[i] = pending_.back();
    pending_.pop_back();
    return;
  }
}

void CrossCoreRaces::Core::MarkRegion(int buffer, const vm::AccessDesc& region,
                                      bool write, uint32_t site) {
  uint32_t* marks = marks_[buffer].data();
  // In the buffer's elements: a bitcast view's element may span several,
  // or share one.
  const int64_t es = vm::SizeOf(races_->TypeOf(races_->buffers_[buffer]).dtype);
  const int64_t last_byte = region.elem_size - 1;
  ForEachElement(region, [&](int64_t, int64_t offset, const int64_t*) {
    if (offset < 0) return;  // read as the fill value, not from HBM
    for (int64_t e = offset / es; e <= (offset + last_byte) / es; ++e) {
      Mark(marks[e], write, site);
    }
  });
}

std::string CrossCoreRaces::Core::Describe(uint32_t mark,
                                           std::string* verb) const {
  const bool write = mark & kWrite;
  const uint32_t site = mark & kSiteMask;
  if (site == 0) {
    *verb = write ? "written back" : "read";
    return absl::StrCat("by core ", index_,
                        write ? "" : " (aliased input block)");
  }
  *verb = write ? "written" : "read";
  if (site == kUnnamedSite) return absl::StrCat("by a DMA on core ", index_);
  return absl::StrCat(
      "by the DMA started by ",
      InstructionSource(races_->kernel_.program, site_pcs_[site - 1]),
      " at grid point ",
      PointString(site_points_.data() + (site - 1) * rank_, rank_), " on core ",
      index_);
}

void CrossCoreRaces::Find(int64_t* racy_elements,
                          std::string* description) const {
  const int num_cores = static_cast<int>(cores_.size());
  int64_t racy = 0;
  int races = 0;
  for (size_t b = 0; b < buffers_.size(); ++b) {
    const ArrayType& type = TypeOf(buffers_[b]);
    const int64_t n = type.num_elements();
    // The run of racy elements being gathered: [first, end), and its two
    // accesses (core and mark each).
    int64_t first = 0, end = -1;
    int run_writer = -1, run_other = -1;
    uint32_t run_writer_mark = 0, run_other_mark = 0;
    auto flush = [&] {
      if (end < 0) return;
      racy += end - first;
      if (races++ >= kDescribed) return;
      std::vector<int64_t> index(type.shape.size());
      for (int64_t d = static_cast<int64_t>(index.size()) - 1, rest = first;
           d >= 0; --d) {
        index[d] = rest % type.shape[d];
        rest /= type.shape[d];
      }
      std::string verb, other_verb;
      const std::string a = cores_[run_writer].Describe(run_writer_mark, &verb);
      const std::string o =
          cores_[run_other].Describe(run_other_mark, &other_verb);
      absl::StrAppend(description, "race on ", BufferName(buffers_[b]),
                      " element (", absl::StrJoin(index, ", "), ")",
                      end - first > 1
                          ? absl::StrCat(" and ", end - first - 1, " more")
                          : "",
                      ": ", verb, " ", a, " and ",
                      // "written back by core 0 and by core 1"
                      other_verb == verb ? "" : other_verb + " ", o, "\n");
    };
    for (int64_t e = 0; e < n; ++e) {
      int writer = -1, other = -1;
      for (int c = 0; c < num_cores && other < 0; ++c) {
        if (!(cores_[c].marks_[b][e] & kWrite)) continue;
        (writer < 0 ? writer : other) = c;
      }
      for (int c = 0; writer >= 0 && other < 0 && c < num_cores; ++c) {
        if (c != writer && (cores_[c].marks_[b][e] & kRead)) other = c;
      }
      if (other < 0) continue;
      const uint32_t wm = cores_[writer].marks_[b][e];
      const uint32_t om = cores_[other].marks_[b][e];
      if (e == end && writer == run_writer && other == run_other &&
          wm == run_writer_mark && om == run_other_mark) {
        ++end;
        continue;
      }
      flush();
      first = e;
      end = e + 1;
      run_writer = writer;
      run_other = other;
      run_writer_mark = wm;
      run_other_mark = om;
    }
    flush();
  }
  *racy_elements += racy;
  if (races > kDescribed) {
    absl::StrAppend(description, "... ", racy, " racy elements in all\n");
  }
}

}  // namespace pallasvm::runtime
