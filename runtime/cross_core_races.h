// Races between the simulated cores of one device (RunOptions::detect_races
// with more than one core), as JAX's interpret mode finds them with its
// vector clocks. The cores of a device share HBM and nothing orders one
// core's accesses against another's: the cores of a grid never
// synchronize, and pallasvm has no barrier or cross-core semaphore on one
// device yet. So two accesses of one HBM element by different cores race
// when either writes, whatever their timing. What reaches HBM:
//   - block copies: an output block written back, a block of an input
//     aliased to an output read in;
//   - the HBM side of a DMA (its source read, its destination written,
//     strided and squeezed regions exactly), marked when the DMA is carried
//     out: in "on_wait" mode a DMA never waited for never happens, as in
//     interpret mode.
// Shared buffers: every output, and every HBM input a DMA writes (the
// call's copy of it). Buffers are told apart by address, so an input
// aliased to an output is that output's buffer. HBM inputs nothing writes
// are not tracked: reads never race.
//
// Marks: per core and shared buffer, one uint32 per element saying whether
// the core wrote it, read it, and what last did the write (else the read):
// a block copy, or one of the core's DMA sites (the DMA's source line and
// the grid point where it started). Each core's thread marks only its own
// marks, so nothing is locked; after the grid, Find compares the cores
// element by element. Nothing of this exists unless races are detected on
// several cores. runtime/race_detector.h checks each core against its own
// DMAs; this checks the cores against each other.
#ifndef PALLASVM_RUNTIME_CROSS_CORE_RACES_H_
#define PALLASVM_RUNTIME_CROSS_CORE_RACES_H_

#include <cstdint>
#include <string>
#include <vector>

#include "runtime/block_copy.h"
#include "runtime/kernel.h"
#include "vm/program.h"

namespace pallasvm::runtime {

class CrossCoreRaces {
 public:
  // An HBM buffer the cores share: output `operand`, or input `operand`
  // (an HBM input that DMAs write).
  struct Buffer {
    const uint8_t* address;
    bool is_output;
    int operand;
  };
  // What the marks of one element of a shared buffer take on one core.
  static constexpr int64_t kMarkBytes = 4;

  // One core's marks, used by that core's thread only.
  class Core {
   public:
    // Before the core runs: `refs` is its ref table (HBM operands bound),
    // `point` the grid point it is at (grid_rank int32s, updated in place).
    void BeginCall(uint8_t* const* refs, const int32_t* point, int rank);
    // A block copy of `r` between shared buffer `buffer` and VMEM.
    void OnBlockCopy(int buffer, const BlockRegion& r, bool writes_hbm);
    // A DMA from `src` to `dst` (starts and sizes resolved) started by the
    // instruction at `pc`, and, later, carried out.
    void OnDmaStart(uint64_t serial, const vm::AccessDesc& src,
                    const vm::AccessDesc& dst, uint32_t pc);
    void OnDmaDone(uint64_t serial);

   private:
    friend class CrossCoreRaces;
    struct Pending {
      uint64_t serial;
      int src_buffer, dst_buffer;  // -1: not a shared buffer
      vm::AccessDesc src, dst;
      uint32_t site;
    };
    void MarkRegion(int buffer, const vm::AccessDesc& region, bool write,
                    uint32_t site);
    // The access that `mark` names, on this core: *verb "written back" and
    // "by core 1"; *verb "read" and "by the DMA started by dma_start
    // (k.py:9) at grid point (0) on core 1".
    std::string Describe(uint32_t mark, std::string* verb) const;

    const CrossCoreRaces* races_ = nullptr;
    int index_ = 0;
    std::vector<std::vector<uint32_t>> marks_;  // per shared buffer
    std::vector<int> buffer_of_ref_;            // -1: not shared
    const int32_t* point_ = nullptr;
    int rank_ = 0;
    // DMA sites: per site its pc and grid point (rank_ int32s each).
    std::vector<uint32_t> site_pcs_;
    std::vector<int32_t> site_points_;
    std::vector<Pending> pending_;
  };

  // A call on `num_cores` cores sharing `buffers`; allocates kMarkBytes
  // per element of each buffer and core.
  CrossCoreRaces(const Kernel& kernel, int num_cores,
                 std::vector<Buffer> buffers);

  Core& core(int c) { return cores_[c]; }
  // The index of the shared buffer at `address`; -1 if none is.
  int BufferAt(const uint8_t* address) const;

  // After every core has run: each element that one core wrote and another
  // wrote or read is racy. Adds their count to *racy_elements and appends
  // the first few races to *description, one line each (a run of
  // consecutive elements with the same two accesses is one race).
  void Find(int64_t* racy_elements, std::string* description) const;

 private:
  // "outputs (output 0, float32[8,128])".
  std::string BufferName(const Buffer& b) const;
  const ArrayType& TypeOf(const Buffer& b) const;

  const Kernel& kernel_;
  std::vector<Buffer> buffers_;
  std::vector<Core> cores_;
};

}  // namespace pallasvm::runtime

#endif  // PALLASVM_RUNTIME_CROSS_CORE_RACES_H_
