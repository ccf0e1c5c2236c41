// Runtime tests: loading modules (including truncated and corrupted ones),
// binding inputs and outputs, and the grid driver's checks.
#include <chrono>
#include <cmath>
#include <cstring>
#include <limits>
#include <string>
#include <vector>

#include "absl/strings/match.h"
#include "compiler/compiler.h"
#include "gtest/gtest.h"
#include "runtime/pallasvm.h"
#include "tools/kernel_files.h"
#include "tools/npy.h"
#include "tools/output_check.h"

namespace pallasvm {
namespace {

std::string CompileFixture(const std::string& name) {
  absl::StatusOr<std::string> json = tools::ReadFileBytes(
      std::string(PALLASVM_FIXTURES_DIR) + "/" + name + "/kernel.json");
  EXPECT_TRUE(json.ok());
  absl::StatusOr<std::string> module =
      compiler::CompileInterchange(*json, name);
  EXPECT_TRUE(module.ok()) << module.status();
  return module.ok() ? *module : "";
}

TEST(LoadModule, TruncatedModulesAreRefused) {
  const std::string module = CompileFixture("add_vectors");
  ASSERT_FALSE(module.empty());
  for (size_t len = 0; len < module.size(); len += 7) {
    absl::StatusOr<std::unique_ptr<Executable>> exe =
        Executable::Load(module.substr(0, len), "truncated.pvm");
    EXPECT_FALSE(exe.ok()) << "length " << len;
    if (!exe.ok()) {
      EXPECT_TRUE(absl::StrContains(exe.status().message(), "truncated.pvm"));
    }
  }
}

TEST(LoadModule, CorruptedModulesNeverCrash) {
  // Flip each byte in turn. A flip may still give a valid module (e.g. in a
  // debug string); then it must load and run without touching anything
  // outside its own buffers.
  const std::string module = CompileFixture("add_one_grid_1d");
  ASSERT_FALSE(module.empty());
  std::vector<float> x(100, 1.0f), y(100, 2.0f), out(100);
  int refused = 0;
  for (size_t i = 0; i < module.size(); ++i) {
    std::string bad = module;
    bad[i] = static_cast<char>(bad[i] ^ 0x5a);
    absl::StatusOr<std::unique_ptr<Executable>> exe =
        Executable::Load(bad, "corrupted.pvm");
    if (!exe.ok()) {
      ++refused;
      continue;
    }
    const runtime::Kernel& k = (*exe)->kernel();
    if (k.in_types.size() != 2 || k.out_types.size() != 1) continue;
    if (k.in_types[0].bytes() != 400 || k.in_types[1].bytes() != 400 ||
        k.out_types[0].bytes() != 400) {
      continue;
    }
    std::vector<Array> in = {
        {k.in_types[0].dtype, k.in_types[0].shape, x.data()},
        {k.in_types[1].dtype, k.in_types[1].shape, y.data()}};
    std::vector<Array> o = {
        {k.out_types[0].dtype, k.out_types[0].shape, out.data()}};
    // Any status; no crash, no stray writes, and (a flipped jump target
    // can make a loop that never ends) no hang.
    RunOptions options;
    options.timeout = std::chrono::seconds(2);
    (void)(*exe)->Run(in, o, options);
  }
  EXPECT_GT(refused, static_cast<int>(module.size() / 4));
}

TEST(LoadModule, NotAModule) {
  absl::StatusOr<std::unique_ptr<Executable>> exe =
      Executable::Load("{\"version\": 1}", "x.pvm");
  ASSERT_FALSE(exe.ok());
  EXPECT_TRUE(absl::StrContains(exe.status().message(), "not a module"));
}

class BindingTest : public ::testing::Test {
 protected:
  void SetUp() override {
    absl::StatusOr<std::unique_ptr<Executable>> exe =
        Executable::Load(CompileFixture("add_vectors"), "add_vectors");
    ASSERT_TRUE(exe.ok()) << exe.status();
    exe_ = *std::move(exe);
  }
  std::unique_ptr<Executable> exe_;
  std::vector<float> x_ = std::vector<float>(8, 1.0f);
  std::vector<float> y_ = std::vector<float>(8, 2.5f);
  std::vector<float> out_ = std::vector<float>(8, 0.0f);
};

TEST_F(BindingTest, RunsWithTheRightArrays) {
  std::vector<Array> in = {{DType::F32, {8}, x_.data()},
                           {DType::F32, {8}, y_.data()}};
  std::vector<Array> out = {{DType::F32, {8}, out_.data()}};
  ASSERT_TRUE(exe_->Run(in, out).ok());
  for (float v : out_) EXPECT_EQ(v, 3.5f);  // 1 + 2.5, exactly
}

TEST_F(BindingTest, SubnormalsAreFlushedLikeXla) {
  // XLA:CPU (interpret mode's arithmetic) reads subnormal inputs as zero and
  // flushes subnormal results: 1e-40 + 0 = 0, 1e-40 + 1e-38 = 0 (2^-126 is
  // the smallest normal, ~1.18e-38), 2^-126 + 2^-126 = 2^-125.
  const float kMinNormal = std::numeric_limits<float>::min();
  std::vector<float> x = {1e-40f, 1e-40f, kMinNormal, -1e-40f,
                          1.0f,   0.0f,   1e-38f,     3.0f};
  std::vector<float> y = {0.0f, 1e-38f, kMinNormal, 0.0f,
                          1e-40f, 0.0f, 1e-38f,     1.0f};
  std::vector<Array> in = {{DType::F32, {8}, x.data()},
                           {DType::F32, {8}, y.data()}};
  ASSERT_TRUE(exe_->Run(in, {{DType::F32, {8}, out_.data()}}).ok());
  // -1e-40 reads as -0, and -0 + +0 = +0.
  const std::vector<float> expected = {0.0f, 0.0f, 2 * kMinNormal, 0.0f,
                                       1.0f, 0.0f, 0.0f,           4.0f};
  for (int i = 0; i < 8; ++i) {
    EXPECT_EQ(out_[i], expected[i]) << i;
    EXPECT_EQ(std::signbit(out_[i]), std::signbit(expected[i])) << i;
  }
}

TEST(SkipFloatingPointOps, FloatResultsAreInf) {
  // add_vectors with the interchange's skip_floating_point_ops set: the
  // add's result (the only float the body computes) is +inf.
  absl::StatusOr<std::string> json = tools::ReadFileBytes(
      std::string(PALLASVM_FIXTURES_DIR) + "/add_vectors/kernel.json");
  ASSERT_TRUE(json.ok());
  json->insert(json->find('{') + 1, "\"skip_floating_point_ops\": true,");
  absl::StatusOr<std::string> module =
      compiler::CompileInterchange(*json, "add_vectors");
  ASSERT_TRUE(module.ok()) << module.status();
  absl::StatusOr<std::unique_ptr<Executable>> exe =
      Executable::Load(*module, "add_vectors");
  ASSERT_TRUE(exe.ok()) << exe.status();
  std::vector<float> x(8, 1.0f), y(8, 2.0f), out(8, 0.0f);
  ASSERT_TRUE((*exe)
                  ->Run({{DType::F32, {8}, x.data()},
                         {DType::F32, {8}, y.data()}},
                        {{DType::F32, {8}, out.data()}})
                  .ok());
  for (float v : out) EXPECT_EQ(v, std::numeric_limits<float>::infinity());
}

TEST_F(BindingTest, WrongNumberOfInputs) {
  std::vector<Array> in = {{DType::F32, {8}, x_.data()}};
  std::vector<Array> out = {{DType::F32, {8}, out_.data()}};
  absl::Status s = exe_->Run(in, out);
  ASSERT_FALSE(s.ok());
  EXPECT_TRUE(absl::StrContains(s.message(), "takes 2 inputs, got 1")) << s;
}

TEST_F(BindingTest, WrongShape) {
  std::vector<Array> in = {{DType::F32, {4}, x_.data()},
                           {DType::F32, {8}, y_.data()}};
  std::vector<Array> out = {{DType::F32, {8}, out_.data()}};
  absl::Status s = exe_->Run(in, out);
  ASSERT_FALSE(s.ok());
  EXPECT_TRUE(absl::StrContains(s.message(), "input 0 must be float32[8]"))
      << s;
}

TEST_F(BindingTest, WrongDtype) {
  std::vector<Array> in = {{DType::F32, {8}, x_.data()},
                           {DType::S32, {8}, y_.data()}};
  std::vector<Array> out = {{DType::F32, {8}, out_.data()}};
  absl::Status s = exe_->Run(in, out);
  ASSERT_FALSE(s.ok());
  EXPECT_TRUE(absl::StrContains(s.message(), "got int32[8]")) << s;
}

TEST_F(BindingTest, WrongOutputShape) {
  std::vector<Array> in = {{DType::F32, {8}, x_.data()},
                           {DType::F32, {8}, y_.data()}};
  std::vector<Array> out = {{DType::F32, {2, 4}, out_.data()}};
  absl::Status s = exe_->Run(in, out);
  ASSERT_FALSE(s.ok());
  EXPECT_TRUE(absl::StrContains(s.message(), "output 0")) << s;
}

}  // namespace
}  // namespace pallasvm

