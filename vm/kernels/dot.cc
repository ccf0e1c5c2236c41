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
// Two threads for large products (DotWorker below): the caller and one
// persistent worker take chunks of C (one column panel of kDotMc rows of one
// k block, ~10 us at most) from a shared atomic counter, so the caller never
// waits for a worker the OS has not scheduled; it waits only for chunks the
// worker has claimed, and backs off to one thread for a while when even
// that had to sleep (the worker preempted in the middle of a chunk).
//
// The first split gave the worker half of C's rows, the caller waiting for
// it (spin ~1 ms, then futex). With another process spinning on the second
// CPU, BM_Matmul512F32 went from 1.58 ms (PALLASVM_DOT_THREADS=1) to 257 ms,
// matmul 1024^3 from 12.7 to 240 ms, flash attention from 91 ms to 7.8 s;
// here, with other engineers' builds on the machine, 214 ms, 302 ms and
// 11.1 s against 2.37, 18.3 and 138 ms with one thread.
//
// Chunks of C's rows (16 or 32 rows, all columns) cost 5% at 128^3 with
// one thread doing all of them (B's panels read again per chunk); column
// panels of kDotMc rows are the single-thread loop's own units and cost
// ~1% (26.5 against 26.2 us).
//
// Figures: 2-vCPU KVM guest, lscpu "Intel(R) Xeon(R) Processor" (family 6
// model 167, AVX-512), shared with other work, medians of 5, in one run of
//   build/bench/kernels_bench --benchmark_filter=DotThreads
//     --benchmark_min_time=0.3 --benchmark_repetitions=5
//     --benchmark_enable_random_interleaving=true
// ("busy": the benchmark runs a spinning process per other CPU), ms, one
// thread against the default (two):
//                          idle            busy
//   matmul 512 f32      2.54 / 3.10     2.60 / 2.56
//   matmul 1024 f32    19.83 / 16.05   20.29 / 21.16
//   flash attention     147  / 153      147  / 148
// That run shared 128^3 products too (from 2^21 multiply-adds, commit
// ed56315), which made matmul 512 and flash attention slower (so did the
// first split, in another quiet run: 2.24 -> 2.72 ms, 133 -> 139 ms; matmul
// 1024 17.5 -> 14.0 ms): the worker fetches its part of A, B and C from the
// other CPU's cache, which also keeps matmul 1024 at 1.24x, not 1.7x.
// Products are now shared from 2^23 multiply-adds (256^3: 2^24), so matmul
// 512 and flash attention run on one thread whatever the setting. The same
// command on this code (which also backs off for longer), with the
// machine's load average at 7-10 from other work, gave medians that differ
// by up to 36% between variants running the same code (flash attention
// idle 187 / 254 ms, the worker taking no chunk): figures from a quiet
// machine are the ones above. Under such load the back-off keeps the
// worker to a few of matmul 1024's 1152 chunks per run, and one thread and
// the default stay level (--benchmark_filter=DotThreads/matmul_1024, load
// average 9-10): 40.5 / 41.5 ms "idle", 81.7 / 84.8 ms "busy".
#include "vm/kernels/dot.h"

#include <pthread.h>
#include <sched.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <thread>
#include <vector>

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

// One block of a product, columns [jc, jc + nc) by k steps [pc, pc + kc),
// with B's block packed (or, for a few rows, read in place), ready to run
// over any range of C's rows.
struct GemmBlock {
  float* c;             // C + jc
  const float* a;       // A + pc
  const float* bblock;  // B + pc * n + jc
  const float* bpack;   // the block's packed panels (all, or only the last)
  int64_t k, n, nc, kc;
  bool pack_b;
  TileMode mode;
};

