// Drives a kernel's grid with the semantics of JAX's TPU interpret mode
// (jax/_src/pallas/mosaic/interpret/interpret_pallas_call.py):
//
//  - grid points run in row-major order, last dimension fastest; a
//    dynamic grid dimension's size is read from its operand at each call
//    (0 runs no grid point: every output holds the fill value);
//  - at each point every block mapping's index map runs; a block starts at
//    index * size for Blocked dims and at index for Squeezed/Element dims;
//  - an input block is copied HBM -> VMEM at the first point and whenever
//    its block index changes; parts outside the array read the
//    uninitialized fill value;
//  - an output block is written back (its in-bounds part) when the next
//    point's block index differs, or after the last point; it is never
//    loaded from HBM first, so accumulating over a reduction axis works;
//  - coming back to an output block after leaving it is an error
//    ("revisited block"), except for outputs aliased to an input;
//  - outputs not written hold the fill value; an aliased output starts as
//    its input, and reads of that input see the output's writes;
//  - scalar prefetch operands are copied to SMEM once per call; scratch
//    is allocated once per call, filled with the fill value, and persists.
//
// The workspace (frame, block buffers, scratch) of each core is allocated
// once, by the first call that uses the core (not when the driver is built:
// loading a module to disassemble it allocates nothing), after checking it
// against RunOptions::memory_limit; a call allocates nothing per grid step.
#ifndef PALLASVM_RUNTIME_GRID_DRIVER_H_
#define PALLASVM_RUNTIME_GRID_DRIVER_H_

#include <atomic>
#include <chrono>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/types/span.h"
#include "runtime/dma_engine.h"
#include "runtime/uninitialized_reads.h"
#include "runtime/kernel.h"