namespace pallasvm {
namespace {

// A fixture's kernel, loaded, with its inputs read and output buffers
// allocated: what the error and core tests below run.
struct BoundFixture {
  std::unique_ptr<Executable> exe;
  std::vector<tools::NpyArray> inputs;
  std::vector<std::vector<uint8_t>> outputs;
  std::vector<Array> in_arrays, out_arrays;

  absl::Status Run(const RunOptions& options) {
    return exe->Run(in_arrays, out_arrays, options);
  }
};

absl::StatusOr<BoundFixture> Bind(const std::string& kernel_path,
                                  const std::vector<std::string>& inputs) {
  tools::LoadOptions load;
  load.use_cache = false;
  absl::StatusOr<std::unique_ptr<Executable>> exe =
      tools::LoadExecutable(kernel_path, load);
  if (!exe.ok()) return exe.status();
  BoundFixture f;
  f.exe = *std::move(exe);
  const runtime::Kernel& k = f.exe->kernel();
  absl::StatusOr<std::vector<tools::NpyArray>> in =
      tools::ReadInputs(k, inputs);
  if (!in.ok()) return in.status();
  f.inputs = *std::move(in);
  for (tools::NpyArray& a : f.inputs) {
    f.in_arrays.push_back({*a.dtype, a.shape, a.data.data()});
  }
  for (const auto& t : k.out_types) f.outputs.emplace_back(t.bytes());
  for (size_t j = 0; j < k.out_types.size(); ++j) {
    f.out_arrays.push_back(
        {k.out_types[j].dtype, k.out_types[j].shape, f.outputs[j].data()});
  }
  return f;
}

// Wrong kernels exported from JAX (tests/golden/errors/), on which JAX's
// interpret mode raises too (jax_error.txt beside each): pallasvm must
// refuse them with an error naming the problem and where it happened.
absl::Status RunErrorFixture(const std::string& name,
                             const RunOptions& options = {}) {
  const std::string dir =
      std::string(PALLASVM_FIXTURES_DIR) + "/errors/" + name;
  absl::StatusOr<BoundFixture> f =
      Bind(dir + "/kernel.json", {dir + "/input_0.npy"});
  EXPECT_TRUE(f.ok()) << f.status();
  if (!f.ok()) return f.status();
  return f->Run(options);
}

TEST(GridErrors, RevisitedOutputBlock) {
  absl::Status s = RunErrorFixture("revisit_output");
  ASSERT_FALSE(s.ok());
  EXPECT_TRUE(absl::StrContains(s.message(), "Revisited block (0, 0)")) << s;
  EXPECT_TRUE(absl::StrContains(s.message(), "grid point (1, 0)")) << s;
}

TEST(GridErrors, OutOfBoundsBlockIndex) {
  absl::Status s = RunErrorFixture("oob_block_index");
  ASSERT_FALSE(s.ok());
  EXPECT_EQ(s.code(), absl::StatusCode::kOutOfRange);
  EXPECT_TRUE(absl::StrContains(s.message(), "grid point (3)")) << s;
  // The kernel reads the block (issue 12: an input block outside its array
  // is an error when read, named with its index and the read's source line).
  EXPECT_TRUE(absl::StrContains(
      s.message(), "Out-of-bounds block index (4, 0) for input 0")) << s;
  EXPECT_TRUE(absl::StrContains(s.message(), "generate.py:")) << s;
  EXPECT_TRUE(absl::StrContains(s.message(), "float32[32,128]")) << s;
}

TEST(GridErrors, OutOfBoundsDynamicSliceNamesTheSourceLine) {
  absl::Status s = RunErrorFixture("oob_dynamic_slice");
  ASSERT_FALSE(s.ok());
  EXPECT_EQ(s.code(), absl::StatusCode::kOutOfRange);
  EXPECT_TRUE(absl::StrContains(s.message(), "Out-of-bounds read")) << s;
  EXPECT_TRUE(absl::StrContains(s.message(), "grid point (1)")) << s;
  EXPECT_TRUE(absl::StrContains(s.message(), "generate.py:")) << s;
}

// With out-of-bounds reads filled (interpret mode's
// out_of_bounds_reads="uninitialized"), the error fixtures run: parts read
// outside their buffer hold the fill value.
TEST(OutOfBoundsReads, UninitializedReadsTheFill) {
  const std::string dir = std::string(PALLASVM_FIXTURES_DIR) + "/errors/";
  RunOptions options;
  options.out_of_bounds_reads = runtime::OutOfBoundsReads::kUninitialized;
  for (auto mode : {UninitializedMemory::kNaN, UninitializedMemory::kZero}) {
    options.uninitialized_memory = mode;
    // oob_block_index: out block i (8 x 128) = 2 * (x block i + 1); at i = 3
    // input block 4 is past the (32, 128) array: all fill.
    absl::StatusOr<BoundFixture> f =
        Bind(dir + "oob_block_index/kernel.json",
             {dir + "oob_block_index/input_0.npy"});
    ASSERT_TRUE(f.ok()) << f.status();
    ASSERT_TRUE(f->Run(options).ok());
    const float* x = reinterpret_cast<const float*>(f->inputs[0].data.data());
    const float* out = reinterpret_cast<const float*>(f->outputs[0].data());
    for (int i = 0; i < 32 * 128; ++i) {
      if (i < 24 * 128) {
        EXPECT_EQ(out[i], x[i + 8 * 128] * 2.0f) << i;
      } else if (mode == UninitializedMemory::kNaN) {
        EXPECT_TRUE(std::isnan(out[i])) << i;  // NaN * 2
      } else {
        EXPECT_EQ(out[i], 0.0f) << i;
      }
    }
    // oob_dynamic_slice: rows [8 i, 8 i + 8) of an (8, 128) block: all in
    // at step 0, all outside (fill) at step 1.
    f = Bind(dir + "oob_dynamic_slice/kernel.json",
             {dir + "oob_dynamic_slice/input_0.npy"});
    ASSERT_TRUE(f.ok()) << f.status();
    ASSERT_TRUE(f->Run(options).ok());
    x = reinterpret_cast<const float*>(f->inputs[0].data.data());
    out = reinterpret_cast<const float*>(f->outputs[0].data());
    const int64_t n = f->exe->kernel().out_types[0].num_elements();
    ASSERT_EQ(n, 16 * 128);
    for (int i = 0; i < n; ++i) {
      if (i < 8 * 128) {
        EXPECT_EQ(out[i], x[i]) << i;
      } else if (mode == UninitializedMemory::kNaN) {
        EXPECT_TRUE(std::isnan(out[i])) << i;
      } else {
        EXPECT_EQ(out[i], 0.0f) << i;
      }
    }
  }
}

TEST(GridOrder, PermutedCoordinatesAreVisitedInTheirOrder) {
  // revisit_output: grid (2, 3), output block (j, 0). Visiting dimension 1
  // as 2, 1, 0 makes the first revisit block (2, 0), at grid point (1, 2).
  RunOptions options;
  options.grid_coordinates = {{}, {2, 1, 0}};
  absl::Status s = RunErrorFixture("revisit_output", options);
  ASSERT_FALSE(s.ok());
  EXPECT_TRUE(absl::StrContains(s.message(), "Revisited block (2, 0)")) << s;
  EXPECT_TRUE(absl::StrContains(s.message(), "grid point (1, 2)")) << s;
}

TEST(GridOrder, BadPermutationsAreRefused) {
  for (const auto& coords : std::vector<std::vector<std::vector<int32_t>>>{
           {{}, {0, 0, 1}}, {{}, {0, 1}}, {{}}, {{}, {0, 1, 3}}}) {
    RunOptions options;
    options.grid_coordinates = coords;
    absl::Status s = RunErrorFixture("revisit_output", options);
    ASSERT_FALSE(s.ok());
    EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument) << s;
    EXPECT_TRUE(absl::StrContains(s.message(), "grid_coordinates")) << s;
  }
}

TEST(GridOrder, ReversedGridGivesTheSameResult) {
  absl::StatusOr<std::unique_ptr<Executable>> exe =
      Executable::Load(CompileFixture("add_one_grid_1d"), "add_one_grid_1d");
  ASSERT_TRUE(exe.ok()) << exe.status();
  std::vector<float> x(100), y(100), a(100), b(100);
  for (int i = 0; i < 100; ++i) {
    x[i] = static_cast<float>(i);
    y[i] = 0.5f;
  }
  std::vector<Array> in = {{DType::F32, {100}, x.data()},
                           {DType::F32, {100}, y.data()}};
  RunOptions reversed;
  reversed.grid_coordinates = {{}};
  for (int i = 99; i >= 0; --i) reversed.grid_coordinates[0].push_back(i);
  ASSERT_TRUE((*exe)->Run(in, {{DType::F32, {100}, a.data()}}).ok());
  ASSERT_TRUE((*exe)->Run(in, {{DType::F32, {100}, b.data()}}, reversed).ok());
  for (int i = 0; i < 100; ++i) {
    EXPECT_EQ(a[i], static_cast<float>(i) + 0.5f);  // exact in f32
    EXPECT_EQ(b[i], a[i]);
  }
}

// Runs a golden fixture with `options`; returns the largest violation
// summary, or "" when every output matches JAX's.
std::string RunGolden(const std::string& name, const RunOptions& options) {
  const std::string dir = std::string(PALLASVM_FIXTURES_DIR) + "/" + name;
  absl::StatusOr<tools::Fixture> fixture = tools::FindFixture(dir);
  if (!fixture.ok()) return std::string(fixture.status().message());
  absl::StatusOr<BoundFixture> f = Bind(fixture->kernel_path, fixture->inputs);
  if (!f.ok()) return std::string(f.status().message());
  const runtime::Kernel& k = f->exe->kernel();
  absl::StatusOr<std::vector<tools::NpyArray>> ex =
      tools::ReadExpected(k, fixture->expected);
  if (!ex.ok()) return std::string(ex.status().message());
  if (absl::Status s = f->Run(options); !s.ok())
    return std::string(s.message());
  for (size_t j = 0; j < k.out_types.size(); ++j) {
    const auto& t = k.out_types[j];
    // These kernels' outputs do not depend on how the grid is split: the
    // same per-block arithmetic, so the single-core tolerances are exact.
    tools::CheckResult r = tools::CompareArrays(
        t.dtype, f->outputs[j].data(), (*ex)[j].data.data(), t.num_elements(),
        tools::Tolerance{0, 0});
    if (!r.ok()) return r.Summary();
  }
  return "";
}

TEST(Cores, SplittingParallelDimensionsGivesJaxsResults) {
  // matmul: grid (2, 2, 2) with dims ("parallel", "parallel", "arbitrary");
  // int8_matmul likewise; 3 cores do not divide the 4 parallel points.
  for (int cores : {1, 2, 3, 4, 8}) {
    RunOptions options;
    options.num_cores = cores;
    EXPECT_EQ(RunGolden("matmul_f32", options), "") << cores << " cores";
    EXPECT_EQ(RunGolden("int8_matmul", options), "") << cores << " cores";
  }
}

// dynamic_grid (tests/golden/generate.py): grid (n,) with n operand 0;
// block i of x (40 x 128, 8-row blocks) becomes x * n + i.
class DynamicGridTest : public ::testing::Test {
 protected:
  void SetUp() override {
    const std::string dir =
        std::string(PALLASVM_FIXTURES_DIR) + "/dynamic_grid";
    absl::StatusOr<BoundFixture> f =
        Bind(dir + "/kernel.json", {dir + "/input_0.npy", dir + "/input_1.npy"});
    ASSERT_TRUE(f.ok()) << f.status();
    f_ = *std::move(f);
  }
  absl::Status RunWith(int32_t n) {
    std::memcpy(f_.inputs[0].data.data(), &n, sizeof(n));
    return f_.Run({});
  }
  float x(int i) const {
    float v;
    std::memcpy(&v, f_.inputs[1].data.data() + 4 * i, 4);
    return v;
  }
  float out(int i) const {
    float v;
    std::memcpy(&v, f_.outputs[0].data() + 4 * i, 4);
    return v;
  }
  BoundFixture f_;
};

TEST_F(DynamicGridTest, TheBoundOperandSizesTheGridAtEachCall) {
  for (int32_t n : {5, 2, 0, 5}) {
    ASSERT_TRUE(RunWith(n).ok()) << n;
    for (int i = 0; i < 40 * 128; i += 97) {
      const int block = i / (8 * 128);
      if (block < n) {
        // Two roundings, as the jaxpr says (volatile: no contraction here).
        volatile float product = x(i) * static_cast<float>(n);
        EXPECT_EQ(out(i), product + static_cast<float>(block))
            << "n " << n << " element " << i;
      } else {
        EXPECT_TRUE(std::isnan(out(i))) << "n " << n << " element " << i;
      }
    }
  }
}

TEST_F(DynamicGridTest, GridPointRecordListsTheVisitedPoints) {
  int32_t n = 3;
  std::memcpy(f_.inputs[0].data.data(), &n, sizeof(n));
  // Per point: its coordinate, then the core (0).
  std::vector<int32_t> record(6, -1);
  RunOptions options;
  options.grid_point_record = record.data();
  ASSERT_TRUE(f_.Run(options).ok());
  EXPECT_EQ(record, (std::vector<int32_t>{0, 0, 1, 0, 2, 0}));
  options.grid_coordinates = {{2, 0, 1}};
  ASSERT_TRUE(f_.Run(options).ok());
  EXPECT_EQ(record, (std::vector<int32_t>{2, 0, 0, 0, 1, 0}));
}

TEST_F(DynamicGridTest, NegativeOrTooLargeBoundsAreErrors) {
  absl::Status s = RunWith(-1);
  ASSERT_FALSE(s.ok());
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_TRUE(absl::StrContains(
      s.message(), "dynamic grid dimension 0 (operand 0) has size -1"))
      << s;
  // Block 5 would start at row 40 of 40.
  s = RunWith(6);
  ASSERT_FALSE(s.ok());
  EXPECT_EQ(s.code(), absl::StatusCode::kOutOfRange);
  EXPECT_TRUE(absl::StrContains(s.message(), "grid point (5)")) << s;
}

TEST(Cores, BadCoreCountIsRefused) {
  RunOptions options;
  options.num_cores = 0;
  std::string r = RunGolden("matmul_f32", options);
  EXPECT_TRUE(absl::StrContains(r, "num_cores is 0")) << r;
}

}  // namespace
}  // namespace pallasvm
