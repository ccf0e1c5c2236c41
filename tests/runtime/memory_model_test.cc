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

  explicit Machine(DmaExecutionMode mode,
                   UninitializedReadsCheck uninitialized_reads =
                       UninitializedReadsCheck::kOff) {
    for (int r = 0; r < 2; ++r) {
      RefSpec ref{RefKind::SCRATCH, -1, vm::MemorySpace::VMEM,
                  {vm::DType::F32, {2, 4}}, "scratch", {}};
      kernel.refs.push_back(ref);
    }
    kernel.refs.push_back(RefSpec{RefKind::SCRATCH, -1,
                                  vm::MemorySpace::SEMAPHORE,
                                  {vm::DType::S32, {2}}, "sems", {}});
    table = {reinterpret_cast<uint8_t*>(a.data()),
             reinterpret_cast<uint8_t*>(b.data()),
             reinterpret_cast<uint8_t*>(sems.data())};
    for (int i = 0; i < 8; ++i) a[i] = static_cast<float>(i);
    machine = std::make_unique<CoreMachine>(kernel, table.data());
    CoreMachine::CallOptions options;
    options.dma_mode = mode;
    options.fills = fills.data();
    options.uninitialized_reads = uninitialized_reads;
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
                             nullptr, {2, sem}, vm::Target{}, 0);
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
  ASSERT_TRUE(m.machine->SignalSemaphore({2, 1}, 3, vm::Target{}, 0).ok());
  const absl::Status s = m.machine->WaitSemaphore({2, 1}, 5, 0);
  EXPECT_EQ(s.code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_NE(s.message().find("deadlock: the wait needs semaphore sems[1] to "
                             "reach 5 but it holds 3"),
            std::string::npos)
      << s;
}

TEST(MemoryModelTest, LeftoverSemaphoresAndDmasAreReported) {
  Machine m(DmaExecutionMode::kOnWait);
  ASSERT_TRUE(m.machine->SignalSemaphore({2, 0}, 2, vm::Target{}, 0).ok());
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

// Uninitialized reads (runtime/uninitialized_reads.h), as the VM reports
// its accesses: the scratch refs start unwritten; a DMA's destination is
// unwritten until its wait, then holds what its source held.
TEST(MemoryModelTest, UninitializedReadsFollowWritesAndDmas) {
  for (DmaExecutionMode mode :
       {DmaExecutionMode::kOnWait, DmaExecutionMode::kEager}) {
    Machine m(mode, UninitializedReadsCheck::kError);
    auto read = [&](int ref, int row) {
      const vm::AccessDesc d = Row(ref, row);
      return m.machine->ObserveAccess(ref, &d, vm::AccessKind::kRead,
                                      nullptr, 0);
    };
    absl::Status s = read(0, 1);
    EXPECT_EQ(s.code(), absl::StatusCode::kFailedPrecondition);
    EXPECT_EQ(s.message(),
              "uninitialized read of element (1, 0) of scratch (ref 0, "
              "float32[2,4]), which nothing has written: the scratch buffer "
              "has not been written there in this call");
    // Row 1 of ref 0 written, row 0 not; both copied into ref 1.
    const vm::AccessDesc row1 = Row(0, 1);
    ASSERT_TRUE(m.machine
                    ->ObserveAccess(0, &row1, vm::AccessKind::kWrite,
                                    nullptr, 0)
                    .ok());
    EXPECT_TRUE(read(0, 1).ok());
    ASSERT_TRUE(Copy(m, 1, 0, 0).ok());
    ASSERT_TRUE(Copy(m, 0, 1, 1).ok());
    // Before the wait, even in eager mode where the bytes have moved.
    s = read(1, 0);
    EXPECT_NE(s.message().find("a DMA into it has started but its "
                               "semaphore has not been waited on"),
              std::string::npos)
        << s;
    ASSERT_TRUE(m.machine->WaitSemaphore({2, 0}, 16, 0).ok());
    ASSERT_TRUE(m.machine->WaitSemaphore({2, 1}, 16, 0).ok());
    EXPECT_TRUE(read(1, 0).ok());
    // Row 1 of ref 1 holds the copy of what nothing wrote.
    s = read(1, 1);
    EXPECT_NE(s.message().find("element (1, 0) of scratch (ref 1"),
              std::string::npos)
        << s;
  }
}

TEST(MemoryModelTest, UninitializedReadsAsWarningsCountEveryElement) {
  Machine m(DmaExecutionMode::kOnWait, UninitializedReadsCheck::kWarn);
  for (int row : {0, 1}) {
    const vm::AccessDesc d = Row(0, row);
    ASSERT_TRUE(
        m.machine->ObserveAccess(0, &d, vm::AccessKind::kRead, nullptr, 7)
            .ok());
  }
  // A masked write of row 0 where the mask is true (elements 1 and 3).
  const uint8_t mask[4] = {0, 1, 0, 1};
  const vm::AccessDesc row0 = Row(1, 0);
  ASSERT_TRUE(m.machine
                  ->ObserveAccess(1, &row0, vm::AccessKind::kMaskedWrite,
                                  mask, 8)
                  .ok());
  ASSERT_TRUE(
      m.machine->ObserveAccess(1, &row0, vm::AccessKind::kRead, nullptr, 9)
          .ok());
  std::vector<std::string> warnings;
  ASSERT_TRUE(m.machine->EndCall(&warnings, /*as_error=*/false).ok());
  ASSERT_EQ(warnings.size(), 2u);
  // No program, so the instructions are named by pc; 8 elements read at
  // pc 7 in two executions, 2 of the 4 at pc 9 (the first is element 0).
  EXPECT_EQ(warnings[0],
            "uninitialized read: pc 7 reads element (0, 0) of scratch (ref 0, "
            "float32[2,4]) at grid point (), and 7 more elements in 2 "
            "executions, which nothing has written: the scratch buffer has "
            "not been written there in this call");
  EXPECT_NE(warnings[1].find("pc 9 reads element (0, 0) of scratch (ref 1, "
                             "float32[2,4]) at grid point (), and 1 more "
                             "elements,"),
            std::string::npos)
      << warnings[1];
}

}  // namespace
}  // namespace pallasvm::runtime
