// Whole-kernel benchmarks: real kernels exported from JAX
// (bench/export_bench_kernels.py) run through the C++ API, one iteration =
// one pallas_call = the whole grid. `per_step` is the time per grid step.
//
//   build/bench/kernels_bench [--benchmark_filter=...]
#include <sched.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <csignal>
#include <thread>
#include <cstring>
#include <optional>
#include <random>
#include <string>
#include <vector>

#include "benchmark/benchmark.h"
#include "runtime/core_sync.h"
#include "runtime/memory_model.h"
#include "runtime/pallasvm.h"
#include "tools/kernel_files.h"
#include "tools/npy.h"
#include "vm/kernels/dot.h"

namespace pallasvm {
namespace {

// A kernel whose inputs matter (indices, lengths) is exported with them
// into kernels/<name>/ (kernel + input_<i>.npy); the others' float inputs
// are N(0, 1) noise and integer ones zero.
void RunKernel(benchmark::State& state, const char* name,
               const RunOptions& options = {}) {
  const std::string dir = std::string(PALLASVM_BENCH_KERNELS_DIR) + "/" + name;
  const bool with_inputs = access((dir + "/input_0.npy").c_str(), R_OK) == 0;
  const std::string path = with_inputs ? dir + "/" + name + ".json"
                                       : dir + ".json";
  tools::LoadOptions load;
  load.use_cache = false;
  absl::StatusOr<std::unique_ptr<Executable>> exe =
      tools::LoadExecutable(path, load);
  if (!exe.ok()) {
    state.SkipWithError(std::string(exe.status().message()).c_str());
    return;
  }
  const runtime::Kernel& k = (*exe)->kernel();
  std::mt19937 rng(42);
  std::normal_distribution<float> normal;
  std::vector<std::vector<uint8_t>> data;
  std::vector<Array> ins, outs;
  for (const auto& t : k.in_types) {
    data.emplace_back(t.bytes());
    if (with_inputs) {
      const std::string npy =
          dir + "/input_" + std::to_string(ins.size()) + ".npy";
      absl::StatusOr<tools::NpyArray> a = tools::ReadNpy(npy);
      if (!a.ok() || a->data.size() != data.back().size()) {
        state.SkipWithError(("bad input " + npy).c_str());
        return;
      }
      data.back() = std::move(a->data);
      ins.push_back({t.dtype, t.shape, data.back().data()});
      continue;
    }
    if (t.dtype == DType::F32) {
      for (int64_t i = 0; i < t.num_elements(); ++i) {
        float v = normal(rng);
        std::memcpy(data.back().data() + 4 * i, &v, 4);
      }
    } else if (t.dtype == DType::BF16) {
      for (int64_t i = 0; i < t.num_elements(); ++i) {
        float v = normal(rng);
        uint32_t bits;
        std::memcpy(&bits, &v, 4);
        const uint16_t hi = static_cast<uint16_t>(bits >> 16);
        std::memcpy(data.back().data() + 2 * i, &hi, 2);
      }
    }
    ins.push_back({t.dtype, t.shape, data.back().data()});
  }
  for (const auto& t : k.out_types) {
    data.emplace_back(t.bytes());
    outs.push_back({t.dtype, t.shape, data.back().data()});
  }
  int64_t points = 1;
  for (int64_t g : k.grid) points *= g;
  for (auto _ : state) {
    absl::Status s = (*exe)->Run(ins, outs, options);
    if (!s.ok()) {
      state.SkipWithError(std::string(s.message()).c_str());
      return;
    }
    benchmark::DoNotOptimize(outs[0].data);
    benchmark::ClobberMemory();
  }
  state.counters["grid_steps"] = static_cast<double>(points);
  state.counters["per_step"] =
      benchmark::Counter(static_cast<double>(points),
                         benchmark::Counter::kIsIterationInvariantRate |
                             benchmark::Counter::kInvert);
}

// o = x + y, one f32 element per step, 100 steps: pure per-step overhead.
void BM_AddOne100Steps(benchmark::State& s) { RunKernel(s, "add_one_100"); }
BENCHMARK(BM_AddOne100Steps);

// x * y + 1 on 8x128 f32 blocks, 1024 steps.
void BM_Elementwise8x128x1024Steps(benchmark::State& s) {
  RunKernel(s, "elementwise_8x128_1024");
}
BENCHMARK(BM_Elementwise8x128x1024Steps);

// The two above with every block copied (RunOptions::elide_block_copies
// off): what eliding the copies saves, side by side in one run.
void BM_AddOne100StepsCopied(benchmark::State& s) {
  RunOptions options;
  options.elide_block_copies = false;
  RunKernel(s, "add_one_100", options);
}
BENCHMARK(BM_AddOne100StepsCopied);
void BM_Elementwise8x128x1024StepsCopied(benchmark::State& s) {
  RunOptions options;
  options.elide_block_copies = false;
  RunKernel(s, "elementwise_8x128_1024", options);
}
BENCHMARK(BM_Elementwise8x128x1024StepsCopied);

// jax.experimental.pallas.ops.tpu.matmul, 512^3 f32, 128x128x128 blocks.
void BM_Matmul512F32(benchmark::State& s) { RunKernel(s, "matmul_512_f32"); }
BENCHMARK(BM_Matmul512F32)->Unit(benchmark::kMillisecond);

// jax.experimental.pallas.ops.tpu.matmul, 1024^3 f32, 256x256x256 blocks.
void BM_Matmul1024F32(benchmark::State& s) { RunKernel(s, "matmul_1024_f32"); }
BENCHMARK(BM_Matmul1024F32)->Unit(benchmark::kMillisecond);

// The same at bf16 (f32 accumulator scratch, bf16 output).
void BM_Matmul1024BF16(benchmark::State& s) {
  RunKernel(s, "matmul_1024_bf16");
}
BENCHMARK(BM_Matmul1024BF16)->Unit(benchmark::kMillisecond);

// jax.experimental.pallas.ops.tpu.flash_attention forward: batch 1, 4 heads,
// sequence 2048, head dim 128, f32, default 128 blocks.
void BM_FlashAttentionFwd(benchmark::State& s) {
  RunKernel(s, "flash_attention_fwd");
}
BENCHMARK(BM_FlashAttentionFwd)->Unit(benchmark::kMillisecond);

// The memory model (runtime/memory_model.h). Loop kernels run one
// operation `ops` times in a fori_loop; `per_op` is the time per operation,
// the loop's own instructions included.
void RunLoopKernel(benchmark::State& state, const char* name, int64_t ops) {
  RunKernel(state, name);
  state.counters["per_op"] = benchmark::Counter(
      static_cast<double>(ops), benchmark::Counter::kIsIterationInvariantRate |
                                    benchmark::Counter::kInvert);
}

// A semaphore_signal / semaphore_wait pair (goal: under 50 ns).
void BM_SemaphoreSignalWait(benchmark::State& s) {
  RunLoopKernel(s, "semaphore_signal_wait_1024", 1024);
}
BENCHMARK(BM_SemaphoreSignalWait);

// An 8x128 f32 VMEM -> VMEM DMA, started and waited for (goal: within 50 ns
// of BM_Memcpy4KiB).
void BM_VmemDma8x128(benchmark::State& s) {
  RunLoopKernel(s, "vmem_dma_8x128_1024", 1024);
}
BENCHMARK(BM_VmemDma8x128);

// One neighbour barrier across `n` simulated devices of one core each
// (runtime/core_sync.h, as under shard_map but without XLA): every device's
// thread signals its left and right neighbours' barrier semaphore and waits
// for 2, 1,000 times; the time is per barrier. What a barrier costs when
// there are more device threads than CPUs is the OS waking each of them.
void BM_CoreSyncBarrier(benchmark::State& state) {
  const int n = static_cast<int>(state.range(0));
  constexpr int kRounds = 1000;
  runtime::Kernel kernel;
  kernel.refs.push_back(runtime::RefSpec{
      runtime::RefKind::SCRATCH, -1, vm::MemorySpace::SEMAPHORE,
      {vm::DType::S32, {}}, "barrier", {}});
  kernel.signals_other_cores = true;
  std::vector<int32_t> counters(n);
  std::vector<std::vector<uint8_t*>> tables(n);
  std::vector<std::unique_ptr<runtime::CoreMachine>> cores;
  for (int d = 0; d < n; ++d) {
    tables[d] = {reinterpret_cast<uint8_t*>(&counters[d])};
    cores.push_back(
        std::make_unique<runtime::CoreMachine>(kernel, tables[d].data()));
  }
  uint64_t fill = 0;
  std::vector<int32_t> points(n, 0);
  for (auto _ : state) {
    runtime::CoreSync sync(kernel, 1, n);
    for (int d = 0; d < n; ++d) {
      cores[d]->ResetSemaphores();
      sync.Bind(d, &cores[d]->semaphores(), &cores[d]->dma(),
                tables[d].data(), cores[d].get());
      runtime::CoreMachine::CallOptions options;
      options.fills = &fill;
      options.grid_point = &points[d];
      options.sync = &sync;
      options.lock_semaphores = true;
      options.device = d;
      cores[d]->BeginCall(options);
    }
    std::vector<std::thread> threads;
    std::atomic<bool> failed{false};
    for (int d = 0; d < n; ++d) {
      threads.emplace_back([&, d] {
        const vm::SemaphoreId sem{0, 0};
        for (int r = 0; r < kRounds; ++r) {
          for (int to : {(d + n - 1) % n, (d + 1) % n}) {
            if (!cores[d]->SignalSemaphore(sem, 1, vm::Target{0, to}, 0).ok()) {
              failed = true;
            }
          }
          if (!cores[d]->WaitSemaphore(sem, 2, 0).ok()) failed = true;
        }
        sync.Finish(d, absl::OkStatus());
      });
    }
    for (std::thread& t : threads) t.join();
    if (failed) state.SkipWithError("a barrier failed");
  }
  state.SetItemsProcessed(state.iterations() * kRounds);
  state.counters["per_barrier"] = benchmark::Counter(
      static_cast<double>(state.iterations()) * kRounds,
      benchmark::Counter::kIsRate | benchmark::Counter::kInvert);
}
BENCHMARK(BM_CoreSyncBarrier)->Arg(2)->Arg(4)->Arg(8)->UseRealTime()
    ->Unit(benchmark::kMillisecond);

// memcpy of the same 4 KiB between two 64-aligned buffers, the DMA's floor.
void BM_Memcpy4KiB(benchmark::State& state) {
  alignas(64) static uint8_t a[4096], b[4096];
  uint8_t* src = a;
  uint8_t* dst = b;
  for (auto _ : state) {
    // Opaque pointers: the copy cannot be folded away.
    benchmark::DoNotOptimize(src);
    benchmark::DoNotOptimize(dst);
    std::memcpy(dst, src, sizeof(a));
    benchmark::ClobberMemory();
  }
}
BENCHMARK(BM_Memcpy4KiB);

// A manually double-buffered HBM -> VMEM copy over 256 grid steps.
void BM_DoubleBufferedCopy(benchmark::State& s) {
  RunKernel(s, "double_buffered_copy_256");
}
BENCHMARK(BM_DoubleBufferedCopy);

// The same with race detection (runtime/race_detector.h): every kernel
// access checked against the DMAs in flight (goal: at most 3x the above).
void BM_DoubleBufferedCopyDetectRaces(benchmark::State& s) {
  RunOptions options;
  runtime::RaceReport races;
  options.detect_races = true;
  options.races = &races;
  RunKernel(s, "double_buffered_copy_256", options);
  if (races.racy_elements != 0) s.SkipWithError("races found");
}
BENCHMARK(BM_DoubleBufferedCopyDetectRaces);

// The same on two cores (runtime/cross_core_races.h): without parallel
// dimensions core 0 runs every point, so this is the cost of the marks
// (made, set by every write-back, compared after the grid) and of the
// second core's thread.
void BM_DoubleBufferedCopyDetectRacesTwoCores(benchmark::State& s) {
  RunOptions options;
  runtime::RaceReport races;
  options.detect_races = true;
  options.races = &races;
  options.num_cores = 2;
  RunKernel(s, "double_buffered_copy_256", options);
  if (races.racy_elements != 0) s.SkipWithError("races found");
}
BENCHMARK(BM_DoubleBufferedCopyDetectRacesTwoCores);

// An emit_pipeline matmul, 512^3 f32, 128 blocks, HBM operands.
void BM_EmitPipelineMatmul512(benchmark::State& s) {
  RunKernel(s, "emit_pipeline_matmul_512");
}
BENCHMARK(BM_EmitPipelineMatmul512)->Unit(benchmark::kMillisecond);

// ops.tpu.paged_attention decode: batch 8, 8 heads over 2 KV heads, 128
// tokens of 16-token pages per sequence, f32 (inputs exported with it).
void BM_PagedAttentionDecode(benchmark::State& s) {
  RunKernel(s, "paged_attention_decode");
}
BENCHMARK(BM_PagedAttentionDecode)->Unit(benchmark::kMillisecond);

// The DOT worker thread (vm/kernels/dot.cc) against one thread, with the
// process's other CPUs idle and with each of them kept busy by a spinning
// process, as on a shared CI machine. Compare side by side in one run:
//
//   build/bench/kernels_bench --benchmark_filter=DotThreads
//     --benchmark_min_time=0.3 --benchmark_repetitions=5
//     --benchmark_enable_random_interleaving=true
//
// `worker_chunks` is the chunks of C the worker computed per iteration (0
// where the products are too small to share, or it backed off).

// Processes that spin on the CPUs of this process's affinity mask but one,
// for as long as the object lives.
class Spinners {
 public:
  Spinners() {
    cpu_set_t cpus;
    CPU_ZERO(&cpus);
    const int n =
        sched_getaffinity(0, sizeof(cpus), &cpus) == 0 ? CPU_COUNT(&cpus) : 2;
    for (int i = 1; i < n; ++i) {
      const pid_t pid = fork();
      if (pid == 0) {
        // The child of a threaded process: system calls only, then spin.
        prctl(PR_SET_PDEATHSIG, SIGKILL);
        volatile uint64_t x = 0;
        while (true) x = x + 1;
      }
      if (pid > 0) pids_.push_back(pid);
    }
  }
  ~Spinners() {
    for (pid_t pid : pids_) kill(pid, SIGKILL);
    for (pid_t pid : pids_) waitpid(pid, nullptr, 0);
  }
  Spinners(const Spinners&) = delete;
  Spinners& operator=(const Spinners&) = delete;

