// Races between cores (runtime/cross_core_races.h) without the VM or the
// grid driver: cores' marks driven as block copies, DMAs, kernel accesses
// and semaphores would drive them, then compared. Expected races are
// derived by hand in the comments.
#include "runtime/cross_core_races.h"

#include <algorithm>
#include <atomic>
#include <memory>
#include <mutex>
#include <thread>
#include <vector>

#include "gtest/gtest.h"

namespace pallasvm::runtime {
namespace {

// Output 0 f32[4, 4] in HBM (ref 0), input 0 f32[4, 4] in HBM (ref 1), a
// VMEM buffer f32[4, 4] (ref 2), and a device-shared scratch f32[4, 4]
// (ref 3, one buffer all cores see). With `aliased`, input 0 is aliased to
// output 0, so ref 1 is bound to the output's buffer; otherwise the input
// is shared on its own (as an HBM input a DMA writes is). Cores
// synchronize through `num_sync` sync objects.
struct Cores {
  Kernel kernel;
  std::vector<float> out = std::vector<float>(16), in = std::vector<float>(16),
                     vmem = std::vector<float>(16),
                     shared = std::vector<float>(16);
  std::vector<uint8_t*> refs;
  std::unique_ptr<CrossCoreRaces> races;
  int32_t point[1] = {0};

  explicit Cores(bool aliased = false, int num_cores = 2, int num_sync = 0) {
    const ArrayType type{vm::DType::F32, {4, 4}};
    auto scratch = [&](const char* origin) {
      RefSpec ref{RefKind::SCRATCH, -1, vm::MemorySpace::VMEM, type, "", {}};
      ref.origin = origin;
      return ref;
    };
    kernel.refs = {
        {RefKind::OUTPUT_HBM, 0, vm::MemorySpace::HBM, type, "outputs", {}},
        {RefKind::INPUT_HBM, 0, vm::MemorySpace::HBM, type, "args[0]", {}},
        scratch("scratch_shapes[0]"),
        scratch("scratch_shapes[1]")};
    kernel.out_types = {type};
    kernel.in_types = {type};
    std::vector<CrossCoreRaces::Buffer> buffers = {
        {reinterpret_cast<uint8_t*>(out.data()), true, 0}};
    if (aliased) {
      kernel.aliases = {{0, 0}};
    } else {
      buffers.push_back({reinterpret_cast<uint8_t*>(in.data()), false, 0});
    }
    buffers.push_back(
        {reinterpret_cast<uint8_t*>(shared.data()), false, -1, /*ref=*/3});
    refs = {reinterpret_cast<uint8_t*>(out.data()),
            reinterpret_cast<uint8_t*>(aliased ? out.data() : in.data()),
            reinterpret_cast<uint8_t*>(vmem.data()),
            reinterpret_cast<uint8_t*>(shared.data())};
    races = std::make_unique<CrossCoreRaces>(kernel, num_cores,
                                             std::move(buffers), num_sync);
    for (int c = 0; c < num_cores; ++c) {
      races->core(c).BeginCall(refs.data(), point, 1);
    }
  }

  // Rows [row, row + n) of the output, as a block copy sees them.
  static BlockRegion Rows(int row, int n) {
    BlockRegion r;
    r.rank = 2;
    r.elem_size = 4;
    r.array_shape[0] = r.array_shape[1] = 4;
    r.block_shape[0] = n;
    r.block_shape[1] = 4;
    r.start[0] = row;
    return r;
  }

  // A carried-out DMA between `hbm` (of ref `hbm_ref`) and all of VMEM.
  void Dma(int core, int hbm_ref, const vm::AccessDesc& hbm, bool to_hbm,
           uint64_t serial) {
    vm::AccessDesc v = hbm;
    v.base = 2;
    vm::AccessDesc h = hbm;
    h.base = hbm_ref;
    CrossCoreRaces::Core& c = races->core(core);
    c.OnDmaStart(serial, to_hbm ? v : h, to_hbm ? h : v, /*pc=*/7);
    c.OnDmaDone(serial);
  }

