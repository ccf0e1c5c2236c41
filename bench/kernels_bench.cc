// Whole-kernel benchmarks: real kernels exported from JAX
// (bench/export_bench_kernels.py) run through the C++ API, one iteration =
// one pallas_call = the whole grid. `per_step` is the time per grid step.
//
//   build/bench/kernels_bench [--benchmark_filter=...]
#include <cstring>
#include <random>
#include <string>
#include <vector>

#include "benchmark/benchmark.h"
#include "runtime/pallasvm.h"
#include "tools/kernel_files.h"

namespace pallasvm {
namespace {

void RunKernel(benchmark::State& state, const char* name) {
  const std::string path =
      std::string(PALLASVM_BENCH_KERNELS_DIR) + "/" + name + ".json";
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
    absl::Status s = (*exe)->Run(ins, outs);
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

}  // namespace
}  // namespace pallasvm

BENCHMARK_MAIN();
