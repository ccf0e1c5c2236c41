// The `pallasvm` command (tools/pallasvm_main.cc) on hostile arguments and
// files, run as a process: options that would never end or compare
// nothing are refused, a kernel that never ends is stopped by --timeout,
// sizes are checked before anything is allocated, and a failed write
// leaves nothing behind and replaces nothing of the user's.
#include <sys/wait.h>

#include <cstdio>
#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "compiler/compiler.h"
#include "gtest/gtest.h"
#include "tools/npy.h"

namespace pallasvm::tools {
namespace {

namespace fs = std::filesystem;

struct Result {
  int exit_code = -1;
  std::string output;  // stdout and stderr
};

Result Pallasvm(const std::string& args) {
  Result r;
  const std::string command = absl::StrCat(PALLASVM_BINARY, " ", args, " 2>&1");
  FILE* p = popen(command.c_str(), "r");
  if (p == nullptr) return r;
  char buf[4096];
  size_t n;
  while ((n = fread(buf, 1, sizeof(buf), p)) > 0) r.output.append(buf, n);
  const int status = pclose(p);
  r.exit_code = WIFEXITED(status) ? WEXITSTATUS(status) : -1;
  return r;
}

std::string Golden(const std::string& name) {
  return absl::StrCat(PALLASVM_FIXTURES_DIR, "/", name);
}

std::string Hostile(const std::string& name) {
  return absl::StrCat(PALLASVM_HOSTILE_DIR, "/", name, "/kernel.json");
}

class CommandTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = fs::temp_directory_path() /
           absl::StrCat(
               "pallasvm_command_test_", getpid(), "_",
               ::testing::UnitTest::GetInstance()->current_test_info()->name());
    fs::remove_all(dir_);
    fs::create_directories(dir_);
  }
  void TearDown() override { fs::remove_all(dir_); }
  std::string Path(const std::string& name) const { return dir_ / name; }
  std::vector<std::string> Listing() const {
    std::vector<std::string> names;
    for (const auto& e : fs::directory_iterator(dir_)) {
      names.push_back(e.path().filename().string());
    }
    std::sort(names.begin(), names.end());
    return names;
  }
  fs::path dir_;
};

// ------------------------------------------------------------------ hangs

TEST_F(CommandTest, TimeoutStopsAnEndlessWhile) {
  std::vector<int32_t> x(16 * 128, 0);
  x[0] = 1;  // grid point 0 loops forever
  ASSERT_TRUE(
      WriteNpy(Path("x.npy"), vm::DType::S32, {16, 128}, x.data()).ok());
  const Result r =
      Pallasvm(absl::StrCat("run --no-cache ", Hostile("endless_while"), " ",
                            Path("x.npy"), " --timeout 0.3"));
  EXPECT_EQ(r.exit_code, 1) << r.output;
  EXPECT_TRUE(absl::StrContains(
      r.output,
      "error: kernel 'kernel', grid point (0) (core 0): deadline exceeded "
      "(timeout of 0.3 s) at while (tests/runtime/hostile/generate.py:"))
      << r.output;
}

TEST_F(CommandTest, OptionsThatWouldNeverEndOrCompareNothingAreRefused) {
  for (const char* bad :
       {"--time --min-time nan", "--time --min-time inf",
        "--time --min-time -1", "--timeout nan", "--timeout -1",
        "--timeout inf", "--check --atol nan", "--check --rtol inf",
        "--check --atol -1", "--memory-limit 0", "--memory-limit lots"}) {
    const Result r =
        Pallasvm(absl::StrCat("run ", Golden("add_vectors"), " ", bad));
    EXPECT_EQ(r.exit_code, 2) << bad << ": " << r.output;
    EXPECT_TRUE(absl::StrContains(r.output, "pallasvm: bad --")) << r.output;
  }
}

