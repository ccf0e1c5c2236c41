// Golden tests: kernels exported from real JAX (tests/golden/generate.py)
// run through compile -> load -> run, and their outputs compared with the
// outputs JAX's TPU interpret mode computed for the same inputs.
//
// Tolerances: exact for integer, bool and pure data-movement kernels; for
// float kernels the bound is written next to each case with its reason.
#include <string>
#include <vector>

#include "gtest/gtest.h"
#include "runtime/pallasvm.h"
#include "tools/kernel_files.h"
#include "tools/output_check.h"

namespace pallasvm {
namespace {

struct Case {
  const char* name;
  tools::Tolerance tolerance;  // for float outputs
  const char* why;
};

const Case kCases[] = {
    {"add_vectors", {0, 0}, "one f32 add per element: exact"},
    {"add_one_grid_1d", {0, 0}, "one f32 add per element: exact"},
    {"elementwise_8x128", {1e-6, 4e-7}, "exp/tanh: a few ulp"},
    // x * a + b: XLA:CPU contracts this into one fused multiply-add, the VM
    // rounds after the multiply as the jaxpr says (README, compatibility):
    // up to 1 ulp of the product apart, so an absolute floor near zero.
    {"blockspec_partial_edge", {1e-6, 2.5e-7}, "x * 2 + 1 (FMA in XLA)"},
    {"blockspec_squeezed", {1e-6, 2.5e-7}, "x * 3 - 1 (FMA in XLA)"},
    {"reduce_accumulate",
     {1e-5, 1e-5},
     "f32 sums; summation order may differ from XLA's"},
    {"matmul_f32",
     {1e-4, 1e-5},
     "K=256 f32 dot: accumulation order differs from XLA's"},
    {"matmul_bf16",
     {1e-2, 1e-2},
     "bf16 operands, f32 accumulation, one bf16 rounding of the result"},
    {"matmul_transposed_rhs",
     {1e-4, 1e-5},
     "bf16 operands are exact in f32; f32 accumulation order differs"},
    {"fori_loop", {1e-6, 1e-6}, "a few f32 ops per element"},
    {"scalar_prefetch", {1e-6, 2.5e-7}, "x * 10 + s (FMA in XLA)"},
    {"int_ops", {0, 0}, "integers: exact"},
    {"while_cond", {1e-6, 1e-6}, "a few f32 ops per element"},
    // bf16 rounds after every op in both; observed exact. Any tolerance
    // would hide a missing intermediate rounding, the thing tested here.
    {"bf16_elementwise", {0, 0}, "bf16 per-op rounding: exact"},
    {"int8_matmul", {0, 0}, "int8 dot into int32: exact"},
    {"transcendental",
     {1e-6, 4e-7},
     "logistic/rsqrt/log: 1 ulp observed, a few ulp allowed"},
    {"reductions",
     {1e-5, 1e-6},
     "f32 sums of up to 1024 elements: summation order (5.7e-6 observed)"},
    {"layout_ops",
     {0, 0},
     "data movement; x * 2, x + r - c, iota * (i + 0.5): exact, no FMA"},
    {"dot_variants",
     {5e-5, 1e-5},
     "f32 dots over K=128: accumulation order (1.5e-5 observed)"},
    {"control_flow",
     {1e-6, 1e-6},
     "a few f32 ops per element; x * 0.5 + c may be an FMA in XLA"},
    {"custom_calls", {1e-6, 2.5e-7}, "sin: 1 ulp; v * w - |w| (FMA in XLA)"},
    {"scratch_accumulate",
     {5e-5, 1e-5},
     "bf16 operands exact in f32; K=192 f32 accumulation order"},
    {"uint32_ops", {0, 0}, "integers and int <-> f32 conversions: exact"},
    {"aliasing", {0, 0}, "data movement and (x + 1) * y (no FMA): exact"},
    {"partial_edge_2d_reduce",
     {1e-5, 1e-6},
     "masked f32 block sums of up to 1024 elements: summation order"},
    {"dynamic_grid", {1e-6, 2.5e-7}, "x * n + i (FMA in XLA); NaN fill"},
    {"megablox_gmm",
     {1e-4, 1e-5},
     "f32 dots over K=136 in two k tiles: accumulation order"},
};

class GoldenTest : public ::testing::TestWithParam<Case> {};

TEST_P(GoldenTest, MatchesJaxInterpretMode) {
  const Case& c = GetParam();
  const std::string dir = std::string(PALLASVM_FIXTURES_DIR) + "/" + c.name;
  SCOPED_TRACE(c.why);
  absl::StatusOr<tools::Fixture> fixture = tools::FindFixture(dir);
  ASSERT_TRUE(fixture.ok()) << fixture.status();
  tools::LoadOptions load;
  load.use_cache = false;
  absl::StatusOr<std::unique_ptr<Executable>> exe =
      tools::LoadExecutable(fixture->kernel_path, load);
  ASSERT_TRUE(exe.ok()) << exe.status();
  const runtime::Kernel& k = (*exe)->kernel();
  absl::StatusOr<std::vector<tools::NpyArray>> in =
      tools::ReadInputs(k, fixture->inputs);
  ASSERT_TRUE(in.ok()) << in.status();
  absl::StatusOr<std::vector<tools::NpyArray>> expected =
      tools::ReadExpected(k, fixture->expected);
  ASSERT_TRUE(expected.ok()) << expected.status();
  ASSERT_FALSE(expected->empty());
  std::vector<Array> ins, outs;
  for (tools::NpyArray& a : *in)
    ins.push_back({*a.dtype, a.shape, a.data.data()});
  std::vector<std::vector<uint8_t>> data;
  for (const auto& t : k.out_types) data.emplace_back(t.bytes() + 1);
  for (size_t j = 0; j < k.out_types.size(); ++j) {
    outs.push_back(
        {k.out_types[j].dtype, k.out_types[j].shape, data[j].data()});
  }
  // Twice with block copies elided where they can be (the default), then
  // twice copying every block: each run must match JAX's output, and must
  // not depend on state left by the one before.
  for (int run = 0; run < 4; ++run) {
    RunOptions options;
    options.elide_block_copies = run < 2;
    absl::Status s = (*exe)->Run(ins, outs, options);
    ASSERT_TRUE(s.ok()) << s;
    for (size_t j = 0; j < k.out_types.size(); ++j) {
      const auto& t = k.out_types[j];
      tools::Tolerance tol =
          vm::Info(t.dtype).is_float ? c.tolerance : tools::Tolerance{0, 0};
      tools::CheckResult r = tools::CompareArrays(t.dtype, data[j].data(),
                                                  (*expected)[j].data.data(),
                                                  t.num_elements(), tol);
      EXPECT_TRUE(r.ok()) << c.name << " output " << j << " run " << run << ": "
                          << r.Summary();
    }
  }
}

INSTANTIATE_TEST_SUITE_P(Fixtures, GoldenTest, ::testing::ValuesIn(kCases),
                         [](const ::testing::TestParamInfo<Case>& info) {
                           return std::string(info.param.name);
                         });

// Which mappings may skip their block copies, derived by hand from each
// kernel in generate.py (mappings: inputs, then outputs).
TEST(BlockCopyElision, DecidedFromTheKernel) {
  struct Expect {
    const char* name;
    std::vector<bool> in_place;
    const char* why;
  };
  const Expect expects[] = {
      {"elementwise_8x128", {true, true, true},
       "(8, 128) row blocks of (128, 128): contiguous; inputs only read, "
       "the output stored whole first"},
      {"blockspec_squeezed", {true, true},
       "(None, 8, 128) of (4, 8, 128): contiguous"},
      {"blockspec_partial_edge", {false, false},
       "(4, 128) blocks of (10, 300): rows of 128 out of 300, not contiguous"},
      {"fori_loop", {true, false},
       "the output's first store is one row, inside a loop"},
      {"reduce_accumulate", {false, false},
       "(16, 128) of (32, 256) is not contiguous (and the output is stored "
       "under pl.when first)"},
  };
  for (const Expect& e : expects) {
    SCOPED_TRACE(std::string(e.name) + ": " + e.why);
    const std::string dir = std::string(PALLASVM_FIXTURES_DIR) + "/" + e.name;
    absl::StatusOr<tools::Fixture> fixture = tools::FindFixture(dir);
    ASSERT_TRUE(fixture.ok()) << fixture.status();
    tools::LoadOptions load;
    load.use_cache = false;
    absl::StatusOr<std::unique_ptr<Executable>> exe =
        tools::LoadExecutable(fixture->kernel_path, load);
    ASSERT_TRUE(exe.ok()) << exe.status();
    ASSERT_EQ((*exe)->kernel().block_mappings.size(), e.in_place.size());
    for (size_t m = 0; m < e.in_place.size(); ++m) {
      EXPECT_EQ((*exe)->driver().MayElideBlockCopies(m), e.in_place[m])
          << "mapping " << m;
    }
  }
}

}  // namespace
}  // namespace pallasvm