  std::string Find(int64_t* racy) {
    std::string description;
    *racy = 0;
    races->Find(racy, &description);
    return description;
  }
};

// Columns start, start + stride, ... (size of them) of every row.
vm::AccessDesc Columns(int start, int size, int stride) {
  vm::AccessDesc d;
  d.elem_size = 4;
  d.rank = 2;
  d.dims[0] = vm::AccessDim{4, 0, -1, 0, 4, 1, -1};
  d.dims[1] = vm::AccessDim{4, start, -1, 0, size, stride, -1};
  return d;
}

// Row `row`, squeezed (an integer index).
vm::AccessDesc Row(int row) {
  vm::AccessDesc d;
  d.elem_size = 4;
  d.rank = 2;
  d.dims[0] = vm::AccessDim{4, row, -1, 1, 1, 1, -1};
  d.dims[1] = vm::AccessDim{4, 0, -1, 0, 4, 1, -1};
  return d;
}

TEST(CrossCoreRacesTest, BlocksWrittenBackByOneCoreEachDoNotRace) {
  Cores t;
  t.races->core(0).OnBlockCopy(0, Cores::Rows(0, 2), true);
  t.races->core(1).OnBlockCopy(0, Cores::Rows(2, 2), true);
  int64_t racy;
  EXPECT_EQ(t.Find(&racy), "");
  EXPECT_EQ(racy, 0);
}

TEST(CrossCoreRacesTest, ABlockWrittenBackByTwoCoresIsOneRace) {
  Cores t;
  t.races->core(0).OnBlockCopy(0, Cores::Rows(0, 2), true);
  t.races->core(1).OnBlockCopy(0, Cores::Rows(1, 2), true);
  int64_t racy;
  // Row 1 (4 elements) is both cores'.
  EXPECT_EQ(t.Find(&racy),
            "race on outputs (output 0, float32[4,4]) element (1, 0) and 3 "
            "more: written back by core 0 and by core 1\n");
  EXPECT_EQ(racy, 4);
}

TEST(CrossCoreRacesTest, StridedDmasRaceOnlyOnSharedElements) {
  Cores t;
  // Core 0 writes columns 0 and 2, core 1 reads columns 1 and 3: disjoint.
  t.Dma(0, 0, Columns(0, 2, 2), /*to_hbm=*/true, 0);
  t.Dma(1, 0, Columns(1, 2, 2), /*to_hbm=*/false, 0);
  int64_t racy;
  EXPECT_EQ(t.Find(&racy), "");
  // Core 1 reads column 2 too: 4 elements, one per row, each its own run.
  t.Dma(1, 0, Columns(2, 1, 1), /*to_hbm=*/false, 1);
  const std::string d = t.Find(&racy);
  EXPECT_EQ(racy, 4);
  EXPECT_NE(d.find("race on outputs (output 0, float32[4,4]) element (0, 2): "
                   "written by the DMA started by pc 7 at grid point (0) on "
                   "core 0 and read by the DMA started by pc 7 at grid point "
                   "(0) on core 1\n"),
            std::string::npos)
      << d;
  EXPECT_NE(d.find("element (3, 2)"), std::string::npos) << d;
}

TEST(CrossCoreRacesTest, ReadsOfOneElementByTwoCoresDoNotRace) {
  Cores t;
  t.Dma(0, 1, Row(0), /*to_hbm=*/false, 0);
  t.Dma(1, 1, Row(0), /*to_hbm=*/false, 0);
  int64_t racy;
  EXPECT_EQ(t.Find(&racy), "");
}

TEST(CrossCoreRacesTest, AnAliasedInputIsItsOutputsBuffer) {
  Cores t(/*aliased=*/true);
  // A DMA into the input (ref 1) on core 0 at grid point (2), a write-back
  // of the output on core 1: one buffer.
  t.point[0] = 2;
  t.Dma(0, 1, Row(3), /*to_hbm=*/true, 0);
  t.races->core(1).OnBlockCopy(0, Cores::Rows(2, 2), true);
  int64_t racy;
  EXPECT_EQ(t.Find(&racy),
            "race on outputs (output 0, aliased to input 0, float32[4,4]) "
            "element (3, 0) and 3 more: written by the DMA started by pc 7 at "
            "grid point (2) on core 0 and written back by core 1\n");
}

TEST(CrossCoreRacesTest, ADmaIntoASharedInputRacesWithAnotherCoresRead) {
  Cores t;
  t.Dma(0, 1, Row(1), /*to_hbm=*/true, 0);
  t.Dma(1, 1, Row(1), /*to_hbm=*/false, 0);
  int64_t racy;
  EXPECT_EQ(t.Find(&racy),
            "race on args[0] (input 0, float32[4,4]) element (1, 0) and 3 "
            "more: written by the DMA started by pc 7 at grid point (0) on "
            "core 0 and read by the DMA started by pc 7 at grid point (0) on "
            "core 1\n");
}

TEST(CrossCoreRacesTest, ADmaNeverCarriedOutTouchesNothing) {
  Cores t;
  vm::AccessDesc v = Row(0), h = Row(0);
  v.base = 2;
  t.races->core(0).OnDmaStart(0, v, h, 7);  // never done
  t.races->core(1).OnBlockCopy(0, Cores::Rows(0, 1), true);
  int64_t racy;
  EXPECT_EQ(t.Find(&racy), "");
}

TEST(CrossCoreRacesTest, PastFiveRacesTheRestAreCounted) {
  Cores t;
  // Core 0 writes columns 0 and 2, core 1 all of the output: no two of
  // the 8 shared elements are consecutive, so 8 races, 5 described.
  t.Dma(0, 0, Columns(0, 2, 2), /*to_hbm=*/true, 0);
  t.races->core(1).OnBlockCopy(0, Cores::Rows(0, 4), true);
  int64_t racy;
  const std::string d = t.Find(&racy);
  EXPECT_EQ(racy, 8);
  EXPECT_NE(d.find("... 8 racy elements in all\n"), std::string::npos) << d;
  EXPECT_EQ(std::count(d.begin(), d.end(), '\n'), 6) << d;
}

// --- Synchronization: Release (a signal) and Acquire (a wait) ---

TEST(CrossCoreRacesTest, AReadOrderedAfterAnotherCoresWriteDoesNotRace) {
  Cores t(/*aliased=*/false, /*num_cores=*/2, /*num_sync=*/1);
  // Core 0 writes row 1 and signals; core 1 waits, then reads row 1 and
  // writes rows 0 and 1 back: all after core 0's write.
  t.Dma(0, 0, Row(1), /*to_hbm=*/true, 0);
  t.races->core(0).Release(0);
  t.races->core(1).Acquire(0);
  t.Dma(1, 0, Row(1), /*to_hbm=*/false, 0);
  t.races->core(1).OnBlockCopy(0, Cores::Rows(0, 2), true);
  int64_t racy;
  EXPECT_EQ(t.Find(&racy), "");
  EXPECT_EQ(racy, 0);
}

TEST(CrossCoreRacesTest, AWaitBeforeTheSignalOrdersNothing) {
  Cores t(/*aliased=*/false, /*num_cores=*/2, /*num_sync=*/1);
  // Core 1's wait takes the object's clock before core 0 signals it, so
  // core 1 knows nothing of core 0's write: row 1 races.
  t.races->core(1).Acquire(0);
  t.Dma(0, 0, Row(1), /*to_hbm=*/true, 0);
  t.races->core(0).Release(0);
  t.Dma(1, 0, Row(1), /*to_hbm=*/false, 0);
  int64_t racy;
  EXPECT_EQ(t.Find(&racy),
            "race on outputs (output 0, float32[4,4]) element (1, 0) and 3 "
            "more: written by the DMA started by pc 7 at grid point (0) on "
            "core 0 and read by the DMA started by pc 7 at grid point (0) on "
            "core 1\n");
  EXPECT_EQ(racy, 4);
}

TEST(CrossCoreRacesTest, AWriteAfterTheSignalIsNotOrderedByIt) {
  Cores t(/*aliased=*/false, /*num_cores=*/2, /*num_sync=*/1);
  // Core 0 signals, then writes row 2 (its next epoch); core 1's wait
  // orders it after the signal only.
  t.races->core(0).Release(0);
  t.Dma(0, 0, Row(2), /*to_hbm=*/true, 0);
  t.races->core(1).Acquire(0);
  t.races->core(1).OnBlockCopy(0, Cores::Rows(2, 1), true);
  int64_t racy;
  EXPECT_EQ(t.Find(&racy),
            "race on outputs (output 0, float32[4,4]) element (2, 0) and 3 "
            "more: written by the DMA started by pc 7 at grid point (0) on "
            "core 0 and written back by core 1\n");
  EXPECT_EQ(racy, 4);
}

TEST(CrossCoreRacesTest, AnUnorderedReadIsARaceThoughALaterReadIsOrdered) {
  Cores t(/*aliased=*/false, /*num_cores=*/2, /*num_sync=*/1);
  // Core 0 writes row 2 at point (0); core 1 reads it at point (1) before
  // any wait (the race), then waits on core 0's signal and reads it again
  // at point (2), ordered. The last marks (write at (0), read at (2)) are
  // ordered; the read at (1) is what races.
  t.Dma(0, 0, Row(2), /*to_hbm=*/true, 0);
  t.point[0] = 1;
  t.Dma(1, 0, Row(2), /*to_hbm=*/false, 0);
  t.races->core(0).Release(0);
  t.races->core(1).Acquire(0);
  t.point[0] = 2;
  t.Dma(1, 0, Row(2), /*to_hbm=*/false, 1);
  int64_t racy;
  EXPECT_EQ(t.Find(&racy),
            "race on outputs (output 0, float32[4,4]) element (2, 0) and 3 "
            "more: written by the DMA started by pc 7 at grid point (0) on "
            "core 0 and read by the DMA started by pc 7 at grid point (1) on "
            "core 1\n");
  EXPECT_EQ(racy, 4);
}

TEST(CrossCoreRacesTest, AWriteRacingAnEarlierReadIsARaceThoughLaterOnesOrder) {
  Cores t(/*aliased=*/false, /*num_cores=*/2, /*num_sync=*/1);
  // Core 1 reads row 3 at point (0); core 0 writes it at point (5), not
  // ordered after that read (the race, found by core 0), and signals; core
  // 1 waits and reads it again at point (6), ordered after the write.
  t.Dma(1, 0, Row(3), /*to_hbm=*/false, 0);
  t.point[0] = 5;
  t.Dma(0, 0, Row(3), /*to_hbm=*/true, 0);
  t.races->core(0).Release(0);
  t.races->core(1).Acquire(0);
  t.point[0] = 6;
  t.Dma(1, 0, Row(3), /*to_hbm=*/false, 1);
  int64_t racy;
  EXPECT_EQ(t.Find(&racy),
            "race on outputs (output 0, float32[4,4]) element (3, 0) and 3 "
            "more: written by the DMA started by pc 7 at grid point (5) on "
            "core 0 and read by the DMA started by pc 7 at grid point (0) on "
            "core 1\n");
  EXPECT_EQ(racy, 4);
}

TEST(CrossCoreRacesTest, SignalsOrderTransitively) {
  // Core 0 writes row 0 and signals object 0; core 1 waits on it, then
  // signals object 1; core 2 waits on that and writes row 0 back. Core 1
  // never touches row 0, yet core 0's write happens before core 2's.
  {
    Cores t(/*aliased=*/false, /*num_cores=*/3, /*num_sync=*/2);
    t.Dma(0, 0, Row(0), /*to_hbm=*/true, 0);
    t.races->core(0).Release(0);
    t.races->core(1).Acquire(0);
    t.races->core(1).Release(1);
    t.races->core(2).Acquire(1);
    t.races->core(2).OnBlockCopy(0, Cores::Rows(0, 1), true);
    int64_t racy;
    EXPECT_EQ(t.Find(&racy), "");
    EXPECT_EQ(racy, 0);
  }
  // Core 1 signalling before its wait passes on nothing of core 0.
  {
    Cores t(/*aliased=*/false, /*num_cores=*/3, /*num_sync=*/2);
    t.Dma(0, 0, Row(0), /*to_hbm=*/true, 0);
    t.races->core(0).Release(0);
    t.races->core(1).Release(1);
    t.races->core(1).Acquire(0);
    t.races->core(2).Acquire(1);
    t.races->core(2).OnBlockCopy(0, Cores::Rows(0, 1), true);
    int64_t racy;
    EXPECT_EQ(t.Find(&racy),
              "race on outputs (output 0, float32[4,4]) element (0, 0) and 3 "
              "more: written by the DMA started by pc 7 at grid point (0) on "
              "core 0 and written back by core 2\n");
    EXPECT_EQ(racy, 4);
  }
}

// --- Device-shared refs: the kernel's own loads and stores ---

TEST(CrossCoreRacesTest, KernelAccessesOfASharedRefRace) {
  Cores t;
  // Core 0 stores the shared scratch (ref 3) row by row from one
  // instruction (pc 5, a loop: one site at one grid point); core 1 loads
  // all of it (pc 9). All 16 elements race, as one run. Core 1's load of
  // its own VMEM (ref 2) is nobody else's.
  for (int row = 0; row < 4; ++row) {
    vm::AccessDesc r = Row(row);
    r.base = 3;
    t.races->core(0).OnAccess(3, r, /*write=*/true, /*pc=*/5);
  }
  vm::AccessDesc all = Columns(0, 4, 1);
  all.base = 3;
  t.races->core(1).OnAccess(3, all, /*write=*/false, /*pc=*/9);
  all.base = 2;
  t.races->core(1).OnAccess(2, all, /*write=*/false, /*pc=*/9);
  t.races->core(0).OnAccess(2, all, /*write=*/true, /*pc=*/5);
  int64_t racy;
  EXPECT_EQ(t.Find(&racy),
            "race on scratch_shapes[1] (ref 3, float32[4,4]) element (0, 0) "
            "and 15 more: written by the kernel at pc 5 at grid point (0) on "
            "core 0 and read by the kernel at pc 9 at grid point (0) on core "
            "1\n");
  EXPECT_EQ(racy, 16);
}

TEST(CrossCoreRacesTest, KernelAccessesOfASharedRefOrderedByASignalDoNotRace) {
  Cores t(/*aliased=*/false, /*num_cores=*/2, /*num_sync=*/1);
  vm::AccessDesc all = Columns(0, 4, 1);
  all.base = 3;
  t.races->core(0).OnAccess(3, all, /*write=*/true, /*pc=*/5);
  t.races->core(0).Release(0);
  t.races->core(1).Acquire(0);
  t.races->core(1).OnAccess(3, all, /*write=*/true, /*pc=*/9);
  int64_t racy;
  EXPECT_EQ(t.Find(&racy), "");
  EXPECT_EQ(racy, 0);
}

// --- Cores as threads really running at once ---

// Output 0 f32[256, 128] written back row by row by `num_cores` threads at
// once, each with its own Core, started together.
struct ConcurrentWriteBacks {
  static constexpr int kRows = 256;
  Kernel kernel;
  std::vector<float> out = std::vector<float>(kRows * 128);
  std::unique_ptr<CrossCoreRaces> races;
  int32_t point[1] = {0};

