// Matrix multiply kernels; see dot.h.
//
// Tile and block sizes were picked by measurement on an AVX-512 Xeon (Ice
// Lake, 48 KiB L1d, 1.25 MiB L2), single thread, 512^3 f32:
//   micro-tile 12x32: 129 GFLOP/s   14x32: 126   6x64: 140   8x48: 139
//   kc 256: 139   kc 384: 126   kc 512: 115 (with 8x48, mc 96)
// 8 rows x 3 vectors keeps 24 accumulators, 3 B vectors and a broadcast in
// the 32 vector registers, and works for AVX2's 16 registers at half width
// only by spilling, which is acceptable there.
//
// A is read in place by the micro-kernel (only a last, partial row panel is
// packed), and full B panel rows are packed with vector moves rather than
// memcpy calls. Single thread, DOT_ADD_F32 256^3 (ops.tpu.matmul's 256
// blocks), best of 40 runs, alternating on a shared 2-vCPU Ice Lake: A
// packed and B rows by memcpy 300 us (112 GFLOP/s); A in place 247 us;
// also B rows by vector moves 239 us (140 GFLOP/s); 128^3: 55.0 -> 40.1 us.
//
// Two threads for large products (RowSplitter below): C's rows are split
// with one persistent worker thread, handed work through an atomic (spin,
// then futex wait). An earlier split that started threads per product was
// slower (ops.tpu.matmul 1024^3 f32, 256 blocks: 58.6-67.6 ms against
// 40.2-45.4 ms serial); the persistent worker, alternating runs of
// `PALLASVM_DOT_THREADS={1,2} build/bench/kernels_bench
// --benchmark_filter='Matmul1024F32|FlashAttention|Matmul512'
// --benchmark_repetitions=3`, three rounds: matmul 1024 21.2 / 21.4 /
// 20.6 ms serial against 14.8 / 16.7 / 15.4 ms split; flash attention fwd
// 152 / 152 / 149 against 143 / 145 / 147 ms. (With the waits cut to
// ~0.2 ms of spinning, flash attention's 128^3 products got slower than
// serial: 148-184 against 175-186 ms.) The split needs two CPUs in the
// process's affinity mask.
#include "vm/kernels/dot.h"

#include <algorithm>
#include <atomic>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <thread>
#include <vector>

#include <pthread.h>
#include <sched.h>

#if defined(__SSE2__)
#include <emmintrin.h>
#endif

#include "vm/kernels/simd.h"

