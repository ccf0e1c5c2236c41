// Uninitialized-read detection; see uninitialized_reads.h.
#include "runtime/uninitialized_reads.h"

#include <algorithm>
#include <cstring>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "runtime/access_elements.h"

namespace pallasvm::runtime {

namespace {

bool Tracked(const RefSpec& ref) {
  return ref.memory_space != vm::MemorySpace::SEMAPHORE &&
         ref.kind != RefKind::SCALAR_PREFETCH;
}

}  // namespace

UninitializedReads::UninitializedReads(const Kernel& kernel)
    : kernel_(kernel) {}

void UninitializedReads::BeginCall(const int32_t* grid_point, int grid_rank,
                                   bool as_error) {
  point_ = grid_point;
  rank_ = grid_rank;
  as_error_ = as_error;
  dmas_.clear();
  findings_.clear();
  shadow_.resize(kernel_.refs.size());
  for (size_t r = 0; r < kernel_.refs.size(); ++r) {
    const RefSpec& ref = kernel_.refs[r];
    if (!Tracked(ref)) continue;
    shadow_[r].assign(ref.type.bytes(), ref.kind == RefKind::INPUT_HBM
                                            ? kWritten
                                            : kUnwritten);
  }
}

void UninitializedReads::SetAll(int32_t ref, bool written) {
  std::vector<uint8_t>& s = shadow_[ref];
  std::fill(s.begin(), s.end(), written ? kWritten : kUnwritten);
}

void UninitializedReads::SetInputBlock(int32_t ref, int rank,
                                       const int64_t* block_shape,
                                       const int64_t* valid) {
  std::vector<uint8_t>& s = shadow_[ref];
  if (s.empty()) return;
  vm::AccessDesc block;
  block.rank = static_cast<uint8_t>(rank);
  block.elem_size = static_cast<uint8_t>(vm::SizeOf(kernel_.refs[ref].type.dtype));
  for (int d = 0; d < rank; ++d) {
    block.dims[d].extent = block_shape[d];
    block.dims[d].size = block_shape[d];
  }
  ForEachElement(block, [&](int64_t, int64_t offset, const int64_t* index) {
    bool data = true;
    for (int d = 0; d < rank; ++d) data &= index[d] < valid[d];
    std::memset(&s[offset], data ? kWritten : kUnwritten, block.elem_size);
  });
}

std::string UninitializedReads::PointString() const {
  if (point_ == nullptr) return "()";
  return absl::StrCat("(", absl::StrJoin(point_, point_ + rank_, ", "), ")");
}

absl::Status UninitializedReads::OnAccess(int32_t ref,
                                          const vm::AccessDesc* region,
                                          vm::AccessKind kind,
                                          const uint8_t* mask, uint32_t pc) {
  std::vector<uint8_t>& s = shadow_[ref];
  if (s.empty() || kind == vm::AccessKind::kMaskedRead) {
    return absl::OkStatus();
  }
  const vm::AccessDesc whole =
      region == nullptr ? WholeRef(kernel_.refs[ref], ref) : vm::AccessDesc();
  const vm::AccessDesc& a = region == nullptr ? whole : *region;
  const int size = a.elem_size;
  const bool reads =
      kind == vm::AccessKind::kRead || kind == vm::AccessKind::kUpdate;
  if (reads) {
    Finding found;
    ForEachElement(a, [&](int64_t, int64_t offset, const int64_t* index) {
      State state = kWritten;
      if (offset >= 0) {
        for (int b = 0; b < size; ++b) {
          if (s[offset + b] != kWritten) state = static_cast<State>(s[offset + b]);
        }
        if (state == kWritten) return;
      }
      if (found.elements++ == 0) {
        found.element.assign(index, index + a.rank);
        found.state = state;
        found.outside = offset < 0;
      }
    });
    if (found.elements > 0 && as_error_) {
      found.point = PointString();
      return absl::FailedPreconditionError(
          Describe(ref, pc, found, /*as_error=*/true));
    }
    if (found.elements > 0) {
      Finding& f = findings_[{pc, ref}];
      if (f.points++ == 0) {
        f.element = std::move(found.element);
        f.state = found.state;
        f.outside = found.outside;
        f.point = PointString();
      }
      f.elements += found.elements;
    }
  }
  if (vm::IsWrite(kind)) {
    ForEachElement(a, [&](int64_t i, int64_t offset, const int64_t*) {
      if (offset < 0 || (mask != nullptr && mask[i] == 0)) return;
      std::memset(&s[offset], kWritten, size);
    });
  }
  return absl::OkStatus();
}

void UninitializedReads::OnDmaStart(uint64_t serial, const vm::AccessDesc& src,
                                    const vm::AccessDesc& dst, int dst_sem) {
  dmas_.push_back(Dma{serial, src, dst, dst_sem, false, {}});
  std::vector<uint8_t>& s = shadow_[dst.base];
  if (s.empty()) return;
  ForEachElement(dst, [&](int64_t, int64_t offset, const int64_t*) {
    if (offset >= 0) std::memset(&s[offset], kDmaPending, dst.elem_size);
  });
}

void UninitializedReads::MarkWritten(const vm::AccessDesc& region) {
  std::vector<uint8_t>& s = shadow_[region.base];
  if (s.empty()) return;
  ForEachElement(region, [&](int64_t, int64_t offset, const int64_t*) {
    if (offset >= 0) std::memset(&s[offset], kWritten, region.elem_size);
  });
}

void UninitializedReads::OnDmaDone(uint64_t serial) {
  for (Dma& dma : dmas_) {
    if (dma.serial != serial) continue;
    dma.done = true;
    const std::vector<uint8_t>& s = shadow_[dma.src.base];
    const int size = dma.src.elem_size;
    ForEachElement(dma.src, [&](int64_t, int64_t offset, const int64_t*) {
      // What a pending DMA has not delivered yet is not there to copy.
      bool written = s.empty() && offset >= 0;
      if (!s.empty() && offset >= 0) {
        written = std::all_of(&s[offset], &s[offset] + size,
                              [](uint8_t b) { return b == kWritten; });
      }
      dma.shadow.push_back(written ? kWritten : kUnwritten);
    });
    return;
  }
}

void UninitializedReads::OnWait(int sem) {
  auto delivered = [&](Dma& dma) {
    if (!dma.done || dma.dst_sem != sem) return false;
    std::vector<uint8_t>& s = shadow_[dma.dst.base];
    if (!s.empty()) {
      ForEachElement(dma.dst, [&](int64_t i, int64_t offset, const int64_t*) {
        if (offset >= 0) {
          std::memset(&s[offset], dma.shadow[i], dma.dst.elem_size);
        }
      });
    }
    return true;
  };
  dmas_.erase(std::remove_if(dmas_.begin(), dmas_.end(), delivered),
              dmas_.end());
}

std::string UninitializedReads::Describe(int32_t ref, uint32_t pc,
                                         const Finding& f,
                                         bool as_error) const {
  const RefSpec& spec = kernel_.refs[ref];
  std::string why;
  if (f.outside && !spec.padded_shape.empty()) {
    why = absl::StrCat("it lies outside the ref's shape, in its padding to ",
                       ArrayType{spec.type.dtype, spec.padded_shape}.ToString(),
                       " or beyond (buffer_bounds='padded' and "
                       "out_of_bounds_reads='uninitialized' read the fill "
                       "value there)");
  } else if (f.outside) {
    why = "it lies outside the ref's shape (its padding under "
          "buffer_bounds='padded', or out_of_bounds_reads='uninitialized', "
          "reads the fill value there)";
  } else if (f.state == kDmaPending) {
    why = "a DMA into it has started but its semaphore has not been waited "
          "on, so its data has not arrived";
  } else {
    switch (spec.kind) {
      case RefKind::INPUT_BLOCK:
        why = absl::StrCat("it is padding of a block that hangs over the "
                           "edge of input ", spec.operand, "'s array");
        break;
      case RefKind::OUTPUT_BLOCK:
        why = "nothing has written it since the output block's index last "
              "changed";
        break;
      case RefKind::SCRATCH:
        why = "the scratch buffer has not been written there in this call";
        break;
      case RefKind::SCOPED:
        why = "the run_scoped buffer has not been written there since its "
              "scope began";
        break;
      case RefKind::OUTPUT_HBM:
        why = "the HBM output has not been written there in this call";
        break;
      default:
        why = "nothing has written it";
    }
  }
  const std::string what = absl::StrCat(
      "element (", absl::StrJoin(f.element, ", "), ") of ",
      spec.origin.empty() ? "ref" : spec.origin, " (ref ", ref, ", ",
      spec.type.ToString(), ")");
  // An error is prefixed with the grid point and suffixed with the source
  // line by the runtime and the VM; a warning stands alone.
  if (as_error) {
    return absl::StrCat("uninitialized read of ", what,
                        ", which nothing has written: ", why);
  }
  return absl::StrCat(
      "uninitialized read: ", InstructionSource(kernel_.program, pc),
      " reads ", what, " at grid point ", f.point,
      f.elements > 1 ? absl::StrCat(", and ", f.elements - 1, " more elements")
                     : "",
      f.points > 1 ? absl::StrCat(" in ", f.points, " executions") : "",
      ", which nothing has written: ", why);
}

void UninitializedReads::TakeWarnings(std::vector<std::string>* out) {
  for (const auto& [key, f] : findings_) {
    out->push_back(Describe(key.second, key.first, f, /*as_error=*/false));
  }
  findings_.clear();
}

}  // namespace pallasvm::runtime
