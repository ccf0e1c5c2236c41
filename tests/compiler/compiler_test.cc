// Compiler tests on real exported kernels and on broken variants of them:
// every bad input is a clear error naming what and where, never a crash.
#include <filesystem>
#include <fstream>
#include <string>

#include "absl/strings/match.h"
#include "compiler/compiler.h"
#include "compiler/interchange.h"
#include "compiler/lowering.h"
#include "compiler/module_cache.h"
#include "compiler/program_builder.h"
#include "gtest/gtest.h"
#include "runtime/kernel.h"
#include "runtime/pallasvm.h"
#include "tools/npy.h"
#include "vm/interpreter.h"

namespace pallasvm::compiler {
namespace {

std::string Fixture(const std::string& name) {
  absl::StatusOr<std::string> bytes = tools::ReadFileBytes(
      std::string(PALLASVM_FIXTURES_DIR) + "/" + name + "/kernel.json");
  EXPECT_TRUE(bytes.ok()) << bytes.status();
  return bytes.ok() ? *bytes : "";
}

// Replaces the first occurrence of `from` at or after `after`.
std::string ReplaceFirst(std::string s, const std::string& from,
                         const std::string& to, size_t after = 0) {
  size_t at = s.find(from, after);
  EXPECT_NE(at, std::string::npos) << "fixture changed: no " << from;
  if (at != std::string::npos) s.replace(at, from.size(), to);
  return s;
}

TEST(Interchange, ParsesJsonAndBinaryAlike) {
  std::string json = Fixture("add_vectors");
  absl::StatusOr<Interchange> a = ParseInterchange(json, "add_vectors.json");
  ASSERT_TRUE(a.ok()) << a.status();
  EXPECT_EQ(a->kernel->version(), kInterchangeVersion);
  absl::StatusOr<Interchange> b = ParseInterchange(a->bytes, "binary");
  ASSERT_TRUE(b.ok()) << b.status();
  absl::StatusOr<std::string> m1 = CompileKernel(*a);
  absl::StatusOr<std::string> m2 = CompileKernel(*b);
  ASSERT_TRUE(m1.ok()) << m1.status();
  ASSERT_TRUE(m2.ok()) << m2.status();
  EXPECT_EQ(*m1, *m2);  // deterministic, and the two forms agree
}

TEST(Interchange, MalformedJsonIsAnError) {
  absl::StatusOr<Interchange> r =
      ParseInterchange("{ \"version\": 1, \"jaxpr\": ", "broken.json");
  ASSERT_FALSE(r.ok());
  EXPECT_TRUE(absl::StrContains(r.status().message(), "broken.json"));
  EXPECT_TRUE(absl::StrContains(r.status().message(), "malformed"));
}

TEST(Interchange, GarbageIsAnError) {
  absl::StatusOr<Interchange> r = ParseInterchange("\x01\x02garbage", "x.bin");
  ASSERT_FALSE(r.ok());
  EXPECT_TRUE(absl::StrContains(r.status().message(), "not a pallasvm"));
}

TEST(Interchange, UnknownFieldIsAnError) {
  std::string json = ReplaceFirst(Fixture("add_vectors"), "\"grid\"",
                                  "\"no_such_field\": 3, \"grid\"");
  absl::StatusOr<Interchange> r = ParseInterchange(json, "k.json");
  ASSERT_FALSE(r.ok());
  EXPECT_TRUE(absl::StrContains(r.status().message(), "no_such_field"));
}

TEST(Interchange, UnknownVersionIsRefused) {
  std::string json =
      ReplaceFirst(Fixture("add_vectors"), "\"version\": 1", "\"version\": 99");
  absl::StatusOr<Interchange> r = ParseInterchange(json, "k.json");
  ASSERT_FALSE(r.ok());
  EXPECT_TRUE(absl::StrContains(r.status().message(), "version 99"))
      << r.status();
}

TEST(Compiler, UnknownPrimitiveNamesItAndItsSourceLine) {
  std::string json = ReplaceFirst(Fixture("add_vectors"),
                                  "\"primitive\": \"add\"",
                                  "\"primitive\": \"frobnicate\"");
  absl::StatusOr<std::string> r = CompileInterchange(json, "k.json");
  ASSERT_FALSE(r.ok());
  const std::string msg(r.status().message());
  EXPECT_TRUE(absl::StrContains(msg, "frobnicate")) << msg;
  EXPECT_TRUE(absl::StrContains(msg, "generate.py:")) << msg;
}

// An equation whose results nothing uses is still lowered when its
// primitive is unknown: it may have effects, so it is refused, never
// dropped. (The kernel jaxpr's first equation is add_vectors' `get`.)
TEST(Compiler, UnusedUnknownPrimitiveIsRefusedNotDropped) {
  for (const char* outvars :
       {"[{\"id\": 99, \"type\": {\"dtype\": \"F32\", \"shape\": []}}]",
        "[]"}) {
    const std::string eqn = absl::StrCat(
        "{\"invars\": [], \"outvars\": ", outvars,
        ", \"params\": [], \"primitive\": \"frobnicate\", "
        "\"source_file\": \"kernel.py\", \"source_line\": 12}, ");
    const std::string json =
        ReplaceFirst(Fixture("add_vectors"), "\"eqns\": [\n   {",
                     absl::StrCat("\"eqns\": [\n   ", eqn, "{"));
    absl::StatusOr<std::string> r = CompileInterchange(json, "k.json");
    ASSERT_FALSE(r.ok()) << outvars;
    EXPECT_EQ(r.status().code(), absl::StatusCode::kUnimplemented);
    const std::string msg(r.status().message());
    EXPECT_TRUE(absl::StrContains(msg, "`frobnicate`")) << msg;
    EXPECT_TRUE(absl::StrContains(msg, "kernel.py:12")) << msg;
  }
}

// Whether an unused equation may go is the rule's declaration: a pure
// one's code is not emitted, an effectful one's is.
TEST(Compiler, RulesDeclareWhetherUnusedEquationsGo) {
  const RuleTable& rules = Rules();
  ASSERT_NE(rules.Find("add"), nullptr);
  EXPECT_TRUE(rules.Find("add")->pure);
  for (const char* effectful : {"get", "swap", "addupdate", "masked_load",
                                "masked_swap", "cond", "while", "scan",
                                "pjit"}) {
    ASSERT_NE(rules.Find(effectful), nullptr) << effectful;
    EXPECT_FALSE(rules.Find(effectful)->pure) << effectful;
  }
  EXPECT_EQ(rules.Find("frobnicate"), nullptr);
  // An unused `add` of the two loaded blocks (vars 3 and 4), inserted
  // before add_vectors' own, leaves the module as it was.
  const std::string plain = Fixture("add_vectors");
  const std::string own_add = "{\n    \"invars\": [{\"var\": 3}, {\"var\": 4}]";
  const std::string unused_add =
      "{\"invars\": [{\"var\": 3}, {\"var\": 4}], \"outvars\": "
      "[{\"id\": 99, \"type\": {\"dtype\": \"F32\", \"shape\": [8]}}], "
      "\"params\": [], \"primitive\": \"add\"}, ";
  absl::StatusOr<std::string> a = CompileInterchange(plain, "k.json");
  absl::StatusOr<std::string> b = CompileInterchange(
      ReplaceFirst(plain, own_add, unused_add + own_add), "k.json");
  ASSERT_TRUE(a.ok()) << a.status();
  ASSERT_TRUE(b.ok()) << b.status();
  absl::StatusOr<std::shared_ptr<const runtime::Kernel>> ka =
      runtime::LoadModule(*a, "a");
  absl::StatusOr<std::shared_ptr<const runtime::Kernel>> kb =
      runtime::LoadModule(*b, "b");
  ASSERT_TRUE(ka.ok()) << ka.status();
  ASSERT_TRUE(kb.ok()) << kb.status();
  EXPECT_EQ((*ka)->program.code.size(), (*kb)->program.code.size());
}

// add_vectors made o = (x * y) + y: with Kernel.contract_fma the multiply
// folds into the add as one FMA_F32 (compiler/fma_contraction.h); without,
// MUL_F32_VV then ADD_F32_VV, rounding each.
TEST(Compiler, ContractFmaFoldsASingleUseMultiplyIntoItsAdd) {
  const std::string own_add = "{\n    \"invars\": [{\"var\": 3}, {\"var\": 4}]";
  const std::string mul =
      "{\"invars\": [{\"var\": 3}, {\"var\": 4}], \"outvars\": "
      "[{\"id\": 99, \"type\": {\"dtype\": \"F32\", \"shape\": [8]}}], "
      "\"params\": [], \"primitive\": \"mul\"}, ";
  const std::string fused_add = "{\n    \"invars\": [{\"var\": 99}, {\"var\": 4}]";
  const std::string plain =
      ReplaceFirst(Fixture("add_vectors"), own_add, mul + fused_add);
  auto listing = [](const std::string& json) -> std::string {
    absl::StatusOr<std::string> module = CompileInterchange(json, "k.json");
    EXPECT_TRUE(module.ok()) << module.status();
    if (!module.ok()) return "";
    absl::StatusOr<std::unique_ptr<Executable>> exe =
        Executable::Load(*module, "k");
    EXPECT_TRUE(exe.ok()) << exe.status();
    return exe.ok() ? vm::Disassemble((*exe)->kernel().program) : "";
  };
  const std::string rounded = listing(plain);
  EXPECT_TRUE(absl::StrContains(rounded, "MUL_F32_VV")) << rounded;
  EXPECT_FALSE(absl::StrContains(rounded, "FMA_F32")) << rounded;
  const std::string fused =
      listing(ReplaceFirst(plain, "{\n \"block_mappings\"",
                           "{\n \"contract_fma\": true, \"block_mappings\""));
  EXPECT_TRUE(absl::StrContains(fused, "FMA_F32")) << fused;
  EXPECT_FALSE(absl::StrContains(fused, "MUL_F32")) << fused;
  EXPECT_FALSE(absl::StrContains(fused, "ADD_F32")) << fused;
}

// A persistent slot (the TPU PRNG's state) shares bytes with no other
// value, although its mentions alone would let the packer reuse them:
// without persistence x (live at pc 0) and the state (first mentioned at pc
// 2) would share offset 0.
TEST(Compiler, PersistentSlotsAreNeverShared) {
  for (bool persistent : {false, true}) {
    ProgramBuilder b;
    const uint32_t state = persistent ? b.AllocPersistent(12) : b.Alloc(12);
    const uint32_t x = b.Alloc(12);
    b.Emit({vm::Op::MOV_B4, 0, x, x, 0, 0, 1});
    b.Emit({vm::Op::MOV_B4, 0, x + 4, x + 4, 0, 0, 1});
    b.Emit({vm::Op::MOV_B4, 0, state, state, 0, 0, 1});
    b.Emit({vm::Op::RETURN, 0, 0, 0, 0, 0, 0});
    b.AddFunction(vm::Function{"k", 0, {}, {}});
    const vm::Program p = b.Finish();
    const uint32_t x_at = p.code[0].a, state_at = p.code[2].a;
    const bool overlap = x_at < state_at + 12 && state_at < x_at + 12;
    EXPECT_EQ(overlap, !persistent) << "x at " << x_at << ", state at "
                                    << state_at;
  }
}

TEST(Compiler, MismatchedShapesAreAnError) {
  std::string json = Fixture("add_vectors");
  // The add's result type comes just before its primitive name (fields are
  // written in sorted order): declare it [9] instead of [8].
  size_t add = json.find("\"primitive\": \"add\"");
  ASSERT_NE(add, std::string::npos);
  size_t shape = json.rfind("\"shape\": [8]", add);
  ASSERT_NE(shape, std::string::npos);
  json.replace(shape, 12, "\"shape\": [9]");
  absl::StatusOr<std::string> r = CompileInterchange(json, "k.json");
  ASSERT_FALSE(r.ok());
  const std::string msg(r.status().message());
  EXPECT_TRUE(absl::StrContains(msg, "add")) << msg;
  EXPECT_TRUE(absl::StrContains(msg, "[9]")) << msg;
}

// What the runtime's loader refuses, the compiler refuses first, by the
// same rules (format/module_limits.h): each case here once compiled into a
// module the loader refused (tests/fuzz/regressions/interchange_binary).
TEST(Compiler, RefusesWhatTheLoaderRefuses) {
  struct Case {
    const char* fixture;
    const char* from;
    const char* to;
    const char* error;
  };
  for (const Case& c : {
           Case{"aliasing", "\"input_output_aliases\": [{\"input\": 0",
                "\"input_output_aliases\": [{\"input\": 7",
                "input_output_aliases[0] names operand 7 of the "
                "pallas_call's 2"},
           Case{"matmul_f32", "\"grid\": [2, 2, 2]",
                "\"grid\": [2147483647, 2147483647, 2]",
                "the grid (2147483647, 2147483647, 2) has more than 2^62 "
                "points"},
           Case{"blockspec_squeezed", "\"kind\": \"SQUEEZED\", \"size\": 1",
                "\"kind\": \"SQUEEZED\", \"size\": 2",
                "block dimension 0 is SQUEEZED with size 2"},
       }) {
    const std::string json = Fixture(c.fixture);
    absl::StatusOr<std::string> good = CompileInterchange(json, "k.json");
    ASSERT_TRUE(good.ok()) << good.status();
    EXPECT_TRUE(runtime::LoadModule(*good, "k.pvm").ok()) << c.fixture;
    absl::StatusOr<std::string> r =
        CompileInterchange(ReplaceFirst(json, c.from, c.to), "k.json");
    ASSERT_FALSE(r.ok()) << c.fixture;
    EXPECT_TRUE(absl::StrContains(r.status().message(), c.error)) << r.status();
  }
}

TEST(Compiler, DynamicGridNeedsItsBoundOperand) {
  // dynamic_grid: grid [-1], sized by operand 0 (int32[]).
  const std::string json = Fixture("dynamic_grid");
  ASSERT_TRUE(CompileInterchange(json, "k.json").ok());
  absl::StatusOr<std::string> r = CompileInterchange(
      ReplaceFirst(json, "\"num_dynamic_grid_bounds\": 1",
                   "\"num_dynamic_grid_bounds\": 0"),
      "k.json");
  ASSERT_FALSE(r.ok());
  EXPECT_TRUE(absl::StrContains(r.status().message(),
                                "1 dynamic dimensions but "
                                "num_dynamic_grid_bounds is 0"))
      << r.status();
  r = CompileInterchange(
      ReplaceFirst(json, "{\"dtype\": \"S32\", \"shape\": []}",
                   "{\"dtype\": \"F32\", \"shape\": []}",
                   json.find("\"in_types\"")),
      "k.json");
  ASSERT_FALSE(r.ok());
  EXPECT_TRUE(absl::StrContains(r.status().message(),
                                "operand 0 is a dynamic grid bound and must "
                                "be one int32, not float32[]"))
      << r.status();
  r = CompileInterchange(ReplaceFirst(json, "\"grid\": [-1]",
                                      "\"grid\": [-2]"),
                         "k.json");
  ASSERT_FALSE(r.ok());
  EXPECT_TRUE(absl::StrContains(r.status().message(),
                                "grid dimension 0 has size -2; pallasvm runs "
                                "grid dimensions of 1 to 2^31 - 1"))
      << r.status();
}

TEST(Compiler, RealKernelsCompileAndDisassembleWithSourceLines) {
  for (const char* name : {"matmul_f32", "fori_loop", "scalar_prefetch",
                           "reduce_accumulate", "while_cond"}) {
    absl::StatusOr<std::string> module =
        CompileInterchange(Fixture(name), name);
    ASSERT_TRUE(module.ok()) << name << ": " << module.status();
    absl::StatusOr<std::unique_ptr<Executable>> exe =
        Executable::Load(*module, name);
    ASSERT_TRUE(exe.ok()) << name << ": " << exe.status();
    std::string listing = vm::Disassemble((*exe)->kernel().program);
    EXPECT_TRUE(absl::StrContains(listing, "RETURN")) << name;
    EXPECT_TRUE(absl::StrContains(listing, ".py:")) << name << "\n" << listing;
  }
}

class ModuleCacheTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = ::testing::TempDir() + "/pallasvm_cache_test";
    std::filesystem::remove_all(dir_);
  }
  std::string dir_;
};