namespace pallasvm::vm::kernels {
namespace {

using Batch = xsimd::batch<float>;
constexpr int64_t kW = Batch::size;
constexpr int64_t kDotMr = 8;            // rows of the C tile
constexpr int64_t kDotNv = 3;            // vectors across the C tile
constexpr int64_t kDotNr = kDotNv * kW;  // columns of the C tile
constexpr int64_t kDotKc = 256;          // k steps per packed block
constexpr int64_t kDotMc = 96;           // rows of A packed at once (L2)
constexpr int64_t kDotNc = 22 * kDotNr;  // columns of B packed at once
constexpr int64_t kDotSmallM = 16;       // up to this many rows, B unpacked

struct FreeDeleter {
  void operator()(float* p) const { std::free(p); }
};

// The packing buffers, one set per thread; the VM allocates nothing per
// instruction after the first DOT on a thread.
struct PackBuffers {
  std::unique_ptr<float, FreeDeleter> a;
  std::unique_ptr<float, FreeDeleter> b;
};

PackBuffers& ThreadPackBuffers() {
  thread_local PackBuffers buffers;
  if (buffers.a == nullptr) {
    buffers.a.reset(static_cast<float*>(
        std::aligned_alloc(64, sizeof(float) * kDotMc * kDotKc)));
    buffers.b.reset(static_cast<float*>(
        std::aligned_alloc(64, sizeof(float) * kDotNc * kDotKc)));
  }
  return buffers;
}

// What the micro-kernel does with the C tile.
enum class TileMode {
  kFirst,    // C := product of this k block (C is not read)
  kPartial,  // C := C + product, continuing C's fused multiply-add chain
  kAddTo,    // C := C + product, the product rounded first (DOT_ADD_F32)
};

// C tile (kDotMr x kNv vectors at c, row stride ldc), per `mode`, with the
// product = sum over kc steps of A panel column x B panel row. A's rows are
// interleaved k-major in a packed panel (kPackedA), or lda apart when read
// in place; B rows are kDotNr apart in a packed panel (kPackedB), or ldb
// apart in place. kNv < kDotNv is for the last column panel of a packed
// B, so that e.g. N = 256 (5 panels of 48 and one of 16) does not compute
// a whole panel for its last 16 columns.
template <bool kPackedA, bool kPackedB, TileMode kMode, int kNv>
[[gnu::noinline]] void MicroKernel(int64_t kc, const float* __restrict ap,
                                   int64_t lda, const float* __restrict bp,
                                   int64_t ldb, float* c, int64_t ldc) {
  if constexpr (kPackedB) ldb = kDotNr;
  Batch acc[kDotMr][kNv];
#pragma GCC unroll 8
  for (int64_t r = 0; r < kDotMr; ++r) {
#pragma GCC unroll 4
    for (int64_t v = 0; v < kNv; ++v) {
      acc[r][v] = kMode == TileMode::kPartial
                      ? Batch::load_unaligned(c + r * ldc + v * kW)
                      : Batch(0.f);
    }
  }
  for (int64_t k = 0; k < kc; ++k) {
    Batch b[kNv];
#pragma GCC unroll 4
    for (int64_t v = 0; v < kNv; ++v) {
      b[v] = kPackedB ? Batch::load_aligned(bp + k * ldb + v * kW)
                      : Batch::load_unaligned(bp + k * ldb + v * kW);
    }
#pragma GCC unroll 8
    for (int64_t r = 0; r < kDotMr; ++r) {
      const Batch a(kPackedA ? ap[k * kDotMr + r] : ap[r * lda + k]);
#pragma GCC unroll 4
      for (int64_t v = 0; v < kNv; ++v) {
        acc[r][v] = FusedMultiplyAdd(a, b[v], acc[r][v]);
      }
    }
  }
#pragma GCC unroll 8
  for (int64_t r = 0; r < kDotMr; ++r) {
#pragma GCC unroll 4
    for (int64_t v = 0; v < kNv; ++v) {
      float* const cv = c + r * ldc + v * kW;
      if constexpr (kMode == TileMode::kAddTo) {
        (Batch::load_unaligned(cv) + acc[r][v]).store_unaligned(cv);
      } else {
        acc[r][v].store_unaligned(cv);
      }
    }
  }
}

// MicroKernel for a tile of nv vectors (nv < kDotNv only with packed B).
template <bool kPackedA, bool kPackedB, TileMode kMode>
void RunMicroKernelOfWidth(int64_t nv, int64_t kc, const float* ap, int64_t lda,
                           const float* bp, int64_t ldb, float* c,
                           int64_t ldc) {
  if constexpr (kPackedB) {
    if (nv == 1) {
      return MicroKernel<kPackedA, true, kMode, 1>(kc, ap, lda, bp, ldb, c,
                                                   ldc);
    }
    if (nv == 2) {
      return MicroKernel<kPackedA, true, kMode, 2>(kc, ap, lda, bp, ldb, c,
                                                   ldc);
    }
  }
  MicroKernel<kPackedA, kPackedB, kMode, kDotNv>(kc, ap, lda, bp, ldb, c, ldc);
}

template <bool kPackedA, bool kPackedB>
void RunMicroKernel(TileMode mode, int64_t nv, int64_t kc, const float* ap,
                    int64_t lda, const float* bp, int64_t ldb, float* c,
                    int64_t ldc) {
  switch (mode) {
    case TileMode::kFirst:
      return RunMicroKernelOfWidth<kPackedA, kPackedB, TileMode::kFirst>(
          nv, kc, ap, lda, bp, ldb, c, ldc);
    case TileMode::kPartial:
      return RunMicroKernelOfWidth<kPackedA, kPackedB, TileMode::kPartial>(
          nv, kc, ap, lda, bp, ldb, c, ldc);
    case TileMode::kAddTo:
      return RunMicroKernelOfWidth<kPackedA, kPackedB, TileMode::kAddTo>(
          nv, kc, ap, lda, bp, ldb, c, ldc);
  }
}

// Packs B[pc.., jc..] (kc x nc) into column panels of kDotNr, k-major inside
// a panel, zero-padding the last panel's missing columns.
void PackB(float* dst, const float* b, int64_t ldb, int64_t kc, int64_t nc) {
  for (int64_t j = 0; j < nc; j += kDotNr) {
    const int64_t nr = std::min(kDotNr, nc - j);
    if (nr == kDotNr) {
      // A full panel row is kDotNv vectors: moved as such, not by a call
      // to memcpy per row.
      for (int64_t k = 0; k < kc; ++k) {
#pragma GCC unroll 4
        for (int64_t v = 0; v < kDotNv; ++v) {
          Batch::load_unaligned(b + k * ldb + j + v * kW)
              .store_aligned(dst + v * kW);
        }
        dst += kDotNr;
      }
      continue;
    }
    for (int64_t k = 0; k < kc; ++k) {
      std::memcpy(dst, b + k * ldb + j, nr * sizeof(float));
      std::fill(dst + nr, dst + kDotNr, 0.f);
      dst += kDotNr;
    }
  }
}

// Packs A[ic.., pc..] (mc x kc) into row panels of kDotMr, k-major inside a
// panel, zero-padding the last panel's missing rows.
void PackA(float* dst, const float* a, int64_t lda, int64_t mc, int64_t kc) {
  for (int64_t i = 0; i < mc; i += kDotMr) {
    const int64_t mr = std::min(kDotMr, mc - i);
    for (int64_t k = 0; k < kc; ++k) {
      for (int64_t r = 0; r < mr; ++r) dst[r] = a[(i + r) * lda + k];
      std::fill(dst + mr, dst + kDotMr, 0.f);
      dst += kDotMr;
    }
  }
}

// C := A @ B, or with add_to (k <= kDotKc only) C := C + A @ B, the
// product rounded first.
void Gemm(float* c, const float* a, const float* b, int64_t m, int64_t k,
          int64_t n, bool add_to) {
  // Packing B costs a pass over B per k block and pays off over many row
  // panels; for a few rows the micro-kernel reads B in place (all but the
  // last, partial, column panel). 8x128x128: 36 -> 71 GFLOP/s.
  const bool pack_b = m > kDotSmallM;
  PackBuffers& buffers = ThreadPackBuffers();
  float* const bpack = buffers.b.get();
  float* const apack = buffers.a.get();
  alignas(64) float tile[kDotMr * kDotNr];
  for (int64_t jc = 0; jc < n; jc += kDotNc) {
    const int64_t nc = std::min(kDotNc, n - jc);
    const int64_t full_nc = nc / kDotNr * kDotNr;  // columns in full panels
    for (int64_t pc = 0; pc < k; pc += kDotKc) {
      const int64_t kc = std::min(kDotKc, k - pc);
      const bool first = pc == 0;
      const TileMode mode = add_to  ? TileMode::kAddTo
                            : first ? TileMode::kFirst
                                    : TileMode::kPartial;
      const float* const bblock = b + pc * n + jc;
      if (pack_b) {
        PackB(bpack, bblock, n, kc, nc);
      } else if (full_nc < nc) {
        PackB(bpack, bblock + full_nc, n, kc, nc - full_nc);
      }
      for (int64_t ic = 0; ic < m; ic += kDotMc) {
        const int64_t mc = std::min(kDotMc, m - ic);
        // Full row panels read A in place (a micro-tile's 8 rows of kc
        // steps stay in L1 across the column panels); a last, partial
        // panel is packed with zero padding.
        const int64_t full_mc = mc / kDotMr * kDotMr;
        if (full_mc < mc) {
          PackA(apack, a + (ic + full_mc) * k + pc, k, mc - full_mc, kc);
        }
        for (int64_t jr = 0; jr < nc; jr += kDotNr) {
          const int64_t nr = std::min(kDotNr, nc - jr);
          const int64_t nv = (nr + kW - 1) / kW;  // vectors the tile needs
          const bool in_place = !pack_b && nr == kDotNr;
          const float* bp = in_place ? bblock + jr
                            : pack_b ? bpack + (jr / kDotNr) * kc * kDotNr
                                     : bpack;
          for (int64_t ir = 0; ir < mc; ir += kDotMr) {
            const int64_t mr = std::min(kDotMr, mc - ir);
            const bool a_in_place = ir < full_mc;
            const float* ap =
                a_in_place ? a + (ic + ir) * k + pc
                           : apack + ((ir - full_mc) / kDotMr) * kc * kDotMr;
            float* ct = c + (ic + ir) * n + jc + jr;
            float* dst = ct;
            int64_t ldc = n;
            if (mr < kDotMr || nr < nv * kW) {
              // An edge tile goes through a full-size buffer, so the
              // micro-kernel never touches C outside [m, n).
              dst = tile;
              ldc = kDotNr;
              if (mode != TileMode::kFirst) {
                for (int64_t r = 0; r < mr; ++r) {
                  std::memcpy(tile + r * kDotNr, ct + r * n,
                              nr * sizeof(float));
                }
              }
            }
            if (a_in_place) {
              if (in_place) {
                RunMicroKernel<false, false>(mode, nv, kc, ap, k, bp, n, dst,
                                             ldc);
              } else {
                RunMicroKernel<false, true>(mode, nv, kc, ap, k, bp, n, dst,
                                            ldc);
              }
            } else if (in_place) {
              RunMicroKernel<true, false>(mode, nv, kc, ap, k, bp, n, dst, ldc);
            } else {
              RunMicroKernel<true, true>(mode, nv, kc, ap, k, bp, n, dst, ldc);
            }
            if (dst == tile) {
              for (int64_t r = 0; r < mr; ++r) {
                std::memcpy(ct + r * n, tile + r * kDotNr, nr * sizeof(float));
              }
            }
          }
        }
      }
    }
  }
}

// A second thread for large products: one persistent worker that runs the
// lower rows of C while the caller runs the upper ones. Each row of C is
// computed by the same code in the same k order whoever runs it, so the
// result is bit for bit the serial one. The worker serves one caller at a
// time; a caller that finds it busy (simulated cores are threads too) runs
// alone.
class RowSplitter {
 public:
  static RowSplitter& Get() {
    static RowSplitter* splitter = new RowSplitter();  // never destroyed
    return *splitter;
  }

