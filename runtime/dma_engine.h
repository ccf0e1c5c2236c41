// One simulated core's DMA engine: carries out the DMAs its kernel starts,
// at once ("eager") or when a wait on their semaphore needs them
// ("on_wait"), as JAX's interpret mode does (see runtime/memory_model.h).
// A DMA is a pair of resolved regions (vm::AccessDesc with static starts)
// of refs in the core's ref table; its copy goes through the same region
// walks as the VM's loads and stores (vm/kernels/access.h).
//
// Allocates only while the number of DMAs in flight grows past what an
// earlier call had: a grid step in steady state allocates nothing.
#ifndef PALLASVM_RUNTIME_DMA_ENGINE_H_
#define PALLASVM_RUNTIME_DMA_ENGINE_H_

#include <cstdint>
#include <vector>

#include "absl/status/status.h"
#include "runtime/semaphores.h"
#include "vm/machine.h"

namespace pallasvm::runtime {

// Interpret mode's dma_execution_mode.
enum class DmaExecutionMode { kOnWait, kEager };

class DmaEngine {
 public:
  DmaEngine(Semaphores& semaphores, uint8_t* const* refs);

  // A new call: nothing in flight. `fills` (per ref) is what a source
  // region reads outside its ref, where the VM let it (its padding, or
  // out_of_bounds_reads="uninitialized").
  void Reset(DmaExecutionMode mode, const uint64_t* fills);

  // At most this many DMAs are in flight on one core: a kernel that starts
  // DMAs in a loop and never waits for them fails with RESOURCE_EXHAUSTED
  // instead of growing without bound.
  static constexpr size_t kMaxInFlight = size_t{1} << 16;

  // Where a DMA to another core of the device writes: that core's ref
  // table and semaphores.
  struct OtherCore {
    uint8_t* const* refs;
    Semaphores* semaphores;
  };

  // DMA_START (see vm::Machine::StartDma). *serial receives the DMA's
  // number, counted from 0 at Reset. A DMA to `other` (non-null) is
  // carried out at once in either mode: a wait on the other core cannot
  // run this core's DMAs (the caller holds the cores' lock).
  absl::Status Start(const vm::DmaRegion& src, const vm::DmaRegion& dst,
                     const vm::SemaphoreId* src_sem, vm::SemaphoreId dst_sem,
                     uint32_t pc, uint64_t* serial,
                     const OtherCore* other = nullptr);

  // The serial the next Start will give.
  uint64_t next_serial() const { return next_serial_; }

  // Called with a DMA's serial once it is carried out (race detection's
  // view); null: nobody listens.
  void set_on_done(void (*on_done)(void*, uint64_t), void* context) {
    on_done_ = on_done;
    on_done_context_ = context;
  }

  // Carries out the most recently started DMA still pending on `sem`
  // (interpret mode's order); false if none is.
  absl::Status RunOneFor(vm::SemaphoreId sem, bool* ran);

  // Whether a DMA that would signal `sem` is pending.
  bool HasPendingFor(vm::SemaphoreId sem) const {
    return !tasks_[semaphores_.Number(sem)].empty();
  }

  // Calls f(pc, dst_sem) for every DMA started and never carried out.
  template <typename F>
  void ForEachPending(F&& f) const {
    for (const Dma& d : dmas_) {
      if (d.live) f(d.pc, d.dst_sem);
    }
  }

 private:
  struct Dma {
    vm::AccessDesc src, dst;  // only their bases when one_run
    // Both regions inside their refs (not their padding) and contiguous:
    // one memmove of `bytes` from src_offset to dst_offset (the common
    // case, computed at the start).
    bool one_run = false;
    int64_t src_offset = 0, dst_offset = 0, bytes = 0;
    vm::SemaphoreId dst_sem, src_sem;  // src_sem.ref < 0: none
    uint32_t pc = 0;
    uint64_t serial = 0;
    bool live = false;
  };
  absl::Status Execute(Dma& dma, const OtherCore* other = nullptr);
  void Forget(int dma);

  Semaphores& semaphores_;
  uint8_t* const* refs_;
  DmaExecutionMode mode_ = DmaExecutionMode::kOnWait;
  const uint64_t* fills_ = nullptr;
  uint64_t next_serial_ = 0;
  void (*on_done_)(void*, uint64_t) = nullptr;
  void* on_done_context_ = nullptr;
  std::vector<Dma> dmas_;               // a pool: live or free
  std::vector<int> free_;               // indices of free entries
  std::vector<std::vector<int>> tasks_;  // per semaphore number: pending DMAs
  std::vector<uint8_t> staging_;        // a strided copy's dense middle
};

}  // namespace pallasvm::runtime

#endif  // PALLASVM_RUNTIME_DMA_ENGINE_H_
