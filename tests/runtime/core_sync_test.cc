// The cores of one device (runtime/core_sync.h) driven without the VM: a
// kernel with one [2] semaphore array, one CoreMachine per core on its own
// thread, as SEM_SIGNAL (with a core) and SEM_WAIT would drive them.
// Expected counts and reports are derived by hand in the comments.
#include "runtime/core_sync.h"

#include <chrono>
#include <memory>
#include <thread>
#include <vector>

#include "gtest/gtest.h"
#include "runtime/memory_model.h"

namespace pallasvm::runtime {
namespace {

constexpr vm::SemaphoreId kSem0{0, 0}, kSem1{0, 1};

// `n` cores of a kernel whose only ref is a [2] semaphore array.
struct Device {
  Kernel kernel;
  std::vector<std::vector<int32_t>> sems;
  std::vector<std::vector<uint8_t*>> tables;
  std::vector<std::unique_ptr<CoreMachine>> cores;
  std::vector<int32_t> points;
  std::unique_ptr<CoreSync> sync;
  uint64_t fill = 0;

  explicit Device(int n)
      : sems(n, std::vector<int32_t>(2)), tables(n), points(n) {
    kernel.refs.push_back(RefSpec{RefKind::SCRATCH,
                                  -1,
                                  vm::MemorySpace::SEMAPHORE,
                                  {vm::DType::S32, {2}},
                                  "sems",
                                  {}});
    kernel.grid = {n};
    kernel.signals_other_cores = true;
    sync = std::make_unique<CoreSync>(kernel, n);
    for (int c = 0; c < n; ++c) {
      tables[c] = {reinterpret_cast<uint8_t*>(sems[c].data())};
      cores.push_back(std::make_unique<CoreMachine>(kernel, tables[c].data()));
      points[c] = c;
      cores[c]->ResetSemaphores();
      sync->Bind(c, &cores[c]->semaphores(), &cores[c]->dma(),
                 tables[c].data(), cores[c].get());
      CoreMachine::CallOptions options;
      options.fills = &fill;
      options.grid_point = &points[c];
      options.grid_rank = 1;
      options.core = c;
      options.sync = sync.get();
      options.lock_semaphores = true;
      cores[c]->BeginCall(options);
    }
  }
};

TEST(CoreSyncTest, AWaitBlocksUntilAnotherCoreSignals) {
  Device d(2);
  absl::Status waited;
  std::thread waiter([&] {
    waited = d.cores[0]->WaitSemaphore(kSem1, 3, 0);
    d.sync->Finish(0, waited);
  });
  // Core 1 signals core 0 three times, one by one: the wait takes all 3.
  for (int i = 0; i < 3; ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
    ASSERT_TRUE(d.cores[1]->SignalSemaphore(kSem1, 1, vm::Target{0}, 0).ok());
  }
  d.sync->Finish(1, absl::OkStatus());
  waiter.join();
  EXPECT_TRUE(waited.ok()) << waited;
  EXPECT_EQ(d.sems[0][1], 0);  // 3 signalled, 3 taken
  EXPECT_EQ(d.sems[1][1], 0);  // core 1's own copy untouched
  EXPECT_TRUE(d.sync->failure().ok());
}

TEST(CoreSyncTest, EveryCoreWaitingIsADeadlockNamingEachWaiter) {
  Device d(3);
  std::vector<absl::Status> status(3);
  std::vector<std::thread> threads;
  // Cores 0 and 1 wait on semaphore 0 for 1, core 2 on semaphore 1 for 2;
  // nobody signals. Whichever blocks last sees it and reports all three.
  for (int c = 0; c < 3; ++c) {
    threads.emplace_back([&, c] {
      status[c] =
          d.cores[c]->WaitSemaphore(c == 2 ? kSem1 : kSem0, c == 2 ? 2 : 1, 0);
      d.sync->Finish(c, status[c]);
    });
  }
  for (std::thread& t : threads) t.join();
  const absl::Status failure = d.sync->failure();
  ASSERT_EQ(failure.code(), absl::StatusCode::kFailedPrecondition) << failure;
  const std::string m(failure.message());
  EXPECT_NE(m.find("core 0 waits at pc 0, grid point (0), for semaphore "
                   "sems[0] to reach 1 (it holds 0)"),
            std::string::npos)
      << m;
  EXPECT_NE(m.find("core 1 waits at pc 0, grid point (1), for semaphore "
                   "sems[0] to reach 1"),
            std::string::npos)
      << m;
  EXPECT_NE(m.find("core 2 waits at pc 0, grid point (2), for semaphore "
                   "sems[1] to reach 2"),
            std::string::npos)
      << m;
  // One core reports the deadlock; the others are stopped.
  int deadlocks = 0, stopped = 0;
  for (const absl::Status& s : status) {
    deadlocks += s.code() == absl::StatusCode::kFailedPrecondition;
    stopped += s.code() == absl::StatusCode::kAborted;
  }
  EXPECT_EQ(deadlocks, 1);
  EXPECT_EQ(stopped, 2);
}

TEST(CoreSyncTest, ACoreFinishingWithoutSignallingLeavesADeadlock) {
  Device d(2);
  absl::Status waited;
  std::thread waiter([&] {
    waited = d.cores[0]->WaitSemaphore(kSem0, 2, 0);
    d.sync->Finish(0, waited);
  });
  // Core 1 signals once of the two needed, then finishes.
  ASSERT_TRUE(d.cores[1]->SignalSemaphore(kSem0, 1, vm::Target{0}, 0).ok());
  d.sync->Finish(1, absl::OkStatus());
  waiter.join();
  ASSERT_EQ(waited.code(), absl::StatusCode::kFailedPrecondition) << waited;
  EXPECT_NE(waited.message().find("to reach 2 (it holds 1); 1 core has "
                                  "finished."),
            std::string::npos)
      << waited;
}

TEST(CoreSyncTest, AFailureWakesTheWaitersWithAborted) {
  Device d(2);
  absl::Status waited;
  std::thread waiter([&] {
    waited = d.cores[0]->WaitSemaphore(kSem0, 1, 0);
    d.sync->Finish(0, waited);
  });
  std::this_thread::sleep_for(std::chrono::milliseconds(5));
  d.sync->Finish(1, absl::OutOfRangeError("core 1's own error"));
  waiter.join();
  EXPECT_EQ(waited.code(), absl::StatusCode::kAborted) << waited;
  EXPECT_EQ(d.sync->failure().message(), "core 1's own error");
  EXPECT_TRUE(d.sync->stop()->load());
}

TEST(CoreSyncTest, ASignalToACoreThatDoesNotExistIsAnError) {
  Device d(2);
  const absl::Status s =
      d.cores[0]->SignalSemaphore(kSem0, 1, vm::Target{2}, 0);
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(
      s.message().find("signalled to core 2 (core_index or device_id), but the "
                       "device has 2 cores"),
      std::string::npos)
      << s;
}

TEST(CoreSyncTest, ABlockedWaitEndsAtTheDeadline) {
  Device d(2);
  d.sync->SetInterrupt(
      vm::Interrupt::Clock::now() + std::chrono::milliseconds(20), nullptr,
      std::chrono::milliseconds(20));
  absl::Status waited;
  // Core 1 stays "running" (never finishes while core 0 waits): no
  // deadlock, only the deadline ends the wait.
  std::thread waiter([&] { waited = d.cores[0]->WaitSemaphore(kSem0, 1, 0); });
  waiter.join();
  EXPECT_EQ(waited.code(), absl::StatusCode::kDeadlineExceeded) << waited;
}

TEST(CoreSyncTest, TheNthEntryOfASharedScopeIsFreshOnce) {
  Kernel k;
  k.refs.push_back(RefSpec{RefKind::SCOPED,
                           -1,
                           vm::MemorySpace::VMEM_SHARED,
                           {vm::DType::F32, {8}},
                           "shared",
                           {}});
  CoreSync sync(k, 2);
  // Core 0 enters twice before core 1 enters once: entries 1 and 2 of core
  // 0 are fresh, core 1's first entry shares core 0's first, its second
  // core 0's second; a third by core 1 is fresh again.
  EXPECT_TRUE(sync.EnterShared(0, 0));
  EXPECT_TRUE(sync.EnterShared(0, 0));
  EXPECT_FALSE(sync.EnterShared(1, 0));
  EXPECT_FALSE(sync.EnterShared(1, 0));
  EXPECT_TRUE(sync.EnterShared(1, 0));
}

}  // namespace
}  // namespace pallasvm::runtime