  // Gemm over rows [0, m) of C, split at `split` between this thread and
  // the worker if the worker is free.
  void Run(float* c, const float* a, const float* b, int64_t m, int64_t k,
           int64_t n, bool add_to, int64_t split) {
    bool expected = false;
    if (forked_child_.load(std::memory_order_relaxed) ||
        !owner_.compare_exchange_strong(expected, true,
                                        std::memory_order_acquire)) {
      Gemm(c, a, b, m, k, n, add_to);
      return;
    }
    job_ = Job{c + split * n, a + split * k, b, m - split, k, n, add_to};
    state_.store(kPosted, std::memory_order_release);
    state_.notify_one();
    Gemm(c, a, b, split, k, n, add_to);
    // The worker's half takes about as long as ours: spin, then sleep.
    for (int spin = 0; state_.load(std::memory_order_acquire) != kDone;
         ++spin) {
      if (spin < (1 << 14)) {  // ~1 ms: then the worker is not running
        Pause();
      } else {
        state_.wait(kPosted, std::memory_order_acquire);
      }
    }
    state_.store(kIdle, std::memory_order_relaxed);
    owner_.store(false, std::memory_order_release);
  }

 private:
  struct Job {
    float* c;
    const float* a;
    const float* b;
    int64_t m, k, n;
    bool add_to;
  };
  static constexpr int kIdle = 0, kPosted = 1, kDone = 2;

