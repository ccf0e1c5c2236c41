// Uninitialized-read detection (RunOptions::uninitialized_reads): a kernel
// that reads an element nobody has written is told so, with the reading
// instruction's source line, the grid point, the buffer and the element.
// Interpret mode only poisons such memory with NaN (or the largest
// integer), which a kernel may compute on without anyone noticing.
//
// Shadow state: one byte per byte of each tracked ref's buffer (so any view
// of a ref, reshaped or bitcast, maps onto it), beside the arena, allocated
// the first time a call asks for the check: nothing exists or runs when it
// is off. A shadow byte is
//   - kUnwritten: edge padding of an input block (past the end of its
//     array), an output block since its block index last changed, scratch
//     since the call began, a run_scoped buffer since its scope began, an
//     HBM output that is not aliased to an input;
//   - kWritten: stored by the kernel, copied in from an input, or delivered
//     by a DMA that has been waited for;
//   - kDmaPending: the destination of a DMA that has started but whose
//     semaphore has not been waited on. Reading it is reading before the
//     data is there, whatever the DMA execution mode, so both modes report
//     the same reads.
// A DMA carries its source's shadow to its destination: the shadow is
// taken when the copy is carried out and lands at the wait, so what was
// never written stays unwritten through any number of copies (an HBM
// output read back, a VMEM buffer copied on).
//
// What counts as a read: LOAD, ADDUPDATE and DOT_ADD's accumulator, and
// every operand an instruction reads in place. A masked store writes only
// where its mask is true; the old contents a masked swap returns are not
// checked (the instruction that loads them does not know the mask). Block
// write-backs and DMA sources are copies, not reads: copying padding out is
// what every edge block does.
//
// On one core: HBM buffers that several cores share get one shadow per
// core, so a core reading what another core's DMA wrote sees it unwritten
// (that is a race, which race detection reports).
#ifndef PALLASVM_RUNTIME_UNINITIALIZED_READS_H_
#define PALLASVM_RUNTIME_UNINITIALIZED_READS_H_

#include <cstdint>
#include <map>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "runtime/kernel.h"
#include "vm/machine.h"

namespace pallasvm::runtime {

// RunOptions::uninitialized_reads: off (the default: nothing is tracked),
// one warning per reading instruction and ref, or an error at the first.
enum class UninitializedReadsCheck { kOff, kWarn, kError };

class UninitializedReads {
 public:
  explicit UninitializedReads(const Kernel& kernel);

  // A new call. Every tracked buffer is unwritten, HBM inputs are written.
  // With `as_error`, the first uninitialized read fails the access (and so
  // the call); otherwise each reading instruction and ref is summarized
  // once in TakeWarnings.
  void BeginCall(const int32_t* grid_point, int grid_rank, bool as_error);

  // Ref `ref` is now all written (an aliased HBM output) or all unwritten
  // (an output block at a new block index, a run_scoped entry).
  void SetAll(int32_t ref, bool written);
  // Input block ref `ref` was copied in: of its `block_shape` (rank dims,
  // row-major), the first `valid[d]` elements of each dimension hold data
  // from the array, the rest is padding.
  void SetInputBlock(int32_t ref, int rank, const int64_t* block_shape,
                     const int64_t* valid);

  // A kernel access (vm::Machine::ObserveAccess).
  absl::Status OnAccess(int32_t ref, const vm::AccessDesc* region,
                        vm::AccessKind kind, const uint8_t* mask, uint32_t pc);
  // A DMA from `src` to `dst` (starts and sizes resolved) signalling
  // semaphore number `dst_sem` has started: its destination is pending.
  void OnDmaStart(uint64_t serial, const vm::AccessDesc& src,
                  const vm::AccessDesc& dst, int dst_sem);
  // It has been carried out: its source's shadow is taken now.
  void OnDmaDone(uint64_t serial);
  // Another core's or device's DMA wrote `region` of this core's buffers
  // (carried out at its start): written, whatever its source held (the
  // source's shadow is the other core's).
  void MarkWritten(const vm::AccessDesc& region);
  // A wait on semaphore number `sem` finished: the DMAs carried out that
  // signal it deliver their shadow to their destinations.
  void OnWait(int sem);

  // One line per reading instruction and ref found reading unwritten
  // elements in this call (warning mode), appended to *out.
  void TakeWarnings(std::vector<std::string>* out);

 private:
  enum State : uint8_t { kUnwritten = 0, kWritten = 1, kDmaPending = 2 };
  struct Dma {
    uint64_t serial;
    vm::AccessDesc src, dst;
    int dst_sem;
    bool done = false;
    std::vector<uint8_t> shadow;  // the source's, element by element
  };
  // The first unwritten element one instruction read from one ref, and how
  // many it read in all.
  struct Finding {
    std::vector<int64_t> element;
    State state;
    bool outside;
    std::string point;
    int64_t elements = 0;
    int64_t points = 0;
  };

  std::string Describe(int32_t ref, uint32_t pc, const Finding& f,
                       bool as_error) const;
  std::string PointString() const;

  const Kernel& kernel_;
  std::vector<std::vector<uint8_t>> shadow_;  // per ref; empty: untracked
  const int32_t* point_ = nullptr;
  int rank_ = 0;
  bool as_error_ = false;
  std::vector<Dma> dmas_;
  std::map<std::pair<uint32_t, int32_t>, Finding> findings_;
};

}  // namespace pallasvm::runtime

#endif  // PALLASVM_RUNTIME_UNINITIALIZED_READS_H_
