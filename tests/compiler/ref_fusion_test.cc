// Ref fusion (compiler/ref_fusion.cc) on hand-built code with provisional
// slots, as the lowering emits it: the blocked-matmul step becomes one
// DOT_ADD_F32 on refs, and every condition that would make a rewrite
// observable (another use of a value, a write or read of the ref in
// between, a jump into the window, a dynamic start) leaves the code alone.
#include "compiler/ref_fusion.h"

#include <cstdint>
#include <vector>

#include "gtest/gtest.h"
#include "tests/vm/test_program.h"
#include "vm/interpreter.h"

namespace pallasvm::compiler {
namespace {

using vm::AccessBase;
using vm::Op;
using vm::test_program::Access;
using vm::test_program::Assembler;
using vm::test_program::Dim;

// Refs 0 (x), 1 (y), 2 (o), 3 (acc): f32[8, 8]. Values: one 256-byte
// allocation per 1024 bytes of provisional frame, so slot / 1024 names it.
constexpr uint32_t kV = 1024, kX = 2048, kY = 3072, kD = 4096, kS = 5120,
                   kT = 6144, kFrame = 8192;

int AllocationOf(uint32_t slot) {
  return slot >= 1024 && slot < kFrame ? static_cast<int>(slot / 1024) : -1;
}

uint32_t Whole(Assembler& as, int ref) {
  return as.AddAccess(
      Access(AccessBase::REF, ref, 4, {Dim(8, 0, 8), Dim(8, 0, 8)}));
}

// The lowering of `acc[...] += dot(x[...], y[...]); o[...] = acc[...]`.
struct MatmulStep {
  Assembler as;
  uint32_t load_acc, load_x, load_y, dot, add, store_acc, load_t, store_o;
  MatmulStep() {
    const uint32_t mkn = as.AddLayout(4, {8, 8, 8});
    load_acc = as.Emit(Op::LOAD, kV, 0, 0, Whole(as, 3));
    load_x = as.Emit(Op::LOAD, kX, 0, 0, Whole(as, 0));
    load_y = as.Emit(Op::LOAD, kY, 0, 0, Whole(as, 1));
    dot = as.Emit(Op::DOT_F32, kD, kX, kY, mkn);
    add = as.Emit(Op::ADD_F32_VV, kS, kV, kD, 0, 64);
    store_acc = as.Emit(Op::STORE, 0, kS, 0, Whole(as, 3));
    load_t = as.Emit(Op::LOAD, kT, 0, 0, Whole(as, 3));
    store_o = as.Emit(Op::STORE, 0, kT, 0, Whole(as, 2));
    as.Emit(Op::RETURN);
    as.AddFunction("kernel", 0);
    vm::Program& p = as.program();
    p.frame_size = kFrame;
    p.num_refs = 4;
    p.ref_sizes = {256, 256, 256, 256};
  }
  vm::Program Fused() {
    vm::Program p = as.program();
    FuseRefAccesses(p, AllocationOf);
    return p;
  }
};

TEST(RefFusion, MatmulStepBecomesOneDotAddOnRefsAndACopy) {
  MatmulStep step;
  const vm::Program p = step.Fused();
  ASSERT_EQ(p.code.size(), 3u) << vm::Disassemble(p);
  const vm::Instr& dot = p.code[0];
  EXPECT_EQ(dot.op, Op::DOT_ADD_F32);
  EXPECT_EQ(dot.aux, vm::kOperandRefA | vm::kOperandRefB | vm::kOperandRefC);
  EXPECT_EQ(dot.a, 3u);
  EXPECT_EQ(dot.b, 0u);
  EXPECT_EQ(dot.c, 1u);
  const vm::Instr& copy = p.code[1];
  EXPECT_EQ(copy.op, Op::STORE);
  EXPECT_EQ(copy.aux, vm::kOperandRefB);
  EXPECT_EQ(copy.b, 3u);
  EXPECT_EQ(p.accesses[copy.d].base, 2);
  EXPECT_EQ(p.code[2].op, Op::RETURN);
  EXPECT_EQ(p.debug_index.size(), 3u);
  EXPECT_TRUE(vm::Verify(p).ok()) << vm::Verify(p);
}

TEST(RefFusion, JumpsIntoRemovedCodeLandOnItsSuccessor) {
  MatmulStep step;
  vm::Program& p = step.as.program();
  // A `pl.when` before the step jumps to its first LOAD.
  p.code.insert(p.code.begin(), vm::Instr{Op::JUMP, 0, 1, 0, 0, 0, 0});
  p.debug_index.insert(p.debug_index.begin(), 0);
  const vm::Program fused = step.Fused();
  ASSERT_EQ(fused.code.size(), 4u) << vm::Disassemble(fused);
  EXPECT_EQ(fused.code[0].op, Op::JUMP);
  EXPECT_EQ(fused.code[0].a, 1u);
  EXPECT_EQ(fused.code[1].op, Op::DOT_ADD_F32);
}

TEST(RefFusion, AccumulatorReadBeforeTheStoreIsNotFused) {
  MatmulStep step;
  // o := acc's old value, between the ADD and the STORE into acc.
  vm::Program& p = step.as.program();
  std::swap(p.code[step.store_acc], p.code[step.load_t]);
  const vm::Program fused = step.Fused();
  for (const vm::Instr& in : fused.code) EXPECT_NE(in.op, Op::DOT_ADD_F32);
  // x and y are still read in place.
  bool forwarded = false;
  for (const vm::Instr& in : fused.code) {
    forwarded |=
        in.op == Op::DOT_F32 && in.aux == (vm::kOperandRefB | vm::kOperandRefC);
  }
  EXPECT_TRUE(forwarded) << vm::Disassemble(fused);
}

TEST(RefFusion, ProductUsedElsewhereIsNotFused) {
  MatmulStep step;
  vm::Program& p = step.as.program();
  p.code[step.store_o].b = kD;  // o := the product
  const vm::Program fused = step.Fused();
  for (const vm::Instr& in : fused.code) EXPECT_NE(in.op, Op::DOT_ADD_F32);
}

TEST(RefFusion, ElementwiseSourcesAreForwarded) {
  MatmulStep step;
  vm::Program& p = step.as.program();
  // exp(x) into o as well: x's LOAD feeds the DOT and the EXP.
  p.code.insert(p.code.begin() + step.store_o,
                vm::Instr{Op::EXP_F32_V, 0, kT + 512, kX, 0, 0, 64});
  p.debug_index.insert(p.debug_index.begin() + step.store_o, 0);
  const vm::Program fused = step.Fused();
  bool exp_reads_ref = false;
  for (const vm::Instr& in : fused.code) {
    EXPECT_FALSE(in.op == Op::LOAD && in.a == kX) << vm::Disassemble(fused);
    exp_reads_ref |=
        in.op == Op::EXP_F32_V && in.aux == vm::kOperandRefB && in.b == 0;
  }
  EXPECT_TRUE(exp_reads_ref) << vm::Disassemble(fused);
}

TEST(RefFusion, RefWrittenBeforeItsUseIsNotForwarded) {
  MatmulStep step;
  vm::Program& p = step.as.program();
  // A store into x between its LOAD and the DOT: the DOT must see x's old
  // value.
  p.code.insert(p.code.begin() + step.dot,
                vm::Instr{Op::STORE, 0, 0, kV, 0, Whole(step.as, 0), 0});
  p.debug_index.insert(p.debug_index.begin() + step.dot, 0);
  const vm::Program fused = step.Fused();
  bool x_loaded = false;
  for (const vm::Instr& in : fused.code) {
    x_loaded |= in.op == Op::LOAD && in.a == kX;
    if (vm::Info(in.op).format == vm::Format::DOT) {
      EXPECT_FALSE(in.aux & vm::kOperandRefB) << vm::Disassemble(fused);
    }
  }
  EXPECT_TRUE(x_loaded);
}

TEST(RefFusion, ValueWithAnotherUseIsNotForwarded) {
  MatmulStep step;
  vm::Program& p = step.as.program();
  p.code.insert(p.code.begin() + step.store_o,
                vm::Instr{Op::REDUCE_SUM_F32, 0, kT, kX, 8, 8, 1});
  p.debug_index.insert(p.debug_index.begin() + step.store_o, 0);
  const vm::Program fused = step.Fused();
  bool x_loaded = false;
  for (const vm::Instr& in : fused.code) {
    x_loaded |= in.op == Op::LOAD && in.a == kX;
  }
  EXPECT_TRUE(x_loaded) << vm::Disassemble(fused);
}

TEST(RefFusion, JumpIntoTheWindowBlocksRewrites) {
  MatmulStep step;
  vm::Program& p = step.as.program();
  // Something jumps to the ADD: the accumulate rewrite would skip the DOT.
  p.code.push_back(vm::Instr{Op::JUMP, 0, step.add, 0, 0, 0, 0});
  p.debug_index.push_back(0);
  const vm::Program fused = step.Fused();
  for (const vm::Instr& in : fused.code) EXPECT_NE(in.op, Op::DOT_ADD_F32);
}

TEST(RefFusion, DynamicStartIsNotWhole) {
  MatmulStep step;
  vm::Program& p = step.as.program();
  p.accesses[p.code[step.load_x].d].dims[0].start_slot = 0;
  const vm::Program fused = step.Fused();
  bool x_loaded = false;
  for (const vm::Instr& in : fused.code) {
    x_loaded |= in.op == Op::LOAD && in.a == kX;
  }
  EXPECT_TRUE(x_loaded) << vm::Disassemble(fused);
}

}  // namespace
}  // namespace pallasvm::compiler
