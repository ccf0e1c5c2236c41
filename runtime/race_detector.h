// Race detection between one simulated core's kernel and its DMAs
// (RunOptions::detect_races), as JAX's interpret mode defines a race: each
// DMA is a thread of its own, and an access of the kernel (a load or store,
// or an instruction reading or writing a whole ref in place) and a DMA's
// read or write of the same element race unless one happens before the
// other. A DMA's accesses happen after its start (program order), and
// before whatever the core does after a wait on a semaphore the DMA has
// signalled (interpret mode carries vector clocks from the DMA through the
// semaphore to the waiter). So a DMA is "in flight" from its start until
// such a wait, and while it is in flight:
//   - a kernel access that writes an element the DMA reads or writes, or
//     reads an element it writes, races with it;
//   - another DMA started that writes what it reads or writes, or reads
//     what it writes, races with it.
// Element sets are compared exactly: two regions of one buffer (same
// extents) share an element iff they do in every dimension, each a strided
// progression. Costs nothing unless on: the VM reports accesses only when
// ExecContext::observe_accesses is set.
//
// Races between cores (an HBM element that DMAs or block copies of two
// cores touch, one of them writing) are runtime/cross_core_races.h's.
#ifndef PALLASVM_RUNTIME_RACE_DETECTOR_H_
#define PALLASVM_RUNTIME_RACE_DETECTOR_H_

#include <cstdint>
#include <string>
#include <vector>

#include "runtime/kernel.h"
#include "vm/machine.h"

namespace pallasvm::runtime {

class RaceDetector {
 public:
  // `refs`: the core's ref table (buffers are compared by address, so an
  // HBM input and the output it is aliased to are one buffer).
  RaceDetector(const Kernel& kernel, uint8_t* const* refs);

  void Reset();
  // The grid point being run, for reports (grid_rank int32s, read when a
  // race is found).
  void SetGridPoint(const int32_t* point, int rank) {
    point_ = point;
    rank_ = rank;
  }

  void OnDmaStart(uint64_t serial, const vm::AccessDesc& src,
                  const vm::AccessDesc& dst, int dst_sem, int src_sem,
                  uint32_t pc);
  // The DMA has read and written everything and signalled its semaphores.
  void OnDmaDone(uint64_t serial);
  // The core finished a wait on semaphore number `sem`: every DMA that
  // signalled it is ordered before what the core does next.
  void OnWait(int sem);
  // A kernel access: `region` of ref `ref` (starts resolved), or all of it.
  void OnAccess(int32_t ref, const vm::AccessDesc* region, bool is_write,
                uint32_t pc);

  int64_t racy_elements() const { return racy_elements_; }
  // The first few races, one per line.
  const std::string& description() const { return description_; }

 private:
  struct InFlight {
    uint64_t serial;
    vm::AccessDesc src, dst;
    int dst_sem, src_sem;
    bool done;
    uint32_t pc;
    std::string point;  // where it started
  };
  // Elements of `a` that are also in `b` (both regions of one buffer).
  static int64_t SharedElements(const vm::AccessDesc& a,
                                const vm::AccessDesc& b,
                                std::vector<int64_t>* first);
  void Report(int64_t elements, const std::vector<int64_t>& first,
              int32_t ref, const InFlight& dma, bool dma_writes,
              const std::string& other);
  std::string PointString() const;

  const Kernel& kernel_;
  uint8_t* const* refs_;
  const int32_t* point_ = nullptr;
  int rank_ = 0;
  std::vector<InFlight> in_flight_;
  int64_t racy_elements_ = 0;
  int described_ = 0;
  std::string description_;
};

}  // namespace pallasvm::runtime

#endif  // PALLASVM_RUNTIME_RACE_DETECTOR_H_
