// Matrix multiply kernels (DOT_F32, DOT_ADD_F32, DOT_S32): C[M,N] := A[M,K] @
// B[K,N], all row-major and dense. C must not overlap A or B (the verifier
// enforces it).
//
// DOT_F32 is a register-blocked GEMM in the BLIS style: B is packed into
// panels of kDotNr columns for each block of kDotKc steps of k (read in
// place for a few rows of A), A is read in place by rows of kDotMr, and a
// micro-kernel keeps a kDotMr x kDotNr tile of C in SIMD registers,
// broadcasting one element of A against the B vectors per step. Every C
// element is accumulated with fused multiply-adds in increasing k order
// (partial sums between k blocks are stored and reloaded exactly), so the
// result does not depend on the blocking. Packing buffers are per thread,
// allocated on first use. Products of 64 rows or more and at least 2^23
// multiply-adds are shared with a second, persistent thread, both taking
// chunks of C from a counter so the caller never waits for a worker that is
// not running (one caller at a time; bit for bit the same result);
// PALLASVM_DOT_THREADS=1 turns that off.
#ifndef PALLASVM_VM_KERNELS_DOT_H_
#define PALLASVM_VM_KERNELS_DOT_H_

#include <cstdint>

namespace pallasvm::vm::kernels {

void DotF32(float* c, const float* a, const float* b, int64_t m, int64_t k,
            int64_t n);

// C[M,N] := C + A[M,K] @ B[K,N], with the product computed exactly as
// DotF32 computes it and then added with one rounding: bit for bit
// DOT_F32 into a temporary followed by ADD_F32_VV, without the temporary
// (for k <= 256; longer products use a per-thread buffer).
void DotAddF32(float* c, const float* a, const float* b, int64_t m, int64_t k,
               int64_t n);

// Wrapping int32 arithmetic.
void DotS32(int32_t* c, const int32_t* a, const int32_t* b, int64_t m,
            int64_t k, int64_t n);

// How many threads large DOT_F32 / DOT_ADD_F32 products use: 2 by default
// when the process may run on two CPUs, 1 with PALLASVM_DOT_THREADS=1.
// SetDotThreads(1 or 2) overrides that for the whole process (benchmarks,
// tests); SetDotThreads(0) restores the default.
int DotThreads();
void SetDotThreads(int threads);

// Test hooks for the worker thread that shares large products.
enum class DotWorkerHookForTesting {
  kNone,
  kWorkerPaused,           // the worker takes no chunk: the caller does all
  kWorkerTakesFirstChunk,  // the caller waits until the worker has one
};
void SetDotWorkerHookForTesting(DotWorkerHookForTesting hook);
// Chunks the worker has computed since the process started.
int64_t DotWorkerChunksForTesting();

}  // namespace pallasvm::vm::kernels

#endif  // PALLASVM_VM_KERNELS_DOT_H_
