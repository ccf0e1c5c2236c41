// The bytecode verifier (vm/verifier.cc): a valid program using every
// instruction format passes; corrupting each kind of operand, descriptor
// field, jump target, function and debug table fails with an error that says
// which instruction and what was wrong. A mutation fuzzer checks that Verify
// never crashes and that whatever it accepts runs inside its buffers.
#include <gtest/gtest.h>

#include <cstdint>
#include <functional>
#include <random>
#include <string>
#include <vector>

#include "tests/vm/test_program.h"
#include "vm/interpreter.h"

namespace pallasvm::vm {
namespace {

using test_program::Access;
using test_program::Assembler;
using test_program::Buffer;
using test_program::Dim;

// Frame layout of the sample program.
constexpr uint32_t kA = 64, kB = 128, kC = 192;  // f32[16] each
constexpr uint32_t kP = 256;                     // pred[16]
constexpr uint32_t kS = 272, kIdx = 276;         // s32 scalars
constexpr uint32_t kDot = 320, kRed = 384;
constexpr uint32_t kFrame = 512;

// Instruction indices in the sample program.
enum Pc : uint32_t {
  kAddVV,
  kMulVS,
  kSubSV,
  kAddSS,
  kExpV,
  kNegS,
  kCopy,
  kMov,
  kFill,
  kSelect,
  kStrided,
  kLoad,
  kStore,
  kReduce,
  kDot_,
  kProgramId,
  kLt,
  kBranch,
  kJump,
  kIota,
  kFma,
  kReturn,
};

Program SampleProgram() {
  Assembler as;
  const uint32_t two = as.Constant<float>(2.f);
  const uint32_t three = as.Constant<int32_t>(3);
  as.Constant<uint8_t>(1);
  const uint32_t transpose = as.AddLayout(4, {4, 4}, {1, 4});
  const uint32_t mkn = as.AddLayout(4, {4, 4, 4});
  const uint32_t row = as.AddAccess(Access(
      AccessBase::REF, 0, 4,
      {Dim(4, 0, 1, 1, static_cast<int32_t>(kIdx), true), Dim(16, 0, 16)}));
  as.Emit(Op::ADD_F32_VV, kA, kB, kC, 0, 16);
  as.Emit(Op::MUL_F32_VS, kA, kA, two, 0, 16);
  as.Emit(Op::SUB_F32_SV, kA, two, kB, 0, 16);
  as.Emit(Op::ADD_S32_SS, kS, three, three);
  as.Emit(Op::EXP_F32_V, kC, kB, 0, 0, 16);
  as.Emit(Op::NEG_S32_S, kS, kS);
  as.Emit(Op::COPY, kB, kC, 0, 0, 64);
  as.Emit(Op::MOV_B4, kS, three);
  as.Emit(Op::FILL_B4, kC, two, 0, 0, 16);
  as.Emit(Op::SELECT_B4, kA, kP, kB, kC, 16);
  as.Emit(Op::STRIDED_COPY, kB, kA, 0, transpose);
  as.Emit(Op::LOAD, kA, 0, 0, row);
  as.Emit(Op::STORE, 0, kB, 0, row);
  as.Emit(Op::REDUCE_SUM_F32, kRed, kA, 4, 4, 1);
  as.Emit(Op::DOT_F32, kDot, kA, kB, mkn);
  as.Emit(Op::PROGRAM_ID, kS, 0);
  as.Emit(Op::LT_S32_SS, kP, kS, three);
  as.Emit(Op::JUMP_IF_FALSE, kP, kJump);
  as.Emit(Op::JUMP, kIota);
  as.Emit(Op::IOTA_S32, kC, 0, 0, transpose, 0, 1);
  as.Emit(Op::FMA_F32, kA, kB, kC, kA, 16);
  as.Emit(Op::RETURN);
  as.AddFunction("kernel", 0, {kIdx}, {kRed});
  Program& p = as.program();
  p.frame_size = kFrame;
  p.num_refs = 1;
  p.ref_sizes = {4 * 16 * 4};
  return p;
}

TEST(VerifierTest, SampleProgramIsValidAndRuns) {
  const Program p = SampleProgram();
  ASSERT_EQ(p.code.size(), kReturn + 1u);
  ASSERT_TRUE(Verify(p).ok()) << Verify(p);
  Buffer frame(kFrame), ref(256);
  InitFrame(p, frame.data());
  frame.Set<int32_t>(kIdx, 2);
  uint8_t* refs[] = {ref.data()};
  const int32_t ids[] = {0}, nums[] = {1};
  ExecContext ctx{frame.data(), refs, ids, nums, 1};
  EXPECT_TRUE(Execute(p, 0, ctx).ok());
}

struct Corruption {
  const char* what;
  std::function<void(Program&)> apply;
  const char* expected;  // a substring of the error
};

TEST(VerifierTest, EveryCorruptionIsReported) {
  const std::vector<Corruption> cases = {
      // Opcodes and plain operands.
      {"bad opcode",
       [](Program& p) { p.code[kAddVV].op = static_cast<Op>(9999); },
       "instruction 0: opcode 9999 does not exist"},
      {"dst past frame", [](Program& p) { p.code[kAddVV].a = kFrame - 4; },
       "instruction 0 (ADD_F32_VV): operand a (dst): 64 bytes at frame offset "
       "508 are outside the frame (512 bytes)"},
      {"huge lhs offset", [](Program& p) { p.code[kAddVV].b = 0xffffffffu; },
       "operand b (lhs"},
      {"n too big", [](Program& p) { p.code[kAddVV].n = 1000; },
       "are outside the frame"},
      {"misaligned dst", [](Program& p) { p.code[kAddVV].a = kA + 2; },
       "is not aligned to its 4-byte elements"},
      {"writes constants", [](Program& p) { p.code[kAddVV].a = 0; },
       "inside the constants"},
      {"partial overlap", [](Program& p) { p.code[kAddVV].a = kB + 4; },
       "overlaps source b (lhs)"},
      {"VS scalar outside", [](Program& p) { p.code[kMulVS].c = kFrame; },
       "operand c (rhs scalar"},
      {"SV scalar outside", [](Program& p) { p.code[kSubSV].b = kFrame - 2; },
       "operand b (lhs scalar"},
      {"SS operand outside", [](Program& p) { p.code[kAddSS].c = kFrame; },
       "instruction 3 (ADD_S32_SS): operand c (rhs"},
      {"unary src outside", [](Program& p) { p.code[kExpV].b = kFrame - 32; },
       "instruction 4 (EXP_F32_V): operand b (src"},
      {"unary scalar dst", [](Program& p) { p.code[kNegS].a = 1u << 31; },
       "operand a (dst"},
      {"copy too long", [](Program& p) { p.code[kCopy].n = 1u << 20; },
       "instruction 6 (COPY)"},
      {"mov outside", [](Program& p) { p.code[kMov].b = kFrame - 1; },
       "instruction 7 (MOV_B4): operand b (src"},
      {"fill dst outside", [](Program& p) { p.code[kFill].n = 200; },
       "instruction 8 (FILL_B4): operand a (dst"},
      {"select pred outside",
       [](Program& p) { p.code[kSelect].b = kFrame - 4; }, "operand b (pred"},
      {"select on_true outside", [](Program& p) { p.code[kSelect].d = kFrame; },
       "operand d (on_true"},
      // Layout descriptors.
      {"layout index", [](Program& p) { p.code[kStrided].d = 5; },
       "instruction 10 (STRIDED_COPY): layout index d = 5 but there are 2"},
      {"layout rank", [](Program& p) { p.layouts[0].rank = 9; },
       "layout 0 has rank 9"},
      {"layout negative rank", [](Program& p) { p.layouts[0].rank = -1; },
       "layout 0 has rank -1"},
      {"layout elem size", [](Program& p) { p.layouts[0].elem_size = 3; },
       "elem_size 3 (must be 1, 2 or 4)"},
      {"layout shape", [](Program& p) { p.layouts[0].shape[0] = -1; },
       "shape[0] = -1"},
      {"layout stride reaches out",
       [](Program& p) { p.layouts[0].strides[0] = 1000; },
       "operand b (src) as viewed by the layout"},
      {"layout offset before frame",
       [](Program& p) { p.layouts[0].offset = -100; },
       "operand b (src) as viewed by the layout"},
      {"layout huge stride",
       [](Program& p) { p.layouts[0].strides[1] = INT64_MIN; },
       "as viewed by the layout"},
      {"strided copy in place", [](Program& p) { p.code[kStrided].a = kA; },
       "overlaps source"},
      {"iota dim", [](Program& p) { p.code[kIota].aux = 2; },
       "iota dimension aux = 2 but layout 0 has rank 2"},
      // Access descriptors.
      {"access index", [](Program& p) { p.code[kLoad].d = 7; },
       "instruction 11 (LOAD): access index d = 7 but there are 1 accesses"},
      {"access ref", [](Program& p) { p.accesses[0].base = 5; },
       "access 0: ref 5 but the program has 1 refs"},
      {"access negative ref", [](Program& p) { p.accesses[0].base = -1; },
       "access 0: ref -1"},
      {"access elem size", [](Program& p) { p.accesses[0].elem_size = 8; },
       "access 0: elem_size 8"},
      {"access rank", [](Program& p) { p.accesses[0].rank = 9; },
       "access 0: rank 9"},
      {"access base kind",
       [](Program& p) { p.accesses[0].base_kind = static_cast<AccessBase>(7); },
       "base_kind 7"},
      {"access clamp flag", [](Program& p) { p.accesses[0].clamp = 3; },
       "clamp = 3"},
      {"access size past extent",
       [](Program& p) { p.accesses[0].dims[1].size = 17; },
       "dim 1: size 17 stride 1 cannot fit in extent 16"},
      {"access static start",
       [](Program& p) { p.accesses[0].dims[1].start = 1; },
       "dim 1: static start 1 size 16"},
      {"access negative static start",
       [](Program& p) {
         p.accesses[0].dims[1].start = -1;
         p.accesses[0].dims[1].size = 4;
       },
       "dim 1: static start -1"},
      {"access start slot",
       [](Program& p) { p.accesses[0].dims[0].start_slot = kFrame; },
       "operand start slot"},
      {"access start slot misaligned",
       [](Program& p) { p.accesses[0].dims[0].start_slot = kIdx + 1; },
       "operand start slot"},
      {"access stride", [](Program& p) { p.accesses[0].dims[1].stride = 0; },
       "dim 1: stride 0 (must be >= 1)"},
      {"access squeezed",
       [](Program& p) { p.accesses[0].dims[0].squeezed = 2; }, "squeezed = 2"},
      {"access squeezed size",
       [](Program& p) { p.accesses[0].dims[0].size = 2; },
       "a squeezed dim has size 1"},
      {"access negative extent",
       [](Program& p) { p.accesses[0].dims[0].extent = -1; },
       "dim 0: extent -1"},
      {"access huge extents",
       [](Program& p) {
         for (int i = 0; i < 8; ++i)
           p.accesses[0].dims[i] = Dim(INT64_MAX, 0, 1);
         p.accesses[0].rank = 8;
       },
       "its extents describe a buffer of 2^62 bytes or more"},
      {"ref too small", [](Program& p) { p.ref_sizes = {100}; },
       "its extents cover 256 bytes but ref 0 has 100"},
      {"load dense dst outside",
       [](Program& p) { p.code[kLoad].a = kFrame - 32; },
       "instruction 11 (LOAD): operand a (dst"},
      {"store dense src outside", [](Program& p) { p.code[kStore].b = kFrame; },
       "instruction 12 (STORE): operand b (src"},
      {"frame access outside",
       [](Program& p) {
         p.accesses[0].base_kind = AccessBase::FRAME;
         p.accesses[0].base = 400;
       },
       "operand accessed frame value"},
      {"frame access overlaps dense side",
       [](Program& p) {
         p.accesses[0].base_kind = AccessBase::FRAME;
         p.accesses[0].base = kA;
       },
       "overlaps"},
      {"frame store into constants",
       [](Program& p) {
         p.accesses[0].base_kind = AccessBase::FRAME;
         p.accesses[0].base = 0;
         p.code[kLoad].op = Op::RETURN;
       },
       "inside the constants"},
      {"addupdate dtype mismatch",
       [](Program& p) { p.code[kStore].op = Op::ADDUPDATE_BF16; },
       "elem_size 4 but the op's bfloat16 elements are 2 bytes"},
      // Reductions, dots, grid queries.
      {"reduce too big", [](Program& p) { p.code[kReduce].c = 1u << 30; },
       "instruction 13 (REDUCE_SUM_F32)"},
      {"reduce overflow",
       [](Program& p) {
         p.code[kReduce].c = 0xffffffffu;
         p.code[kReduce].d = 0xffffffffu;
         p.code[kReduce].n = 0xffffffffu;
       },
       "are outside the frame"},
      {"dot layout rank", [](Program& p) { p.code[kDot_].d = 0; },
       "DOT needs shape {M, K, N}"},
      {"dot shape too big", [](Program& p) { p.layouts[1].shape[2] = 100; },
       "instruction 14 (DOT_F32): operand a (dst"},
      {"dot dst aliases lhs", [](Program& p) { p.code[kDot_].a = kA; },
       "overlaps source b (lhs)"},
      // Operands that name whole refs (aux bits).
      {"dot ref operand missing",
       [](Program& p) {
         p.code[kDot_].aux = kOperandRefB;
         p.code[kDot_].b = 5;
       },
       "operand b (lhs) names ref 5 but the program has 1 refs"},
      {"dot ref operand too small",
       [](Program& p) {
         p.code[kDot_].aux = kOperandRefC;
         p.code[kDot_].c = 1;
         p.num_refs = 2;
         p.ref_sizes = {256, 32};
       },
       "operand c (rhs) needs 64 bytes but ref 1 has 32"},
      {"dot ref of unknown size",
       [](Program& p) {
         p.code[kDot_].aux = kOperandRefB;
         p.code[kDot_].b = 0;
         p.ref_sizes.clear();
       },
       "names ref 0, whose size is unknown"},
      {"dot dst ref is a source ref",
       [](Program& p) {
         p.code[kDot_].aux = kOperandRefA | kOperandRefC;
         p.code[kDot_].a = 0;
         p.code[kDot_].c = 0;
       },
       "destination a (dst) and source c (rhs) are both ref 0"},
      {"dot unknown aux bit", [](Program& p) { p.code[kDot_].aux = 8; },
       "aux = 8 sets bits other than the operand-ref bits 7"},
      {"store from the ref it writes",
       [](Program& p) {
         p.code[kStore].aux = kOperandRefB;
         p.code[kStore].b = 0;
       },
       "destination access and source b (src) are both ref 0"},
      {"store from a missing ref",
       [](Program& p) {
         p.code[kStore].aux = kOperandRefB;
         p.code[kStore].b = 1;
       },
       "instruction 12 (STORE): operand b (src) names ref 1"},
      {"elementwise ref source missing",
       [](Program& p) {
         p.code[kAddVV].aux = kOperandRefC;
         p.code[kAddVV].c = 3;
       },
       "instruction 0 (ADD_F32_VV): operand c (rhs) names ref 3"},
      {"elementwise ref source too small",
       [](Program& p) {
         p.code[kExpV].aux = kOperandRefB;
         p.code[kExpV].b = 0;
         p.ref_sizes = {32};
         p.code[kLoad].op = Op::RETURN;  // its access needs 64 bytes
         p.code[kStore].op = Op::RETURN;
       },
       "instruction 4 (EXP_F32_V): operand b (src) needs 64 bytes but ref 0 "
       "has 32"},
      {"scalar operand of _VS as a ref",
       [](Program& p) { p.code[kMulVS].aux = kOperandRefC; },
       "instruction 1 (MUL_F32_VS): aux = 4 sets bits other than"},
      {"scalar op with a ref bit",
       [](Program& p) { p.code[kAddSS].aux = kOperandRefB; },
       "instruction 3 (ADD_S32_SS): aux = 2 sets bits other than"},
      {"load with a ref bit", [](Program& p) { p.code[kLoad].aux = 2; },
       "instruction 11 (LOAD): aux = 2 sets bits other than"},
      {"grid dst outside", [](Program& p) { p.code[kProgramId].a = kFrame; },
       "instruction 15 (PROGRAM_ID)"},
      // Fused multiply-add: three block sources, each in the frame and
      // disjoint from the destination or exactly in place.
      {"fma dst outside", [](Program& p) { p.code[kFma].a = kFrame - 32; },
       "instruction 20 (FMA_F32): operand a (dst): 64 bytes"},
      {"fma x outside", [](Program& p) { p.code[kFma].b = kFrame - 4; },
       "instruction 20 (FMA_F32): operand b (x)"},
      {"fma y misaligned", [](Program& p) { p.code[kFma].c = kC + 2; },
       "operand c (y) at frame offset 194 is not aligned"},
      {"fma z outside", [](Program& p) { p.code[kFma].d = 0xfffffff0u; },
       "operand d (z)"},
      {"fma writes constants", [](Program& p) { p.code[kFma].a = 0; },
       "inside the constants"},
      {"fma partial overlap", [](Program& p) { p.code[kFma].d = kA + 4; },
       "overlaps source d (z)"},
      {"fma n too big", [](Program& p) { p.code[kFma].n = 1000; },
       "are outside the frame"},
      {"fma ref bit", [](Program& p) { p.code[kFma].aux = kOperandRefB; },
       "instruction 20 (FMA_F32): aux = 2 sets bits other than"},
      // Control flow.
      {"branch cond outside", [](Program& p) { p.code[kBranch].a = kFrame; },
       "operand a (cond"},
      {"branch target", [](Program& p) { p.code[kBranch].b = 1000; },
       "instruction 17 (JUMP_IF_FALSE): jump target b = 1000 is past the code"},
      {"jump target", [](Program& p) { p.code[kJump].a = kReturn + 1; },
       "instruction 18 (JUMP): jump target a = 22"},
      {"no return",
       [](Program& p) {
         p.code[kReturn] = Instr{Op::MOV_B4, 0, kS, kS, 0, 0, 0};
       },
       "runs past the end of the code here (no RETURN)"},
      // Functions and tables.
      {"entry pc", [](Program& p) { p.functions[0].entry_pc = 99; },
       "function 0 'kernel': entry_pc 99 is past the code"},
      {"param slot outside",
       [](Program& p) { p.functions[0].param_slots = {kFrame}; },
       "param slot 0 at frame offset 512"},
      {"param slot in constants",
       [](Program& p) { p.functions[0].param_slots = {4}; },
       "is inside the constants"},
      {"result slot misaligned",
       [](Program& p) { p.functions[0].result_slots = {kRed + 2}; },
       "result slot 0"},
      {"debug index size", [](Program& p) { p.debug_index.pop_back(); },
       "debug_index has 21 entries for 22 instructions"},
      {"debug index entry", [](Program& p) { p.debug_index[3] = 999; },
       "debug_index[3] = 999"},
      {"constants too big", [](Program& p) { p.constants.resize(kFrame + 1); },
       "do not fit in the frame"},
      {"ref sizes count",
       [](Program& p) {
         p.ref_sizes = {1, 2};
       },
       "ref_sizes has 2 entries for 1 refs"},
  };
  for (const Corruption& c : cases) {
    Program p = SampleProgram();
    c.apply(p);
    const absl::Status s = Verify(p);
    EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument)
        << c.what << ": " << s;
    EXPECT_NE(s.message().find(c.expected), std::string::npos)
        << c.what << ": got \"" << s.message() << "\", wanted \"" << c.expected
        << "\"";
  }
}

TEST(VerifierTest, ZeroSizedOperandsAreFine) {
  Program p = SampleProgram();
  p.code[kAddVV].n = 0;
  p.code[kAddVV].a = kFrame;  // nothing is written
  EXPECT_TRUE(Verify(p).ok()) << Verify(p);
}

TEST(VerifierTest, InPlaceElementwiseIsAllowed) {
  Program p = SampleProgram();
  p.code[kAddVV].a = kB;  // dst == lhs
  EXPECT_TRUE(Verify(p).ok()) << Verify(p);
  p.code[kReduce].a = kA;  // reduction in place
  EXPECT_TRUE(Verify(p).ok()) << Verify(p);
  p.code[kFma].a = kB;  // fma into its x
  EXPECT_TRUE(Verify(p).ok()) << Verify(p);
  p.code[kFma].a = kC;  // fma into its y
  EXPECT_TRUE(Verify(p).ok()) << Verify(p);
}

TEST(VerifierTest, WholeRefOperandsAreAccepted) {
  Program p = SampleProgram();
  p.code[kDot_].aux = kOperandRefB | kOperandRefC;  // both read ref 0
  p.code[kDot_].b = 0;
  p.code[kDot_].c = 0;
  EXPECT_TRUE(Verify(p).ok()) << Verify(p);
  p.num_refs = 2;
  p.ref_sizes = {256, 64};
  p.code[kDot_].aux = kOperandRefA | kOperandRefB;  // ref 0 @ frame -> ref 1
  p.code[kDot_].a = 1;
  EXPECT_TRUE(Verify(p).ok()) << Verify(p);
  p.code[kStore].aux = kOperandRefB;  // ref 1 -> a region of ref 0
  p.code[kStore].b = 1;
  EXPECT_TRUE(Verify(p).ok()) << Verify(p);
  p.code[kAddVV].aux = kOperandRefB | kOperandRefC;  // ref 1 + ref 1
  p.code[kAddVV].b = 1;
  p.code[kAddVV].c = 1;
  p.code[kSubSV].aux = kOperandRefC;  // 2 - ref 0
  p.code[kSubSV].c = 0;
  EXPECT_TRUE(Verify(p).ok()) << Verify(p);
}

TEST(VerifierTest, ClampedAccessNeedsNoStaticBounds) {
  Program p = SampleProgram();
  p.accesses[0].clamp = 1;
  p.accesses[0].dims[1].start = 100;  // clamped at run time
  EXPECT_TRUE(Verify(p).ok()) << Verify(p);
}

// Mutates random fields of the sample program. Verify must not crash, and
// whatever it accepts must run inside its buffers (run this under ASan to
// see it: frame and ref are exactly as large as the program says).
// GATHER and SORT operands: a gather reads d source elements and n S32
// indices, writes n elements; an argsort reads and writes c*d*n elements;
// neither writes over what it reads.
TEST(VerifierTest, GatherAndSortOperandsAreChecked) {
  auto program = [](Instr in) {
    Program p;
    p.code = {in, Instr{Op::RETURN, 0, 0, 0, 0, 0, 0}};
    p.functions = {Function{"k", 0, {}, {}}};
    p.frame_size = 256;
    return p;
  };
  // dst 128, src 0 (16 u32), indices 64 (8 s32).
  EXPECT_TRUE(Verify(program({Op::GATHER_B4, 0, 128, 0, 64, 16, 8})).ok());
  const Instr bad[] = {
      {Op::GATHER_B4, 0, 128, 0, 64, 0, 8},    // an empty source
      {Op::GATHER_B4, 0, 128, 200, 64, 16, 8}, // source past the frame
      {Op::GATHER_B4, 0, 60, 0, 64, 16, 8},    // dst over the indices
      {Op::GATHER_B4, 0, 32, 0, 64, 16, 8},    // dst over the source
      {Op::GATHER_B4, 0, 128, 0, 64, 16, 40},  // indices past the frame
      {Op::ARGSORT_F32, 0, 0, 32, 1, 16, 1},   // dst over src
      {Op::ARGSORT_F32, 0, 200, 0, 1, 16, 1},  // dst past the frame
  };
  for (const Instr& in : bad) {
    EXPECT_FALSE(Verify(program(in)).ok()) << Info(in.op).name << " a=" << in.a;
  }
  EXPECT_TRUE(Verify(program({Op::ARGSORT_U32, 0, 64, 0, 2, 4, 2})).ok());
}

TEST(VerifierTest, MutationsNeverCrash) {
  std::mt19937 rng(1234);
  const Program base = SampleProgram();
  int accepted = 0;
  for (int iter = 0; iter < 20000; ++iter) {
    Program p = base;
    const int mutations = 1 + rng() % 3;
    for (int m = 0; m < mutations; ++m) {
      const uint32_t pick = rng() % 100;
      auto small = [&]() -> int64_t {
        switch (rng() % 4) {
          case 0:
            return static_cast<int64_t>(rng() % 8);
          case 1:
            return static_cast<int64_t>(rng() % 600);
          case 2:
            return -static_cast<int64_t>(rng() % 8);
          default:
            return static_cast<int64_t>(static_cast<int32_t>(rng()));
        }
      };
      if (pick < 60) {
        Instr& in = p.code[rng() % p.code.size()];
        switch (rng() % 7) {
          case 0:
            in.a = static_cast<uint32_t>(small());
            break;
          case 1:
            in.b = static_cast<uint32_t>(small());
            break;
          case 2:
            in.c = static_cast<uint32_t>(small());
            break;
          case 3:
            in.d = static_cast<uint32_t>(small());
            break;
          case 4:
            in.n = static_cast<uint32_t>(small());
            break;
          case 5:
            in.aux = static_cast<uint16_t>(small());
            break;
          default:
            in.op = static_cast<Op>(rng() % (kNumOps + 5));
            break;
        }
      } else if (pick < 80) {
        LayoutDesc& l = p.layouts[rng() % p.layouts.size()];
        const int i = rng() % kMaxRank;
        switch (rng() % 5) {
          case 0:
            l.shape[i] = small();
            break;
          case 1:
            l.strides[i] = small();
            break;
          case 2:
            l.offset = small();
            break;
          case 3:
            l.rank = static_cast<int32_t>(small());
            break;
          default:
            l.elem_size = static_cast<int32_t>(small());
            break;
        }
      } else {
        AccessDesc& a = p.accesses[0];
        AccessDim& d = a.dims[rng() % kMaxRank];
        switch (rng() % 9) {
          case 0:
            d.extent = small();
            break;
          case 1:
            d.start = small();
            break;
          case 2:
            d.start_slot = static_cast<int32_t>(small());
            break;
          case 3:
            d.size = small();
            break;
          case 4:
            d.stride = small();
            break;
          case 5:
            d.squeezed = static_cast<int32_t>(small());
            break;
          case 6:
            a.rank = static_cast<uint8_t>(small());
            break;
          case 7:
            a.clamp = static_cast<uint8_t>(small());
            break;
          default:
            a.base_kind = static_cast<AccessBase>(rng() % 3);
            a.base = static_cast<int32_t>(small());
            break;
        }
      }
    }
    if (!Verify(p).ok()) continue;
    // Run only programs without backward jumps, which always terminate.
    bool forward_only = true;
    for (size_t pc = 0; pc < p.code.size(); ++pc) {
      const Format f = Info(p.code[pc].op).format;
      const uint32_t target = f == Format::JUMP     ? p.code[pc].a
                              : f == Format::BRANCH ? p.code[pc].b
                                                    : UINT32_MAX;
      if (target != UINT32_MAX && target <= pc) forward_only = false;
    }
    if (!forward_only) continue;
    ++accepted;
    Buffer frame(p.frame_size), ref(static_cast<size_t>(p.ref_sizes[0]));
    InitFrame(p, frame.data());
    frame.Set<int32_t>(kIdx, static_cast<int32_t>(rng() % 9) - 4);
    uint8_t* refs[] = {ref.data()};
    const int32_t ids[] = {0}, nums[] = {1};
    ExecContext ctx{frame.data(), refs, ids, nums, 1};
    (void)Execute(p, 0, ctx);
  }
  EXPECT_GT(accepted, 100);
}

}  // namespace
}  // namespace pallasvm::vm