  RowSplitter() : worker_([this] { Work(); }) {
    worker_.detach();
    // A forked child has no worker thread: it runs every product alone.
    pthread_atfork(nullptr, nullptr,
                   [] { forked_child_.store(true, std::memory_order_relaxed); });
  }

  static void Pause() {
#if defined(__SSE2__)
    _mm_pause();
#endif
  }

  void Work() {
    while (true) {
      // Between products (block copies, other ops) spin briefly, then
      // sleep until the next one is posted.
      for (int spin = 0; state_.load(std::memory_order_acquire) != kPosted;
           ++spin) {
        // ~1 ms, then sleep and leave the core. Shorter (~0.2 ms) made
        // flash attention's many 128^3 products slower than one thread.
        if (spin < (1 << 14)) {
          Pause();
        } else {
          state_.wait(kIdle, std::memory_order_acquire);
        }
      }
      Gemm(job_.c, job_.a, job_.b, job_.m, job_.k, job_.n, job_.add_to);
      state_.store(kDone, std::memory_order_release);
      state_.notify_one();
    }
  }

  static inline std::atomic<bool> forked_child_{false};
  std::atomic<bool> owner_{false};
  std::atomic<int> state_{kIdle};
  Job job_{};
  std::thread worker_;
};

// Splits C's rows over two threads when the product is large enough for
// the hand-over (a few microseconds) to pay: at least 2^21 multiply-adds
// and 64 rows. Split on a micro-tile boundary.
void GemmMaybeSplit(float* c, const float* a, const float* b, int64_t m,
                    int64_t k, int64_t n, bool add_to) {
  // PALLASVM_DOT_THREADS=1 keeps every product on the calling thread.
  // Only with two CPUs this process may run on (affinity, not just the
  // machine's count: on one CPU the halves would take turns).
  static const bool enabled = [] {
    const char* env = std::getenv("PALLASVM_DOT_THREADS");
    cpu_set_t cpus;
    CPU_ZERO(&cpus);
    const bool two_cpus =
        sched_getaffinity(0, sizeof(cpus), &cpus) == 0 && CPU_COUNT(&cpus) >= 2;
    return two_cpus && !(env != nullptr && std::strcmp(env, "1") == 0);
  }();
  if (!enabled || m < 64 || m * k * n < (int64_t{1} << 21)) {
    Gemm(c, a, b, m, k, n, add_to);
    return;
  }
  const int64_t split = (m / 2 + kDotMr - 1) / kDotMr * kDotMr;
  RowSplitter::Get().Run(c, a, b, m, k, n, add_to, split);
}

}  // namespace

void DotF32(float* c, const float* a, const float* b, int64_t m, int64_t k,
            int64_t n) {
  if (k == 0) {
    std::fill(c, c + m * n, 0.f);
    return;
  }
  GemmMaybeSplit(c, a, b, m, k, n, /*add_to=*/false);
}

void DotAddF32(float* c, const float* a, const float* b, int64_t m, int64_t k,
               int64_t n) {
  if (k > 0 && k <= kDotKc) {
    // One k block: each tile's product is complete in registers, where it
    // is added to C on the way out.
    GemmMaybeSplit(c, a, b, m, k, n, /*add_to=*/true);
    return;
  }
  // Longer products are stored between k blocks, so they go through a
  // buffer (per thread, grown once) and are added afterwards; k == 0 adds
  // zeros, which turns -0 into +0 as ADD_F32_VV would.
  thread_local std::vector<float> product;
  if (product.size() < static_cast<size_t>(m * n)) product.resize(m * n);
  DotF32(product.data(), a, b, m, k, n);
  for (int64_t i = 0; i < m * n; ++i) c[i] = c[i] + product[i];
}

void DotS32(int32_t* c, const int32_t* a, const int32_t* b, int64_t m,
            int64_t k, int64_t n) {
  // i-k-j over one row of C at a time; uint32_t so the products wrap
  // without undefined behaviour, and the j loop vectorises.
  uint32_t* cu = reinterpret_cast<uint32_t*>(c);
  const uint32_t* au = reinterpret_cast<const uint32_t*>(a);
  const uint32_t* bu = reinterpret_cast<const uint32_t*>(b);
  for (int64_t i = 0; i < m; ++i) {
    uint32_t* row = cu + i * n;
    std::fill(row, row + n, 0u);
    for (int64_t kk = 0; kk < k; ++kk) {
      const uint32_t x = au[i * k + kk];
      const uint32_t* brow = bu + kk * n;
      for (int64_t j = 0; j < n; ++j) row[j] += x * brow[j];
    }
  }
}

}  // namespace pallasvm::vm::kernels
