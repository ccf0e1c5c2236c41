// The simulated TPU as the VM sees it: the operations whose effect lies
// outside the VM (DMAs, semaphores, run_scoped allocations). The VM decodes
// such an instruction, resolves its accesses (dynamic starts read from the
// frame, bounds checked) and calls the Machine in ExecContext; runtime/
// implements it (runtime/memory_model.h explains the model). The VM never
// includes a runtime header, and the Machine never sees a frame.
#ifndef PALLASVM_VM_MACHINE_H_
#define PALLASVM_VM_MACHINE_H_

#include <cstdint>
#include <cstdio>
#include <string_view>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "vm/program.h"

namespace pallasvm::vm {

// A DMA's region: a ref access with every start and size resolved (no
// slots), and where that puts it, so the machine need not resolve it again.
struct DmaRegion {
  const AccessDesc& access;
  int64_t byte_offset;  // of its first element in the ref's buffer
  int64_t count;        // its elements; -1: part of it lies outside the ref
                        // (in its padding, or read as the fill value)
};

// One semaphore: element `index` (row-major) of SEMAPHORE ref `ref`.
struct SemaphoreId {
  int32_t ref = -1;
  int64_t index = 0;
};

// Where a signal or DMA goes: this core of this device, or another core
// (semaphore_signal's core_index, device_id={"core": c}) and/or another
// device (a logical device id, remote DMAs and signals).
inline constexpr int32_t kThisCore = -1;
inline constexpr int32_t kThisDevice = -1;
struct Target {
  int32_t core = kThisCore;
  int32_t device = kThisDevice;
};

// How an instruction touches a ref, as the checkers need to know it.
enum class AccessKind : uint8_t {
  kRead,         // LOAD; an operand read in place
  kWrite,        // STORE; a result written in place
  kUpdate,       // ADDUPDATE, DOT_ADD in place: read, then written
  kMaskedWrite,  // MASKED_STORE: written where its mask is true
  // LOAD_CLIPPED: the old contents a masked swap returns, which it keeps
  // only where its mask is true (the instruction does not know where).
  kMaskedRead,
};

inline bool IsWrite(AccessKind kind) {
  return kind != AccessKind::kRead && kind != AccessKind::kMaskedRead;
}

class Machine {
 public:
  virtual ~Machine() = default;

  // Each call gets the pc of its instruction, for reports; an error it
  // returns is the instruction's (the VM appends its source line).

  // DMA_START. `src` and `dst` are regions of refs with every start
  // resolved (no start slots), to be copied by the machine (the VM's copy
  // goes when the call returns): a DMA in flight depends on nothing the
  // frame holds later. `dst` lies inside its ref and its padding (the part
  // in the padding is dropped); `src` may leave its ref only into its
  // padding or under out_of_bounds_reads="uninitialized" (the VM refuses it
  // otherwise), and the part outside reads the fill value. `src_sem` is
  // null when the DMA signals no send semaphore.
  // `dst` and `dst_sem` are those of the core and device `to` names
  // (make_async_remote_copy; a DMA to another device lands on the same
  // core number there unless `to` names one).
  virtual absl::Status StartDma(const DmaRegion& src, const DmaRegion& dst,
                                const SemaphoreId* src_sem, SemaphoreId dst_sem,
                                Target to, uint32_t pc) = 0;
  // SEM_SIGNAL: sem += inc, on the core and device `to` names (on another
  // device, core 0 unless `to` names one, as interpret mode does; the
  // machine checks they exist).
  virtual absl::Status SignalSemaphore(SemaphoreId sem, int32_t inc,
                                       Target to, uint32_t pc) = 0;
  // SEM_WAIT: once sem >= value (carrying out the DMAs in flight that
  // signal it, as the DMA execution mode says), sem -= value. A wait that
  // nothing can ever satisfy is an error, not a hang.
  virtual absl::Status WaitSemaphore(SemaphoreId sem, int32_t value,
                                     uint32_t pc) = 0;
  // SEM_READ.
  virtual absl::StatusOr<int32_t> ReadSemaphore(SemaphoreId sem,
                                                uint32_t pc) = 0;
  // SCOPE_ENTER / SCOPE_EXIT: refs [first, first + count) come into being
  // uninitialized, and are released.
  virtual absl::Status EnterScope(uint32_t first, uint32_t count,
                                  uint32_t pc) = 0;
  virtual absl::Status ExitScope(uint32_t first, uint32_t count,
                                 uint32_t pc) = 0;

  // DEBUG_PRINT: one line of the kernel's debug output, formatted.
  virtual void DebugPrint(std::string_view text, uint32_t pc);

  // Only while ExecContext::observe_accesses is set (race and
  // uninitialized-read detection): the kernel accesses `region` of ref
  // `ref` (starts resolved), or all of the ref when `region` is null (an
  // instruction using it in place). `mask` is set for kMaskedWrite: one
  // PRED per element of the region, row-major. An error ends the kernel
  // with it (uninitialized reads as errors).
  virtual absl::Status ObserveAccess(int32_t ref, const AccessDesc* region,
                                     AccessKind kind, const uint8_t* mask,
                                     uint32_t pc) {
    (void)ref, (void)region, (void)kind, (void)mask, (void)pc;
    return absl::OkStatus();
  }
};

// Without a simulated machine's grid point to add: the text alone.
inline void Machine::DebugPrint(std::string_view text, uint32_t) {
  std::fwrite(text.data(), 1, text.size(), stdout);
  std::fputc('\n', stdout);
  std::fflush(stdout);
}

}  // namespace pallasvm::vm

#endif  // PALLASVM_VM_MACHINE_H_
