// One simulated core's semaphores: an int32 counter per element of each
// SEMAPHORE ref, stored in that ref's own buffer (so SEM_READ, reports and
// the VM's view agree), and numbered densely across refs so that
// per-semaphore state elsewhere (the DMA engine's task lists) is a vector
// index. A DMA semaphore counts bytes; a regular one what is signalled.
//
// Used by one thread at a time: on one device no other core signals them
// (see runtime/memory_model.h).
#ifndef PALLASVM_RUNTIME_SEMAPHORES_H_
#define PALLASVM_RUNTIME_SEMAPHORES_H_

#include <cstdint>
#include <cstring>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "runtime/kernel.h"
#include "vm/machine.h"

namespace pallasvm::runtime {

class Semaphores {
 public:
  Semaphores(const Kernel& kernel, uint8_t* const* refs);

  int size() const { return total_; }
  // The dense number of `sem`, in [0, size()).
  int Number(vm::SemaphoreId sem) const {
    return first_[sem.ref] + static_cast<int>(sem.index);
  }
  int32_t Count(vm::SemaphoreId sem) const {
    int32_t v;
    std::memcpy(&v, Counter(sem), sizeof(v));
    return v;
  }
  void SetCount(vm::SemaphoreId sem, int32_t v) {
    std::memcpy(Counter(sem), &v, sizeof(v));
  }
  // sem += inc; an error if the count would leave int32 (the value a
  // kernel signals is its own, so this is the kernel's bug to hear of).
  absl::Status Add(vm::SemaphoreId sem, int64_t inc);

  // Every semaphore of ref `ref` to 0; of every semaphore ref, by
  // ZeroAll (at the start of a call).
  void Zero(int ref);
  void ZeroAll();

  // "scratch_shapes[1][3]", "allocation 0 of run_scoped at k.py:12".
  std::string Name(vm::SemaphoreId sem) const;

  // Calls f(sem, count) for each semaphore of ref `ref` (or of every
  // semaphore ref, ref < 0) whose count is not 0.
  template <typename F>
  void ForEachNonZero(int ref, F&& f) const {
    for (size_t r = 0; r < first_.size(); ++r) {
      if (first_[r] < 0 || (ref >= 0 && static_cast<int>(r) != ref)) continue;
      const int64_t n = kernel_.refs[r].type.num_elements();
      for (int64_t i = 0; i < n; ++i) {
        const vm::SemaphoreId sem{static_cast<int32_t>(r), i};
        if (const int32_t c = Count(sem); c != 0) f(sem, c);
      }
    }
  }

 private:
  uint8_t* Counter(vm::SemaphoreId sem) const {
    return refs_[sem.ref] + sem.index * sizeof(int32_t);
  }
  const Kernel& kernel_;
  uint8_t* const* refs_;
  std::vector<int> first_;  // per ref: its first number, -1 if no semaphore
  int total_ = 0;
};

}  // namespace pallasvm::runtime

#endif  // PALLASVM_RUNTIME_SEMAPHORES_H_
