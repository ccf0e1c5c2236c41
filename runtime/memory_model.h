// The simulated TPU memory model of one device: memory spaces, DMAs,
// semaphores and run_scoped allocations, as JAX's TPU interpret mode
// (jax/_src/pallas/mosaic/interpret/) defines them, carried out for the VM
// through vm::Machine.
//
// Memory spaces. Every kernel ref is an entry of its core's ref table
// (vm::ExecContext::refs), tagged with a vm::MemorySpace:
//   - HBM: a pallas_call operand with BlockSpec(memory_space=pl.ANY or
//     pltpu.HBM), bound in place to the caller's buffer (shared by all
//     cores). An output starts as the fill value (or its aliased input); an
//     input the kernel may write by DMA is first copied to a buffer of the
//     call's, so the caller's input is never overwritten.
//   - VMEM, SMEM: block buffers, scratch and run_scoped buffers, one set per
//     core, allocated once with the core's workspace (sizes are static).
//   - SEMAPHORE: int32 counters (a DMA semaphore counts bytes), one per
//     element of a semaphore ref, stored in that ref's buffer. Scratch
//     semaphores start at 0 at each call, run_scoped ones at each entry.
// The kernel reads and writes VMEM and SMEM itself (LOAD/STORE); HBM only
// through DMAs and semaphores only through SEM_* instructions, which the
// compiler refuses otherwise and the VM verifier checks.
//
// run_scoped. The compiler gives each allocation of a run_scoped its own
// ref, so nothing is allocated at run time; SCOPE_ENTER makes them fresh
// (the fill value, semaphores 0), SCOPE_EXIT releases them.
//
// DMAs (runtime/dma_engine.h). DMA_START hands over two regions with their
// starts resolved, so a DMA in flight does not depend on the frame. In
// "eager" mode it is carried out at once. In "on_wait" mode (interpret
// mode's default) it waits, pending, on its semaphore's task list, and a
// wait on that semaphore that finds too small a count carries out pending
// DMAs, the most recently started first (interpret mode pops its task
// stack), until the count suffices. Both signal the destination semaphore
// with the bytes written. DMAs started at one grid point may be waited at a
// later one (pipelining does that): pending DMAs persist across grid points
// of one call.
//
// Semaphores (runtime/semaphores.h). A wait blocks until the count reaches
// its value and then takes it. Unless the kernel signals other cores'
// semaphores (semaphore_signal's core_index), a core's semaphores are
// signalled only by that core and its DMAs, so a wait that the pending
// DMAs cannot satisfy can never be satisfied: it is reported at once as a
// deadlock (interpret mode polls forever), naming the semaphore, the
// counts and where the wait is. A kernel that does signal across cores
// has its cores' semaphores shared under one lock (runtime/core_sync.h):
// a wait then blocks its thread until another core signals, and a
// deadlock is every unfinished core waiting in vain; its run_scoped
// semaphores keep their counts across entries, as interpret mode's do.
// Semaphores left non-zero at the end of a call, and DMAs never waited
// for, are reported (RunOptions::warnings).
//
// Races (runtime/race_detector.h, runtime/cross_core_races.h), by option:
// the kernel's accesses and DMAs against the core's own DMAs in flight, and
// the HBM side of its DMAs against other cores' accesses of HBM.
//
// Uninitialized reads (runtime/uninitialized_reads.h), by option: shadow
// state follows every write, block copy and DMA, and a read of an element
// nothing has written is reported.
//
// Out of bounds. A DMA region outside its ref is an error naming the DMA's
// source line and grid point, except a source region under
// out_of_bounds_reads="uninitialized", whose outside part reads the fill
// value, as interpret mode does.
#ifndef PALLASVM_RUNTIME_MEMORY_MODEL_H_
#define PALLASVM_RUNTIME_MEMORY_MODEL_H_

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "runtime/core_sync.h"
#include "runtime/cross_core_races.h"
#include "runtime/dma_engine.h"
#include "runtime/kernel.h"
#include "runtime/race_detector.h"
#include "runtime/semaphores.h"
#include "runtime/uninitialized_reads.h"
#include "vm/machine.h"

namespace pallasvm::runtime {

// One simulated core's view of the machine: its semaphores and DMA
// engine, over its ref table. Used by one thread at a time.
class CoreMachine : public vm::Machine {
 public:
  struct CallOptions {
    DmaExecutionMode dma_mode = DmaExecutionMode::kOnWait;
    // Per ref, its fill value (SizeOf bytes), for fresh scoped buffers and
    // for what a DMA source reads outside its ref where the VM let it (its
    // padding, or out_of_bounds_reads="uninitialized").
    const uint64_t* fills = nullptr;
    // Race detection between the kernel and its DMAs
    // (runtime/race_detector.h); the VM must then observe accesses.
    bool detect_races = false;
    // Non-null: this core's marks for races between cores
    // (runtime/cross_core_races.h), which see the HBM side of its DMAs.
    CrossCoreRaces::Core* cross_core = nullptr;
    // Uninitialized-read detection (runtime/uninitialized_reads.h); the VM
    // must then observe accesses.
    UninitializedReadsCheck uninitialized_reads = UninitializedReadsCheck::kOff;
    // The grid point being run (grid_rank int32s, updated in place), for
    // reports.
    const int32_t* grid_point = nullptr;
    int grid_rank = 0;
    int core = 0;  // this core's index, for debug prints
    // Several cores (runtime/core_sync.h): non-null. With
    // `lock_semaphores` (the kernel signals other cores' semaphores),
    // every semaphore operation and DMA is done under sync's mutex and a
    // wait blocks until another core signals; the caller zeroes the
    // semaphores (ResetSemaphores) before any core starts. Device-shared
    // refs are made fresh through it either way.
    CoreSync* sync = nullptr;
    bool lock_semaphores = false;
    // This core's device in sync (shard_map devices meeting; 0 alone).
    int device = 0;
  };

