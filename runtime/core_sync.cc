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

CoreSync::CoreSync(const Kernel& kernel, int num_cores)
    : kernel_(kernel),
      semaphores_(num_cores, nullptr),
      dmas_(num_cores, nullptr),
      refs_(num_cores, nullptr),
      state_(num_cores, State::kRunning),
      waits_(num_cores),
      entries_(kernel.refs.size()),
      fresh_entries_(kernel.refs.size(), 0) {
  for (size_t r = 0; r < kernel.refs.size(); ++r) {
    if (IsShared(kernel.refs[r])) entries_[r].assign(num_cores, 0);
  }
}

void CoreSync::Bind(int core, Semaphores* semaphores, const DmaEngine* dma,
                    uint8_t* const* refs) {
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
    absl::StrAppend(&s, " core ", c, " waits at ",
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
  changed_.notify_all();
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
  const auto now = vm::Interrupt::Clock::now();
  auto until = deadline_;
  if (cancel_ != nullptr) until = std::min(until, now + kCancelPoll);
  if (until == vm::Interrupt::Clock::time_point::max()) {
    changed_.wait(lock);
  } else {
    changed_.wait_until(lock, until);
  }
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
  changed_.notify_all();
}

absl::Status CoreSync::failure() {
  std::lock_guard<std::mutex> lock(mutex_);
  return failure_;
}

bool CoreSync::EnterShared(int core, int ref) {
  std::lock_guard<std::mutex> lock(mutex_);
  const int64_t n = ++entries_[ref][core];
  if (n <= fresh_entries_[ref]) return false;
  fresh_entries_[ref] = n;
  return true;
}

}  // namespace pallasvm::runtime