TEST_F(ModuleCacheTest, StoresAndReusesModules) {
  ModuleCache cache(dir_);
  std::string json = Fixture("add_vectors");
  bool hit = true;
  absl::StatusOr<std::string> a = cache.GetOrCompile(json, "k.json", &hit);
  ASSERT_TRUE(a.ok()) << a.status();
  EXPECT_FALSE(hit);
  absl::StatusOr<std::string> b = cache.GetOrCompile(json, "k.json", &hit);
  ASSERT_TRUE(b.ok()) << b.status();
  EXPECT_TRUE(hit);
  EXPECT_EQ(*a, *b);
}

TEST_F(ModuleCacheTest, CorruptedEntryIsRebuiltNotTrusted) {
  ModuleCache cache(dir_);
  std::string json = Fixture("add_vectors");
  absl::StatusOr<std::string> good = cache.GetOrCompile(json, "k.json");
  ASSERT_TRUE(good.ok());
  const std::string path = cache.PathFor(ModuleCache::Key(json));
  for (std::string bad : {std::string("garbage"), good->substr(0, good->size() / 2),
                          std::string()}) {
    {
      std::ofstream f(path, std::ios::binary | std::ios::trunc);
      f << bad;
    }
    bool hit = true;
    absl::StatusOr<std::string> again = cache.GetOrCompile(json, "k.json", &hit);
    ASSERT_TRUE(again.ok()) << again.status();
    EXPECT_FALSE(hit);
    EXPECT_EQ(*again, *good);
  }
}

TEST_F(ModuleCacheTest, EntryForAnotherSourceIsNotUsed) {
  ModuleCache cache(dir_);
  std::string add = Fixture("add_vectors");
  std::string other = Fixture("add_one_grid_1d");
  absl::StatusOr<std::string> other_module = cache.GetOrCompile(other, "o");
  ASSERT_TRUE(other_module.ok());
  // Put the other kernel's module where add_vectors' entry belongs.
  {
    std::ofstream f(cache.PathFor(ModuleCache::Key(add)),
                    std::ios::binary | std::ios::trunc);
    f << *other_module;
  }
  bool hit = true;
  absl::StatusOr<std::string> m = cache.GetOrCompile(add, "a", &hit);
  ASSERT_TRUE(m.ok());
  EXPECT_FALSE(hit);
  EXPECT_NE(*m, *other_module);
}

}  // namespace
}  // namespace pallasvm::compiler