  // `refs` is the core's ref table (kernel.refs.size() entries), valid for
  // the machine's life; its entries may change between calls (HBM).
  CoreMachine(const Kernel& kernel, uint8_t* const* refs);

  // At the start of a call: nothing in flight, every semaphore 0 (unless
  // options.lock_semaphores: see CallOptions).
  void BeginCall(const CallOptions& options);
  void ResetSemaphores() { semaphores_.ZeroAll(); }
  Semaphores& semaphores() { return semaphores_; }
  const DmaEngine& dma() const { return dma_; }
  uint8_t* const* refs() const { return refs_; }
  // At the end of a call: what a kernel author should hear about (a
  // semaphore left non-zero, a DMA never waited for), one line each; with
  // `as_error`, the first of them as a FAILED_PRECONDITION error instead.
  absl::Status EndCall(std::vector<std::string>* warnings, bool as_error);

  absl::Status StartDma(const vm::DmaRegion& src, const vm::DmaRegion& dst,
                        const vm::SemaphoreId* src_sem, vm::SemaphoreId dst_sem,
                        vm::Target to, uint32_t pc) override;
  absl::Status SignalSemaphore(vm::SemaphoreId sem, int32_t inc, vm::Target to,
                               uint32_t pc) override;
  absl::Status WaitSemaphore(vm::SemaphoreId sem, int32_t value,
                             uint32_t pc) override;
  absl::StatusOr<int32_t> ReadSemaphore(vm::SemaphoreId sem,
                                        uint32_t pc) override;
  absl::Status EnterScope(uint32_t first, uint32_t count,
                          uint32_t pc) override;
  absl::Status ExitScope(uint32_t first, uint32_t count,
                         uint32_t pc) override;
  absl::Status ObserveAccess(int32_t ref, const vm::AccessDesc* region,
                             vm::AccessKind kind, const uint8_t* mask,
                             uint32_t pc) override;
  // "[grid point (1, 0)] text" (", core 1" for cores past 0), on stdout.
  void DebugPrint(std::string_view text, uint32_t pc) override;

  // What race detection found in this call.
  const RaceDetector& races() const { return races_; }
  // Uninitialized-read detection's shadow state in this call, for the
  // grid driver's block copies; null when the check is off.
  UninitializedReads* uninitialized_reads() {
    return options_.uninitialized_reads == UninitializedReadsCheck::kOff
               ? nullptr
               : uninit_.get();
  }

 private:
  // The core (numbered across devices, as in options_.sync) that `to`
  // names, `default_core` being the core on another device when `to`
  // names none; an error if there is no such core or device.
  absl::StatusOr<int> TargetCore(vm::Target to, int default_core,
                                 absl::string_view what) const;
  // Race detection across cores: this core signals semaphore `sem` of core
  // `core` (numbered as in options_.sync): what it did so far happens
  // before what that core does after its wait. Hold sync's mutex.
  void ReleaseTo(int core, vm::SemaphoreId sem);
  // This core, numbered as in options_.sync.
  int GlobalCore() const {
    return options_.sync ? options_.device * options_.sync->cores_per_device() +
                               options_.core
                         : 0;
  }
  // A DMA whose destination is core `core`'s (see DmaEngine::OtherCore).
  absl::Status StartDmaToCore(const vm::DmaRegion& src,
                              const vm::DmaRegion& dst,
                              const vm::SemaphoreId* src_sem,
                              vm::SemaphoreId dst_sem, int core, uint32_t pc);
  // The lock on options_.sync's mutex if semaphores are locked, else none.
  std::unique_lock<std::mutex> LockSemaphores() {
    return options_.lock_semaphores
               ? std::unique_lock<std::mutex>(options_.sync->mutex())
               : std::unique_lock<std::mutex>();
  }

  const Kernel& kernel_;
  uint8_t* const* refs_;
  Semaphores semaphores_;
  DmaEngine dma_;
  RaceDetector races_;
  std::unique_ptr<UninitializedReads> uninit_;  // made when first asked for
  CallOptions options_;
  std::vector<std::string> scope_warnings_;
  std::vector<bool> scope_warned_;  // per ref, this call
};

}  // namespace pallasvm::runtime

#endif  // PALLASVM_RUNTIME_MEMORY_MODEL_H_
