// The cores of one device in one call; the model is in core_sync.h.
#include "runtime/core_sync.h"

#include <algorithm>
#include <chrono>

#include "absl/strings/str_cat.h"
#include "runtime/dma_engine.h"

namespace pallasvm::runtime {
namespace {

// How often a blocked wait looks at the cancellation flag, which nothing
// signals (the deadline and the other cores wake it themselves).
constexpr auto kCancelPoll = std::chrono::milliseconds(10);
constexpr auto kMeetingTimeout = std::chrono::seconds(120);

std::string PointAt(const int32_t* point, int rank) {
  std::string s = "(";
  for (int g = 0; g < rank; ++g) absl::StrAppend(&s, g ? ", " : "", point[g]);
  return s + ")";
}

}  // namespace

bool CoreSync::IsShared(const RefSpec& ref) {
  return (ref.kind == RefKind::SCRATCH || ref.kind == RefKind::SCOPED) &&
         (ref.memory_space == MemorySpace::VMEM_SHARED ||
          ref.memory_space == MemorySpace::HBM);
}

CoreSync::CoreSync(const Kernel& kernel, int num_cores, int num_devices)
    : kernel_(kernel),
      semaphores_(num_cores * num_devices, nullptr),
      dmas_(num_cores * num_devices, nullptr),
      refs_(num_cores * num_devices, nullptr),
      machines_(num_cores * num_devices, nullptr),
      state_(num_cores * num_devices, State::kRunning),
      cores_per_device_(num_cores),
      num_devices_(num_devices),
      arrived_device_(num_devices, 0),
      left_device_(num_devices, 0),
      waits_(num_cores * num_devices),
      entries_(kernel.refs.size()),
      fresh_entries_(kernel.refs.size() * num_devices, 0) {
  for (size_t r = 0; r < kernel.refs.size(); ++r) {
    if (IsShared(kernel.refs[r]))
      entries_[r].assign(num_cores * num_devices, 0);
  }
  for (int c = 0; c < num_cores * num_devices; ++c) {
    wake_.push_back(std::make_unique<std::condition_variable>());
  }
}

void CoreSync::WaitForChange(std::condition_variable& cv,
                             std::unique_lock<std::mutex>& lock,
                             vm::Interrupt::Clock::time_point limit) {
  auto until = std::min(deadline_, limit);
  if (cancel_ != nullptr) {
    until = std::min(until, vm::Interrupt::Clock::now() + kCancelPoll);
  }
  if (until == vm::Interrupt::Clock::time_point::max()) {
    cv.wait(lock);
  } else {
    cv.wait_until(lock, until);
  }
}

void CoreSync::WakeAll() {
  changed_.notify_all();
  for (const auto& w : wake_) w->notify_all();
}

absl::Status CoreSync::Meet(std::unique_lock<std::mutex>& lock, int* count,
                            bool stop_on_failure) {
  ++*count;
  changed_.notify_all();
  // XLA starts the devices of one step together: one that has not come
  // within this long is not coming (a bug, not a slow kernel).
  const auto give_up = vm::Interrupt::Clock::now() + kMeetingTimeout;
  while (*count < num_devices_) {
    if (stop_on_failure && !failure_.ok()) {
      return absl::AbortedError(vm::CoreStoppedMessage());
    }
    const auto now = vm::Interrupt::Clock::now();
    if (stop_on_failure && now >= give_up) {
      return absl::DeadlineExceededError(absl::StrCat(
          "only ", *count, " of the ", num_devices_,
          " devices started the call within ",
          std::chrono::duration_cast<std::chrono::seconds>(kMeetingTimeout)
              .count(),
          " s"));
    }
    WaitForChange(
        changed_, lock,
        stop_on_failure ? give_up : vm::Interrupt::Clock::time_point::max());
    vm::Interrupt probe(deadline_, cancel_, timeout_);
    if (*count < num_devices_ && probe.Poll()) {
      const absl::Status s = probe.status();
      return absl::Status(
          s.code(),
          absl::StrCat(s.message(), ": ", *count, " of ", num_devices_,
                       " devices ", count == &arrived_ ? "started" : "finished",
                       " the call"));
    }
  }
  return absl::OkStatus();
}

absl::Status CoreSync::Arrive(int device) {
  std::unique_lock<std::mutex> lock(mutex_);
  arrived_device_[device] = 1;
  if (races_wanted_ && races_ == nullptr && arrived_ + 1 == num_devices_) {
    // The last to arrive: every device's buffers are in.
    const int per_core = semaphores_[0] ? semaphores_[0]->size() : 0;
    races_ = std::make_unique<CrossCoreRaces>(
        kernel_, num_cores(), race_buffers_, num_cores() * per_core);
    races_->SetDevices(cores_per_device_);
  }
  return Meet(lock, &arrived_, /*stop_on_failure=*/true);
}

void CoreSync::AddRaceBuffers(
    const std::vector<CrossCoreRaces::Buffer>& buffers) {
  std::lock_guard<std::mutex> lock(mutex_);
  races_wanted_ = true;
  race_buffers_.insert(race_buffers_.end(), buffers.begin(), buffers.end());
}

void CoreSync::FindRaces(int64_t* racy_elements, std::string* description) {
  std::lock_guard<std::mutex> lock(mutex_);
  if (races_ != nullptr && !races_found_) {
    races_->Find(&racy_elements_, &race_description_);
    races_found_ = true;
  }
  *racy_elements += racy_elements_;
  absl::StrAppend(description, race_description_);
}

void CoreSync::Abandon(int device, const absl::Status& status) {
  std::lock_guard<std::mutex> lock(mutex_);
  if (arrived_device_[device] || left_device_[device]) return;
  left_device_[device] = 1;
  ++departed_;
  FailLocked(status);
}

absl::Status CoreSync::Depart(int device) {
  std::unique_lock<std::mutex> lock(mutex_);
  left_device_[device] = 1;
  return Meet(lock, &departed_, /*stop_on_failure=*/false);
}

void CoreSync::Bind(int core, Semaphores* semaphores, const DmaEngine* dma,
                    uint8_t* const* refs, CoreMachine* machine) {
  machines_[core] = machine;
  semaphores_[core] = semaphores;
  dmas_[core] = dma;
  refs_[core] = refs;
}

void CoreSync::SetInterrupt(vm::Interrupt::Clock::time_point deadline,
                            const std::atomic<bool>* cancel,
                            std::chrono::nanoseconds timeout) {
  deadline_ = deadline;
  cancel_ = cancel;
  timeout_ = timeout;
}

bool CoreSync::CanProgress() const {
  for (int c = 0; c < num_cores(); ++c) {
    if (state_[c] == State::kRunning) return true;
    if (state_[c] != State::kWaiting) continue;
    const Wait& w = waits_[c];
    if (semaphores_[c]->Count(w.sem) >= w.value ||
        (dmas_[c] != nullptr && dmas_[c]->HasPendingFor(w.sem))) {
      return true;
    }
  }
  return false;
}

std::string CoreSync::DeadlockReport() const {
  std::string s =
      "deadlock: every core that has not finished waits on a semaphore "
      "that nothing running or in flight can signal (interpret mode would "
      "wait forever):";
  const int rank = static_cast<int>(kernel_.grid.size());
  for (int c = 0; c < num_cores(); ++c) {
    if (state_[c] != State::kWaiting) continue;
    const Wait& w = waits_[c];
    absl::StrAppend(&s,
                    num_devices_ > 1
                        ? absl::StrCat(" device ", c / cores_per_device_, ",")
                        : "",
                    " core ", c % cores_per_device_, " waits at ",
                    InstructionSource(kernel_.program, w.pc), ", grid point ",
                    PointAt(w.grid_point, rank), ", for semaphore ",
                    semaphores_[c]->Name(w.sem), " to reach ", w.value,
                    " (it holds ", semaphores_[c]->Count(w.sem), ");");
  }
  int done = 0;
  for (State st : state_) done += st == State::kDone;
  if (done > 0) {
    absl::StrAppend(&s, " ", done, done == 1 ? " core has" : " cores have",
                    " finished.");
  } else {
    s.back() = '.';
  }
  return s;
}

void CoreSync::FailLocked(const absl::Status& status) {
  if (failure_.ok()) failure_ = status;
  stop_.store(true, std::memory_order_relaxed);
  WakeAll();
}

absl::Status CoreSync::Block(std::unique_lock<std::mutex>& lock, int core,
                             const Wait& wait) {
  if (!failure_.ok()) return absl::AbortedError(vm::CoreStoppedMessage());
  state_[core] = State::kWaiting;
  waits_[core] = wait;
  if (!CanProgress()) {
    const absl::Status deadlock =
        absl::FailedPreconditionError(DeadlockReport());
    state_[core] = State::kRunning;
    FailLocked(deadlock);
    return deadlock;
  }
  // Woken by a signal, a failure or a finished core; the deadline and
  // cancellation are looked at here.
  WaitForChange(*wake_[core], lock, vm::Interrupt::Clock::time_point::max());
  state_[core] = State::kRunning;
  if (!failure_.ok()) return absl::AbortedError(vm::CoreStoppedMessage());
  vm::Interrupt probe(deadline_, cancel_, timeout_);
  if (probe.Poll()) return probe.status();
  return absl::OkStatus();
}

void CoreSync::Finish(int core, const absl::Status& status) {
  std::lock_guard<std::mutex> lock(mutex_);
  state_[core] = State::kDone;
  if (!status.ok()) {
    if (status.code() != absl::StatusCode::kAborted) FailLocked(status);
    return;
  }
  // The rest may all be waiting for what this core never signalled: the
  // first waiter's Block sees it when woken (CanProgress), and reports.
  WakeAll();
}

absl::Status CoreSync::failure() {
  std::lock_guard<std::mutex> lock(mutex_);
  return failure_;
}

bool CoreSync::EnterShared(int core, int ref) {
  std::lock_guard<std::mutex> lock(mutex_);
  // Counted per device: each device has its own shared buffer.
  const int64_t n = ++entries_[ref][core];
  int64_t& fresh =
      fresh_entries_[ref * num_devices_ + core / cores_per_device_];
  if (n <= fresh) return false;
  fresh = n;
  return true;
}

}  // namespace pallasvm::runtime
