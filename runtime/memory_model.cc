// One core's simulated machine; the model is described in memory_model.h.
#include "runtime/memory_model.h"

#include <cstdio>

#include "absl/strings/str_cat.h"
#include "runtime/access_elements.h"
#include "runtime/block_copy.h"

namespace pallasvm::runtime {

CoreMachine::CoreMachine(const Kernel& kernel, uint8_t* const* refs)
    : kernel_(kernel),
      refs_(refs),
      semaphores_(kernel, refs),
      dma_(semaphores_, refs),
      races_(kernel, refs) {}

void CoreMachine::BeginCall(const CallOptions& options) {
  options_ = options;
  if (!options.lock_semaphores) semaphores_.ZeroAll();
  dma_.Reset(options.dma_mode, options.fills);
  scope_warnings_.clear();
  scope_warned_.assign(kernel_.refs.size(), false);
  races_.Reset();
  races_.SetGridPoint(options.grid_point, options.grid_rank);
  if (options.uninitialized_reads != UninitializedReadsCheck::kOff) {
    if (uninit_ == nullptr) uninit_ = std::make_unique<UninitializedReads>(kernel_);
    uninit_->BeginCall(options.grid_point, options.grid_rank,
                       options.uninitialized_reads ==
                           UninitializedReadsCheck::kError);
  }
  if (options.detect_races || options.cross_core != nullptr ||
      uninitialized_reads() != nullptr) {
    dma_.set_on_done(
        [](void* machine, uint64_t serial) {
          CoreMachine& m = *static_cast<CoreMachine*>(machine);
          if (m.options_.detect_races) m.races_.OnDmaDone(serial);
          if (m.options_.cross_core) m.options_.cross_core->OnDmaDone(serial);
          if (UninitializedReads* u = m.uninitialized_reads()) u->OnDmaDone(serial);
        },
        this);
  } else {
    dma_.set_on_done(nullptr, nullptr);
  }
}

absl::Status CoreMachine::EndCall(std::vector<std::string>* warnings,
                                  bool as_error) {
  std::unique_lock<std::mutex> lock = LockSemaphores();
  std::vector<std::string> found;
  if (warnings == nullptr) warnings = &found;
  if (UninitializedReads* u = uninitialized_reads()) u->TakeWarnings(warnings);
  const size_t first = warnings->size();
  for (std::string& w : scope_warnings_) warnings->push_back(std::move(w));
  scope_warnings_.clear();
  semaphores_.ForEachNonZero(-1, [&](vm::SemaphoreId sem, int32_t count) {
    warnings->push_back(absl::StrCat("semaphore ", semaphores_.Name(sem),
                                     " holds ", count,
                                     " at the end of the call (expected 0)"));
  });
  dma_.ForEachPending([&](uint32_t pc, vm::SemaphoreId sem) {
    warnings->push_back(absl::StrCat(
        "the DMA started by ", InstructionSource(kernel_.program, pc),
        " was never waited for (semaphore ", semaphores_.Name(sem),
        "); in dma_execution_mode='on_wait' it never happened"));
  });
  if (as_error && warnings->size() > first) {
    return absl::FailedPreconditionError(
        absl::StrCat((*warnings)[first],
                     warnings->size() - first > 1
                         ? absl::StrCat(" (and ", warnings->size() - first - 1,
                                        " more)")
                         : ""));
  }
  return absl::OkStatus();
}

absl::Status CoreMachine::StartDma(const vm::DmaRegion& src,
                                   const vm::DmaRegion& dst,
                                   const vm::SemaphoreId* src_sem,
                                   vm::SemaphoreId dst_sem, vm::Target to,
                                   uint32_t pc) {
  if (to.core != vm::kThisCore || to.device != vm::kThisDevice) {
    // On another device, the same core number unless `to` names one.
    absl::StatusOr<int> core = TargetCore(to, options_.core, "a DMA");
    if (!core.ok()) return core.status();
    if (*core != GlobalCore()) {
      return StartDmaToCore(src, dst, src_sem, dst_sem, *core, pc);
    }
  }
  // Its completion signals this core's semaphores, which other cores may
  // be signalling too.
  std::unique_lock<std::mutex> lock = LockSemaphores();
  uint64_t serial = 0;
  if (options_.detect_races) {
    // Registered before it runs: in eager mode it is done at once.
    races_.OnDmaStart(dma_.next_serial(), src.access, dst.access,
                      semaphores_.Number(dst_sem),
                      src_sem ? semaphores_.Number(*src_sem) : -1, pc);
  }
  if (UninitializedReads* u = uninitialized_reads()) {
    u->OnDmaStart(dma_.next_serial(), src.access, dst.access,
                  semaphores_.Number(dst_sem));
  }
  if (options_.cross_core != nullptr) {
    options_.cross_core->OnDmaStart(dma_.next_serial(), src.access,
                                    dst.access, pc);
  }
  return dma_.Start(src, dst, src_sem, dst_sem, pc, &serial);
}

void CoreMachine::ReleaseTo(int core, vm::SemaphoreId sem) {
  // Cores numbered as in options_.sync, which the race detector's sync
  // objects follow (one per semaphore of each core of each device).
  if (options_.cross_core == nullptr) return;
  options_.cross_core->Release(core * semaphores_.size() +
                               semaphores_.Number(sem));
}

absl::StatusOr<int> CoreMachine::TargetCore(vm::Target to, int default_core,
                                            absl::string_view what) const {
  const int cores = options_.sync ? options_.sync->cores_per_device() : 1;
  const int devices = options_.sync ? options_.sync->num_devices() : 1;
  if (to.device != vm::kThisDevice && (to.device < 0 || to.device >= devices)) {
    return absl::InvalidArgumentError(absl::StrCat(
        what, " to device ", to.device, " (device_id), but the call runs on ",
        devices, devices == 1 ? " device" : " devices"));
  }
  if (to.core != vm::kThisCore && (to.core < 0 || to.core >= cores)) {
    return absl::InvalidArgumentError(absl::StrCat(
        what, " to core ", to.core, " (core_index or device_id), but the "
        "device has ", cores, cores == 1 ? " core" : " cores"));
  }
  const int device = to.device == vm::kThisDevice ? options_.device : to.device;
  const int core = to.core != vm::kThisCore ? to.core
                   : device == options_.device ? options_.core
                                               : default_core;
  return device * cores + core;
}

absl::Status CoreMachine::StartDmaToCore(const vm::DmaRegion& src,
                                         const vm::DmaRegion& dst,
                                         const vm::SemaphoreId* src_sem,
                                         vm::SemaphoreId dst_sem, int core,
                                         uint32_t pc) {
  // Race detection marks the copy at once (OnRemoteDma); uninitialized
  // reads see its destination written (not the source's own state, which
  // is this core's shadow).
  std::unique_lock<std::mutex> lock(options_.sync->mutex());
  const DmaEngine::OtherCore other{options_.sync->refs(core),
                                   &options_.sync->semaphores(core)};
  // The copy's marks, then its signal: a wait on the destination
  // semaphore orders what follows it after the copy.
  if (options_.cross_core != nullptr) {
    options_.cross_core->OnRemoteDma(src.access, options_.sync->refs(core),
                                     dst.access, pc);
  }
  ReleaseTo(core, dst_sem);
  if (UninitializedReads* u = options_.sync->machine(core)->uninitialized_reads()) {
    u->MarkWritten(dst.access);
  }
  uint64_t serial = 0;
  absl::Status s = dma_.Start(src, dst, src_sem, dst_sem, pc, &serial, &other);
  options_.sync->Notify(core);
  return s;
}

void CoreMachine::DebugPrint(std::string_view text, uint32_t) {
  std::string line = "[grid point (";
  for (int g = 0; g < options_.grid_rank; ++g) {
    absl::StrAppend(&line, g ? ", " : "", options_.grid_point[g]);
  }
  absl::StrAppend(&line, ")",
                  options_.core > 0 ? absl::StrCat(", core ", options_.core)
                                    : "",
                  "] ", std::string(text), "\n");
  std::fwrite(line.data(), 1, line.size(), stdout);
  std::fflush(stdout);
}

absl::Status CoreMachine::ObserveAccess(int32_t ref,
                                        const vm::AccessDesc* region,
                                        vm::AccessKind kind,
                                        const uint8_t* mask, uint32_t pc) {
  if (options_.detect_races) races_.OnAccess(ref, region, vm::IsWrite(kind), pc);
  if (options_.cross_core != nullptr && CoreSync::IsShared(kernel_.refs[ref])) {
    // Device-shared refs the kernel reads and writes directly.
    options_.cross_core->OnAccess(
        ref, region ? *region : WholeRef(kernel_.refs[ref], ref),
        vm::IsWrite(kind), pc);
  }
  if (UninitializedReads* u = uninitialized_reads()) {
    return u->OnAccess(ref, region, kind, mask, pc);
  }
  return absl::OkStatus();
}

absl::Status CoreMachine::SignalSemaphore(vm::SemaphoreId sem, int32_t inc,
                                          vm::Target to, uint32_t) {
  if (inc < 0) {
    return absl::InvalidArgumentError(absl::StrCat(
        "semaphore ", semaphores_.Name(sem), " signalled by ", inc,
        " (a signal must not be negative)"));
  }
  // On another device, core 0 unless `to` names one (interpret mode's).
  absl::StatusOr<int> target = TargetCore(
      to, 0, absl::StrCat("semaphore ", semaphores_.Name(sem), " signalled"));
  if (!target.ok()) return target.status();
  const int core = *target;
  if (core == GlobalCore()) {
    std::unique_lock<std::mutex> lock = LockSemaphores();
    if (options_.lock_semaphores) ReleaseTo(core, sem);
    // (This core is not waiting: it is signalling.)
    return semaphores_.Add(sem, inc);
  }
  // Another core's: the kernel signals across cores, so semaphores are
  // locked (see CallOptions).
  std::unique_lock<std::mutex> lock(options_.sync->mutex());
  ReleaseTo(core, sem);
  absl::Status s = options_.sync->semaphores(core).Add(sem, inc);
  options_.sync->Notify(core);
  return s;
}

absl::Status CoreMachine::WaitSemaphore(vm::SemaphoreId sem, int32_t value,
                                        uint32_t pc) {
  if (value < 0) {
    return absl::InvalidArgumentError(absl::StrCat(
        "wait for ", value, " on semaphore ", semaphores_.Name(sem),
        " (the value must not be negative)"));
  }
  std::unique_lock<std::mutex> lock = LockSemaphores();
  while (semaphores_.Count(sem) < value) {
    bool ran = false;
    if (absl::Status s = dma_.RunOneFor(sem, &ran); !s.ok()) return s;
    if (ran) continue;
    if (options_.lock_semaphores) {
      // Another core may signal it: wait for that (or a deadlock).
      if (absl::Status s = options_.sync->Block(
              lock, GlobalCore(), {sem, value, pc, options_.grid_point});
          !s.ok()) {
        return s;
      }
    } else {
      // Nothing else can signal this core's semaphores on one device.
      return absl::FailedPreconditionError(absl::StrCat(
          "deadlock: the wait needs semaphore ", semaphores_.Name(sem),
          " to reach ", value, " but it holds ", semaphores_.Count(sem),
          ", and no DMA in flight or other core can signal it (interpret "
          "mode would wait forever)"));
    }
  }
  semaphores_.SetCount(sem, semaphores_.Count(sem) - value);
  if (options_.lock_semaphores && options_.cross_core != nullptr) {
    // What the signallers did before signalling happens before what
    // follows (runtime/cross_core_races.h).
    options_.cross_core->Acquire(GlobalCore() * semaphores_.size() +
                                 semaphores_.Number(sem));
  }
  if (options_.detect_races) races_.OnWait(semaphores_.Number(sem));
  if (UninitializedReads* u = uninitialized_reads()) {
    u->OnWait(semaphores_.Number(sem));
  }
  return absl::OkStatus();
}

absl::StatusOr<int32_t> CoreMachine::ReadSemaphore(vm::SemaphoreId sem,
                                                   uint32_t) {
  std::unique_lock<std::mutex> lock = LockSemaphores();
  return semaphores_.Count(sem);
}

absl::Status CoreMachine::EnterScope(uint32_t first, uint32_t count,
                                     uint32_t) {
  for (uint32_t r = first; r < first + count; ++r) {
    const RefSpec& ref = kernel_.refs[r];
    if (ref.memory_space == vm::MemorySpace::SEMAPHORE) {
      // Signalled across cores, a run_scoped semaphore keeps its count, as
      // interpret mode's do (allocated once per id): another core may
      // signal it before this one enters. ExitScope warns of what is left.
      if (!options_.lock_semaphores) semaphores_.Zero(static_cast<int>(r));
    } else if (options_.sync != nullptr && CoreSync::IsShared(ref) &&
               !options_.sync->EnterShared(GlobalCore(),
                                           static_cast<int>(r))) {
      // Another core's entry made this device-shared buffer: it is the
      // one this entry sees.
      continue;
    } else {
      if (UninitializedReads* u = uninitialized_reads()) {
        u->SetAll(static_cast<int32_t>(r), false);
      }
      FillElements(refs_[r], ref.type.num_elements(),
                   reinterpret_cast<const uint8_t*>(&options_.fills[r]),
                   vm::SizeOf(ref.type.dtype));
    }
  }
  return absl::OkStatus();
}

absl::Status CoreMachine::ExitScope(uint32_t first, uint32_t count,
                                    uint32_t) {
  for (uint32_t r = first; r < first + count; ++r) {
    if (kernel_.refs[r].memory_space != vm::MemorySpace::SEMAPHORE) continue;
    // Once per ref and call: a run_scoped in a loop would say it each time.
    if (scope_warned_.size() != kernel_.refs.size()) {
      scope_warned_.assign(kernel_.refs.size(), false);
    }
    if (scope_warned_[r]) continue;
    std::unique_lock<std::mutex> lock = LockSemaphores();
    semaphores_.ForEachNonZero(
        static_cast<int>(r), [&](vm::SemaphoreId sem, int32_t c) {
          scope_warnings_.push_back(absl::StrCat(
              "semaphore ", semaphores_.Name(sem), " holds ", c,
              " when its run_scoped ends (expected 0)"));
          scope_warned_[r] = true;
        });
  }
  return absl::OkStatus();
}

}  // namespace pallasvm::runtime