 private:
  std::vector<pid_t> pids_;
};

enum class OtherCpus { kIdle, kBusy };

// threads 0: the default (two where the affinity mask allows).
void RunDotThreads(benchmark::State& state, const char* kernel, int threads,
                   OtherCpus others) {
  vm::kernels::SetDotThreads(threads);
  std::optional<Spinners> spinners;
  if (others == OtherCpus::kBusy) spinners.emplace();
  const int64_t chunks = vm::kernels::DotWorkerChunksForTesting();
  RunKernel(state, kernel);
  state.counters["worker_chunks"] = benchmark::Counter(
      static_cast<double>(vm::kernels::DotWorkerChunksForTesting() - chunks),
      benchmark::Counter::kAvgIterations);
  spinners.reset();
  vm::kernels::SetDotThreads(0);
}

[[maybe_unused]] const bool dot_threads_registered = [] {
  for (const char* kernel :
       {"matmul_512_f32", "matmul_1024_f32", "flash_attention_fwd"}) {
    for (const OtherCpus others : {OtherCpus::kIdle, OtherCpus::kBusy}) {
      for (const int threads : {1, 0}) {
        const std::string name =
            std::string("BM_DotThreads/") + kernel +
            (threads == 1 ? "/1thread" : "/default") +
            (others == OtherCpus::kIdle ? "/idle" : "/busy");
        benchmark::RegisterBenchmark(name.c_str(), RunDotThreads, kernel,
                                     threads, others)
            ->Unit(benchmark::kMillisecond);
      }
    }
  }
  return true;
}();

}  // namespace
}  // namespace pallasvm

BENCHMARK_MAIN();
