// What the simulated cores of one device share while one call runs on
// several of them: the semaphores they signal across cores, the buffers
// they all see, and the end of the call for everyone when one core fails.
// The same object joins the devices of one shard_map step (the XLA FFI
// calls of its N devices, each on its own thread, meet in one; see
// tools/jax_bridge): cores are then numbered device * cores_per_device +
// core, remote signals and DMAs reach other devices' cores, and deadlock
// and failure span every core of every device.
//
// Cross-core semaphores. A kernel that signals another core's semaphore
// (semaphore_signal(..., core_index=c), pltpu.core_barrier) has every
// semaphore operation of every core done under one mutex: a signal adds to
// the target core's counter and wakes the waiters; a wait that its count
// and its own pending DMAs cannot satisfy blocks its thread on a condition
// variable (never spins), so a core that the operating system has not
// scheduled costs the others nothing. Kernels that never signal across
// cores keep their semaphores core-local, without the lock (see
// runtime/memory_model.h).
//
// Deadlock. The mutex makes "every core still running waits, and none of
// their waits can be satisfied" an exact, observable state: whoever makes
// it true (the last core to block, or a core finishing while the rest
// wait) fails the call with an error that names every waiter (semaphore,
// needed and held counts, the wait's line, grid point and core). Interpret
// mode waits forever there.
//
// Failure. The first core to fail records its error and wakes every
// waiter; waiters and running cores (through vm::Interrupt's stop flag)
// end with ABORTED, and the call reports the first core's error.
//
// Device-shared buffers. pltpu.VMEM_SHARED buffers and HBM scratch and
// run_scoped buffers are one buffer per device, as on a TPU (interpret
// mode shares HBM ones). A run_scoped one is fresh when the first core
// enters its n-th entry (interpret mode's per-core allocation count,
// keyed for all cores): core c's n-th entry shares the buffer of every
// other core's n-th entry.
#ifndef PALLASVM_RUNTIME_CORE_SYNC_H_
#define PALLASVM_RUNTIME_CORE_SYNC_H_

#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "runtime/cross_core_races.h"
#include "runtime/kernel.h"
#include "runtime/semaphores.h"
#include "vm/interrupt.h"
#include "vm/machine.h"

namespace pallasvm::runtime {

class CoreMachine;
class DmaEngine;

class CoreSync {
 public:
  // What a blocked core waits for, for the deadlock report and the check
  // that its wait really cannot proceed.
  struct Wait {
    vm::SemaphoreId sem;
    int32_t value = 0;
    uint32_t pc = 0;
    const int32_t* grid_point = nullptr;  // the core's, updated in place
  };

  // Whether device-shared refs exist: VMEM_SHARED, or HBM scratch and
  // run_scoped buffers.
  static bool IsShared(const RefSpec& ref);

  CoreSync(const Kernel& kernel, int num_cores, int num_devices = 1);

  // Before any core runs: core c's semaphores and DMA engine (the latter
  // for the deadlock check: a wait with its DMAs pending can proceed), the
  // deadline and cancellation flag blocked waits obey.
  void Bind(int core, Semaphores* semaphores, const DmaEngine* dma,
            uint8_t* const* refs, CoreMachine* machine);
  void SetInterrupt(vm::Interrupt::Clock::time_point deadline,
                    const std::atomic<bool>* cancel,
                    std::chrono::nanoseconds timeout);

  std::mutex& mutex() { return mutex_; }
  // The number of cores of every device, per device, and of devices; core
  // c's semaphores (hold mutex()), c numbered across devices.
  int num_cores() const { return static_cast<int>(semaphores_.size()); }
  int cores_per_device() const { return cores_per_device_; }
  int num_devices() const { return num_devices_; }
  Semaphores& semaphores(int core) { return *semaphores_[core]; }
  // Core c's ref table and machine (for DMAs into its buffers).
  uint8_t* const* refs(int core) const { return refs_[core]; }
  CoreMachine* machine(int core) const { return machines_[core]; }
  // After a signal to core `core` (hold mutex()): wakes it if it waits.
  // Only that core: with more cores than CPUs, waking every waiter at each
  // signal makes a barrier cost a context switch per waiter and signal.
  void Notify(int core) { wake_[core]->notify_one(); }

