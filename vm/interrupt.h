// Deadlines and cancellation for running kernels.
//
// A kernel can run forever (a `while` whose condition never turns false, a
// corrupted module that still verifies), and whoever called it (a JAX
// process included) would hang with it. So the dispatch loop polls an
// Interrupt at every backward jump, and the grid driver polls it between
// grid points: those are the only places a run can spend unbounded time,
// since straight-line code is bounded by the code's size.
//
// Polling must cost nothing on the fast path: Poll() decrements a countdown
// and only when it reaches zero reads the cancellation flag and the clock.
// The countdown's length adapts so that the clock is read about every
// 100 us, however long each poll interval takes (a scalar loop's back edge
// every few ns, a grid step of a big matmul every few ms). One Interrupt
// per thread: it is not shared between simulated cores.
#ifndef PALLASVM_VM_INTERRUPT_H_
#define PALLASVM_VM_INTERRUPT_H_

#include <atomic>
#include <chrono>
#include <cstdint>

#include "absl/status/status.h"

namespace pallasvm::vm {

// What a simulated core stopped because another failed says (ABORTED).
inline constexpr const char* CoreStoppedMessage() {
  return "stopped: another core of this device failed";
}

class Interrupt {
 public:
  using Clock = std::chrono::steady_clock;

  // Fires at `deadline` (Clock::time_point::max(): never) or once *cancel
  // is true (null: never). `timeout`, if not zero, is the duration the
  // deadline was computed from, for the error ("timeout of 2 s").
  // Constructing one costs nothing (no clock read, no allocation): one is
  // made per call.
  // *stop (null: never) is the runtime's own: another simulated core
  // failed, and this one ends with ABORTED.
  Interrupt(Clock::time_point deadline, const std::atomic<bool>* cancel,
            std::chrono::nanoseconds timeout = std::chrono::nanoseconds(0),
            const std::atomic<bool>* stop = nullptr)
      : deadline_(deadline), cancel_(cancel), stop_(stop), timeout_(timeout) {}

  // Whether the run must stop; then status() says why. Cheap except every
  // so often.
  bool Poll() {
    if (--countdown_ > 0) return false;
    return Check();
  }

  // DEADLINE_EXCEEDED, CANCELLED or ABORTED, e.g. "deadline exceeded (timeout of
  // 2 s)"; the caller adds where. OK while not fired.
  absl::Status status() const;

 private:
  bool Check();

  Clock::time_point deadline_;
  const std::atomic<bool>* cancel_;
  const std::atomic<bool>* stop_;
  std::chrono::nanoseconds timeout_;
  Clock::time_point last_check_{};  // the epoch: the first check is "slow"
  int64_t countdown_ = 1;           // the first poll checks
  int64_t interval_ = 1;
  enum class Fired : uint8_t { kNo, kDeadline, kCancelled, kStopped } fired_ = Fired::kNo;
};

}  // namespace pallasvm::vm

#endif  // PALLASVM_VM_INTERRUPT_H_
