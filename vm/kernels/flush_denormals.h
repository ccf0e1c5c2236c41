// FlushDenormals: float arithmetic with subnormals flushed on this thread
// for the guard's lifetime: inputs are read as zero (DAZ) and results that
// would be subnormal become zero (FTZ).
//
// XLA:CPU, which computes interpret mode's results, runs this way (and a
// TPU has no subnormals), and the elementwise functors
// (vm/kernels/elementwise.h) rely on it: it costs nothing per element. The
// runtime sets it on every thread that runs the VM, whoever calls it (the
// JAX bridge's XLA threads already have it; the C++ API's and the simulated
// cores' threads do not). Only x86's MXCSR is handled: elsewhere the guard
// does nothing and the caller's floating-point mode is kept.
#ifndef PALLASVM_VM_KERNELS_FLUSH_DENORMALS_H_
#define PALLASVM_VM_KERNELS_FLUSH_DENORMALS_H_

#if defined(__SSE__)
#include <xmmintrin.h>
#endif

namespace pallasvm::vm::kernels {

class FlushDenormals {
 public:
#if defined(__SSE__)
  FlushDenormals() : saved_(_mm_getcsr()) {
    _mm_setcsr(saved_ | kFlushToZero | kDenormalsAreZero);
  }
  ~FlushDenormals() { _mm_setcsr(saved_); }
#else
  FlushDenormals() = default;
#endif
  FlushDenormals(const FlushDenormals&) = delete;
  FlushDenormals& operator=(const FlushDenormals&) = delete;

 private:
#if defined(__SSE__)
  static constexpr unsigned kFlushToZero = 1u << 15;
  static constexpr unsigned kDenormalsAreZero = 1u << 6;
  unsigned saved_;
#endif
};

}  // namespace pallasvm::vm::kernels

#endif  // PALLASVM_VM_KERNELS_FLUSH_DENORMALS_H_