// One block's tiles of C's rows [ic, ic + mc) (ic a multiple of kDotMc,
// mc at most kDotMc) and columns [jr0, jr1) (multiples of kDotNr, or nc).
// Whichever part of the block a call covers, every micro-tile is the one a
// single call over the whole block runs (same A rows, B panel and k block,
// hence the same instructions).
void GemmBlockTiles(const GemmBlock& blk, int64_t ic, int64_t mc, int64_t jr0,
                    int64_t jr1) {
  const int64_t k = blk.k, n = blk.n, nc = blk.nc, kc = blk.kc;
  const TileMode mode = blk.mode;
  float* const apack = ThreadPackBuffers().a.get();
  alignas(64) float tile[kDotMr * kDotNr];
  // Full row panels read A in place (a micro-tile's 8 rows of kc steps
  // stay in L1 across the column panels); a last, partial panel is packed
  // with zero padding.
  const int64_t full_mc = mc / kDotMr * kDotMr;
  if (full_mc < mc) {
    PackA(apack, blk.a + (ic + full_mc) * k, k, mc - full_mc, kc);
  }
  for (int64_t jr = jr0; jr < jr1; jr += kDotNr) {
    const int64_t nr = std::min(kDotNr, nc - jr);
    const int64_t nv = (nr + kW - 1) / kW;  // vectors the tile needs
    const bool in_place = !blk.pack_b && nr == kDotNr;
    const float* bp = in_place     ? blk.bblock + jr
                      : blk.pack_b ? blk.bpack + (jr / kDotNr) * kc * kDotNr
                                   : blk.bpack;
    for (int64_t ir = 0; ir < mc; ir += kDotMr) {
      const int64_t mr = std::min(kDotMr, mc - ir);
      const bool a_in_place = ir < full_mc;
      const float* ap = a_in_place
                            ? blk.a + (ic + ir) * k
                            : apack + ((ir - full_mc) / kDotMr) * kc * kDotMr;
      float* ct = blk.c + (ic + ir) * n + jr;
      float* dst = ct;
      int64_t ldc = n;
      if (mr < kDotMr || nr < nv * kW) {
        // An edge tile goes through a full-size buffer, so the
        // micro-kernel never touches C outside [m, n).
        dst = tile;
        ldc = kDotNr;
        if (mode != TileMode::kFirst) {
          for (int64_t r = 0; r < mr; ++r) {
            std::memcpy(tile + r * kDotNr, ct + r * n, nr * sizeof(float));
          }
        }
      }
      if (a_in_place) {
        if (in_place) {
          RunMicroKernel<false, false>(mode, nv, kc, ap, k, bp, n, dst, ldc);
        } else {
          RunMicroKernel<false, true>(mode, nv, kc, ap, k, bp, n, dst, ldc);
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

std::atomic<int> dot_threads{0};  // 0 until first asked: then the default
std::atomic<DotWorkerHookForTesting> worker_hook{
    DotWorkerHookForTesting::kNone};

// PALLASVM_DOT_THREADS=1 keeps every product on the calling thread. Two
// threads only with two CPUs this process may run on (affinity, not just
// the machine's count: on one CPU the two would take turns).
int DefaultDotThreads() {
  const char* env = std::getenv("PALLASVM_DOT_THREADS");
  if (env != nullptr && std::strcmp(env, "1") == 0) return 1;
  cpu_set_t cpus;
  CPU_ZERO(&cpus);
  const bool two_cpus =
      sched_getaffinity(0, sizeof(cpus), &cpus) == 0 && CPU_COUNT(&cpus) >= 2;
  return two_cpus ? 2 : 1;
}

void Pause() {
#if defined(__SSE2__)
  _mm_pause();
#endif
}

using Clock = std::chrono::steady_clock;

// Spins until pred() holds (true) or `budget` has passed (false). Bounds
// are in time rather than pause instructions, whose latency varies tenfold
// between CPU models. With `yield`, after the first few microseconds each
// round also yields the CPU to any thread waiting for it (the worker does,
// between products; the caller does not: under load it would wait out
// another process's time slice to get its CPU back).
template <typename Pred>
bool SpinUntil(Pred pred, Clock::duration budget, bool yield) {
  const Clock::time_point start = Clock::now();
  for (int spin = 1;; ++spin) {
    if (pred()) return true;
    Pause();
    if (spin % 64 == 0) {
      const Clock::duration spent = Clock::now() - start;
      if (spent > budget) return false;
      if (yield && spent > std::chrono::microseconds(10)) sched_yield();
    }
  }
}

// A second thread for large products: one persistent worker that takes
// chunks of C (one column panel of kDotMc rows of one block, see RunChunk)
// from a shared counter, while the calling thread takes chunks from the
// same counter. The caller never waits for the worker to start: if the
// worker is not running (the OS gave its CPU to another process), the
// caller takes every chunk itself. At the end of a block it waits only for
// the chunks the worker has claimed, which it was running a moment ago;
// chunks are small (~10 us at most), so that wait is short, unless the OS
// preempts the worker in the middle of one: then the caller backs off to
// one thread for a while (see Run). Each chunk is whole micro-tiles computed
// by the same code, so the result is bit for bit the single-thread one. The
// worker serves one caller at a time; a caller that finds it taken
// (simulated cores are threads too) runs alone.
class DotWorker {
 public:
  // The worker, if this thread may use it now; Release() after.
  static DotWorker* Acquire() {
    if (forked_child_.load(std::memory_order_relaxed)) return nullptr;
    static DotWorker* dot_worker = new DotWorker();  // never destroyed
    bool expected = false;
    if (!dot_worker->owner_.compare_exchange_strong(
            expected, true, std::memory_order_acquire)) {
      return nullptr;
    }
    if (worker_hook.load(std::memory_order_relaxed) ==
            DotWorkerHookForTesting::kNone &&
        Clock::now() < dot_worker->serial_until_) {
      dot_worker->Release();  // backing off: see Run
      return nullptr;
    }
    return dot_worker;
  }
  void Release() { owner_.store(false, std::memory_order_release); }

  static int64_t worker_chunks() {
    return worker_chunks_.load(std::memory_order_relaxed);
  }

  // A block of an m-row product, in chunks shared with the worker: false
  // (nothing done) if it has too many chunks to count.
  bool Run(const GemmBlock& blk, int64_t m) {
    const int64_t panels = (blk.nc + kDotNr - 1) / kDotNr;
    const int64_t row_blocks = (m + kDotMc - 1) / kDotMc;
    if (panels * row_blocks > kMaxChunks) return false;
    const uint64_t chunks = static_cast<uint64_t>(panels * row_blocks);
    job_ = Job{&blk, m, row_blocks};
    worker_done_.store(0, std::memory_order_relaxed);
    ++epoch_;
    // The job is published by the claim word (the worker reads job_ only
    // after claiming a chunk of it), then the worker woken if it sleeps.
    claim_.store(Claim(epoch_, 0, chunks), std::memory_order_seq_cst);
    wake_.store(epoch_, std::memory_order_seq_cst);
    if (worker_sleeping_.load(std::memory_order_seq_cst)) wake_.notify_one();
    if (worker_hook.load(std::memory_order_relaxed) ==
        DotWorkerHookForTesting::kWorkerTakesFirstChunk) {
      while (Back(claim_.load(std::memory_order_acquire)) == chunks) Pause();
    }
    uint64_t own = 0;
    for (uint64_t i; TryClaim(kFront, &i); ++own) RunChunk(i);
    const bool worker_ran = WaitForWorker(static_cast<uint32_t>(chunks - own));
    // When other processes hold the CPUs, the worker starts late or not at
    // all, and a chunk it has claimed can be preempted, the caller waiting
    // for it (it sleeps then, for up to a time slice: milliseconds, where
    // sharing a product gains tens of microseconds). So back off, running
    // alone for a while, after a wait that had to sleep or after kMaxMisses
    // products in a row the worker took no part in (the hand-over still
    // cost a wake-up call). The while doubles with each back-off up to
    // kMaxBackoff, so that one stall is paid for by many products shared,
    // and halves only after kGoodRun products in a row shared well.
    if (!worker_ran) {
      BackOff();
    } else if (own < chunks) {
      misses_ = 0;
      if (++good_ >= kGoodRun) {
        good_ = 0;
        backoff_ = std::max(backoff_ / 2, kMinBackoff);
      }
    } else if (chunks > 2 && ++misses_ >= kMaxMisses) {
      BackOff();
    }
    return true;
  }

 private:
  struct Job {
    const GemmBlock* blk;  // the caller's, alive until the block is done
    int64_t m, row_blocks;
  };
  // The claim word: the job's epoch and the chunks [front, back) not yet
  // claimed. The caller takes chunks from the front, the worker from the
  // back, so each computes neighbouring panels (fewer of B's packed panels
  // and C's lines to fetch from the other CPU's cache) and, from one
  // product to the next, mostly the same ones.
  static constexpr int64_t kMaxChunks = (1 << 20) - 1;
  static constexpr bool kFront = true, kBack = false;
  static uint64_t Claim(uint32_t epoch, uint64_t front, uint64_t back) {
    return uint64_t{epoch} << 40 | front << 20 | back;
  }
  static uint64_t Front(uint64_t claim) { return claim >> 20 & 0xfffff; }
  static uint64_t Back(uint64_t claim) { return claim & 0xfffff; }
  static bool Claimable(uint64_t claim) { return Front(claim) < Back(claim); }

  // Spin bounds, in time rather than pause instructions (whose latency
  // varies tenfold between CPU models). The caller's wait at the end is
  // for a chunk that is running; the worker's wait between products keeps
  // it ready for the next one (flash attention's are ~30 us apart).
  static constexpr auto kCallerSpin = std::chrono::microseconds(100);
  static constexpr auto kWorkerSpin = std::chrono::microseconds(300);
  static constexpr Clock::duration kMinBackoff = std::chrono::microseconds(200);
  static constexpr Clock::duration kMaxBackoff = std::chrono::milliseconds(200);
  static constexpr int kMaxMisses = 3;
  static constexpr int kGoodRun = 64;

  void BackOff() {
    misses_ = 0;
    good_ = 0;
    serial_until_ = Clock::now() + backoff_;
    backoff_ = std::min(2 * backoff_, kMaxBackoff);
  }

  DotWorker() {
    std::thread([this] { Work(); }).detach();
    // A forked child has no worker thread: it runs every product alone.
    pthread_atfork(nullptr, nullptr, [] {
      forked_child_.store(true, std::memory_order_relaxed);
    });
  }

  void RunChunk(uint64_t i) {
    // A chunk is one column panel of one block of kDotMc rows (~10 us at
    // most): the tail the caller may wait for at the end.
    const int64_t ic = static_cast<int64_t>(i) % job_.row_blocks * kDotMc;
    const int64_t jr = static_cast<int64_t>(i) / job_.row_blocks * kDotNr;
    GemmBlockTiles(*job_.blk, ic, std::min(kDotMc, job_.m - ic), jr,
                   std::min(jr + kDotNr, job_.blk->nc));
  }

  // Waits for the chunks the worker claimed; false if that took so long
  // (the worker was preempted, or shares this CPU) that it slept.
  bool WaitForWorker(uint32_t claimed) {
    if (SpinUntil(
            [&] {
              return worker_done_.load(std::memory_order_acquire) == claimed;
            },
            kCallerSpin, /*yield=*/false)) {
      return true;
    }
    caller_sleeping_.store(true, std::memory_order_seq_cst);
    for (uint32_t done;
         (done = worker_done_.load(std::memory_order_seq_cst)) != claimed;) {
      worker_done_.wait(done, std::memory_order_acquire);
    }
    caller_sleeping_.store(false, std::memory_order_relaxed);
    return false;
  }

  bool Paused() const {
    return worker_hook.load(std::memory_order_relaxed) ==
           DotWorkerHookForTesting::kWorkerPaused;
  }

  // Claims the posted job's first (kFront) or last (kBack) chunk left, if
  // any is. A claim from the worker that read the claim word of an earlier
  // job fails: the epoch differs.
  bool TryClaim(bool front, uint64_t* index) {
    uint64_t claim = claim_.load(std::memory_order_acquire);
    while (Claimable(claim)) {
      const uint64_t claimed = front ? claim + (uint64_t{1} << 20) : claim - 1;
      if (claim_.compare_exchange_weak(claim, claimed,
                                       std::memory_order_acq_rel,
                                       std::memory_order_acquire)) {
        *index = front ? Front(claim) : Back(claimed);
        return true;
      }
    }
    return false;
  }

  void Work() {
    while (true) {
      uint64_t i;
      if (!Paused() && TryClaim(kBack, &i)) {
        RunChunk(i);
        worker_chunks_.fetch_add(1, std::memory_order_relaxed);
        worker_done_.fetch_add(1, std::memory_order_seq_cst);
        if (caller_sleeping_.load(std::memory_order_seq_cst)) {
          worker_done_.notify_one();
        }
        continue;
      }
      WaitForWork();
    }
  }

  // Between products (block copies, other ops) spin for a while, then sleep
  // until the next one is posted.
  void WaitForWork() {
    if (!Paused() && SpinUntil(
                         [&] {
                           const uint64_t claim =
                               claim_.load(std::memory_order_relaxed);
                           return Claimable(claim);
                         },
                         kWorkerSpin, /*yield=*/true)) {
      return;
    }
    const uint32_t seen = wake_.load(std::memory_order_seq_cst);
    worker_sleeping_.store(true, std::memory_order_seq_cst);
    const uint64_t claim = claim_.load(std::memory_order_seq_cst);
    if (Paused() || !Claimable(claim)) {
      wake_.wait(seen, std::memory_order_acquire);
    }
    worker_sleeping_.store(false, std::memory_order_relaxed);
  }

  static inline std::atomic<bool> forked_child_{false};
  static inline std::atomic<int64_t> worker_chunks_{0};
  std::atomic<bool> owner_{false};
  // Written by the owner only.
  Job job_{};
  uint32_t epoch_ = 0;
  Clock::time_point serial_until_{};
  Clock::duration backoff_ = kMinBackoff;
  int misses_ = 0;
  int good_ = 0;
  alignas(64) std::atomic<uint64_t> claim_{0};
  alignas(64) std::atomic<uint32_t> worker_done_{0};
  std::atomic<bool> caller_sleeping_{false};
  alignas(64) std::atomic<uint32_t> wake_{0};
  std::atomic<bool> worker_sleeping_{false};
};

// C := A @ B, or with add_to (k <= kDotKc only) C := C + A @ B, the
// product rounded first. C is shared with the worker when `dot_worker`
// is given.
void Gemm(float* c, const float* a, const float* b, int64_t m, int64_t k,
          int64_t n, bool add_to, DotWorker* dot_worker) {
  // Packing B costs a pass over B per k block and pays off over many row
  // panels; for a few rows the micro-kernel reads B in place (all but the
  // last, partial, column panel). 8x128x128: 36 -> 71 GFLOP/s.
  const bool pack_b = m > kDotSmallM;
  float* const bpack = ThreadPackBuffers().b.get();
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
      // The caller packs the block, so the worker reads this thread's
      // buffer; the block ends (both threads done) before it is refilled.
      const GemmBlock blk{c + jc, a + pc, bblock, bpack,  k,
                          n,      nc,     kc,     pack_b, mode};
      if (dot_worker == nullptr || !dot_worker->Run(blk, m)) {
        for (int64_t ic = 0; ic < m; ic += kDotMc) {
          GemmBlockTiles(blk, ic, std::min(kDotMc, m - ic), 0, nc);
        }
      }
    }
  }
}

// Shares C with the worker when the product is large enough to pay for
// the worker fetching its part of A, B and C from the caller's cache (and
// the caller fetching C back): at least 2^23 multiply-adds and 64 rows.
// 128^3 products (2^21) were slower shared, 256^3 faster (figures at the
// top of the file).
void GemmMaybeSplit(float* c, const float* a, const float* b, int64_t m,
                    int64_t k, int64_t n, bool add_to) {
  DotWorker* dot_worker = nullptr;
  if (m >= 64 && m * k * n >= (int64_t{1} << 23) && DotThreads() >= 2) {
    dot_worker = DotWorker::Acquire();
  }
  Gemm(c, a, b, m, k, n, add_to, dot_worker);
  if (dot_worker != nullptr) dot_worker->Release();
}

}  // namespace

int DotThreads() {
  int threads = dot_threads.load(std::memory_order_relaxed);
  if (threads == 0) {
    threads = DefaultDotThreads();
    dot_threads.store(threads, std::memory_order_relaxed);
  }
  return threads;
}

void SetDotThreads(int threads) {
  dot_threads.store(threads <= 0 ? DefaultDotThreads() : std::min(threads, 2),
                    std::memory_order_relaxed);
}

void SetDotWorkerHookForTesting(DotWorkerHookForTesting hook) {
  worker_hook.store(hook, std::memory_order_relaxed);
}

int64_t DotWorkerChunksForTesting() { return DotWorker::worker_chunks(); }

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