TEST_F(CommandTest, UninitializedReadsAreReportedByOption) {
  // blockspec_partial_edge: (4, 128) blocks of a (10, 300) input, and the
  // kernel multiplies whole blocks, so the edge blocks' padding is read
  // (column 44 on is padding in the blocks at column index 2: 300 - 256).
  Result r = Pallasvm(absl::StrCat("run ", Golden("blockspec_partial_edge"),
                                   " --uninitialized-reads warn"));
  EXPECT_EQ(r.exit_code, 0) << r.output;
  EXPECT_TRUE(absl::StrContains(
      r.output,
      "warning: kernel 'kernel': uninitialized read: mul "
      "(tests/golden/generate.py:"))
      << r.output;
  EXPECT_TRUE(absl::StrContains(
      r.output,
      "reads element (0, 44) of args[0] (ref 0, float32[4,128]) at grid "
      "point (0, 2)"))
      << r.output;
  r = Pallasvm(absl::StrCat("run ", Golden("blockspec_partial_edge"),
                            " --uninitialized-reads error"));
  EXPECT_EQ(r.exit_code, 1) << r.output;
  EXPECT_TRUE(absl::StrContains(
      r.output,
      "grid point (0, 2): uninitialized read of element (0, 44) of args[0]"))
      << r.output;
  // scratch_accumulate zeroes its scratch accumulator before it adds.
  r = Pallasvm(absl::StrCat("run ", Golden("scratch_accumulate"),
                            " --uninitialized-reads error"));
  EXPECT_EQ(r.exit_code, 0) << r.output;
  EXPECT_FALSE(absl::StrContains(r.output, "uninitialized read")) << r.output;
  r = Pallasvm(absl::StrCat("run ", Golden("add_vectors"),
                            " --uninitialized-reads maybe"));
  EXPECT_EQ(r.exit_code, 2) << r.output;
  EXPECT_TRUE(absl::StrContains(
      r.output, "--uninitialized-reads takes off, warn or error"))
      << r.output;
}

// ----------------------------------------------------------------- memory

TEST_F(CommandTest, OutputsAreCheckedAgainstTheMemoryLimitBeforeAllocating) {
  // elementwise_8x128: (8, 128) blocks (a small workspace) of a (128, 128)
  // f32 output (64 KiB).
  Result r = Pallasvm(
      absl::StrCat("run ", Golden("elementwise_8x128"), " --memory-limit 40K"));
  EXPECT_EQ(r.exit_code, 1) << r.output;
  EXPECT_TRUE(absl::StrContains(
      r.output,
      "output 0 float32[128,128] (with the outputs before it) needs 64 KiB, "
      "more than the memory limit of 40 KiB"))
      << r.output;
  // The module's own buffers are checked when it is loaded.
  r = Pallasvm(
      absl::StrCat("run ", Golden("add_vectors"), " --memory-limit 16"));
  EXPECT_EQ(r.exit_code, 1) << r.output;
  EXPECT_TRUE(absl::StrContains(
      r.output,
      "the VM frame needs 128 bytes, more than the memory limit of "
      "16 bytes"))
      << r.output;
}

TEST_F(CommandTest, AnInputIsCheckedBeforeItsDataIsRead) {
  // /dev/zero has no end: refused after its first bytes.
  Result r = Pallasvm(absl::StrCat("run ", Golden("add_vectors"),
                                   "/kernel.json /dev/zero /dev/zero"));
  EXPECT_EQ(r.exit_code, 1) << r.output;
  EXPECT_TRUE(absl::StrContains(r.output, "/dev/zero: not a valid .npy file"))
      << r.output;
  // A header claiming 4 TiB of data: refused before reading it.
  std::string header =
      "{'descr': '<f4', 'fortran_order': False, 'shape': (1048576, 1048576), }";
  header.append(117 - header.size(), ' ');
  header.push_back('\n');
  {
    std::ofstream f(Path("huge.npy"), std::ios::binary);
    f << "\x93NUMPY" << '\x01' << '\x00' << static_cast<char>(header.size())
      << '\x00' << header;
  }
  r = Pallasvm(absl::StrCat("run ", Golden("add_vectors"), "/kernel.json ",
                            Path("huge.npy"), " ", Path("huge.npy")));
  EXPECT_EQ(r.exit_code, 1) << r.output;
  EXPECT_TRUE(absl::StrContains(
      r.output, "huge.npy (<f4 array of shape (1048576, 1048576)) needs 4 TiB"))
      << r.output;
}

