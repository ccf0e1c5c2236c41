// Races between cores (runtime/cross_core_races.h) without the VM or the
// grid driver: two cores' marks driven as block copies and DMAs would drive
// them, then compared. Expected races are derived by hand in the comments.
#include "runtime/cross_core_races.h"

#include <algorithm>
#include <memory>
#include <vector>

#include "gtest/gtest.h"

namespace pallasvm::runtime {
namespace {

// Output 0 f32[4, 4] in HBM (ref 0), input 0 f32[4, 4] in HBM (ref 1), a
// VMEM buffer f32[4, 4] (ref 2). With `aliased`, input 0 is aliased to
// output 0, so ref 1 is bound to the output's buffer; otherwise the input
// is shared on its own (as an HBM input a DMA writes is).
struct TwoCores {
  Kernel kernel;
  std::vector<float> out = std::vector<float>(16), in = std::vector<float>(16),
                     vmem = std::vector<float>(16);
  std::vector<uint8_t*> refs;
  std::unique_ptr<CrossCoreRaces> races;
  int32_t point[1] = {0};

  explicit TwoCores(bool aliased = false) {
    const ArrayType type{vm::DType::F32, {4, 4}};
    kernel.refs = {
        {RefKind::OUTPUT_HBM, 0, vm::MemorySpace::HBM, type, "outputs", {}},
        {RefKind::INPUT_HBM, 0, vm::MemorySpace::HBM, type, "args[0]", {}},
        {RefKind::SCRATCH, -1, vm::MemorySpace::VMEM, type,
         "scratch_shapes[0]", {}}};
    kernel.out_types = {type};
    kernel.in_types = {type};
    std::vector<CrossCoreRaces::Buffer> buffers = {
        {reinterpret_cast<uint8_t*>(out.data()), true, 0}};
    if (aliased) {
      kernel.aliases = {{0, 0}};
    } else {
      buffers.push_back({reinterpret_cast<uint8_t*>(in.data()), false, 0});
    }
    refs = {reinterpret_cast<uint8_t*>(out.data()),
            reinterpret_cast<uint8_t*>(aliased ? out.data() : in.data()),
            reinterpret_cast<uint8_t*>(vmem.data())};
    races = std::make_unique<CrossCoreRaces>(kernel, 2, std::move(buffers));
    for (int c = 0; c < 2; ++c) races->core(c).BeginCall(refs.data(), point, 1);
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
  TwoCores t;
  t.races->core(0).OnBlockCopy(0, TwoCores::Rows(0, 2), true);
  t.races->core(1).OnBlockCopy(0, TwoCores::Rows(2, 2), true);
  int64_t racy;
  EXPECT_EQ(t.Find(&racy), "");
  EXPECT_EQ(racy, 0);
}

TEST(CrossCoreRacesTest, ABlockWrittenBackByTwoCoresIsOneRace) {
  TwoCores t;
  t.races->core(0).OnBlockCopy(0, TwoCores::Rows(0, 2), true);
  t.races->core(1).OnBlockCopy(0, TwoCores::Rows(1, 2), true);
  int64_t racy;
  // Row 1 (4 elements) is both cores'.
  EXPECT_EQ(t.Find(&racy),
            "race on outputs (output 0, float32[4,4]) element (1, 0) and 3 "
            "more: written back by core 0 and by core 1\n");
  EXPECT_EQ(racy, 4);
}

TEST(CrossCoreRacesTest, StridedDmasRaceOnlyOnSharedElements) {
  TwoCores t;
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
  TwoCores t;
  t.Dma(0, 1, Row(0), /*to_hbm=*/false, 0);
  t.Dma(1, 1, Row(0), /*to_hbm=*/false, 0);
  int64_t racy;
  EXPECT_EQ(t.Find(&racy), "");
}

TEST(CrossCoreRacesTest, AnAliasedInputIsItsOutputsBuffer) {
  TwoCores t(/*aliased=*/true);
  // A DMA into the input (ref 1) on core 0 at grid point (2), a write-back
  // of the output on core 1: one buffer.
  t.point[0] = 2;
  t.Dma(0, 1, Row(3), /*to_hbm=*/true, 0);
  t.races->core(1).OnBlockCopy(0, TwoCores::Rows(2, 2), true);
  int64_t racy;
  EXPECT_EQ(t.Find(&racy),
            "race on outputs (output 0, aliased to input 0, float32[4,4]) "
            "element (3, 0) and 3 more: written by the DMA started by pc 7 at "
            "grid point (2) on core 0 and written back by core 1\n");
}

TEST(CrossCoreRacesTest, ADmaIntoASharedInputRacesWithAnotherCoresRead) {
  TwoCores t;
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
  TwoCores t;
  vm::AccessDesc v = Row(0), h = Row(0);
  v.base = 2;
  t.races->core(0).OnDmaStart(0, v, h, 7);  // never done
  t.races->core(1).OnBlockCopy(0, TwoCores::Rows(0, 1), true);
  int64_t racy;
  EXPECT_EQ(t.Find(&racy), "");
}

TEST(CrossCoreRacesTest, PastFiveRacesTheRestAreCounted) {
  TwoCores t;
  // Core 0 writes columns 0 and 2, core 1 all of the output: no two of
  // the 8 shared elements are consecutive, so 8 races, 5 described.
  t.Dma(0, 0, Columns(0, 2, 2), /*to_hbm=*/true, 0);
  t.races->core(1).OnBlockCopy(0, TwoCores::Rows(0, 4), true);
  int64_t racy;
  const std::string d = t.Find(&racy);
  EXPECT_EQ(racy, 8);
  EXPECT_NE(d.find("... 8 racy elements in all\n"), std::string::npos) << d;
  EXPECT_EQ(std::count(d.begin(), d.end(), '\n'), 6) << d;
}

}  // namespace
}  // namespace pallasvm::runtime
