// The memory model's runtime pieces (runtime/memory_model.h) without the
// VM: a kernel of two VMEM refs and a semaphore array, its machine driven
// as DMA_START / SEM_WAIT would drive it. Expected values are derived by
// hand in the comments.
#include "runtime/memory_model.h"

#include <cstring>
#include <vector>

#include "gtest/gtest.h"

namespace pallasvm::runtime {
namespace {

// Refs: 0 and 1 f32[2, 4] in VMEM, 2 a [2] semaphore array.
struct Machine {
  Kernel kernel;
  std::vector<float> a = std::vector<float>(8), b = std::vector<float>(8);
  std::vector<int32_t> sems = std::vector<int32_t>(2);
  std::vector<uint8_t*> table;
  std::vector<uint64_t> fills = std::vector<uint64_t>(3, 0);
  std::unique_ptr<CoreMachine> machine;

  explicit Machine(DmaExecutionMode mode) {
    for (int r = 0; r < 2; ++r) {
      RefSpec ref{RefKind::SCRATCH, -1, vm::MemorySpace::VMEM,
                  {vm::DType::F32, {2, 4}}, "scratch"};
      kernel.refs.push_back(ref);
    }
    kernel.refs.push_back(RefSpec{RefKind::SCRATCH, -1,
                                  vm::MemorySpace::SEMAPHORE,
                                  {vm::DType::S32, {2}}, "sems"});
    table = {reinterpret_cast<uint8_t*>(a.data()),
             reinterpret_cast<uint8_t*>(b.data()),
             reinterpret_cast<uint8_t*>(sems.data())};
    for (int i = 0; i < 8; ++i) a[i] = static_cast<float>(i);
    machine = std::make_unique<CoreMachine>(kernel, table.data());
    CoreMachine::CallOptions options;
    options.dma_mode = mode;
    options.fills = fills.data();
    machine->BeginCall(options);
  }
};

// Row `row` of a f32[2, 4] ref: start (row, 0), sizes (squeezed, 4).
vm::AccessDesc Row(int ref, int row) {
  vm::AccessDesc d;
  d.base = ref;
  d.elem_size = 4;
  d.rank = 2;
  d.dims[0] = vm::AccessDim{2, row, -1, 1, 1, 1, -1};
  d.dims[1] = vm::AccessDim{4, 0, -1, 0, 4, 1, -1};
  return d;
}

absl::Status Copy(Machine& m, int src_row, int dst_row, int sem) {
  const vm::AccessDesc src = Row(0, src_row), dst = Row(1, dst_row);
  return m.machine->StartDma({src, src_row * 16, 4}, {dst, dst_row * 16, 4},
                             nullptr, {2, sem}, 0);
}

TEST(MemoryModelTest, OnWaitCarriesTheDmaOutAtTheWait) {
  Machine m(DmaExecutionMode::kOnWait);
  ASSERT_TRUE(Copy(m, 1, 0, 0).ok());
  EXPECT_EQ(m.b[0], 0.0f);  // nothing moved yet
  EXPECT_EQ(m.sems[0], 0);
  // The wait needs 16 bytes (4 f32): it runs the DMA, then takes them.
  ASSERT_TRUE(m.machine->WaitSemaphore({2, 0}, 16, 0).ok());
  EXPECT_EQ(m.b[0], 4.0f);
  EXPECT_EQ(m.b[3], 7.0f);
  EXPECT_EQ(m.sems[0], 0);
}

TEST(MemoryModelTest, EagerCarriesTheDmaOutAtTheStart) {
  Machine m(DmaExecutionMode::kEager);
  ASSERT_TRUE(Copy(m, 1, 1, 1).ok());
  EXPECT_EQ(m.b[4], 4.0f);
  EXPECT_EQ(m.sems[1], 16);  // bytes
}

TEST(MemoryModelTest, TheMostRecentDmaRunsFirst) {
  // Two DMAs into the same row on one semaphore; a wait for one DMA's
  // bytes runs the later one only (interpret mode pops its task stack).
  Machine m(DmaExecutionMode::kOnWait);
  ASSERT_TRUE(Copy(m, 0, 0, 0).ok());
  ASSERT_TRUE(Copy(m, 1, 0, 0).ok());
  ASSERT_TRUE(m.machine->WaitSemaphore({2, 0}, 16, 0).ok());
  EXPECT_EQ(m.b[0], 4.0f);  // row 1's, the second DMA
  ASSERT_TRUE(m.machine->WaitSemaphore({2, 0}, 16, 0).ok());
  EXPECT_EQ(m.b[0], 0.0f);  // then the first
}

TEST(MemoryModelTest, AWaitNothingCanSatisfyIsADeadlock) {
  Machine m(DmaExecutionMode::kOnWait);
  ASSERT_TRUE(m.machine->SignalSemaphore({2, 1}, 3, 0).ok());
  const absl::Status s = m.machine->WaitSemaphore({2, 1}, 5, 0);
  EXPECT_EQ(s.code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_NE(s.message().find("deadlock: the wait needs semaphore sems[1] to "
                             "reach 5 but it holds 3"),
            std::string::npos)
      << s;
}

TEST(MemoryModelTest, LeftoverSemaphoresAndDmasAreReported) {
  Machine m(DmaExecutionMode::kOnWait);
  ASSERT_TRUE(m.machine->SignalSemaphore({2, 0}, 2, 0).ok());
  ASSERT_TRUE(Copy(m, 0, 0, 1).ok());  // never waited for
  std::vector<std::string> warnings;
  ASSERT_TRUE(m.machine->EndCall(&warnings, /*as_error=*/false).ok());
  ASSERT_EQ(warnings.size(), 2u);
  EXPECT_EQ(warnings[0],
            "semaphore sems[0] holds 2 at the end of the call (expected 0)");
  EXPECT_NE(warnings[1].find("was never waited for (semaphore sems[1])"),
            std::string::npos);
  warnings.clear();
  EXPECT_EQ(m.machine->EndCall(&warnings, /*as_error=*/true).code(),
            absl::StatusCode::kFailedPrecondition);
}

}  // namespace
}  // namespace pallasvm::runtime
