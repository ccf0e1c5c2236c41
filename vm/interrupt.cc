#include "vm/interrupt.h"

#include <string>

#include "absl/strings/str_format.h"

namespace pallasvm::vm {
namespace {

// Aim for a clock read between these two intervals.
constexpr auto kCheckAtLeast = std::chrono::microseconds(50);
constexpr auto kCheckAtMost = std::chrono::microseconds(200);
constexpr int64_t kMaxInterval = int64_t{1} << 20;

}  // namespace

bool Interrupt::Check() {
  if (fired_ != Fired::kNo) {
    countdown_ = 1;
    return true;
  }
  if (cancel_ != nullptr && cancel_->load(std::memory_order_relaxed)) {
    fired_ = Fired::kCancelled;
    countdown_ = 1;
    return true;
  }
  if (stop_ != nullptr && stop_->load(std::memory_order_relaxed)) {
    fired_ = Fired::kStopped;
    countdown_ = 1;
    return true;
  }
  const Clock::time_point now = Clock::now();
  if (now >= deadline_) {
    fired_ = Fired::kDeadline;
    countdown_ = 1;
    return true;
  }
  const Clock::duration since = now - last_check_;
  if (since < kCheckAtLeast && interval_ < kMaxInterval) {
    interval_ *= 2;
  } else if (since > kCheckAtMost && interval_ > 1) {
    interval_ /= 2;
  }
  last_check_ = now;
  countdown_ = interval_;
  return false;
}

absl::Status Interrupt::status() const {
  switch (fired_) {
    case Fired::kNo:
      return absl::OkStatus();
    case Fired::kDeadline:
      return absl::DeadlineExceededError(
          timeout_.count() == 0
              ? std::string("deadline exceeded")
              : absl::StrFormat(
                    "deadline exceeded (timeout of %g s)",
                    std::chrono::duration<double>(timeout_).count()));
    case Fired::kCancelled:
      return absl::CancelledError("cancelled");
    case Fired::kStopped:
      return absl::AbortedError(CoreStoppedMessage());
  }
  return absl::OkStatus();
}

}  // namespace pallasvm::vm
