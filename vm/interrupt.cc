#include "vm/interrupt.h"

#include <utility>

#include "absl/strings/str_cat.h"

namespace pallasvm::vm {
namespace {

// Aim for a clock read between these two intervals.
constexpr auto kCheckAtLeast = std::chrono::microseconds(50);
constexpr auto kCheckAtMost = std::chrono::microseconds(200);
constexpr int64_t kMaxInterval = int64_t{1} << 20;

}  // namespace

Interrupt::Interrupt(Clock::time_point deadline,
                     const std::atomic<bool>* cancel, std::string deadline_text)
    : deadline_(deadline),
      cancel_(cancel),
      deadline_text_(std::move(deadline_text)),
      last_check_(Clock::now()) {}

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
          deadline_text_.empty()
              ? std::string("deadline exceeded")
              : absl::StrCat("deadline exceeded (", deadline_text_, ")"));
    case Fired::kCancelled:
      return absl::CancelledError("cancelled");
  }
  return absl::OkStatus();
}

}  // namespace pallasvm::vm