namespace pallasvm::runtime {

class CoreSync;

enum class UninitializedMemory { kNaN, kZero };

// What a read outside a buffer does: an error naming it, or (interpret
// mode's out_of_bounds_reads="uninitialized") the outside part reads the
// fill value. Input blocks past the end of their array (block index >= 0)
// are then filled too. Writes outside a buffer are always errors.
enum class OutOfBoundsReads { kRaise, kUninitialized };

// What race detection found in one call (RunOptions::races).
struct RaceReport {
  int64_t racy_elements = 0;  // elements involved in a race
  std::string description;    // the first few races, one per line
};

struct RunOptions {
  // What fresh buffers and block padding hold: NaN for floats, the largest
  // value for integers, true for bool; or zero.
  UninitializedMemory uninitialized_memory = UninitializedMemory::kNaN;
  OutOfBoundsReads out_of_bounds_reads = OutOfBoundsReads::kRaise;
  // The order grid coordinates are visited in, per grid dimension: empty
  // for 0, 1, 2, ...; else a permutation, visited in its order (the grid
  // point at loop index i has coordinate grid_coordinates[d][i]). JAX's
  // interpret mode shuffles `parallel` dimensions this way with a seeded
  // jax.random.permutation; the JAX bridge passes JAX's own permutations.
  std::vector<std::vector<int32_t>> grid_coordinates;
  // Simulated TensorCores, each a thread with its own VMEM, SMEM, scratch
  // and frame. As in interpret mode (num_cores_or_threads), the points of
  // the `parallel` grid dimensions are split into num_cores consecutive
  // ranges; a kernel without parallel dimensions runs on core 0.
  int num_cores = 1;
  // If set, receives the grid points as they are visited: per point, its
  // coordinates and then the core that ran it (grid rank + 1 int32s), in
  // each core's visit order, core 0's points first. It must hold
  // (number of grid points) * (grid rank + 1) int32s, the grid being the
  // resolved one (ResolveGrid). Interpret mode's grid_point_recorder.
  int32_t* grid_point_record = nullptr;
  // Interpret mode's detect_races. Within each core, kernel accesses and
  // DMAs are checked against its DMAs in flight (runtime/race_detector.h).
  // With more than one core (or devices meeting), an element of what the
  // cores share (HBM, device-shared buffers) that one core writes and
  // another writes or reads, with no semaphore signal and wait ordering
  // the two, is a race (runtime/cross_core_races.h: vector clocks, as
  // interpret mode's). Races are reported in *races (cleared first), not
  // as errors. Across cores, CrossCoreRaces::kMarkBytes (32) per element of
  // each shared buffer, per core, are used while detecting.
  bool detect_races = false;
  RaceReport* races = nullptr;
  // Block copies nothing can observe are skipped: an input block the kernel
  // never writes is read in place from HBM, and an output block the kernel
  // starts by storing whole is written in place, whenever the block is a
  // contiguous run of its array inside it and no check that watches the
  // block buffers (races, uninitialized reads) is on. The results are the
  // same bit for bit; false copies every block (for tests and comparison).
  bool elide_block_copies = true;
  // When to give up. The kernel's loops poll at their back edges and the
  // driver between grid points (vm/interrupt.h: a countdown, nothing per
  // instruction); a run past its deadline fails with DEADLINE_EXCEEDED
  // naming the grid point, the core and the source line it was at.
  // `timeout` counts from the start of Run, `deadline` is absolute; zero
  // (the default) means none, and with both the earlier one holds.
  std::chrono::nanoseconds timeout{0};
  std::chrono::steady_clock::time_point deadline{};
  // If set, the run stops with CANCELLED (named as above) soon after
  // *cancel becomes true, e.g. set by another thread.
  const std::atomic<bool>* cancel = nullptr;
  // The most a call may allocate, in bytes: every core's workspace (frame,
  // block buffers, scratch) and race detection's marks. 0:
  // DefaultMemoryLimit() (vm/memory_limit.h, the physical memory).
  // Beyond it, Run fails with RESOURCE_EXHAUSTED naming the buffer.
  int64_t memory_limit = 0;
  // Interpret mode's dma_execution_mode: a DMA is carried out when a wait
  // on its semaphore needs it (kOnWait, interpret mode's default), or when
  // it starts (kEager). See runtime/memory_model.h.
  DmaExecutionMode dma_execution_mode = DmaExecutionMode::kOnWait;
  // If set, receives what a kernel author should hear about that is not an
  // error: semaphores left non-zero, DMAs never waited for (one line
  // each, appended).
  std::vector<std::string>* warnings = nullptr;
  // Semaphores left non-zero (and DMAs never waited for) fail the call
  // with FAILED_PRECONDITION instead of being warnings.
  bool leftover_semaphores_are_errors = false;
  // Reading an element nothing has written (edge padding of an input
  // block, an output block not yet written at its index, fresh scratch or
  // run_scoped buffers, an HBM output, a DMA destination before its wait):
  // kWarn appends one line per reading instruction and ref to *warnings,
  // kError fails the call at the first such read, naming the source line,
  // grid point, buffer and element. See runtime/uninitialized_reads.h.
  UninitializedReadsCheck uninitialized_reads = UninitializedReadsCheck::kOff;
  // The devices of one shard_map step meeting in one simulated machine
  // (runtime/core_sync.h; the JAX bridge makes it, with num_cores per
  // device): this call is device `device` of them. Its cores are numbered
  // device * num_cores + c there; remote signals and DMAs reach the other
  // devices' cores; the call waits for every device to start before its
  // kernel runs and to finish before it returns; a failure anywhere ends
  // every device's call with that error.
  CoreSync* devices = nullptr;
  int device = 0;
  // This device's coordinates on the mesh axes around the call, for the
  // kernel's lax.axis_index of them (vm::ExecContext::num_device_axes).
  std::vector<int32_t> device_coords;
};

// The fill value of `dtype` as bytes (SizeOf(dtype) of them).
void FillValue(vm::DType dtype, UninitializedMemory mode, uint8_t* out);

// The grid of one call: the kernel's grid with each dynamic dimension
// sized by its dynamic grid bound operand (inputs[0..], int32). A negative
// bound, or a grid of more than 2^62 points, is an error naming it.
absl::StatusOr<std::vector<int64_t>> ResolveGrid(
    const Kernel& kernel, absl::Span<const void* const> inputs);

class GridDriver {
 public:
  explicit GridDriver(std::shared_ptr<const Kernel> kernel);
  ~GridDriver();

  // inputs[i] holds in_types[i] (row-major, dense); outputs[j] receives
  // out_types[j]. The caller checks shapes and dtypes (see Executable).
  absl::Status Run(absl::Span<const void* const> inputs,
                   absl::Span<void* const> outputs, const RunOptions& options);

  const Kernel& kernel() const { return *kernel_; }
  // Whether block mapping `m`'s blocks may be read or written in place
  // (RunOptions::elide_block_copies), as far as the kernel alone decides:
  // a call may still copy (a check is on, an aliased or overlapping
  // operand, a block not wholly inside its array).
  bool MayElideBlockCopies(size_t m) const;

 private:
  // Run; *joined once this device has met the others (RunOptions::devices).
  absl::Status RunOnDevice(absl::Span<const void* const> inputs,
                           absl::Span<void* const> outputs,
                           const RunOptions& options, bool* joined);
  struct Workspace;
  std::shared_ptr<const Kernel> kernel_;
  std::unique_ptr<Workspace> ws_;
};

}  // namespace pallasvm::runtime

#endif  // PALLASVM_RUNTIME_GRID_DRIVER_H_
