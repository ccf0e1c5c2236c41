// Hostile inputs to the runtime, one class per test group: kernels that
// never end (deadlines, cancellation), modules and kernels that ask for
// more memory than there is, grids past int32, and modules whose 8-byte
// fields are misaligned. Each must end in a status that says what and
// where, never a hang or a crash. The kernels are in tests/runtime/hostile/
// (generate.py there regenerates them).
#include <atomic>
#include <chrono>
#include <cstring>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/match.h"
#include "bytecode_generated.h"
#include "compiler/compiler.h"
#include "gtest/gtest.h"
#include "runtime/pallasvm.h"
#include "tools/npy.h"
#include "vm/memory_limit.h"

namespace pallasvm {
namespace {

using ::absl::StatusCode;

// Compiled without the compiler's memory limit, which refuses what the
// runtime must refuse too (a module need not come from this compiler).
std::string Compile(const std::string& path) {
  absl::StatusOr<std::string> json = tools::ReadFileBytes(path);
  EXPECT_TRUE(json.ok()) << json.status();
  if (!json.ok()) return "";
  compiler::CompileOptions options;
  options.memory_limit = INT64_MAX;
  absl::StatusOr<std::string> module =
      compiler::CompileInterchange(*json, path, "", options);
  EXPECT_TRUE(module.ok()) << module.status();
  return module.ok() ? *module : "";
}

std::string Hostile(const std::string& name) {
  return Compile(std::string(PALLASVM_HOSTILE_DIR) + "/" + name +
                 "/kernel.json");
}

std::string Golden(const std::string& name) {
  return Compile(std::string(PALLASVM_FIXTURES_DIR) + "/" + name +
                 "/kernel.json");
}

// ------------------------------------------------------------ class 1: hangs

// endless_while: o = x + r, r = x[0, 0] while r > 0 (r := max(r, 1)): a
// positive x[0, 0] loops forever, in every grid point.
class EndlessWhile : public ::testing::Test {
 protected:
  void SetUp() override {
    const std::string module = Hostile("endless_while");
    ASSERT_FALSE(module.empty());
    absl::StatusOr<std::unique_ptr<Executable>> exe =
        Executable::Load(module, "endless_while");
    ASSERT_TRUE(exe.ok()) << exe.status();
    exe_ = *std::move(exe);
  }
  absl::Status Run(int32_t n, const RunOptions& options) {
    x_.assign(16 * 128, 0);
    x_[0] = n;
    x_[8 * 128] = n;  // the second grid point's block
    out_.assign(16 * 128, 0);
    return exe_->Run({{DType::S32, {16, 128}, x_.data()}},
                     {{DType::S32, {16, 128}, out_.data()}}, options);
  }
  std::unique_ptr<Executable> exe_;
  std::vector<int32_t> x_, out_;
};

TEST_F(EndlessWhile, ATimeoutEndsItNamingGridPointCoreAndSourceLine) {
  RunOptions options;
  options.timeout = std::chrono::milliseconds(200);
  const auto start = std::chrono::steady_clock::now();
  absl::Status s = Run(1, options);
  const double secs =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - start)
          .count();
  EXPECT_EQ(s.code(), StatusCode::kDeadlineExceeded) << s;
  EXPECT_LT(secs, 5.0);
  EXPECT_TRUE(absl::StrContains(s.message(), "grid point (0) (core 0)")) << s;
  EXPECT_TRUE(absl::StrContains(s.message(), "timeout of 0.2 s")) << s;
  // The back edge is the while loop's, on the kernel's source line.
  EXPECT_TRUE(absl::StrContains(s.message(),
                                "while (tests/runtime/hostile/"
                                "generate.py:"))
      << s;
}

TEST_F(EndlessWhile, ATerminatingRunIsNotAffectedByItsTimeout) {
  RunOptions options;
  options.timeout = std::chrono::seconds(60);
  ASSERT_TRUE(Run(0, options).ok());
  EXPECT_EQ(out_[5], 0);  // x + r with r = 0
}

TEST_F(EndlessWhile, EveryCoreStopsAtTheDeadline) {
  RunOptions options;
  options.num_cores = 2;
  options.deadline =
      std::chrono::steady_clock::now() + std::chrono::milliseconds(200);
  absl::Status s = Run(1, options);
  EXPECT_EQ(s.code(), StatusCode::kDeadlineExceeded) << s;
  EXPECT_TRUE(absl::StrContains(s.message(), ": deadline exceeded at while"))
      << s;
}

TEST_F(EndlessWhile, CancellationFromAnotherThread) {
  std::atomic<bool> cancel{false};
  RunOptions options;
  options.cancel = &cancel;
  std::thread canceller([&] {
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
    cancel.store(true);
  });
  absl::Status s = Run(1, options);
  canceller.join();
  EXPECT_EQ(s.code(), StatusCode::kCancelled) << s;
  EXPECT_TRUE(absl::StrContains(s.message(), "grid point (0) (core 0)")) << s;
  EXPECT_TRUE(absl::StrContains(s.message(), "cancelled at while")) << s;
}

TEST_F(EndlessWhile, APassedDeadlineStopsBeforeTheFirstGridPoint) {
  RunOptions options;
  options.deadline =
      std::chrono::steady_clock::now() - std::chrono::milliseconds(1);
  absl::Status s = Run(0, options);
  EXPECT_EQ(s.code(), StatusCode::kDeadlineExceeded) << s;
  EXPECT_TRUE(absl::StrContains(s.message(), "before it ran")) << s;
}

TEST_F(EndlessWhile, ANegativeTimeoutIsRefused) {
  RunOptions options;
  options.timeout = std::chrono::seconds(-1);
  EXPECT_EQ(Run(0, options).code(), StatusCode::kInvalidArgument);
}

// ----------------------------------------------------------- class 2: memory

TEST(MemoryLimit, A1TiBScratchIsRefusedAtLoadNamingTheBuffer) {
  const std::string module = Hostile("huge_scratch");
  ASSERT_FALSE(module.empty());
  absl::StatusOr<std::unique_ptr<Executable>> exe =
      Executable::Load(module, "huge_scratch", int64_t{64} << 30);
  ASSERT_FALSE(exe.ok());
  EXPECT_EQ(exe.status().code(), StatusCode::kResourceExhausted);
  EXPECT_TRUE(
      absl::StrContains(exe.status().message(),
                        "ref 2 (scratch float32[262144,1048576]) needs 1 "
                        "TiB, more than the memory limit of 64 GiB"))
      << exe.status();
}

TEST(MemoryLimit, LoadingAllocatesNothingAndRunChecksTheLimit) {
  // Loaded with no limit (as `pallasvm disasm` loads), the 1 TiB module is
  // only described; running it is refused before anything is allocated.
  const std::string module = Hostile("huge_scratch");
  absl::StatusOr<std::unique_ptr<Executable>> exe =
      Executable::Load(module, "huge_scratch", INT64_MAX);
  ASSERT_TRUE(exe.ok()) << exe.status();
  std::vector<float> x(8 * 128), out(8 * 128);
  RunOptions options;
  options.memory_limit = int64_t{64} << 30;
  absl::Status s = (*exe)->Run({{DType::F32, {8, 128}, x.data()}},
                               {{DType::F32, {8, 128}, out.data()}}, options);
  EXPECT_EQ(s.code(), StatusCode::kResourceExhausted) << s;
  EXPECT_TRUE(absl::StrContains(s.message(), "the workspace of 1 core")) << s;
}

TEST(MemoryLimit, TheLimitCountsEveryCore) {
  const std::string module = Golden("add_vectors");
  absl::StatusOr<std::unique_ptr<Executable>> exe =
      Executable::Load(module, "add_vectors");
  ASSERT_TRUE(exe.ok()) << exe.status();
  const int64_t each = (*exe)->kernel().core_workspace_bytes;
  ASSERT_GT(each, 0);
  std::vector<float> x(8), y(8), out(8);
  std::vector<Array> in = {{DType::F32, {8}, x.data()},
                           {DType::F32, {8}, y.data()}};
  std::vector<Array> o = {{DType::F32, {8}, out.data()}};
  RunOptions options;
  options.num_cores = 4;
  options.memory_limit = 4 * each;
  EXPECT_TRUE((*exe)->Run(in, o, options).ok());
  options.memory_limit = 4 * each - 1;
  absl::Status s = (*exe)->Run(in, o, options);
  EXPECT_EQ(s.code(), StatusCode::kResourceExhausted) << s;
  EXPECT_TRUE(absl::StrContains(s.message(), "the workspace of 4 cores")) << s;
}

TEST(MemoryLimit, TheDefaultIsThePhysicalMemory) {
  const int64_t limit = vm::DefaultMemoryLimit();
  EXPECT_GT(limit, int64_t{1} << 20);
  EXPECT_LT(limit, int64_t{1} << 62);
  EXPECT_EQ(vm::FormatBytes(int64_t{1} << 40), "1 TiB");
  EXPECT_EQ(vm::FormatBytes(1536), "1.5 KiB");
  EXPECT_EQ(vm::FormatBytes(12), "12 bytes");
  EXPECT_FALSE(vm::CheckedMul(int64_t{1} << 32, int64_t{1} << 31));
  EXPECT_FALSE(vm::CheckedAdd(INT64_MAX, 1));
}

// A real module with its frame_size field (a uint32 in the root table)
// overwritten.
std::string WithFrameSize(std::string module, uint32_t frame_size) {
  const bytecode::Module* m = bytecode::GetModule(module.data());
  const uint8_t* field =
      reinterpret_cast<const flatbuffers::Table*>(m)->GetAddressOf(
          bytecode::Module::VT_FRAME_SIZE);
  EXPECT_NE(field, nullptr);
  if (field == nullptr) return module;
  std::memcpy(&module[field - reinterpret_cast<const uint8_t*>(module.data())],
              &frame_size, 4);
  return module;
}

TEST(MemoryLimit, AModuleCannotClaimAFrameItsCodeDoesNotUse) {
  const std::string module = Golden("add_vectors");
  ASSERT_FALSE(module.empty());
  absl::StatusOr<std::unique_ptr<Executable>> exe =
      Executable::Load(WithFrameSize(module, 0xffffffc0u), "big_frame.pvm");
  ASSERT_FALSE(exe.ok());
  EXPECT_TRUE(absl::StrContains(exe.status().message(),
                                "big_frame.pvm: invalid pallasvm module: the "
                                "frame claims 4 GiB but the code uses only"))
      << exe.status();
}

TEST(GridSize, AGridDimensionPastInt32IsRefusedClearly) {
  // The compiler refuses huge_grid's grid of 2^31: patch a module's grid
  // (add_one_grid_1d's, 100) instead.
  std::string module = Golden("add_one_grid_1d");
  ASSERT_FALSE(module.empty());
  const bytecode::Module* m = bytecode::GetModule(module.data());
  ASSERT_EQ(m->grid()->size(), 1u);
  const int64_t size = int64_t{1} << 31;
  std::memcpy(
      &module[reinterpret_cast<const char*>(m->grid()->Data()) - module.data()],
      &size, 8);
  absl::StatusOr<std::unique_ptr<Executable>> exe =
      Executable::Load(module, "huge_grid.pvm");
  ASSERT_FALSE(exe.ok());
  EXPECT_TRUE(absl::StrContains(
      exe.status().message(),
      "grid dimension 0 has size 2147483648; pallasvm runs grid dimensions "
      "of 1 to 2^31 - 1"))
      << exe.status();
}

// --------------------------------------------------- class 4: misalignment

TEST(Alignment, AModuleAtAnOddAddressLoadsAndRuns) {
  const std::string module = Golden("add_vectors");
  ASSERT_FALSE(module.empty());
  std::string shifted = " " + module;
  absl::StatusOr<std::unique_ptr<Executable>> exe =
      Executable::Load(absl::string_view(shifted).substr(1), "shifted.pvm");
  ASSERT_TRUE(exe.ok()) << exe.status();
  std::vector<float> x(8, 1), y(8, 2), out(8);
  ASSERT_TRUE(
      (*exe)
          ->Run({{DType::F32, {8}, x.data()}, {DType::F32, {8}, y.data()}},
                {{DType::F32, {8}, out.data()}})
          .ok());
  EXPECT_EQ(out[7], 3);
}

TEST(Alignment, AMisalignedVectorOfLongsIsRefused) {
  // FlatBuffers' verifier checks a vector's length for 4-byte alignment
  // only. Make `grid` point into a vector of uint32s so that its int64
  // elements sit at 4 mod 8.
  const std::vector<uint32_t> words = {2, 2, 1, 0, 1, 0, 1, 0};
  // A vector's Offset counts from the buffer's end to its length; element
  // i is 4 + 4i bytes further. Element 0 or 1 (value 2) becomes the
  // length of `grid`, whose two int64s follow: one of the two choices puts
  // them at 4 mod 8 from the (8-aligned) buffer start.
  for (uint32_t back : {4u, 8u}) {
    flatbuffers::FlatBufferBuilder b;
    auto v = b.CreateVector(words);
    bytecode::ModuleBuilder m(b);
    m.add_schema_version(2);
    m.add_grid(flatbuffers::Offset<flatbuffers::Vector<int64_t>>(v.o - back));
    bytecode::FinishModuleBuffer(b, m.Finish());
    std::string bytes(reinterpret_cast<const char*>(b.GetBufferPointer()),
                      b.GetSize());
    const bytecode::Module* parsed = bytecode::GetModule(bytes.data());
    if (reinterpret_cast<uintptr_t>(parsed->grid()->Data()) % 8 == 0) continue;
    absl::StatusOr<std::unique_ptr<Executable>> exe =
        Executable::Load(bytes, "misaligned.pvm");
    ASSERT_FALSE(exe.ok());
    EXPECT_TRUE(absl::StrContains(
        exe.status().message(),
        "Module.grid is at 4 mod 8, misaligned for its 8-byte elements"))
        << exe.status();
    return;
  }
  FAIL() << "no misaligned candidate";
}

}  // namespace
}  // namespace pallasvm
