// Races between simulated cores; see cross_core_races.h.
#include "runtime/cross_core_races.h"

#include <algorithm>
#include <atomic>
#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "runtime/access_elements.h"

namespace pallasvm::runtime {

namespace {

constexpr int kDescribed = 5;

// Sites: 0 is a block copy, s in [1, kMaxSites] the core's site s - 1 (a
// DMA, or a kernel instruction at a grid point). Past kMaxSites sites on a
// core in one call, accesses are marked without one (a kernel running
// millions of DMAs would otherwise grow the table without bound); their
// races say "a DMA" or "the kernel". Every site fits in kSiteBits.
constexpr uint32_t kMaxSites = uint32_t{1} << 22;
constexpr uint32_t kUnnamedDmaSite = kMaxSites + 1;
constexpr uint32_t kUnnamedKernelSite = kMaxSites + 2;
constexpr int kSiteBits = 23;
constexpr uint64_t kSiteMask = (uint64_t{1} << kSiteBits) - 1;

uint64_t EncodeMark(uint32_t epoch, uint32_t site) {
  return uint64_t{epoch} << 32 | site;
}
uint32_t EpochOf(uint64_t mark) { return static_cast<uint32_t>(mark >> 32); }
uint32_t SiteOf(uint64_t mark) { return static_cast<uint32_t>(mark); }

// One access of an element: by which core, whether it writes, its site.
struct Access {
  int core = -1;
  bool write = false;
  uint32_t site = 0;
  bool operator==(const Access&) const = default;
};

// A race found at an access of core c, kept beside c's mark of that kind
// (which says the kind): [63] set, [62..40] the access's site, [39..32] the
// other core, [31] whether the other access writes, [22..0] its site.
uint64_t EncodeRace(uint32_t site, const Access& other) {
  return uint64_t{1} << 63 | uint64_t{site} << 40 |
         static_cast<uint64_t>(other.core) << 32 | uint64_t{other.write} << 31 |
         other.site;
}
// The two accesses of race `race` found by core `core` at its write (else
// read), the one that writes first (the lower core first if both do).
std::pair<Access, Access> DecodeRace(uint64_t race, int core, bool write) {
  const Access here{core, write,
                    static_cast<uint32_t>((race >> 40) & kSiteMask)};
  const Access other{static_cast<int>((race >> 32) & 0xff),
                     ((race >> 31) & 1) != 0,
                     static_cast<uint32_t>(race & kSiteMask)};
  const bool here_first =
      here.write && (!other.write || here.core < other.core);
  return here_first ? std::pair(here, other) : std::pair(other, here);
}

std::string PointString(const int32_t* point, int rank) {
  return absl::StrCat("(", absl::StrJoin(point, point + rank, ", "), ")");
}

}  // namespace

CrossCoreRaces::CrossCoreRaces(const Kernel& kernel, int num_cores,
                               std::vector<Buffer> buffers, int num_sync)
    : kernel_(kernel),
      buffers_(std::move(buffers)),
      cores_(num_cores),
      sync_clocks_(num_sync, std::vector<uint32_t>(num_cores, 0)) {
  for (int c = 0; c < num_cores; ++c) {
    Core& core = cores_[c];
    core.races_ = this;
    core.index_ = c;
    // Epoch 0 is no access: a core's first accesses are at 1, which no
    // other core's clock covers until it acquires.
    core.clock_.assign(num_cores, 0);
    core.clock_[c] = 1;
    core.marks_.reserve(buffers_.size());
    // Races found: allocated at a buffer's first (MarkRun).
    core.found_.resize(buffers_.size());
    for (const Buffer& b : buffers_) {
      core.marks_.emplace_back(TypeOf(b).num_elements());
    }
  }
  for (Core& core : cores_) {
    core.peers_.resize(buffers_.size());
    for (size_t b = 0; b < buffers_.size(); ++b) {
      for (int d = 0; d < num_cores; ++d) {
        if (d != core.index_) {
          core.peers_[b].push_back({d, cores_[d].marks_[b].data()});
        }
      }
    }
  }
}

const ArrayType& CrossCoreRaces::TypeOf(const Buffer& b) const {
  if (b.ref >= 0) return kernel_.refs[b.ref].type;
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
  const std::string type = TypeOf(b).ToString();
  if (b.ref >= 0) {
    const std::string& origin = kernel_.refs[b.ref].origin;
    return absl::StrCat(origin.empty() ? "ref" : origin, " (ref ", b.ref, ", ",
                        type, ")");
  }
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
  for (size_t b = 0; b < races_->buffers_.size(); ++b) {
    // By address too: under shard_map each device has its own.
    const int ref = races_->buffers_[b].ref;
    if (ref >= 0 && races_->buffers_[b].address == refs[ref]) {
      buffer_of_ref_[ref] = static_cast<int>(b);
    }
  }
  site_pcs_.clear();
  site_is_dma_.clear();
  site_points_.clear();
  kernel_site_of_pc_.clear();
  pending_.clear();
}

// Under the caller's lock (see the header). Epochs are 32 bits: a core
// signalling 2^32 - 1 times in one call would wrap.
void CrossCoreRaces::Core::Release(int sync) {
  std::vector<uint32_t>& s = races_->sync_clocks_[sync];
  for (size_t c = 0; c < s.size(); ++c) s[c] = std::max(s[c], clock_[c]);
  ++clock_[index_];
}

void CrossCoreRaces::Core::Acquire(int sync) {
  const std::vector<uint32_t>& s = races_->sync_clocks_[sync];
  for (size_t c = 0; c < s.size(); ++c) clock_[c] = std::max(clock_[c], s[c]);
}

uint32_t CrossCoreRaces::Core::NewSite(uint32_t pc, bool dma) {
  // A kernel instruction in a loop accesses many times at one grid point:
  // one site serves them all.
  if (!dma) {
    if (pc >= kernel_site_of_pc_.size()) kernel_site_of_pc_.resize(pc + 1, 0);
    const uint32_t last = kernel_site_of_pc_[pc];
    if (last != 0 && std::equal(point_, point_ + rank_,
                                site_points_.data() + (last - 1) * rank_)) {
      return last;
    }
  }
  if (site_pcs_.size() >= kMaxSites) {
    return dma ? kUnnamedDmaSite : kUnnamedKernelSite;
  }
  site_pcs_.push_back(pc);
  site_is_dma_.push_back(dma);
  site_points_.insert(site_points_.end(), point_, point_ + rank_);
  const uint32_t site = static_cast<uint32_t>(site_pcs_.size());
  if (!dma) kernel_site_of_pc_[pc] = site;
  return site;
}

void CrossCoreRaces::Core::OnBlockCopy(int buffer, const BlockRegion& r,
                                       bool writes_hbm) {
  ForEachBlockRun(r, [&](int64_t first, int64_t count) {
    MarkRun(buffer, first, count, writes_hbm, 0);
  });
}

void CrossCoreRaces::Core::OnDmaStart(uint64_t serial,
                                      const vm::AccessDesc& src,
                                      const vm::AccessDesc& dst, uint32_t pc) {
  const int src_buffer = buffer_of_ref_[src.base];
  const int dst_buffer = buffer_of_ref_[dst.base];
  if (src_buffer < 0 && dst_buffer < 0) return;
  pending_.push_back(Pending{serial, src_buffer, dst_buffer, src, dst,
                             NewSite(pc, /*dma=*/true)});
}

void CrossCoreRaces::Core::OnRemoteDma(const vm::AccessDesc& src,
                                       uint8_t* const* dst_refs,
                                       const vm::AccessDesc& dst,
                                       uint32_t pc) {
  const int src_buffer = buffer_of_ref_[src.base];
  const int dst_buffer = races_->BufferAt(dst_refs[dst.base]);
  if (src_buffer < 0 && dst_buffer < 0) return;
  const uint32_t site = NewSite(pc, /*dma=*/true);
  if (src_buffer >= 0) MarkRegion(src_buffer, src, false, site);
  if (dst_buffer >= 0) MarkRegion(dst_buffer, dst, true, site);
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

void CrossCoreRaces::Core::OnAccess(int32_t ref, const vm::AccessDesc& region,
                                    bool write, uint32_t pc) {
  const int buffer = buffer_of_ref_[ref];
  if (buffer < 0) return;
  MarkRegion(buffer, region, write, NewSite(pc, /*dma=*/false));
}

void CrossCoreRaces::Core::MarkRegion(int buffer, const vm::AccessDesc& region,
                                      bool write, uint32_t site) {
  // In the buffer's elements: a bitcast view's element may span several,
  // or share one. Consecutive elements are marked as one run (one fence).
  const int64_t es = vm::SizeOf(races_->TypeOf(races_->buffers_[buffer]).dtype);
  const int64_t last_byte = region.elem_size - 1;
  int64_t first = 0, end = 0;
  ForEachElement(region, [&](int64_t, int64_t offset, const int64_t*) {
    if (offset < 0) return;  // read as the fill value, not from HBM
    for (int64_t e = offset / es; e <= (offset + last_byte) / es; ++e) {
      if (e == end - 1) continue;  // shared with the view's last element
      if (e != end) {
        if (end > first) MarkRun(buffer, first, end - first, write, site);
        first = e;
        end = e;
      }
      ++end;
    }
  });
  if (end > first) MarkRun(buffer, first, end - first, write, site);
}

void CrossCoreRaces::Core::MarkRun(int buffer, int64_t first, int64_t count,
                                   bool write, uint32_t site) {
  Marks* marks = marks_[buffer].data() + first;
  const uint64_t mark = EncodeMark(clock_[index_], site);
  for (int64_t i = 0; i < count; ++i) {
    std::atomic_ref<uint64_t>(write ? marks[i].write : marks[i].read)
        .store(mark, std::memory_order_relaxed);
  }
  // Ours stored before theirs are loaded, on both sides (see the header).
  std::atomic_thread_fence(std::memory_order_seq_cst);
  // Most runs race with nothing: one pass over each other core's marks
  // says whether any element does. (Epochs only grow, so what a second
  // load finds is unordered too.)
  const std::vector<Peer>& peers = peers_[buffer];
  bool any = false;
  for (const Peer& p : peers) {
    const uint32_t known = clock_[p.core];
    Marks* theirs = p.marks + first;
    for (int64_t i = 0; i < count; ++i) {
      any |= EpochOf(std::atomic_ref<uint64_t>(theirs[i].write)
                         .load(std::memory_order_relaxed)) > known;
    }
    for (int64_t i = 0; write && i < count; ++i) {
      any |= EpochOf(std::atomic_ref<uint64_t>(theirs[i].read)
                         .load(std::memory_order_relaxed)) > known;
    }
  }
  if (!any) return;
  std::vector<Races>& found = found_[buffer];
  if (found.empty()) found.resize(marks_[buffer].size());
  for (int64_t e = first; e < first + count; ++e) {
    // The first unordered access found, writes before reads and lower
    // cores first: the one Find describes when nothing synchronized.
    Access other;
    for (const Peer& p : peers) {
      const uint64_t w = std::atomic_ref<uint64_t>(p.marks[e].write)
                             .load(std::memory_order_relaxed);
      if (EpochOf(w) > clock_[p.core]) {
        other = {p.core, true, SiteOf(w)};
        break;
      }
    }
    for (size_t j = 0; write && other.core < 0 && j < peers.size(); ++j) {
      const Peer& p = peers[j];
      const uint64_t r = std::atomic_ref<uint64_t>(p.marks[e].read)
                             .load(std::memory_order_relaxed);
      if (EpochOf(r) > clock_[p.core]) other = {p.core, false, SiteOf(r)};
    }
    if (other.core >= 0) {
      (write ? found[e].write : found[e].read) = EncodeRace(site, other);
    }
  }
}

std::string CrossCoreRaces::Core::Describe(bool write, uint32_t site,
                                           std::string* verb) const {
  if (site == 0) {
    *verb = write ? "written back" : "read";
    return absl::StrCat("by ", CoreName(),
                        write ? "" : " (aliased input block)");
  }
  *verb = write ? "written" : "read";
  if (site == kUnnamedDmaSite) return absl::StrCat("by a DMA on ", CoreName());
  if (site == kUnnamedKernelSite) {
    return absl::StrCat("by the kernel on ", CoreName());
  }
  return absl::StrCat(
      site_is_dma_[site - 1] ? "by the DMA started by " : "by the kernel at ",
      InstructionSource(races_->kernel_.program, site_pcs_[site - 1]),
      " at grid point ",
      PointString(site_points_.data() + (site - 1) * rank_, rank_), " on ",
      CoreName());
}

std::string CrossCoreRaces::Core::CoreName() const {
  const int per_device = races_->cores_per_device_;
  if (per_device <= 0) return absl::StrCat("core ", index_);
  return absl::StrCat("device ", index_ / per_device, ", core ",
                      index_ % per_device);
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
    // accesses.
    int64_t first = 0, end = -1;
    std::pair<Access, Access> run;
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
      const auto [x, y] = run;
      std::string verb, other_verb;
      const std::string a = cores_[x.core].Describe(x.write, x.site, &verb);
      const std::string o =
          cores_[y.core].Describe(y.write, y.site, &other_verb);
      absl::StrAppend(description, "race on ", BufferName(buffers_[b]),
                      " element (", absl::StrJoin(index, ", "), ")",
                      end - first > 1
                          ? absl::StrCat(" and ", end - first - 1, " more")
                          : "",
                      ": ", verb, " ", a, " and ",
                      // "written back by core 0 and by core 1"
                      other_verb == verb ? "" : other_verb + " ", o, "\n");
    };
    // What core c found at element e.
    const Core::Races none;
    auto found = [&](int c, int64_t e) -> const Core::Races& {
      const std::vector<Core::Races>& f = cores_[c].found_[b];
      return f.empty() ? none : f[e];
    };
    bool any = false;
    for (const Core& core : cores_) any |= !core.found_[b].empty();
    for (int64_t e = 0; any && e < n; ++e) {
      int found_by = -1;  // the lowest core that found a race here
      for (int c = 0; c < num_cores && found_by < 0; ++c) {
        const Core::Races& f = found(c, e);
        if (f.write != 0 || f.read != 0) found_by = c;
      }
      if (found_by < 0) continue;
      // The lowest core that wrote and the next that wrote, else the
      // lowest other that read, with their last accesses: if these two
      // were found to race (by whichever came second), they are the race.
      Access writer, other;
      for (int c = 0; c < num_cores && other.core < 0; ++c) {
        const uint64_t w = cores_[c].marks_[b][e].write;
        if (w == 0) continue;
        (writer.core < 0 ? writer : other) = {c, true, SiteOf(w)};
      }
      for (int c = 0; writer.core >= 0 && other.core < 0 && c < num_cores;
           ++c) {
        const uint64_t r = cores_[c].marks_[b][e].read;
        if (c != writer.core && r != 0) other = {c, false, SiteOf(r)};
      }
      std::pair<Access, Access> race;
      if (other.core >= 0 &&
          (found(writer.core, e).write == EncodeRace(writer.site, other) ||
           (other.write ? found(other.core, e).write
                        : found(other.core, e).read) ==
               EncodeRace(other.site, writer))) {
        race = {writer, other};
      } else {
        const Core::Races& f = found(found_by, e);
        race =
            DecodeRace(f.write != 0 ? f.write : f.read, found_by, f.write != 0);
      }
      if (e == end && race == run) {
        ++end;
        continue;
      }
      flush();
      first = e;
      end = e + 1;
      run = race;
    }
    flush();
  }
  *racy_elements += racy;
  if (races > kDescribed) {
    absl::StrAppend(description, "... ", racy, " racy elements in all\n");
  }
}

}  // namespace pallasvm::runtime