  ConcurrentWriteBacks() {
    const ArrayType type{vm::DType::F32, {kRows, 128}};
    kernel.refs = {
        {RefKind::OUTPUT_HBM, 0, vm::MemorySpace::HBM, type, "outputs", {}}};
    kernel.out_types = {type};
    races = std::make_unique<CrossCoreRaces>(
        kernel, 2,
        std::vector<CrossCoreRaces::Buffer>{
            {reinterpret_cast<uint8_t*>(out.data()), true, 0}},
        /*num_sync=*/1);
    uint8_t* refs[1] = {reinterpret_cast<uint8_t*>(out.data())};
    for (int c = 0; c < 2; ++c) races->core(c).BeginCall(refs, point, 1);
  }

  static BlockRegion Row(int row) {
    BlockRegion r;
    r.rank = 2;
    r.elem_size = 4;
    r.array_shape[0] = kRows;
    r.array_shape[1] = 128;
    r.block_shape[0] = 1;
    r.block_shape[1] = 128;
    r.start[0] = row;
    return r;
  }
};

TEST(CrossCoreRacesTest, ConcurrentUnorderedWriteBacksAlwaysRace) {
  // Both cores write every row back, in the same order, at the same time:
  // of each element's two writes at least one sees the other, and the
  // report is the same however they interleave.
  for (int run = 0; run < 300; ++run) {
    ConcurrentWriteBacks t;
    std::atomic<int> started = 0;
    auto write_back = [&](int core) {
      started.fetch_add(1);
      while (started.load() < 2) {
      }
      for (int row = 0; row < ConcurrentWriteBacks::kRows; ++row) {
        t.races->core(core).OnBlockCopy(0, ConcurrentWriteBacks::Row(row),
                                        true);
      }
    };
    std::thread other(write_back, 1);
    write_back(0);
    other.join();
    int64_t racy = 0;
    std::string description;
    t.races->Find(&racy, &description);
    ASSERT_EQ(racy, ConcurrentWriteBacks::kRows * 128) << "run " << run;
    ASSERT_EQ(description,
              "race on outputs (output 0, float32[256,128]) element (0, 0) "
              "and 32767 more: written back by core 0 and by core 1\n")
        << "run " << run;
  }
}

TEST(CrossCoreRacesTest, ConcurrentWriteBacksOrderedByASignalDoNotRace) {
  // Core 0 writes every row back and signals under the caller's lock; core
  // 1 waits for the signal under it, then writes every row back.
  for (int run = 0; run < 300; ++run) {
    ConcurrentWriteBacks t;
    std::mutex lock;
    bool signalled = false;
    std::thread waiter([&] {
      for (bool done = false; !done;) {
        std::lock_guard<std::mutex> hold(lock);
        if (signalled) {
          t.races->core(1).Acquire(0);
          done = true;
        }
      }
      for (int row = 0; row < ConcurrentWriteBacks::kRows; ++row) {
        t.races->core(1).OnBlockCopy(0, ConcurrentWriteBacks::Row(row), true);
      }
    });
    for (int row = 0; row < ConcurrentWriteBacks::kRows; ++row) {
      t.races->core(0).OnBlockCopy(0, ConcurrentWriteBacks::Row(row), true);
    }
    {
      std::lock_guard<std::mutex> hold(lock);
      t.races->core(0).Release(0);
      signalled = true;
    }
    waiter.join();
    int64_t racy = 0;
    std::string description;
    t.races->Find(&racy, &description);
    ASSERT_EQ(racy, 0) << "run " << run << ": " << description;
  }
}

}  // namespace
}  // namespace pallasvm::runtime