  // Blocks core `core` (holding `lock` on mutex()) until something changes:
  // OK then, for the caller to look again. An error if the call must end:
  // a deadlock (every running core blocked in a wait nothing can satisfy),
  // another core's failure (ABORTED), the deadline or cancellation.
  absl::Status Block(std::unique_lock<std::mutex>& lock, int core,
                     const Wait& wait);

  // Core `core` is done, with `status` (its RunCore's). A failure ends the
  // call for every core; a success may leave the rest deadlocked.
  void Finish(int core, const absl::Status& status);
  // The call's error: the first core's failure, else OK.
  absl::Status failure();
  // Set once a core fails: vm::Interrupt stops the others.
  const std::atomic<bool>* stop() const { return &stop_; }

  // Devices meeting: a device's call has bound its cores and zeroed their
  // semaphores (Arrive), or its cores are done (Depart). Each blocks until
  // every device has done the same, so no signal or DMA reaches a device
  // before it is ready or after it has returned its buffers; an error if
  // the call must end first (a failure, the deadline).
  absl::Status Arrive(int device);
  absl::Status Depart(int device);
  // A device that fails before it arrives: the call ends for every device
  // with `status`, and the others need not wait for this one to depart.
  // Nothing if the device has arrived (it departs as usual) or abandoned
  // already.
  void Abandon(int device, const absl::Status& status);

  // Race detection across devices (RunOptions::detect_races on a meeting of
  // devices): before it arrives, each device hands in the buffers its
  // cores share with others (addresses bound); the last to arrive makes
  // one CrossCoreRaces over every core of every device and all those
  // buffers. races() is it (after Arrive; null if no device asked);
  // FindRaces (after Depart) is its report, computed once for all devices.
  void AddRaceBuffers(const std::vector<CrossCoreRaces::Buffer>& buffers);
  CrossCoreRaces* races() { return races_.get(); }
  void FindRaces(int64_t* racy_elements, std::string* description);

  // SCOPE_ENTER of device-shared ref `ref` by `core` (takes mutex()):
  // whether this entry makes it fresh.
  bool EnterShared(int core, int ref);

 private:
  enum class State : uint8_t { kRunning, kWaiting, kDone };
  // Whether some running core, or a waiter whose wait can proceed, is
  // left (hold mutex_).
  bool CanProgress() const;
  std::string DeadlockReport() const;
  void FailLocked(const absl::Status& status);

  const Kernel& kernel_;
  std::mutex mutex_;
  std::condition_variable changed_;  // devices meeting
  std::vector<std::unique_ptr<std::condition_variable>> wake_;  // per core
  // Wakes every waiter and meeting (a failure, a finished core).
  void WakeAll();
  // Waits on `cv` (holding `lock`) until notified, the deadline, `limit`,
  // or the next look at the cancellation flag, whichever comes first.
  void WaitForChange(std::condition_variable& cv,
                     std::unique_lock<std::mutex>& lock,
                     vm::Interrupt::Clock::time_point limit);
  std::vector<Semaphores*> semaphores_;
  std::vector<const DmaEngine*> dmas_;
  std::vector<uint8_t* const*> refs_;
  std::vector<CoreMachine*> machines_;
  std::vector<State> state_;
  int cores_per_device_ = 1, num_devices_ = 1;
  int arrived_ = 0, departed_ = 0;
  std::vector<uint8_t> arrived_device_, left_device_;
  bool races_wanted_ = false;
  std::vector<CrossCoreRaces::Buffer> race_buffers_;
  std::unique_ptr<CrossCoreRaces> races_;
  bool races_found_ = false;
  int64_t racy_elements_ = 0;
  std::string race_description_;
  // Waits until *count reaches num_devices_ (hold lock); what Arrive and
  // Depart share.
  absl::Status Meet(std::unique_lock<std::mutex>& lock, int* count,
                    bool stop_on_failure);
  std::vector<Wait> waits_;
  absl::Status failure_;
  std::atomic<bool> stop_{false};
  vm::Interrupt::Clock::time_point deadline_ =
      vm::Interrupt::Clock::time_point::max();
  const std::atomic<bool>* cancel_ = nullptr;
  std::chrono::nanoseconds timeout_{0};
  // Per ref: per core its run_scoped entries, and the most any core made.
  std::vector<std::vector<int64_t>> entries_;
  std::vector<int64_t> fresh_entries_;
};

}  // namespace pallasvm::runtime

#endif  // PALLASVM_RUNTIME_CORE_SYNC_H_
