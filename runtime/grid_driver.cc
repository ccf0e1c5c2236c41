#include "runtime/grid_driver.h"

#include <algorithm>
#include <cstdlib>
#include <cstring>
#include <new>

#include "absl/container/flat_hash_set.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "runtime/block_copy.h"
#include "vm/interpreter.h"

namespace pallasvm::runtime {

void FillValue(vm::DType dtype, UninitializedMemory mode, uint8_t* out) {
  const int size = vm::SizeOf(dtype);
  std::memset(out, 0, size);
  if (mode == UninitializedMemory::kZero) return;
  auto put = [&](uint64_t v) { std::memcpy(out, &v, size); };
  switch (dtype) {
    case vm::DType::PRED: put(1); break;
    case vm::DType::S8: put(0x7f); break;
    case vm::DType::U8: put(0xff); break;
    case vm::DType::S16: put(0x7fff); break;
    case vm::DType::U16: put(0xffff); break;
    case vm::DType::S32: put(0x7fffffff); break;
    case vm::DType::U32: put(0xffffffff); break;
    case vm::DType::F16: put(0x7e00); break;
    case vm::DType::BF16: put(0x7fc0); break;
    case vm::DType::F32: put(0x7fc00000); break;
  }
}

namespace {

struct AlignedFree {
  void operator()(uint8_t* p) const { std::free(p); }
};
using Buffer = std::unique_ptr<uint8_t, AlignedFree>;

Buffer AllocBuffer(int64_t bytes) {
  const size_t size =
      (static_cast<size_t>(bytes > 0 ? bytes : 1) + 63) / 64 * 64;
  return Buffer(static_cast<uint8_t*>(std::aligned_alloc(64, size)));
}

std::string PointString(const std::vector<int32_t>& idx) {
  return absl::StrCat("(", absl::StrJoin(idx, ", "), ")");
}


// Linear number of a block index, for the revisit check and the map of
// written blocks: dims are numbered by how many blocks fit in the array
// (plus one, so out-of-range indices cannot collide).
int64_t BlockNumber(const BlockMappingSpec& bm,
                    const std::vector<int64_t>& index) {
  int64_t n = 0;
  for (size_t d = 0; d < bm.dims.size(); ++d) {
    const int64_t size =
        bm.dims[d].kind == BlockDimKind::BLOCKED ? bm.dims[d].size : 1;
    const int64_t blocks = (bm.array.shape[d] + size - 1) / size + 1;
    n = n * blocks + index[d];
  }
  return n;
}

// Whether an output's blocks tile its array (no Element dims), so that the
// blocks never written can be found and filled after the grid instead of
// filling the whole output before it.
bool BlocksTileArray(const BlockMappingSpec& bm) {
  for (const BlockDim& d : bm.dims) {
    if (d.kind == BlockDimKind::ELEMENT) return false;
  }
  return true;
}

// Fills, in an output whose blocks tile it, every block whose number is not
// in `written`.
void FillUnwritten(const BlockMappingSpec& bm, std::vector<int64_t>& written,
                   const RunOptions& options, uint8_t* array) {
  std::vector<int64_t> blocks(bm.dims.size());
  int64_t total = 1;
  for (size_t d = 0; d < bm.dims.size(); ++d) {
    const int64_t size =
        bm.dims[d].kind == BlockDimKind::BLOCKED ? bm.dims[d].size : 1;
    blocks[d] = (bm.array.shape[d] + size - 1) / size;
    total *= blocks[d];
  }
  if (total == 0) return;
  std::sort(written.begin(), written.end());
  if (static_cast<int64_t>(written.size()) >= total) {
    // Every block written (numbers are unique per output unless aliased).
    return;
  }
  uint8_t fill[8];
  FillValue(bm.array.dtype, options.uninitialized_memory, fill);
  std::vector<int64_t> index(bm.dims.size(), 0);
  for (int64_t t = 0; t < total; ++t) {
    if (!std::binary_search(written.begin(), written.end(),
                            BlockNumber(bm, index))) {
      BlockRegion r;
      r.rank = static_cast<int>(bm.dims.size());
      r.elem_size = vm::SizeOf(bm.array.dtype);
      for (int d = 0; d < r.rank; ++d) {
        r.array_shape[d] = bm.array.shape[d];
        r.block_shape[d] = bm.dims[d].kind == BlockDimKind::BLOCKED
                               ? bm.dims[d].size
                               : 1;
        r.start[d] = index[d] * r.block_shape[d];
      }
      FillBlockOut(r, fill, array);
    }
    for (int d = static_cast<int>(index.size()) - 1; d >= 0; --d) {
      if (++index[d] < blocks[d]) break;
      index[d] = 0;
    }
  }
}

}  // namespace

struct GridDriver::Workspace {
  Buffer frame;
  std::vector<Buffer> ref_buffers;
  std::vector<uint8_t*> ref_table;
  // Per block mapping: block numbers visited (outputs, revisit check).
  std::vector<absl::flat_hash_set<int64_t>> visited;
  std::vector<std::vector<int64_t>> written;  // per mapping, block numbers
};

GridDriver::GridDriver(std::shared_ptr<const Kernel> kernel)
    : kernel_(std::move(kernel)), ws_(std::make_unique<Workspace>()) {
  const vm::Program& p = kernel_->program;
  ws_->frame = AllocBuffer(p.frame_size);
  std::memset(ws_->frame.get(), 0, p.frame_size);
  vm::InitFrame(p, ws_->frame.get());
  for (const RefSpec& ref : kernel_->refs) {
    ws_->ref_buffers.push_back(AllocBuffer(ref.type.bytes()));
    ws_->ref_table.push_back(ws_->ref_buffers.back().get());
  }
  int64_t points = 1;
  for (int64_t g : kernel_->grid) points *= g;
  ws_->visited.resize(kernel_->block_mappings.size());
  ws_->written.resize(kernel_->block_mappings.size());
  for (size_t m = 0; m < kernel_->block_mappings.size(); ++m) {
    if (kernel_->block_mappings[m].is_output) {
      ws_->visited[m].reserve(static_cast<size_t>(std::min<int64_t>(points, 1 << 20)));
      ws_->written[m].reserve(static_cast<size_t>(std::min<int64_t>(points, 1 << 20)));
    }
  }
}

GridDriver::~GridDriver() = default;

absl::Status GridDriver::Run(absl::Span<const void* const> inputs,
                             absl::Span<void* const> outputs,
                             const RunOptions& options) {
  const Kernel& k = *kernel_;
  const vm::Program& p = k.program;
  uint8_t* frame = ws_->frame.get();
  const int grid_rank = static_cast<int>(k.grid.size());

  // HBM: inputs are read in place; outputs are the caller's buffers. An
  // aliased input is read from its output, which starts as a copy of it.
  std::vector<const uint8_t*> in_hbm(inputs.size());
  for (size_t i = 0; i < inputs.size(); ++i) {
    in_hbm[i] = static_cast<const uint8_t*>(inputs[i]);
  }
  std::vector<bool> out_aliased(outputs.size(), false);
  for (auto [in, out] : k.aliases) {
    std::memmove(outputs[out], inputs[in], k.in_types[in].bytes());
    in_hbm[in] = static_cast<const uint8_t*>(outputs[out]);
    out_aliased[out] = true;
  }
  // Outputs start uninitialized. Where blocks tile the array, only blocks
  // never written back are filled, after the grid; otherwise all of it now.
  for (const BlockMappingSpec& bm : k.block_mappings) {
    if (!bm.is_output || out_aliased[bm.operand] || BlocksTileArray(bm)) {
      continue;
    }
    uint8_t fill[8];
    FillValue(bm.array.dtype, options.uninitialized_memory, fill);
    FillElements(static_cast<uint8_t*>(outputs[bm.operand]),
                 bm.array.num_elements(), fill, vm::SizeOf(bm.array.dtype));
  }
  for (size_t m = 0; m < k.block_mappings.size(); ++m) {
    ws_->visited[m].clear();
    ws_->written[m].clear();
  }
  // SMEM copies of scalar prefetch operands; scratch starts uninitialized.
  for (size_t r = 0; r < k.refs.size(); ++r) {
    const RefSpec& ref = k.refs[r];
    if (ref.kind == RefKind::SCALAR_PREFETCH) {
      std::memcpy(ws_->ref_table[r], in_hbm[ref.operand], ref.type.bytes());
    } else if (ref.kind == RefKind::SCRATCH) {
      uint8_t fill[8];
      FillValue(ref.type.dtype, options.uninitialized_memory, fill);
      FillElements(ws_->ref_table[r], ref.type.num_elements(), fill,
               vm::SizeOf(ref.type.dtype));
    }
  }

  int64_t num_points = 1;
  for (int64_t g : k.grid) num_points *= g;
  std::vector<int32_t> num_programs(k.grid.begin(), k.grid.end());
  std::vector<int32_t> point(grid_rank, 0), next_point(grid_rank, 0);
  vm::ExecContext ctx;
  ctx.frame = frame;
  ctx.refs = ws_->ref_table.data();
  ctx.num_programs = num_programs.data();
  ctx.grid_rank = grid_rank;

  const size_t num_mappings = k.block_mappings.size();
  // Block indices per mapping at the previous, current and next point.
  std::vector<std::vector<int64_t>> prev(num_mappings), cur(num_mappings),
      nxt(num_mappings);

  auto run_index_maps = [&](const std::vector<int32_t>& at,
                            std::vector<std::vector<int64_t>>& result)
      -> absl::Status {
    for (size_t m = 0; m < num_mappings; ++m) {
      const BlockMappingSpec& bm = k.block_mappings[m];
      const vm::Function& f = p.functions[bm.index_map];
      for (int g = 0; g < grid_rank; ++g) {
        std::memcpy(frame + f.param_slots[g], &at[g], 4);
      }
      ctx.program_ids = at.data();
      if (absl::Status s = vm::Execute(p, bm.index_map, ctx); !s.ok()) {
        return absl::Status(
            s.code(), absl::StrCat("kernel '", k.name, "', grid point ",
                                   PointString(at), ", index map of ",
                                   bm.is_output ? "output " : "input ",
                                   bm.operand, ": ", s.message()));
      }
      result[m].resize(f.result_slots.size());
      for (size_t d = 0; d < f.result_slots.size(); ++d) {
        int32_t v;
        std::memcpy(&v, frame + f.result_slots[d], 4);
        result[m][d] = v;
      }
      // The block must start inside the array.
      for (size_t d = 0; d < bm.dims.size(); ++d) {
        const int64_t start = bm.dims[d].kind == BlockDimKind::BLOCKED
                                  ? result[m][d] * bm.dims[d].size
                                  : result[m][d];
        const int64_t extent = bm.array.shape[d];
        if (result[m][d] < 0 || start >= std::max<int64_t>(extent, 1)) {
          return absl::OutOfRangeError(absl::StrCat(
              "kernel '", k.name, "', grid point ", PointString(at),
              ": index map of ", bm.is_output ? "output " : "input ",
              bm.operand, " returned block index (",
              absl::StrJoin(result[m], ", "), "); in dimension ", d,
              " the block starts at element ", start,
              ", outside the array ", bm.array.ToString()));
        }
      }
    }
    return absl::OkStatus();
  };

  auto block_region = [&](const BlockMappingSpec& bm,
                          const std::vector<int64_t>& index) {
    BlockRegion region;
    region.rank = static_cast<int>(bm.dims.size());
    region.elem_size = vm::SizeOf(bm.array.dtype);
    for (int d = 0; d < region.rank; ++d) {
      region.array_shape[d] = bm.array.shape[d];
      const bool squeezed = bm.dims[d].kind == BlockDimKind::SQUEEZED;
      region.block_shape[d] = squeezed ? 1 : bm.dims[d].size;
      region.start[d] = bm.dims[d].kind == BlockDimKind::BLOCKED
                            ? index[d] * bm.dims[d].size
                            : index[d];
    }
    return region;
  };

  if (absl::Status s = run_index_maps(point, cur); !s.ok()) return s;
  for (int64_t t = 0; t < num_points; ++t) {
    // Copy in input blocks whose index changed; check output revisits.
    for (size_t m = 0; m < num_mappings; ++m) {
      const BlockMappingSpec& bm = k.block_mappings[m];
      if (t > 0 && cur[m] == prev[m]) continue;
      if (bm.is_output) {
        if (!out_aliased[bm.operand]) {
          if (!ws_->visited[m].insert(BlockNumber(bm, cur[m])).second) {
            return absl::FailedPreconditionError(absl::StrCat(
                "kernel '", k.name, "', grid point ", PointString(point),
                ": revisited block (", absl::StrJoin(cur[m], ", "),
                ") of output ", bm.operand,
                " after leaving it; its earlier contents were already "
                "written back and would be overwritten. Order the grid so "
                "that each output block's visits are consecutive."));
          }
        }
        continue;
      }
      uint8_t fill[8];
      FillValue(bm.array.dtype, options.uninitialized_memory, fill);
      CopyBlockIn(block_region(bm, cur[m]), in_hbm[bm.operand], fill,
                  ws_->ref_table[bm.ref]);
    }
    ctx.program_ids = point.data();
    if (absl::Status s = vm::Execute(p, 0, ctx); !s.ok()) {
      return absl::Status(
          s.code(), absl::StrCat("kernel '", k.name, "', grid point ",
                                 PointString(point), ": ", s.message()));
    }
    const bool last = t + 1 == num_points;
    if (!last) {
      next_point = point;
      for (int g = grid_rank - 1; g >= 0; --g) {
        if (++next_point[g] < k.grid[g]) break;
        next_point[g] = 0;
      }
      if (absl::Status s = run_index_maps(next_point, nxt); !s.ok()) return s;
    }
    // Write back output blocks that are being left.
    for (size_t m = 0; m < num_mappings; ++m) {
      const BlockMappingSpec& bm = k.block_mappings[m];
      if (!bm.is_output || (!last && nxt[m] == cur[m])) continue;
      CopyBlockOut(block_region(bm, cur[m]), ws_->ref_table[bm.ref],
                   static_cast<uint8_t*>(outputs[bm.operand]));
      ws_->written[m].push_back(BlockNumber(bm, cur[m]));
    }
    std::swap(prev, cur);
    std::swap(cur, nxt);
    point = next_point;
  }
  // Fill the blocks of tiled outputs that were never written back.
  for (size_t m = 0; m < num_mappings; ++m) {
    const BlockMappingSpec& bm = k.block_mappings[m];
    if (!bm.is_output || out_aliased[bm.operand] || !BlocksTileArray(bm)) {
      continue;
    }
    FillUnwritten(bm, ws_->written[m], options,
                  static_cast<uint8_t*>(outputs[bm.operand]));
  }
  return absl::OkStatus();
}

}  // namespace pallasvm::runtime
