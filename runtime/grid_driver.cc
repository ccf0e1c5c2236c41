#include "runtime/grid_driver.h"

#include <algorithm>
#include <array>
#include <cstdlib>
#include <cstring>
#include <new>
#include <optional>
#include <thread>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "runtime/block_copy.h"
#include "runtime/cross_core_races.h"
#include "runtime/memory_model.h"
#include "vm/interpreter.h"
#include "runtime/core_sync.h"
#include "vm/interrupt.h"
#include "vm/kernels/flush_denormals.h"
#include "vm/memory_limit.h"

namespace pallasvm::runtime {

using vm::CheckedAdd;
using vm::CheckedMul;
using vm::CheckMemory;
using vm::FormatBytes;

void FillValue(vm::DType dtype, UninitializedMemory mode, uint8_t* out) {
  const int size = vm::SizeOf(dtype);
  std::memset(out, 0, size);
  if (mode == UninitializedMemory::kZero) return;
  auto put = [&](uint64_t v) { std::memcpy(out, &v, size); };
  switch (dtype) {
    case vm::DType::PRED:
      put(1);
      break;
    case vm::DType::S8:
      put(0x7f);
      break;
    case vm::DType::U8:
      put(0xff);
      break;
    case vm::DType::S16:
      put(0x7fff);
      break;
    case vm::DType::U16:
      put(0xffff);
      break;
    case vm::DType::S32:
      put(0x7fffffff);
      break;
    case vm::DType::U32:
      put(0xffffffff);
      break;
    case vm::DType::F16:
      put(0x7e00);
      break;
    case vm::DType::BF16:
      put(0x7fc0);
      break;
    case vm::DType::F32:
      put(0x7fc00000);
      break;
  }
}

namespace {

struct AlignedFree {
  void operator()(uint8_t* p) const { std::free(p); }
};
using Buffer = std::unique_ptr<uint8_t, AlignedFree>;

// 64-aligned storage for `bytes` (at least one byte); null if the
// allocation fails.
Buffer AllocBuffer(int64_t bytes) {
  const size_t size =
      (static_cast<size_t>(bytes > 0 ? bytes : 1) + 63) / 64 * 64;
  return Buffer(static_cast<uint8_t*>(std::aligned_alloc(64, size)));
}


// "0.25 s".
std::string Seconds(std::chrono::nanoseconds d) {
  return absl::StrFormat("%g s", std::chrono::duration<double>(d).count());
}

std::string PointString(const std::vector<int32_t>& idx) {
  return absl::StrCat("(", absl::StrJoin(idx, ", "), ")");
}

// Linear number of a block index, for the revisit check and the map of
// written blocks: dims are numbered by how many blocks fit in the array
// (plus one, so out-of-range indices cannot collide).
int64_t BlockNumber(const BlockMappingSpec& bm, const int64_t* index) {
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

// Fills, in an output whose blocks tile it, every block not marked in
// `written` (indexed by BlockNumber).
void FillUnwritten(const BlockMappingSpec& bm,
                   const std::vector<uint8_t>& written, const uint8_t* fill,
                   uint8_t* array) {
  std::vector<int64_t> blocks(bm.dims.size());
  int64_t total = 1;
  for (size_t d = 0; d < bm.dims.size(); ++d) {
    const int64_t size =
        bm.dims[d].kind == BlockDimKind::BLOCKED ? bm.dims[d].size : 1;
    blocks[d] = (bm.array.shape[d] + size - 1) / size;
    total *= blocks[d];
  }
  std::vector<int64_t> index(bm.dims.size(), 0);
  for (int64_t t = 0; t < total; ++t) {
    if (!written[BlockNumber(bm, index.data())]) {
      BlockRegion r;
      r.rank = static_cast<int>(bm.dims.size());
      r.elem_size = vm::SizeOf(bm.array.dtype);
      for (int d = 0; d < r.rank; ++d) {
        r.array_shape[d] = bm.array.shape[d];
        r.block_shape[d] =
            bm.dims[d].kind == BlockDimKind::BLOCKED ? bm.dims[d].size : 1;
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

// Per block mapping, what a grid step needs, precomputed at construction.
struct MappingPlan {
  BlockRegion region;                   // start[] is set per block
  int64_t start_scale[vm::kMaxRank];    // block size for Blocked dims, else 1
  int64_t num_blocks = 0;               // range of BlockNumber, for the bitmaps
  int64_t number_stride[vm::kMaxRank];  // BlockNumber = sum index * stride
  bool tiles = false;                   // BlocksTileArray
  // The mapping of an HBM operand (pl.ANY / pltpu.HBM): its ref is the
  // whole operand in place, so nothing is copied and no index map runs.
  bool hbm = false;
  // An index map whose body is just RETURN (each result is a grid index or
  // a constant, as in `lambda i, j: (i, 0)`) is evaluated here, without a
  // call into the VM: grid_axis[d] >= 0 names the grid index, else the
  // result is constant[d].
  bool direct = false;
  int grid_axis[vm::kMaxRank];
  int32_t constant[vm::kMaxRank];
  // Whether the block buffer may be the array itself (see
  // RunOptions::elide_block_copies): the block is one contiguous run of the
  // array wherever it starts, its ref is that run byte for byte, the kernel
  // has no DMAs or semaphores (they hold refs' addresses), and the kernel
  // never writes the ref (an input) or starts by storing it whole (an
  // output). Per block, it must also lie inside the array.
  bool in_place = false;
};

struct BlockIndex {
  int64_t v[vm::kMaxRank];
};

// One simulated TensorCore: its VMEM/SMEM buffers (blocks and scratch), its
// VM frame, and its view of the grid walk.
struct CoreState {
  Buffer frame;
  std::vector<Buffer> ref_buffers;
  std::vector<uint8_t*> ref_table;
  std::vector<uint64_t> ref_fills;  // per ref, for OutOfBoundsReads
  // Per ref: 1 while it holds an input block outside its array, which the
  // kernel must not read (ExecContext::unreadable_refs), and how many do.
  std::vector<uint8_t> unreadable;
  int num_unreadable = 0;
  std::vector<MappingPlan> plans;  // region.start is this core's
  std::vector<uint8_t> in_place;   // per mapping, this call (RunCore)
  // Block indices per mapping at the previous, current and next point.
  std::vector<BlockIndex> prev, cur, next;
  // Per output mapping: blocks visited (revisit check) and written back.
  std::vector<std::vector<uint8_t>> visited, written;
  // DMAs, semaphores and run_scoped (runtime/memory_model.h).
  std::unique_ptr<CoreMachine> machine;
  std::vector<std::string> warnings;  // this call's, merged after the grid
};

struct GridDriver::Workspace {
  std::vector<MappingPlan> plans;
  std::vector<std::unique_ptr<CoreState>> cores;  // made on first use
  // Per ref: an HBM input a DMA writes, and the call's copy of it.
  std::vector<bool> hbm_inputs_written;
  std::vector<Buffer> hbm_input_copies;
};

namespace {

// An input block whose index map put it outside its array (a negative
// index, or a block starting past the end) holds what interpret mode's numpy
// slicing puts there, so that a kernel that only computes such an index (as
// a "no block needed" marker) runs as it does under interpret mode: per
// dimension, numpy's slice x[start:start+size] (negative bounds counted from
// the end, then clamped) or, for a squeezed dimension, the integer index
// x[i] (negative from the end; outside: all fill) lands at the block's first
// elements, the rest is fill. Returns whether the block is outside its array
// and, if so, sets region.start and limit to that slice.
bool InputBlockOutsideArray(const BlockMappingSpec& bm, BlockRegion& region,
                            int64_t* limit) {
  bool outside = false;
  for (int d = 0; d < region.rank; ++d) {
    const int64_t n = region.array_shape[d];
    outside |= region.start[d] < 0 || region.start[d] >= std::max<int64_t>(n, 1);
  }
  if (!outside) return false;
  for (int d = 0; d < region.rank; ++d) {
    const int64_t n = region.array_shape[d];
    int64_t lo = region.start[d];
    if (bm.dims[d].kind == BlockDimKind::SQUEEZED) {
      if (lo < 0) lo += n;
      const bool in = lo >= 0 && lo < n;
      region.start[d] = in ? lo : 0;
      limit[d] = in ? 1 : 0;
      continue;
    }
    int64_t hi = region.start[d] + region.block_shape[d];
    auto normalize = [n](int64_t i) {
      if (i < 0) i += n;
      return std::clamp<int64_t>(i, 0, n);
    };
    lo = normalize(lo);
    hi = normalize(hi);
    region.start[d] = lo;
    limit[d] = std::max<int64_t>(hi - lo, 0);
  }
  return true;
}

// Whether `in` may read or write ref `ref` (conservative: any operand that
// names it, whatever the format).
bool MayTouchRef(const vm::Program& p, const vm::Instr& in, int ref) {
  const vm::Format f = vm::Info(in.op).format;
  if (vm::IsMachineOp(in.op)) return true;
  if ((f == vm::Format::ACCESS_LOAD || f == vm::Format::ACCESS_STORE ||
       f == vm::Format::ACCESS_MASKED_STORE) &&
      (in.d >= p.accesses.size() ||
       (p.accesses[in.d].base_kind == vm::AccessBase::REF &&
        p.accesses[in.d].base == ref))) {
    return true;
  }
  const uint32_t r = static_cast<uint32_t>(ref);
  return ((in.aux & vm::kOperandRefA) && in.a == r) ||
         ((in.aux & vm::kOperandRefB) && in.b == r) ||
         ((in.aux & vm::kOperandRefC) && in.c == r);
}

// Whether `in` may write ref `ref`: anything that may touch it except a
// load from it.
bool MayWriteRef(const vm::Program& p, const vm::Instr& in, int ref) {
  if (!MayTouchRef(p, in, ref)) return false;
  const vm::Format f = vm::Info(in.op).format;
  if (f == vm::Format::ACCESS_LOAD) return false;
  // A block source (bit B or C) is read; only the access or bit A writes.
  const uint32_t r = static_cast<uint32_t>(ref);
  if (f != vm::Format::ACCESS_STORE && f != vm::Format::ACCESS_MASKED_STORE &&
      !vm::IsMachineOp(in.op) && !((in.aux & vm::kOperandRefA) && in.a == r)) {
    return false;
  }
  return true;
}

// Whether the kernel body (function 0) surely stores ref `ref` whole before
// anything else reads or writes it: the first instruction that may touch
// it is a plain STORE of all of it from the frame, reached on every path
// (no jump, branch, return or machine operation before it).
bool StoresWholeFirst(const vm::Program& p, int ref) {
  if (p.functions.empty()) return false;
  for (size_t pc = p.functions[0].entry_pc; pc < p.code.size(); ++pc) {
    const vm::Instr& in = p.code[pc];
    const vm::Format f = vm::Info(in.op).format;
    if (f == vm::Format::JUMP || f == vm::Format::BRANCH ||
        in.op == vm::Op::RETURN || vm::IsMachineOp(in.op)) {
      return false;
    }
    if (!MayTouchRef(p, in, ref)) continue;
    if (in.op != vm::Op::STORE || (in.aux & vm::kOperandRefB) ||
        in.d >= p.accesses.size()) {
      return false;
    }
    const vm::AccessDesc& a = p.accesses[in.d];
    if (a.base_kind != vm::AccessBase::REF || a.base != ref || a.clamp) {
      return false;
    }
    int64_t elements = 1;
    for (int i = 0; i < a.rank; ++i) {
      const vm::AccessDim& d = a.dims[i];
      if (d.start_slot >= 0 || d.start != 0 || d.size != d.extent ||
          d.stride != 1) {
        return false;
      }
      elements *= d.extent;
    }
    return static_cast<size_t>(ref) < p.ref_sizes.size() &&
           p.ref_sizes[ref] == elements * a.elem_size;
  }
  return false;
}

// Whether every block of `region`'s shape is one contiguous run of the
// array (row-major): leading dims of size 1, then one partial dim, then
// whole dims.
bool BlockIsContiguous(const BlockRegion& region) {
  int d = 0;
  while (d < region.rank && region.block_shape[d] == 1) ++d;
  for (++d; d < region.rank; ++d) {
    if (region.block_shape[d] != region.array_shape[d]) return false;
  }
  return true;
}

// The byte offset of the block at region.start in its array, if the block
// lies inside the array; else -1.
int64_t InPlaceOffset(const BlockRegion& region) {
  int64_t offset = 0;
  for (int d = 0; d < region.rank; ++d) {
    if (region.start[d] < 0 ||
        region.start[d] + region.block_shape[d] > region.array_shape[d]) {
      return -1;
    }
    offset = offset * region.array_shape[d] + region.start[d];
  }
  return offset * region.elem_size;
}

// The error for a kernel that reads an input block outside its array, from
// the VM's ("read of ref R ... at <source>").
absl::Status UnreadableBlockError(const Kernel& k,
                                  const std::vector<BlockIndex>& blocks,
                                  int32_t ref, const std::string& where,
                                  absl::string_view vm_message) {
  std::string block = "?", input = "?", array = "?";
  for (size_t m = 0; m < k.block_mappings.size(); ++m) {
    const BlockMappingSpec& bm = k.block_mappings[m];
    if (bm.ref != ref || bm.is_output) continue;
    std::vector<int64_t> v(blocks[m].v, blocks[m].v + bm.dims.size());
    block = absl::StrCat("(", absl::StrJoin(v, ", "), ")");
    input = absl::StrCat(bm.operand);
    array = bm.array.ToString();
  }
  const size_t at = vm_message.find(" at ");
  const absl::string_view source =
      at == absl::string_view::npos ? vm_message : vm_message.substr(at + 4);
  return absl::OutOfRangeError(absl::StrCat(
      where, ": Out-of-bounds block index ", block, " for input ", input,
      ": the kernel reads the block at ", source,
      ", but its index map put it outside the array ", array,
      " (interpret mode's out_of_bounds_reads=\"uninitialized\" reads what "
      "numpy slicing gives there instead)"));
}

// Core `index`'s workspace; RESOURCE_EXHAUSTED naming the buffer if an
// allocation fails (the caller has checked the total against the limit).
absl::StatusOr<std::unique_ptr<CoreState>> NewCore(
    const Kernel& k, const std::vector<MappingPlan>& plans, int index) {
  auto core = std::make_unique<CoreState>();
  const vm::Program& p = k.program;
  auto failed = [&](absl::string_view what, int64_t bytes) {
    return absl::ResourceExhaustedError(
        absl::StrCat("kernel '", k.name, "': cannot allocate ", what, " (",
                     FormatBytes(bytes), ") for core ", index));
  };
  core->frame = AllocBuffer(p.frame_size);
  if (core->frame == nullptr) return failed("the VM frame", p.frame_size);
  std::memset(core->frame.get(), 0, p.frame_size);
  vm::InitFrame(p, core->frame.get());
  for (size_t r = 0; r < k.refs.size(); ++r) {
    const RefSpec& ref = k.refs[r];
    if (IsHbmOperand(ref.kind)) {
      // The caller's buffer, bound at each call.
      core->ref_buffers.emplace_back();
      core->ref_table.push_back(nullptr);
      continue;
    }
    core->ref_buffers.push_back(AllocBuffer(ref.type.bytes()));
    if (core->ref_buffers.back() == nullptr) {
      return failed(absl::StrCat("ref ", r, " (", RefKindName(ref.kind), " ",
                                 ref.type.ToString(), ")"),
                    ref.type.bytes());
    }
    core->ref_table.push_back(core->ref_buffers.back().get());
  }
  core->ref_fills.assign(k.refs.size(), 0);
  core->unreadable.assign(k.refs.size(), 0);
  core->machine = std::make_unique<CoreMachine>(k, core->ref_table.data());
  const size_t n = k.block_mappings.size();
  core->plans = plans;
  core->prev.resize(n);
  core->cur.resize(n);
  core->next.resize(n);
  core->visited.resize(n);
  core->written.resize(n);
  for (size_t m = 0; m < n; ++m) {
    if (k.block_mappings[m].is_output &&
        plans[m].num_blocks <= (int64_t{1} << 26)) {
      core->visited[m].assign(plans[m].num_blocks, 0);
      core->written[m].assign(plans[m].num_blocks, 0);
    }
  }
  return core;
}

// What every core of one call shares: read-only after setup.
struct CallState {
  const Kernel* kernel;
  const RunOptions* options;
  std::vector<int64_t> grid;  // with dynamic dimensions resolved
  std::vector<const uint8_t*> in_hbm;
  std::vector<uint8_t*> out_hbm;
  std::vector<bool> out_aliased;
  // Per ref: the buffer an HBM operand ref is bound to (null for others).
  std::vector<uint8_t*> hbm_refs;
  std::vector<std::array<uint8_t, 8>> fills;  // per mapping
  // Races between cores (null unless detected on several cores), and per
  // block mapping the shared buffer its block copies touch (-1: none).
  CrossCoreRaces* cross_core = nullptr;
  std::vector<int> mapping_buffer;
  // Several cores: what they share (runtime/core_sync.h); null on one.
  CoreSync* sync = nullptr;
  // The number of this device's core 0 in cross_core (devices meeting).
  int race_core_base = 0;
  // This device's mesh coordinates (RunOptions::device_coords).
  std::vector<int32_t> device_coords;
  // RunOptions' deadline (resolved: max() for none) and the timeout it
  // came from (0: options.deadline).
  bool interruptible = false;
  vm::Interrupt::Clock::time_point deadline;
  std::chrono::nanoseconds timeout{0};
};

bool SameBlock(const BlockIndex& a, const BlockIndex& b, int rank) {
  for (int d = 0; d < rank; ++d) {
    if (a.v[d] != b.v[d]) return false;
  }
  return true;
}

// Runs loop indices [begin, end) of the grid (row-major numbering) on one
// core, with interpret mode's per-core semantics: the core's first
// iteration copies every input block in; afterwards blocks move only when
// their index changes.
absl::Status RunCore(const CallState& call, CoreState& core, int core_index,
                     int64_t begin, int64_t end) {
  // Subnormals flushed as on XLA:CPU (vm/kernels/flush_denormals.h).
  vm::kernels::FlushDenormals flush_denormals;
  const Kernel& k = *call.kernel;
  const vm::Program& p = k.program;
  const RunOptions& options = *call.options;
  uint8_t* frame = core.frame.get();
  const std::vector<int64_t>& grid = call.grid;
  const int grid_rank = static_cast<int>(grid.size());
  const size_t num_mappings = k.block_mappings.size();

  // Scalar prefetch operands are copied to SMEM; scratch and output block
  // buffers start uninitialized, once per call: an output block is never
  // loaded, so what a kernel leaves unwritten in it is the fill value or,
  // after the first block, what the previous block left (as on a TPU and
  // in interpret mode, which also reuse one buffer).
  const bool fill_oob_reads =
      options.out_of_bounds_reads == OutOfBoundsReads::kUninitialized;
  // Block refs are their own buffers again (a block read or written in
  // place points into HBM only while it is being visited), also on the
  // way out, whatever the way.
  auto own_buffers = [&] {
    for (size_t r = 0; r < k.refs.size(); ++r) {
      if (k.refs[r].kind == RefKind::INPUT_BLOCK ||
          k.refs[r].kind == RefKind::OUTPUT_BLOCK) {
        core.ref_table[r] = core.ref_buffers[r].get();
      }
    }
  };
  own_buffers();
  struct OnExit {
    decltype(own_buffers)& f;
    ~OnExit() { f(); }
  } restore_buffers{own_buffers};
  for (size_t r = 0; r < k.refs.size(); ++r) {
    const RefSpec& ref = k.refs[r];
    uint8_t* fill = reinterpret_cast<uint8_t*>(&core.ref_fills[r]);
    FillValue(ref.type.dtype, options.uninitialized_memory, fill);
    if (IsHbmOperand(ref.kind)) {
      core.ref_table[r] = call.hbm_refs[r];
    } else if (ref.kind == RefKind::SCALAR_PREFETCH) {
      std::memcpy(core.ref_table[r], call.in_hbm[ref.operand],
                  ref.type.bytes());
    } else if (((ref.kind == RefKind::SCRATCH &&
                 (call.sync == nullptr || !CoreSync::IsShared(ref))) ||
                ref.kind == RefKind::OUTPUT_BLOCK) &&
               ref.memory_space != vm::MemorySpace::SEMAPHORE) {
      // (A device-shared scratch buffer is filled once, by Run.)
      FillElements(core.ref_table[r], ref.type.num_elements(), fill,
                   vm::SizeOf(ref.type.dtype));
    }
  }
  // The grid point being run, updated in place (the machine's reports
  // read it).
  int32_t point[vm::kMaxRank] = {}, next_point[vm::kMaxRank] = {};
  // The device's mesh coordinates follow the grid's (PROGRAM_ID past the
  // grid: lax.axis_index of a mesh axis).
  for (size_t i = 0; i < call.device_coords.size(); ++i) {
    point[grid_rank + i] = next_point[grid_rank + i] = call.device_coords[i];
  }
  CoreMachine::CallOptions machine_options;
  machine_options.dma_mode = options.dma_execution_mode;
  machine_options.fills = core.ref_fills.data();
  machine_options.detect_races = options.detect_races;
  CrossCoreRaces::Core* marks =
      call.cross_core ? &call.cross_core->core(call.race_core_base + core_index)
                      : nullptr;
  if (marks != nullptr) {
    marks->BeginCall(core.ref_table.data(), point, grid_rank);
  }
  machine_options.cross_core = marks;
  machine_options.uninitialized_reads = options.uninitialized_reads;
  machine_options.grid_point = point;
  machine_options.grid_rank = grid_rank;
  machine_options.core = core_index;
  machine_options.sync = call.sync;
  machine_options.device = options.device;
  machine_options.lock_semaphores =
      call.sync != nullptr && k.signals_other_cores;
  core.machine->BeginCall(machine_options);
  UninitializedReads* uninit = core.machine->uninitialized_reads();
  if (uninit != nullptr) {
    for (size_t r = 0; r < k.refs.size(); ++r) {
      if (k.refs[r].kind == RefKind::OUTPUT_HBM &&
          call.out_aliased[k.refs[r].operand]) {
        uninit->SetAll(static_cast<int32_t>(r), true);
      }
    }
  }
  core.warnings.clear();
  for (size_t m = 0; m < num_mappings; ++m) {
    std::fill(core.visited[m].begin(), core.visited[m].end(), 0);
    std::fill(core.written[m].begin(), core.written[m].end(), 0);
  }
  if (begin >= end) return absl::OkStatus();

  // Per mapping: whether its blocks may be read or written in place this
  // call (RunOptions::elide_block_copies). Not while a check watches the
  // block buffers; an input not if it shares bytes with an output (whose
  // write-backs it would then see early).
  const bool elide = options.elide_block_copies && !options.detect_races &&
                     options.uninitialized_reads ==
                         UninitializedReadsCheck::kOff &&
                     marks == nullptr && uninit == nullptr;
  std::vector<uint8_t>& in_place = core.in_place;
  in_place.assign(num_mappings, 0);
  for (size_t m = 0; elide && m < num_mappings; ++m) {
    const BlockMappingSpec& bm = k.block_mappings[m];
    if (!core.plans[m].in_place) continue;
    if (bm.is_output) {
      in_place[m] = !call.out_aliased[bm.operand];
      continue;
    }
    const uint8_t* lo = call.in_hbm[bm.operand];
    const uint8_t* hi = lo + bm.array.bytes();
    in_place[m] = true;
    for (size_t j = 0; j < call.out_hbm.size(); ++j) {
      const uint8_t* olo = call.out_hbm[j];
      const uint8_t* ohi = olo + k.out_types[j].bytes();
      if (lo < ohi && olo < hi) in_place[m] = false;
    }
  }

  const auto& coords = options.grid_coordinates;
  int32_t num_programs[vm::kMaxRank] = {};
  int32_t loop[vm::kMaxRank] = {}, next_loop[vm::kMaxRank] = {};
  for (int g = 0; g < grid_rank; ++g) {
    num_programs[g] = static_cast<int32_t>(grid[g]);
  }
  // Loop indices run row-major; the grid point's coordinates are their
  // images under options.grid_coordinates.
  auto to_point = [&](const int32_t* l, int32_t* pt) {
    for (int g = 0; g < grid_rank; ++g) {
      pt[g] = coords.empty() || coords[g].empty() ? l[g] : coords[g][l[g]];
    }
  };
  for (int64_t rest = begin, g = grid_rank - 1; g >= 0; --g) {
    loop[g] = static_cast<int32_t>(rest % grid[g]);
    rest /= grid[g];
  }
  to_point(loop, point);

  // Deadline and cancellation: polled at the kernel's back edges and here,
  // between grid points.
  std::optional<vm::Interrupt> interrupt;
  if (call.interruptible || call.sync != nullptr) {
    interrupt.emplace(call.deadline, options.cancel, call.timeout,
                      call.sync ? call.sync->stop() : nullptr);
  }
  vm::ExecContext ctx;
  ctx.interrupt = interrupt ? &*interrupt : nullptr;
  ctx.frame = frame;
  ctx.refs = core.ref_table.data();
  ctx.num_programs = num_programs;
  ctx.grid_rank = grid_rank;
  ctx.num_device_axes = static_cast<int32_t>(call.device_coords.size());
  ctx.ref_fills = core.ref_fills.data();
  ctx.fill_out_of_bounds_reads = fill_oob_reads;
  ctx.machine = core.machine.get();
  ctx.observe_accesses =
      options.detect_races ||
      options.uninitialized_reads != UninitializedReadsCheck::kOff;
  int32_t unreadable_read = -1;
  ctx.unreadable_ref_read = &unreadable_read;
  std::fill(core.unreadable.begin(), core.unreadable.end(), 0);
  core.num_unreadable = 0;

  auto where = [&](const int32_t* at, bool name_core = false) {
    return absl::StrCat("kernel '", k.name, "', grid point ",
                        PointString(std::vector<int32_t>(at, at + grid_rank)),
                        core_index > 0 || name_core
                            ? absl::StrCat(" (core ", core_index, ")")
                            : std::string());
  };
  // An error from the VM at grid point `at`; interrupts name the core
  // always (the caller may not know which core was stuck).
  auto vm_error = [&](const int32_t* at, absl::string_view what,
                      const absl::Status& s) {
    const bool interrupted = s.code() == absl::StatusCode::kDeadlineExceeded ||
                             s.code() == absl::StatusCode::kCancelled;
    return absl::Status(s.code(), absl::StrCat(where(at, interrupted), what,
                                               ": ", s.message()));
  };
  auto run_index_maps = [&](const int32_t* at,
                            std::vector<BlockIndex>& result) -> absl::Status {
    ctx.program_ids = at;
    for (size_t m = 0; m < num_mappings; ++m) {
      const BlockMappingSpec& bm = k.block_mappings[m];
      const vm::Function& f = p.functions[bm.index_map];
      const MappingPlan& plan = core.plans[m];
      if (plan.hbm) continue;
      auto map_name = [&] {
        return absl::StrCat(where(at), ", index map of ",
                            bm.is_output ? "output " : "input ", bm.operand);
      };
      if (!plan.direct) {
        for (int g = 0; g < grid_rank; ++g) {
          std::memcpy(frame + f.param_slots[g], &at[g], 4);
        }
        if (absl::Status s = vm::Execute(p, bm.index_map, ctx); !s.ok()) {
          return vm_error(
              at,
              absl::StrCat(", index map of ",
                           bm.is_output ? "output " : "input ", bm.operand),
              s);
        }
      }
      for (int d = 0; d < plan.region.rank; ++d) {
        int32_t v;
        if (plan.direct) {
          v = plan.grid_axis[d] >= 0 ? at[plan.grid_axis[d]] : plan.constant[d];
        } else {
          std::memcpy(&v, frame + f.result_slots[d], 4);
        }
        result[m].v[d] = v;
        // An output block must start inside its array: a write back has
        // nowhere else to go. An input block outside its array is no error
        // until the kernel reads it (see InputBlockOutsideArray).
        const int64_t start = v * plan.start_scale[d];
        if (bm.is_output &&
            (v < 0 ||
             start >= std::max<int64_t>(plan.region.array_shape[d], 1))) {
          return absl::OutOfRangeError(absl::StrCat(
              "Out-of-bounds block index ", v, " for ",
              bm.is_output ? "output " : "input ", bm.operand, ": ",
              map_name(), " returned block index ", v, " in dimension ", d,
              ": the block starts at element ", start, ", outside the array ",
              bm.array.ToString()));
        }
      }
    }
    return absl::OkStatus();
  };
  // = BlockNumber(bm, index.v), with the strides precomputed.
  auto block_number = [&](size_t m, const BlockIndex& index) {
    const MappingPlan& plan = core.plans[m];
    int64_t n = 0;
    for (int d = 0; d < plan.region.rank; ++d) {
      n += index.v[d] * plan.number_stride[d];
    }
    return n;
  };
  auto set_start = [&](MappingPlan& plan, const BlockIndex& index) {
    for (int d = 0; d < plan.region.rank; ++d) {
      plan.region.start[d] = index.v[d] * plan.start_scale[d];
    }
  };

  if (absl::Status s = run_index_maps(point, core.cur); !s.ok()) return s;
  for (int64_t t = begin; t < end; ++t) {
    if (interrupt && interrupt->Poll()) {
      const absl::Status s = interrupt->status();
      return vm_error(
          point, "",
          absl::Status(s.code(), absl::StrCat(s.message(), " before it ran")));
    }
    // Copy in input blocks whose index changed; check output revisits.
    for (size_t m = 0; m < num_mappings; ++m) {
      const BlockMappingSpec& bm = k.block_mappings[m];
      MappingPlan& plan = core.plans[m];
      if (plan.hbm ||
          (t > begin && SameBlock(core.cur[m], core.prev[m], plan.region.rank))) {
        continue;
      }
      if (bm.is_output) {
        if (!call.out_aliased[bm.operand] && !core.visited[m].empty()) {
          uint8_t& seen = core.visited[m][block_number(m, core.cur[m])];
          if (seen) {
            return absl::FailedPreconditionError(absl::StrCat(
                where(point), ": Revisited block (",
                absl::StrJoin(core.cur[m].v, core.cur[m].v + plan.region.rank,
                              ", "),
                ") of output ", bm.operand, " in iteration ",
                PointString(std::vector<int32_t>(point, point + grid_rank)),
                " after leaving it; its earlier contents were already "
                "written back and would be overwritten. Order the grid so "
                "that each output block's visits are consecutive."));
          }
          seen = 1;
        }
        // A new block: what the buffer holds is the last block's.
        if (uninit != nullptr) uninit->SetAll(bm.ref, false);
        if (in_place[m]) {
          set_start(plan, core.cur[m]);
          const int64_t offset = InPlaceOffset(plan.region);
          core.ref_table[bm.ref] = offset >= 0
                                       ? call.out_hbm[bm.operand] + offset
                                       : core.ref_buffers[bm.ref].get();
        }
        continue;
      }
      set_start(plan, core.cur[m]);
      if (in_place[m]) {
        // The kernel never writes this ref (MappingPlan::in_place).
        const int64_t offset = InPlaceOffset(plan.region);
        if (offset >= 0) {
          core.ref_table[bm.ref] =
              const_cast<uint8_t*>(call.in_hbm[bm.operand]) + offset;
          if (core.unreadable[bm.ref]) {
            core.unreadable[bm.ref] = 0;
            --core.num_unreadable;
          }
          continue;
        }
        core.ref_table[bm.ref] = core.ref_buffers[bm.ref].get();
      }
      int64_t limit[vm::kMaxRank];
      const bool outside =
          InputBlockOutsideArray(bm, plan.region, limit);
      CopyBlockIn(plan.region, call.in_hbm[bm.operand], call.fills[m].data(),
                  core.ref_table[bm.ref], outside ? limit : nullptr);
      if (uninit != nullptr) {
        int64_t valid[vm::kMaxRank];
        for (int d = 0; d < plan.region.rank; ++d) {
          valid[d] = outside ? limit[d]
                             : std::clamp<int64_t>(
                                   plan.region.array_shape[d] -
                                       plan.region.start[d],
                                   0, plan.region.block_shape[d]);
        }
        uninit->SetInputBlock(bm.ref, plan.region.rank,
                              plan.region.block_shape, valid);
      }
      if (!fill_oob_reads && outside != bool(core.unreadable[bm.ref])) {
        core.unreadable[bm.ref] = outside;
        core.num_unreadable += outside ? 1 : -1;
      }
      if (marks != nullptr && call.mapping_buffer[m] >= 0) {
        marks->OnBlockCopy(call.mapping_buffer[m], plan.region, false);
      }
    }
    if (options.grid_point_record != nullptr) {
      int32_t* row = options.grid_point_record + t * (grid_rank + 1);
      std::memcpy(row, point, sizeof(int32_t) * grid_rank);
      row[grid_rank] = core_index;
    }
    ctx.program_ids = point;
    ctx.unreadable_refs =
        core.num_unreadable > 0 ? core.unreadable.data() : nullptr;
    if (absl::Status s = vm::Execute(p, 0, ctx); !s.ok()) {
      if (unreadable_read >= 0) {
        return UnreadableBlockError(k, core.cur, unreadable_read,
                                    where(point), s.message());
      }
      return vm_error(point, "", s);
    }
    const bool last = t + 1 == end;
    if (!last) {
      std::memcpy(next_loop, loop, sizeof(loop));
      for (int g = grid_rank - 1; g >= 0; --g) {
        if (++next_loop[g] < grid[g]) break;
        next_loop[g] = 0;
      }
      to_point(next_loop, next_point);
      if (absl::Status s = run_index_maps(next_point, core.next); !s.ok()) {
        return s;
      }
    }
    // Write back output blocks that are being left.
    for (size_t m = 0; m < num_mappings; ++m) {
      const BlockMappingSpec& bm = k.block_mappings[m];
      MappingPlan& plan = core.plans[m];
      if (!bm.is_output || plan.hbm ||
          (!last && SameBlock(core.next[m], core.cur[m], plan.region.rank))) {
        continue;
      }
      set_start(plan, core.cur[m]);
      // (Written in place: nothing to copy.)
      if (core.ref_table[bm.ref] == core.ref_buffers[bm.ref].get()) {
        CopyBlockOut(plan.region, core.ref_table[bm.ref],
                     call.out_hbm[bm.operand]);
      }
      if (marks != nullptr && call.mapping_buffer[m] >= 0) {
        marks->OnBlockCopy(call.mapping_buffer[m], plan.region, true);
      }
      if (!core.written[m].empty()) {
        core.written[m][block_number(m, core.cur[m])] = 1;
      }
    }
    std::swap(core.prev, core.cur);
    std::swap(core.cur, core.next);
    std::memcpy(loop, next_loop, sizeof(loop));
    std::memcpy(point, next_point, sizeof(point));
  }
  // With semaphores signalled across cores, what is left is known only
  // once every core is done: Run looks then.
  if (machine_options.lock_semaphores) return absl::OkStatus();
  if (absl::Status s = core.machine->EndCall(
          &core.warnings, options.leftover_semaphores_are_errors);
      !s.ok()) {
    return absl::Status(s.code(), absl::StrCat(where(point, true), ": ",
                                               s.message()));
  }
  return absl::OkStatus();
}

// Per ref: whether it is an HBM input that some DMA writes.
std::vector<bool> HbmInputsWrittenByDmas(const Kernel& k) {
  std::vector<bool> written(k.refs.size(), false);
  const vm::Program& p = k.program;
  for (const vm::Instr& in : p.code) {
    if (in.op != vm::Op::DMA_START) continue;
    const int ref = p.accesses[in.b].base;
    written[ref] = k.refs[ref].kind == RefKind::INPUT_HBM;
  }
  return written;
}

// The ref of HBM input `operand`.
int HbmInputRef(const Kernel& k, int operand) {
  for (size_t r = 0; r < k.refs.size(); ++r) {
    if (k.refs[r].kind == RefKind::INPUT_HBM && k.refs[r].operand == operand) {
      return static_cast<int>(r);
    }
  }
  return -1;
}

// The HBM buffers several cores can reach (runtime/cross_core_races.h),
// addresses unset: every output, and every HBM input a DMA writes that is
// not aliased (an aliased one is its output's buffer).
std::vector<CrossCoreRaces::Buffer> SharedBuffers(
    const Kernel& k, const std::vector<bool>& hbm_inputs_written) {
  std::vector<CrossCoreRaces::Buffer> shared;
  for (size_t j = 0; j < k.out_types.size(); ++j) {
    shared.push_back({nullptr, true, static_cast<int>(j)});
  }
  for (size_t r = 0; r < k.refs.size(); ++r) {
    const int operand = k.refs[r].operand;
    if (!hbm_inputs_written[r] ||
        std::any_of(k.aliases.begin(), k.aliases.end(),
                    [&](auto alias) { return alias.first == operand; })) {
      continue;
    }
    shared.push_back({nullptr, false, operand});
  }
  // Device-shared scratch and run_scoped buffers (VMEM_SHARED, HBM).
  for (size_t r = 0; r < k.refs.size(); ++r) {
    if (CoreSync::IsShared(k.refs[r])) {
      shared.push_back({nullptr, false, -1, static_cast<int>(r)});
    }
  }
  return shared;
}

}  // namespace

absl::StatusOr<std::vector<int64_t>> ResolveGrid(
    const Kernel& kernel, absl::Span<const void* const> inputs) {
  std::vector<int64_t> grid = kernel.grid;
  int next_bound = 0;
  int64_t points = 1;
  for (size_t g = 0; g < grid.size(); ++g) {
    if (grid[g] == kDynamicGridDim) {
      const int operand = next_bound++;
      if (operand >= kernel.num_dynamic_grid_bounds ||
          static_cast<size_t>(operand) >= inputs.size()) {
        return absl::InvalidArgumentError(absl::StrCat(
            "kernel '", kernel.name, "': no operand for dynamic grid "
            "dimension ", g));
      }
      int32_t size;
      std::memcpy(&size, inputs[operand], sizeof(size));
      if (size < 0) {
        return absl::InvalidArgumentError(absl::StrCat(
            "kernel '", kernel.name, "': dynamic grid dimension ", g,
            " (operand ", operand, ") has size ", size));
      }
      grid[g] = size;
    }
    if (grid[g] > 0 && points > (int64_t{1} << 62) / grid[g]) {
      return absl::InvalidArgumentError(absl::StrCat(
          "kernel '", kernel.name, "': the grid (", absl::StrJoin(grid, ", "),
          ") has more than 2^62 points"));
    }
    points *= grid[g];
  }
  return grid;
}

GridDriver::GridDriver(std::shared_ptr<const Kernel> kernel)
    : kernel_(std::move(kernel)), ws_(std::make_unique<Workspace>()) {
  const vm::Program& p = kernel_->program;
  ws_->hbm_inputs_written = HbmInputsWrittenByDmas(*kernel_);
  ws_->hbm_input_copies.resize(kernel_->refs.size());
  const size_t n = kernel_->block_mappings.size();
  ws_->plans.resize(n);
  const bool has_machine_ops =
      std::any_of(p.code.begin(), p.code.end(),
                  [](const vm::Instr& in) { return vm::IsMachineOp(in.op); });
  for (size_t m = 0; m < n; ++m) {
    const BlockMappingSpec& bm = kernel_->block_mappings[m];
    MappingPlan& plan = ws_->plans[m];
    plan.region.rank = static_cast<int>(bm.dims.size());
    plan.region.elem_size = vm::SizeOf(bm.array.dtype);
    plan.num_blocks = 1;
    for (size_t d = 0; d < bm.dims.size(); ++d) {
      const bool blocked = bm.dims[d].kind == BlockDimKind::BLOCKED;
      plan.region.array_shape[d] = bm.array.shape[d];
      plan.region.block_shape[d] =
          bm.dims[d].kind == BlockDimKind::SQUEEZED ? 1 : bm.dims[d].size;
      plan.start_scale[d] = blocked ? bm.dims[d].size : 1;
      const int64_t size = blocked ? bm.dims[d].size : 1;
      plan.num_blocks *= (bm.array.shape[d] + size - 1) / size + 1;
    }
    plan.hbm = IsHbmOperand(kernel_->refs[bm.ref].kind);
    plan.tiles = BlocksTileArray(bm) && !plan.hbm;
    const vm::Function& f = p.functions[bm.index_map];
    plan.direct = p.code[f.entry_pc].op == vm::Op::RETURN;
    for (size_t d = 0; plan.direct && d < f.result_slots.size(); ++d) {
      const uint32_t slot = f.result_slots[d];
      auto param = std::find(f.param_slots.begin(), f.param_slots.end(), slot);
      plan.grid_axis[d] = -1;
      plan.constant[d] = 0;
      if (param != f.param_slots.end()) {
        plan.grid_axis[d] = static_cast<int>(param - f.param_slots.begin());
      } else if (slot + 4 <= p.constants.size()) {
        std::memcpy(&plan.constant[d], p.constants.data() + slot, 4);
      } else {
        plan.direct = false;  // reads a slot nothing wrote: let the VM run it
      }
    }
    const RefSpec& ref = kernel_->refs[bm.ref];
    int64_t block_elements = 1;
    for (int d = 0; d < plan.region.rank; ++d) {
      block_elements *= plan.region.block_shape[d];
    }
    plan.in_place =
        !plan.hbm && !has_machine_ops && BlockIsContiguous(plan.region) &&
        ref.type.dtype == bm.array.dtype &&
        ref.type.num_elements() == block_elements &&
        (bm.ref < static_cast<int>(p.ref_sizes.size()) &&
         p.ref_sizes[bm.ref] == block_elements * plan.region.elem_size) &&
        (bm.is_output ? StoresWholeFirst(p, bm.ref)
                      : std::none_of(p.code.begin(), p.code.end(),
                                     [&](const vm::Instr& in) {
                                       return MayWriteRef(p, in, bm.ref);
                                     }));
    int64_t stride = 1;
    for (int d = plan.region.rank - 1; d >= 0; --d) {
      plan.number_stride[d] = stride;
      const int64_t size = plan.start_scale[d];
      stride *= (bm.array.shape[d] + size - 1) / size + 1;
    }
  }
}

GridDriver::~GridDriver() = default;

bool GridDriver::MayElideBlockCopies(size_t m) const {
  return m < ws_->plans.size() && ws_->plans[m].in_place;
}


absl::Status GridDriver::Run(absl::Span<const void* const> inputs,
                             absl::Span<void* const> outputs,
                             const RunOptions& options) {
  bool joined = false;
  absl::Status s = RunOnDevice(inputs, outputs, options, &joined);
  // A device that fails before it meets the others must not leave them
  // waiting for it.
  if (!s.ok() && options.devices != nullptr && !joined) {
    options.devices->Abandon(options.device, absl::Status(
        s.code(), absl::StrCat("device ", options.device, ": ", s.message())));
  }
  return s;
}

absl::Status GridDriver::RunOnDevice(absl::Span<const void* const> inputs,
                                     absl::Span<void* const> outputs,
                                     const RunOptions& options, bool* joined) {
  const Kernel& k = *kernel_;
  CallState call;
  call.kernel = &k;
  call.options = &options;
  absl::StatusOr<std::vector<int64_t>> resolved = ResolveGrid(k, inputs);
  if (!resolved.ok()) return resolved.status();
  call.grid = *std::move(resolved);
  const std::vector<int64_t>& grid = call.grid;
  const int grid_rank = static_cast<int>(grid.size());
  const size_t num_mappings = k.block_mappings.size();
  if (grid_rank + options.device_coords.size() > vm::kMaxRank) {
    return absl::InvalidArgumentError(absl::StrCat(
        "kernel '", k.name, "': a grid of rank ", grid_rank, " inside ",
        options.device_coords.size(), " mesh axes (at most ", vm::kMaxRank,
        " in all)"));
  }
  call.device_coords = options.device_coords;
  if (options.num_cores < 1 || options.num_cores > 256) {
    return absl::InvalidArgumentError(
        absl::StrCat("kernel '", k.name, "': num_cores is ", options.num_cores,
                     "; expected 1 to 256"));
  }
  const auto& coords = options.grid_coordinates;
  if (!coords.empty()) {
    if (coords.size() != static_cast<size_t>(grid_rank)) {
      return absl::InvalidArgumentError(
          absl::StrCat("kernel '", k.name, "': grid_coordinates has ",
                       coords.size(), " dimensions, the grid has ", grid_rank));
    }
    for (int g = 0; g < grid_rank; ++g) {
      if (coords[g].empty()) continue;
      std::vector<bool> seen(grid[g], false);
      bool ok = static_cast<int64_t>(coords[g].size()) == grid[g];
      for (int32_t c : coords[g]) {
        ok = ok && c >= 0 && c < grid[g] && !seen[c];
        if (ok) seen[c] = true;
      }
      if (!ok) {
        return absl::InvalidArgumentError(
            absl::StrCat("kernel '", k.name, "': grid_coordinates[", g,
                         "] is not a permutation of 0..", grid[g] - 1));
      }
    }
  }
  // What this call allocates: each core's workspace (kept for later
  // calls) and race detection's marks, checked before anything is.
  // (Under shard_map, the devices' cores race with each other too.)
  const bool marks = options.detect_races &&
                     (options.num_cores > 1 || options.devices != nullptr);
  const std::vector<CrossCoreRaces::Buffer> shared =
      marks ? SharedBuffers(k, ws_->hbm_inputs_written)
            : std::vector<CrossCoreRaces::Buffer>();
  {
    int64_t shared_elements = 0;
    for (const CrossCoreRaces::Buffer& b : shared) {
      const ArrayType& t = b.ref >= 0     ? k.refs[b.ref].type
                           : b.is_output ? k.out_types[b.operand]
                                         : k.in_types[b.operand];
      shared_elements =
          CheckedAdd(shared_elements, t.num_elements()).value_or(-1);
      if (shared_elements < 0) break;
    }
    const std::optional<int64_t> workspaces =
        CheckedMul(k.core_workspace_bytes, options.num_cores);
    const std::optional<int64_t> race_marks =
        marks ? CheckedMul(shared_elements, CrossCoreRaces::kMarkBytes *
                                                options.num_cores)
              : std::optional<int64_t>(0);
    const std::optional<int64_t> total =
        workspaces && race_marks ? CheckedAdd(*workspaces, *race_marks)
                                 : std::nullopt;
    if (absl::Status s = CheckMemory(
            absl::StrCat("kernel '", k.name, "': the workspace of ",
                         options.num_cores, " core",
                         options.num_cores == 1 ? "" : "s", " (",
                         FormatBytes(k.core_workspace_bytes), " each)",
                         marks ? " and race detection's marks" : ""),
            total.value_or(-1), options.memory_limit);
        !s.ok()) {
      return s;
    }
  }
  // The deadline: the earlier of options.deadline and the timeout.
  using Clock = vm::Interrupt::Clock;
  call.deadline = Clock::time_point::max();
  if (options.timeout.count() < 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("kernel '", k.name, "': negative timeout (",
                     Seconds(options.timeout), ")"));
  }
  if (options.timeout.count() > 0) {
    const Clock::time_point now = Clock::now();
    call.deadline =
        options.timeout < Clock::time_point::max() - now
            ? now + std::chrono::duration_cast<Clock::duration>(options.timeout)
            : Clock::time_point::max();
    call.timeout = options.timeout;
  }
  if (options.deadline != Clock::time_point() &&
      options.deadline < call.deadline) {
    call.deadline = options.deadline;
    call.timeout = std::chrono::nanoseconds(0);
  }
  call.interruptible =
      call.deadline != Clock::time_point::max() || options.cancel != nullptr;
  // HBM: inputs are read in place; outputs are the caller's buffers. An
  // aliased input is read from its output, which starts as a copy of it.
  call.in_hbm.resize(inputs.size());
  for (size_t i = 0; i < inputs.size(); ++i) {
    call.in_hbm[i] = static_cast<const uint8_t*>(inputs[i]);
  }
  call.out_hbm.resize(outputs.size());
  for (size_t j = 0; j < outputs.size(); ++j) {
    call.out_hbm[j] = static_cast<uint8_t*>(outputs[j]);
  }
  call.out_aliased.assign(outputs.size(), false);
  std::vector<bool> in_aliased(inputs.size(), false);
  for (auto [in, out] : k.aliases) {
    std::memmove(outputs[out], inputs[in], k.in_types[in].bytes());
    call.in_hbm[in] = static_cast<const uint8_t*>(outputs[out]);
    call.out_aliased[out] = true;
    in_aliased[in] = true;
  }
  // HBM operand refs: the caller's buffers in place. An input a DMA may
  // write (and that is not aliased, so its writes are not the output's) is
  // copied first: the caller's input is never overwritten.
  call.hbm_refs.assign(k.refs.size(), nullptr);
  for (size_t r = 0; r < k.refs.size(); ++r) {
    const RefSpec& ref = k.refs[r];
    if (ref.kind == RefKind::OUTPUT_HBM) {
      call.hbm_refs[r] = call.out_hbm[ref.operand];
    } else if (ref.kind == RefKind::INPUT_HBM) {
      // const_cast: only DMAs write HBM refs, and the inputs they write
      // are bound to a copy here.
      uint8_t* in = const_cast<uint8_t*>(call.in_hbm[ref.operand]);
      if (ws_->hbm_inputs_written[r] && !in_aliased[ref.operand]) {
        Buffer& copy = ws_->hbm_input_copies[r];
        if (copy == nullptr) copy = AllocBuffer(ref.type.bytes());
        if (copy == nullptr) {
          return absl::ResourceExhaustedError(absl::StrCat(
              "kernel '", k.name, "': cannot allocate a copy of input ",
              ref.operand, " (", FormatBytes(ref.type.bytes()), ")"));
        }
        std::memcpy(copy.get(), in, ref.type.bytes());
        in = copy.get();
      }
      call.hbm_refs[r] = in;
    }
  }
  // Fill values per mapping, for padding on the way in.
  call.fills.resize(num_mappings);
  for (size_t m = 0; m < num_mappings; ++m) {
    FillValue(k.block_mappings[m].array.dtype, options.uninitialized_memory,
              call.fills[m].data());
  }
  // Outputs start uninitialized. Where blocks tile the array, only blocks
  // never written back are filled, after the grid; otherwise all of it now.
  auto tracked = [&](size_t m) {
    return ws_->plans[m].tiles &&
           ws_->plans[m].num_blocks <= (int64_t{1} << 26);
  };
  for (size_t m = 0; m < num_mappings; ++m) {
    const BlockMappingSpec& bm = k.block_mappings[m];
    if (!bm.is_output || call.out_aliased[bm.operand] || tracked(m)) continue;
    FillElements(call.out_hbm[bm.operand], bm.array.num_elements(),
                 call.fills[m].data(), vm::SizeOf(bm.array.dtype));
  }

  // Cores split the grid as interpret mode does: the P points of the
  // `parallel` dimensions (a prefix of the grid) go in consecutive ranges
  // of ceil(P / C) points, each with all N / P iterations of the rest.
  // `core_parallel` dimensions in that prefix are split too, as a TPU
  // splits them between its TensorCores (interpret mode runs them all on
  // core 0; see the README's compatibility section).
  int64_t num_points = 1, parallel_points = 1;
  bool in_prefix = true;
  for (int g = 0; g < grid_rank; ++g) {
    num_points *= grid[g];
    in_prefix = in_prefix && g < static_cast<int>(k.dimension_semantics.size()) &&
                (k.dimension_semantics[g] == "parallel" ||
                 k.dimension_semantics[g] == "core_parallel");
    if (in_prefix) parallel_points *= grid[g];
  }
  const int num_cores = options.num_cores;
  while (static_cast<int>(ws_->cores.size()) < num_cores) {
    absl::StatusOr<std::unique_ptr<CoreState>> core =
        NewCore(k, ws_->plans, static_cast<int>(ws_->cores.size()));
    if (!core.ok()) return core.status();
    ws_->cores.push_back(*std::move(core));
  }
  // Races between cores: marks per core and shared HBM buffer (one core
  // cannot race with itself this way).
  std::optional<CrossCoreRaces> cross_core;
  if (options.races != nullptr) *options.races = RaceReport();
  if (marks) {
    std::vector<CrossCoreRaces::Buffer> bound = shared;
    for (CrossCoreRaces::Buffer& b : bound) {
      b.address = b.ref >= 0     ? ws_->cores[0]->ref_buffers[b.ref].get()
                  : b.is_output ? call.out_hbm[b.operand]
                                : call.hbm_refs[HbmInputRef(k, b.operand)];
    }
    if (options.devices != nullptr) {
      // One detector for every device's cores, made when all have
      // arrived (CoreSync::AddRaceBuffers).
      options.devices->AddRaceBuffers(bound);
    } else {
      // Semaphores order the cores (Release at a signal, Acquire at a
      // wait): one sync object per semaphore of each core.
      cross_core.emplace(
          k, num_cores, std::move(bound),
          num_cores * ws_->cores[0]->machine->semaphores().size());
      call.cross_core = &*cross_core;
    }
  }
  auto map_race_buffers = [&] {
    call.mapping_buffer.resize(num_mappings);
    for (size_t m = 0; m < num_mappings; ++m) {
      const BlockMappingSpec& bm = k.block_mappings[m];
      call.mapping_buffer[m] = call.cross_core->BufferAt(
          bm.is_output ? call.out_hbm[bm.operand] : call.in_hbm[bm.operand]);
    }
  };
  if (call.cross_core != nullptr) map_race_buffers();
  const int64_t per_core =
      num_points == 0 ? 0
                      : (parallel_points + num_cores - 1) / num_cores *
                            (num_points / parallel_points);
  std::optional<CoreSync> own_sync;
  CoreSync* const group = options.devices;
  if (group != nullptr) {
    if (group->cores_per_device() != num_cores) {
      return absl::InvalidArgumentError(absl::StrCat(
          "kernel '", k.name, "': device ", options.device, " runs ",
          num_cores, " cores, the other devices of the call ",
          group->cores_per_device()));
    }
    call.sync = group;
  } else if (num_cores > 1) {
    own_sync.emplace(k, num_cores);
    own_sync->SetInterrupt(call.deadline, options.cancel, call.timeout);
    call.sync = &*own_sync;
  }
  CoreSync* const sync = call.sync;
  const int base = group != nullptr ? options.device * num_cores : 0;
  if (sync != nullptr) {
    for (int c = 0; c < num_cores; ++c) {
      CoreState& core = *ws_->cores[c];
      sync->Bind(base + c, &core.machine->semaphores(), &core.machine->dma(),
                 core.ref_table.data(), core.machine.get());
      // Other cores and devices may DMA into this one's HBM operands as
      // soon as it has arrived: bound now (RunCore binds them again).
      for (size_t r = 0; r < k.refs.size(); ++r) {
        if (IsHbmOperand(k.refs[r].kind)) core.ref_table[r] = call.hbm_refs[r];
      }
      // Signals may arrive before a core starts: all are zeroed first.
      if (k.signals_other_cores) core.machine->ResetSemaphores();
      // Device-shared refs are core 0's buffers, filled once.
      for (size_t r = 0; r < k.refs.size(); ++r) {
        const RefSpec& ref = k.refs[r];
        if (!CoreSync::IsShared(ref)) continue;
        core.ref_table[r] = ws_->cores[0]->ref_buffers[r].get();
        if (c == 0 && ref.kind == RefKind::SCRATCH) {
          uint64_t fill = 0;
          FillValue(ref.type.dtype, options.uninitialized_memory,
                    reinterpret_cast<uint8_t*>(&fill));
          FillElements(core.ref_table[r], ref.type.num_elements(),
                       reinterpret_cast<const uint8_t*>(&fill),
                       vm::SizeOf(ref.type.dtype));
        }
      }
    }
  } else {
    // A call on one core after one on several: its own buffers again.
    CoreState& core = *ws_->cores[0];
    for (size_t r = 0; r < k.refs.size(); ++r) {
      if (CoreSync::IsShared(k.refs[r])) {
        core.ref_table[r] = core.ref_buffers[r].get();
      }
    }
  }
  // Every device ready (bound, semaphores zeroed) before any kernel runs.
  if (group != nullptr) {
    *joined = true;
    if (absl::Status s = group->Arrive(options.device); !s.ok()) {
      // Its own error (or the group's failure) is what the call returns.
      group->Depart(options.device).IgnoreError();
      const absl::Status failure = group->failure();
      return failure.ok() ? s : failure;
    }
    if (marks && group->races() != nullptr) {
      call.cross_core = group->races();
      call.race_core_base = base;
      map_race_buffers();
    }
  }
  std::vector<absl::Status> status(num_cores);
  auto run = [&](int c) {
    const int64_t begin = std::min(num_points, c * per_core);
    const int64_t end = std::min(num_points, (c + 1) * per_core);
    status[c] = RunCore(call, *ws_->cores[c], c, begin, end);
    if (group != nullptr && !status[c].ok() &&
        status[c].code() != absl::StatusCode::kAborted) {
      status[c] = absl::Status(status[c].code(),
                               absl::StrCat("device ", options.device, ": ",
                                            status[c].message()));
    }
    if (sync) sync->Finish(base + c, status[c]);
  };
  if (num_cores == 1) {
    run(0);
  } else {
    std::vector<std::thread> threads;
    for (int c = 1; c < num_cores; ++c) threads.emplace_back(run, c);
    run(0);
    for (std::thread& t : threads) t.join();
  }
  // Nobody may write this device's buffers once it returns.
  if (group != nullptr) {
    const absl::Status departed = group->Depart(options.device);
    if (absl::Status failure = group->failure(); !failure.ok()) return failure;
    if (!departed.ok()) return departed;
    if (absl::Status failure = group->failure(); !failure.ok()) return failure;
  }
  // The first core's own failure, not the ABORTED of those it stopped.
  for (const absl::Status& s : status) {
    if (!s.ok() && s.code() != absl::StatusCode::kAborted) return s;
  }
  for (const absl::Status& s : status) {
    if (!s.ok()) return s;
  }
  // Which core (and device) a report is about: " (core 1)", " (device
  // 2, core 0)"; nothing on one core of one device.
  auto whose = [&](int c) -> std::string {
    if (group != nullptr) {
      return absl::StrCat(" (device ", options.device, ", core ", c, ")");
    }
    return num_cores > 1 ? absl::StrCat(" (core ", c, ")") : "";
  };
  if (sync && k.signals_other_cores) {
    for (int c = 0; c < num_cores; ++c) {
      if (absl::Status s = ws_->cores[c]->machine->EndCall(
              &ws_->cores[c]->warnings, options.leftover_semaphores_are_errors);
          !s.ok()) {
        return absl::Status(
            s.code(), absl::StrCat("kernel '", k.name, "'", whose(c),
                                   ", at the end of the call: ", s.message()));
      }
    }
  }
  if (options.warnings != nullptr) {
    for (int c = 0; c < num_cores; ++c) {
      for (std::string& w : ws_->cores[c]->warnings) {
        options.warnings->push_back(
            absl::StrCat("kernel '", k.name, "'", whose(c), ": ", w));
      }
    }
  }
  if (cross_core && options.races != nullptr) {
    cross_core->Find(&options.races->racy_elements,
                     &options.races->description);
  }
  if (group != nullptr && marks && options.races != nullptr) {
    // Every device reports the races of all (found once).
    group->FindRaces(&options.races->racy_elements,
                     &options.races->description);
  }
  // Races between each core's kernel and its DMAs.
  if (options.detect_races && options.races != nullptr) {
    for (int c = 0; c < num_cores; ++c) {
      const RaceDetector& r = ws_->cores[c]->machine->races();
      if (r.racy_elements() == 0) continue;
      options.races->racy_elements += r.racy_elements();
      absl::StrAppend(&options.races->description,
                      num_cores > 1 ? absl::StrCat("core ", c, ": ") : "",
                      r.description());
    }
  }
  // Fill the blocks of tiled outputs that no core wrote back.
  for (size_t m = 0; m < num_mappings; ++m) {
    const BlockMappingSpec& bm = k.block_mappings[m];
    if (!bm.is_output || call.out_aliased[bm.operand] || !tracked(m)) {
      continue;
    }
    std::vector<uint8_t>& written = ws_->cores[0]->written[m];
    for (int c = 1; c < num_cores; ++c) {
      const std::vector<uint8_t>& other = ws_->cores[c]->written[m];
      for (size_t i = 0; i < written.size(); ++i) written[i] |= other[i];
    }
    FillUnwritten(bm, written, call.fills[m].data(), call.out_hbm[bm.operand]);
  }
  return absl::OkStatus();
}

}  // namespace pallasvm::runtime
