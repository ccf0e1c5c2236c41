// Races between the simulated cores of one device (RunOptions::detect_races
// with more than one core), found as JAX's interpret mode finds them: with
// vector clocks. Two accesses of one shared element by different cores race
// when either writes and neither happens before the other. What orders
// cores is synchronization the caller reports: a core's Release of a sync
// object (a semaphore signal, possibly of another core's semaphore) and a
// later Acquire of it (a wait that succeeded). With none, no access of one
// core is ordered against another's, and every cross-core conflict races.
//
// What is marked:
//   - block copies: an output block written back, a block of an input
//     aliased to an output read in;
//   - the HBM side of a DMA (its source read, its destination written,
//     strided and squeezed regions exactly), marked when the DMA is carried
//     out (eager mode: when it starts; "on_wait" mode: when a wait carries
//     it out, so a DMA never waited for never happens, as in interpret
//     mode), at the issuing core's clock at that moment. Interpret mode
//     gives each DMA a clock of its own taken when it starts; using the
//     core's clock when it is carried out is a simplification: a DMA
//     carried out after its core acquired something counts as ordered
//     after what that acquire orders, though it may have started before,
//     and one carried out before its core signals counts as ordered before
//     what the signal orders;
//   - a kernel load or store of a device-shared ref (OnAccess): a scratch
//     or run_scoped ref whose one buffer every core sees. A masked store
//     marks its whole region.
// Shared buffers: every output, every HBM input a DMA writes (the call's
// copy of it), and the device-shared refs the caller names. Buffers are
// told apart by address, so an input aliased to an output is that output's
// buffer. HBM inputs nothing writes are not tracked: reads never race.
//
// Clocks (FastTrack's epochs): each core has a vector clock, its own
// component starting at 1; Release joins the core's clock into the sync
// object's and then ticks the core's own component, Acquire joins the
// object's clock into the core's. Per shared element and core, a mark
// holds the epoch (the core's own component) and site of its last write
// and of its last read. Each access is checked when it is made, against
// every other core's marks: an earlier write (and, for a write, an earlier
// read) by core d at epoch t happens before it iff the accessing core's
// clock has d's component >= t. Checking at each access, rather than
// comparing last marks after the grid, finds a race of an earlier access
// that a later, ordered access of the same core would hide.
//
// Concurrency: each core's thread writes only its own marks while other
// cores' threads read them. A core stores its marks of a run of elements,
// then a seq_cst fence, then loads the other cores' marks of the run, so of
// two concurrent conflicting accesses at least one sees the other (the
// store-buffering pattern with a fence on each side). Clocks are touched by
// their core's thread and, for sync objects, under the caller's lock (see
// Release).
//
// Reports (Find, after the grid), per element found racy: as when cores
// never synchronized, the lowest core that wrote it and the next core that
// wrote it (else the lowest other that read it), with their last accesses,
// if those two accesses were found to race; else the last race the lowest
// core that found one found at its write (else at its read). A run of
// consecutive elements with the same two accesses is one race. Without
// synchronization the report does not depend on how the threads interleaved.
//
// Nothing of this exists unless races are detected on several cores.
// runtime/race_detector.h checks each core against its own DMAs; this
// checks the cores against each other.
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
  // A buffer the cores share: output `operand`, input `operand` (an HBM
  // input that DMAs write), or, with `ref` >= 0, the one buffer of
  // device-shared ref `ref` (is_output and operand then unused).
  struct Buffer {
    const uint8_t* address;
    bool is_output;
    int operand;
    int ref = -1;
  };
  // What one element of a shared buffer takes on one core, at most: its
  // marks (the last write and read, 16 bytes) and the last race found at
  // each (16 more, allocated when the core first finds one in the buffer).
  static constexpr int64_t kMarkBytes = 32;

  // One core's marks and clock. Its methods are called by that core's
  // thread only.
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
    // A DMA from this core's `src` into `dst` of another core or device
    // (whose ref table is `dst_refs`), carried out at its start.
    void OnRemoteDma(const vm::AccessDesc& src, uint8_t* const* dst_refs,
                     const vm::AccessDesc& dst, uint32_t pc);
    // The kernel's load (or store, with `write`) of `region` (starts
    // resolved; the caller expands an in-place use to the whole ref) of
    // ref `ref` by the instruction at `pc`. Only a ref naming a shared
    // buffer is marked.
    void OnAccess(int32_t ref, const vm::AccessDesc& region, bool write,
                  uint32_t pc);
    // This core signals sync object `sync` (in [0, num_sync)): the
    // object's clock becomes its join with this core's, then this core's
    // own component ticks, so what the core does next is not ordered by
    // this signal. Acquire: a wait on `sync` succeeded; this core's clock
    // becomes its join with the object's, so what preceded every Release
    // of `sync` so far happens before what the core does next.
    // The caller holds one lock of its own around every Release and
    // Acquire of every core (the signal or wait it reports is atomic with
    // it), so sync objects' clocks are not locked here.
    void Release(int sync);
    void Acquire(int sync);

   private:
    friend class CrossCoreRaces;
    // One element's marks on one core: the epoch (high 32 bits) and site
    // (low 32) of the last write and of the last read; 0: none. Read by
    // other cores' threads (std::atomic_ref).
    struct Marks {
      uint64_t write = 0, read = 0;
    };
    // The last race found at this core's write and at its read of one
    // element (0: none); see EncodeRace.
    struct Races {
      uint64_t write = 0, read = 0;
    };
    struct Pending {
      uint64_t serial;
      int src_buffer, dst_buffer;  // -1: not a shared buffer
      vm::AccessDesc src, dst;
      uint32_t site;
    };
    // Another core's marks of one buffer.
    struct Peer {
      int core;
      Marks* marks;
    };
    // A site for an access by the instruction at `pc` here: a DMA's own,
    // or one per kernel instruction and grid point.
    uint32_t NewSite(uint32_t pc, bool dma);
    void MarkRegion(int buffer, const vm::AccessDesc& region, bool write,
                    uint32_t site);
    // Marks elements [first, first + count) of `buffer` and checks each
    // against the other cores' marks.
    void MarkRun(int buffer, int64_t first, int64_t count, bool write,
                 uint32_t site);
    // The access at `site` on this core: *verb "written back" and "by core
    // 1"; *verb "read" and "by the DMA started by dma_start (k.py:9) at
    // grid point (0) on core 1"; *verb "written" and "by the kernel at
    // swap (k.py:12) at grid point (0) on core 1".
    // "core 1", or "device 2, core 0" (SetDevices).
    std::string CoreName() const;
    std::string Describe(bool write, uint32_t site, std::string* verb) const;

    CrossCoreRaces* races_ = nullptr;
    int index_ = 0;
    std::vector<uint32_t> clock_;            // per core
    std::vector<std::vector<Marks>> marks_;  // per shared buffer
    // Per shared buffer; empty until this core finds a race in it.
    std::vector<std::vector<Races>> found_;
    std::vector<std::vector<Peer>> peers_;  // per shared buffer
    std::vector<int> buffer_of_ref_;        // -1: not shared
    const int32_t* point_ = nullptr;
    int rank_ = 0;
    // Sites: per site its pc, whether a DMA's, and its grid point (rank_
    // int32s each); per pc, its kernel access's last site (0: none).
    std::vector<uint32_t> site_pcs_;
    std::vector<bool> site_is_dma_;
    std::vector<int32_t> site_points_;
    std::vector<uint32_t> kernel_site_of_pc_;
    std::vector<Pending> pending_;
  };

  // A call on `num_cores` cores sharing `buffers`, synchronizing through
  // `num_sync` sync objects; allocates kMarkBytes per element of each
  // buffer and core.
  CrossCoreRaces(const Kernel& kernel, int num_cores,
                 std::vector<Buffer> buffers, int num_sync = 0);

  Core& core(int c) { return cores_[c]; }
  // The index of the shared buffer at `address`; -1 if none is.
  int BufferAt(const uint8_t* address) const;
  // The cores are those of several devices, `cores_per_device` each
  // (shard_map): reports name the device and its core.
  void SetDevices(int cores_per_device) { cores_per_device_ = cores_per_device; }

  // After every core has run: adds the count of racy elements to
  // *racy_elements and appends the first few races to *description, one
  // line each.
  void Find(int64_t* racy_elements, std::string* description) const;

 private:
  // "outputs (output 0, float32[8,128])"; "scratch_shapes[1] (ref 3,
  // float32[8,128])".
  std::string BufferName(const Buffer& b) const;
  const ArrayType& TypeOf(const Buffer& b) const;

  const Kernel& kernel_;
  std::vector<Buffer> buffers_;
  std::vector<Core> cores_;
  // Per sync object, its clock (num_cores entries each), under the
  // caller's lock.
  std::vector<std::vector<uint32_t>> sync_clocks_;
  int cores_per_device_ = 0;  // 0: one device
};

}  // namespace pallasvm::runtime

#endif  // PALLASVM_RUNTIME_CROSS_CORE_RACES_H_