TEST_F(CommandTest, DisasmAllocatesNothing) {
  // A module with a 1 TiB scratch buffer (the compiler would refuse it; a
  // module need not come from this compiler) is listed, not allocated.
  absl::StatusOr<std::string> json = ReadFileBytes(Hostile("huge_scratch"));
  ASSERT_TRUE(json.ok());
  compiler::CompileOptions options;
  options.memory_limit = INT64_MAX;
  absl::StatusOr<std::string> module =
      compiler::CompileInterchange(*json, "huge_scratch", "", options);
  ASSERT_TRUE(module.ok()) << module.status();
  ASSERT_TRUE(WriteFileBytes(Path("huge.pvm"), *module).ok());
  Result r = Pallasvm("disasm " + Path("huge.pvm"));
  EXPECT_EQ(r.exit_code, 0) << r.output;
  EXPECT_TRUE(absl::StrContains(
      r.output, "ref 2: scratch float32[262144,1048576] in VMEM"))
      << r.output;
  // Running it is refused when loaded, naming the buffer.
  r = Pallasvm("run " + Path("huge.pvm"));
  EXPECT_EQ(r.exit_code, 1) << r.output;
  EXPECT_TRUE(absl::StrContains(
      r.output, "ref 2 (scratch float32[262144,1048576]) needs 1 TiB"))
      << r.output;
}

// -------------------------------------------------------------- the files

TEST_F(CommandTest, CompileNeverReplacesADirectoryOrLeavesATemporary) {
  fs::create_directories(Path("out.pvm"));
  {
    std::ofstream keep(Path("out.pvm") + "/keep");
    keep << "mine";
  }
  Result r = Pallasvm(absl::StrCat("compile ", Golden("add_vectors"),
                                   "/kernel.json -o ", Path("out.pvm")));
  EXPECT_EQ(r.exit_code, 2) << r.output;
  EXPECT_TRUE(absl::StrContains(r.output, "is a directory")) << r.output;
  EXPECT_EQ(Listing(), std::vector<std::string>{"out.pvm"});
  EXPECT_TRUE(fs::exists(Path("out.pvm") + "/keep"));
  // Into a directory that does not exist: an error, nothing written.
  r = Pallasvm(absl::StrCat("compile ", Golden("add_vectors"),
                            "/kernel.json -o ", Path("missing/out.pvm")));
  EXPECT_EQ(r.exit_code, 1) << r.output;
  EXPECT_EQ(Listing(), std::vector<std::string>{"out.pvm"});
  // Over a file (and beside a user's out2.pvm.tmp): replaced whole, and
  // the user's .tmp file is untouched.
  {
    std::ofstream old(Path("out2.pvm"));
    old << "old";
    std::ofstream tmp(Path("out2.pvm.tmp"));
    tmp << "mine";
  }
  r = Pallasvm(absl::StrCat("compile ", Golden("add_vectors"),
                            "/kernel.json -o ", Path("out2.pvm")));
  EXPECT_EQ(r.exit_code, 0) << r.output;
  EXPECT_EQ(Listing(),
            (std::vector<std::string>{"out.pvm", "out2.pvm", "out2.pvm.tmp"}));
  EXPECT_GT(fs::file_size(Path("out2.pvm")), 100u);
  std::ifstream tmp(Path("out2.pvm.tmp"));
  std::string mine;
  tmp >> mine;
  EXPECT_EQ(mine, "mine");
}

TEST_F(CommandTest, RunRefusesAnOutputDirectoryThatIsAFile) {
  {
    std::ofstream f(Path("results"));
    f << "mine";
  }
  const Result r = Pallasvm(
      absl::StrCat("run ", Golden("add_vectors"), " -o ", Path("results")));
  EXPECT_EQ(r.exit_code, 1) << r.output;
  EXPECT_TRUE(absl::StrContains(r.output, "not a directory")) << r.output;
  EXPECT_EQ(Listing(), std::vector<std::string>{"results"});
}

}  // namespace
}  // namespace pallasvm::tools
