// The dispatch loop (vm/interpreter.cc) on hand-built programs: scalar
// control flow, ref accesses with dynamic starts and their errors, strided
// copies, reductions over each axis, matmuls, and the remaining opcodes.
// Every program is verified before it runs, so these double as positive
// verifier cases.
#include "vm/interpreter.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <random>
#include <string>
#include <vector>

#include "absl/strings/match.h"
#include "tests/vm/test_program.h"
#include "vm/kernels/convert.h"

namespace pallasvm::vm {
namespace {

using test_program::Access;
using test_program::Assembler;
using test_program::Buffer;
using test_program::Dim;

constexpr float kNaN = std::numeric_limits<float>::quiet_NaN();

// Verifies, initialises the frame and runs function 0.
absl::Status VerifyAndRun(const Program& p, Buffer& frame,
                          std::vector<uint8_t*> refs = {},
                          std::vector<int32_t> program_ids = {},
                          std::vector<int32_t> num_programs = {}) {
  if (absl::Status s = Verify(p); !s.ok()) return s;
  InitFrame(p, frame.data());
  ExecContext ctx;
  ctx.frame = frame.data();
  ctx.refs = refs.data();
  ctx.program_ids = program_ids.data();
  ctx.num_programs = num_programs.data();
  ctx.grid_rank = static_cast<int32_t>(program_ids.size());
  return Execute(p, 0, ctx);
}

// A loop whose condition never turns false: i = 0; while (0 < 1) ++i.
Program EndlessLoop(uint32_t* counter) {
  Assembler as;
  const uint32_t zero = as.Constant<int32_t>(0);
  const uint32_t one = as.Constant<int32_t>(1);
  const uint32_t i = 16, cond = 20;
  as.Emit(Op::MOV_B4, i, zero);
  const uint32_t head = as.Emit(Op::LT_S32_SS, cond, zero, one);
  const uint32_t branch = as.Emit(Op::JUMP_IF_FALSE, cond, 0);
  as.Emit(Op::ADD_S32_SS, i, i, one);
  as.Emit(Op::JUMP, head);
  const uint32_t exit = as.Emit(Op::RETURN);
  as.program().code[branch].b = exit;
  as.AddFunction("endless", 0, {}, {i});
  as.program().frame_size = 32;
  *counter = i;
  return as.program();
}

TEST(InterpreterTest, AnEndlessLoopStopsAtItsDeadline) {
  uint32_t counter;
  const Program p = EndlessLoop(&counter);
  ASSERT_TRUE(Verify(p).ok());
  Buffer frame(32);
  InitFrame(p, frame.data());
  Interrupt interrupt(Interrupt::Clock::now() + std::chrono::milliseconds(50),
                      nullptr, std::chrono::milliseconds(50));
  ExecContext ctx;
  ctx.frame = frame.data();
  ctx.interrupt = &interrupt;
  absl::Status s = Execute(p, 0, ctx);
  EXPECT_EQ(s.code(), absl::StatusCode::kDeadlineExceeded) << s;
  // Named after the back edge (the JUMP at pc 4, test.py line 5).
  EXPECT_EQ(s.message(),
            "deadline exceeded (timeout of 0.05 s) at JUMP (test.py:5 in "
            "test_kernel)");
  EXPECT_GT(frame.Get<int32_t>(counter), 1000);
}

TEST(InterpreterTest, AnEndlessLoopStopsWhenCancelled) {
  uint32_t counter;
  const Program p = EndlessLoop(&counter);
  Buffer frame(32);
  InitFrame(p, frame.data());
  std::atomic<bool> cancel{true};
  Interrupt interrupt(Interrupt::Clock::time_point::max(), &cancel);
  ExecContext ctx;
  ctx.frame = frame.data();
  ctx.interrupt = &interrupt;
  absl::Status s = Execute(p, 0, ctx);
  EXPECT_EQ(s.code(), absl::StatusCode::kCancelled) << s;
  EXPECT_TRUE(absl::StrContains(s.message(), "cancelled at JUMP")) << s;
}

TEST(InterpreterTest, ScalarLoopSums) {
  // s = 0; for (i = 0; i < 10; ++i) s += i;
  Assembler as;
  const uint32_t zero = as.Constant<int32_t>(0);
  const uint32_t one = as.Constant<int32_t>(1);
  const uint32_t ten = as.Constant<int32_t>(10);
  const uint32_t i = 16, s = 20, cond = 24;
  as.Emit(Op::MOV_B4, i, zero);
  as.Emit(Op::MOV_B4, s, zero);
  const uint32_t head = as.Emit(Op::LT_S32_SS, cond, i, ten);
  const uint32_t branch = as.Emit(Op::JUMP_IF_FALSE, cond, 0);
  as.Emit(Op::ADD_S32_SS, s, s, i);
  as.Emit(Op::ADD_S32_SS, i, i, one);
  as.Emit(Op::JUMP, head);
  const uint32_t exit = as.Emit(Op::RETURN);
  as.program().code[branch].b = exit;
  as.AddFunction("sum", 0, {}, {s});
  as.program().frame_size = 32;
  Buffer frame(32);
  ASSERT_TRUE(VerifyAndRun(as.program(), frame).ok());
  EXPECT_EQ(frame.Get<int32_t>(s), 45);
  EXPECT_EQ(frame.Get<int32_t>(i), 10);
}

TEST(InterpreterTest, JumpIfTrueAndFunctionEntry) {
  // Function 1 starts mid-code: r = x > 0 ? 1.0 : -1.0 via JUMP_IF_TRUE.
  Assembler as;
  const uint32_t zero = as.Constant<float>(0.f);
  const uint32_t pos = as.Constant<float>(1.f);
  const uint32_t neg = as.Constant<float>(-1.f);
  const uint32_t x = 16, r = 20, cond = 24;
  as.Emit(Op::RETURN);  // function 0: nothing
  const uint32_t entry = as.Emit(Op::GT_F32_SS, cond, x, zero);
  const uint32_t branch = as.Emit(Op::JUMP_IF_TRUE, cond, 0);
  as.Emit(Op::MOV_B4, r, neg);
  as.Emit(Op::RETURN);
  const uint32_t then = as.Emit(Op::MOV_B4, r, pos);
  as.Emit(Op::RETURN);
  as.program().code[branch].b = then;
  as.AddFunction("nothing", 0);
  as.AddFunction("sign", entry, {x}, {r});
  as.program().frame_size = 32;
  ASSERT_TRUE(Verify(as.program()).ok()) << Verify(as.program());
  Buffer frame(32);
  InitFrame(as.program(), frame.data());
  ExecContext ctx;
  ctx.frame = frame.data();
  for (float v : {3.f, -2.f, kNaN}) {
    frame.Set<float>(x, v);
    ASSERT_TRUE(Execute(as.program(), 1, ctx).ok());
    EXPECT_EQ(frame.Get<float>(r), v > 0 ? 1.f : -1.f) << v;
  }
  EXPECT_FALSE(Execute(as.program(), 2, ctx).ok());
}

TEST(InterpreterTest, GridQueries) {
  Assembler as;
  as.Emit(Op::PROGRAM_ID, 0, 1);
  as.Emit(Op::NUM_PROGRAMS, 4, 0);
  as.Emit(Op::RETURN);
  as.AddFunction("grid", 0);
  as.program().frame_size = 8;
  Buffer frame(8);
  ASSERT_TRUE(VerifyAndRun(as.program(), frame, {}, {3, 5}, {4, 6}).ok());
  EXPECT_EQ(frame.Get<int32_t>(0), 5);
  EXPECT_EQ(frame.Get<int32_t>(4), 4);
  // Asking for an axis the grid does not have is an error, not a crash.
  absl::Status s = VerifyAndRun(as.program(), frame, {}, {3}, {4});
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(s.message().find("grid axis 1"), std::string::npos) << s;
}

// A [8, 128] f32 ref; rows [start, start+2) are loaded, incremented and
// stored at rows [start2, start2+2).
struct RowCopyProgram {
  Program program;
  uint32_t start = 0, start2 = 4;  // S32 slots
  uint32_t value = 64, one = 0;
};

RowCopyProgram MakeRowCopy() {
  RowCopyProgram r;
  Assembler as;
  r.one = as.Constant<float>(1.f);
  r.start = 8;
  r.start2 = 12;
  r.value = 64;
  const uint32_t get_loc = as.AddLoc({"get", "kernel.py", 42, "my_kernel"});
  const uint32_t swap_loc = as.AddLoc({"swap", "kernel.py", 43, "my_kernel"});
  const uint32_t load = as.AddAccess(Access(
      AccessBase::REF, 0, 4,
      {Dim(8, 0, 2, 1, static_cast<int32_t>(r.start)), Dim(128, 0, 128)}));
  const uint32_t store = as.AddAccess(Access(
      AccessBase::REF, 0, 4,
      {Dim(8, 0, 2, 1, static_cast<int32_t>(r.start2)), Dim(128, 0, 128)}));
  as.Emit(Op::LOAD, r.value, 0, 0, load, 0, 0, get_loc);
  as.Emit(Op::ADD_F32_VS, r.value, r.value, r.one, 0, 256);
  as.Emit(Op::STORE, 0, r.value, 0, store, 0, 0, swap_loc);
  as.Emit(Op::RETURN);
  as.AddFunction("my_kernel", 0, {r.start, r.start2});
  as.program().frame_size = r.value + 256 * 4;
  as.program().num_refs = 1;
  as.program().ref_sizes = {8 * 128 * 4};
  r.program = as.program();
  return r;
}

TEST(InterpreterTest, LoadStoreWithDynamicStarts) {
  RowCopyProgram rc = MakeRowCopy();
  Buffer frame(rc.program.frame_size);
  Buffer ref(8 * 128 * 4);
  for (int i = 0; i < 8 * 128; ++i) ref.As<float>(0)[i] = float(i);
  frame.Set<int32_t>(rc.start, 3);
  frame.Set<int32_t>(rc.start2, 6);
  ASSERT_TRUE(VerifyAndRun(rc.program, frame, {ref.data()}).ok());
  for (int row = 0; row < 8; ++row) {
    for (int col = 0; col < 128; col += 31) {
      const float original = float(row * 128 + col);
      const float want =
          row >= 6 ? float((row - 3) * 128 + col) + 1.f : original;
      EXPECT_EQ(ref.As<float>(0)[row * 128 + col], want) << row << "," << col;
    }
  }
}

TEST(InterpreterTest, OutOfBoundsStartNamesTheSourceLine) {
  RowCopyProgram rc = MakeRowCopy();
  Buffer frame(rc.program.frame_size);
  Buffer ref(8 * 128 * 4);
  frame.Set<int32_t>(rc.start, 7);  // rows 7 and 8 of 8
  absl::Status s = VerifyAndRun(rc.program, frame, {ref.data()});
  ASSERT_EQ(s.code(), absl::StatusCode::kOutOfRange) << s;
  EXPECT_EQ(s.message(),
            "Out-of-bounds read of ref 0 (dims [8, 128]): dim 0 start 7 size "
            "2 (needs start + (size-1)*stride < 8) at get (kernel.py:42 in "
            "my_kernel)");

  frame.Set<int32_t>(rc.start, 0);
  frame.Set<int32_t>(rc.start2, -1);
  s = VerifyAndRun(rc.program, frame, {ref.data()});
  ASSERT_EQ(s.code(), absl::StatusCode::kOutOfRange) << s;
  EXPECT_NE(s.message().find("Out-of-bounds write of ref 0"), std::string::npos)
      << s;
  EXPECT_NE(s.message().find("start -1"), std::string::npos) << s;
  EXPECT_NE(s.message().find("kernel.py:43"), std::string::npos) << s;

  // Without debug info the error still says where.
  rc.program.debug_index.clear();
  s = VerifyAndRun(rc.program, frame, {ref.data()});
  EXPECT_NE(s.message().find("at pc 2"), std::string::npos) << s;
}

TEST(InterpreterTest, ClampedStridedSqueezedAccesses) {
  // ref: [6, 10] s32 holding r*10 + c.
  Assembler as;
  const uint32_t hundred = as.Constant<int32_t>(100);
  const uint32_t start = 16, out = 64, out2 = 128, out3 = 192;
  // dynamic_slice semantics: start 12 clamps to 6 - 3 = 3.
  const uint32_t clamped = as.AddAccess(
      Access(AccessBase::REF, 0, 4,
             {Dim(6, 0, 3, 1, static_cast<int32_t>(start)), Dim(10, 2, 2)},
             /*clamp=*/true));
  // Row 4 squeezed, columns 1, 4, 7.
  const uint32_t strided = as.AddAccess(Access(
      AccessBase::REF, 0, 4, {Dim(6, 4, 1, 1, -1, true), Dim(10, 1, 3, 3)}));
  as.Emit(Op::LOAD, out, 0, 0, clamped);
  as.Emit(Op::LOAD, out2, 0, 0, strided);
  // Write the strided values back doubled, then add 100 to them.
  as.Emit(Op::ADD_S32_VV, out3, out2, out2, 0, 3);
  as.Emit(Op::STORE, 0, out3, 0, strided);
  const uint32_t hundred_vec = 224;
  as.Emit(Op::FILL_B4, hundred_vec, hundred, 0, 0, 3);
  as.Emit(Op::ADDUPDATE_S32, 0, hundred_vec, 0, strided);
  as.Emit(Op::RETURN);
  as.AddFunction("k", 0);
  as.program().frame_size = 256;
  as.program().num_refs = 1;
  Buffer frame(256);
  Buffer ref(60 * 4);
  for (int i = 0; i < 60; ++i) ref.As<int32_t>(0)[i] = (i / 10) * 10 + i % 10;
  frame.Set<int32_t>(start, 12);
  ASSERT_TRUE(VerifyAndRun(as.program(), frame, {ref.data()}).ok());
  const int32_t* o = frame.As<int32_t>(out);
  EXPECT_EQ(std::vector<int32_t>(o, o + 6),
            (std::vector<int32_t>{32, 33, 42, 43, 52, 53}));
  const int32_t* o2 = frame.As<int32_t>(out2);
  EXPECT_EQ(std::vector<int32_t>(o2, o2 + 3),
            (std::vector<int32_t>{41, 44, 47}));
  EXPECT_EQ(ref.As<int32_t>(0)[41], 182);
  EXPECT_EQ(ref.As<int32_t>(0)[44], 188);
  EXPECT_EQ(ref.As<int32_t>(0)[47], 194);
  EXPECT_EQ(ref.As<int32_t>(0)[42], 42);
  // Negative starts clamp to 0.
  frame.Set<int32_t>(start, -5);
  ASSERT_TRUE(VerifyAndRun(as.program(), frame, {ref.data()}).ok());
  EXPECT_EQ(frame.As<int32_t>(out)[0], 2);
}

TEST(InterpreterTest, AddUpdateF32AndBf16) {
  Assembler as;
  const uint32_t vf = 64, vb = 128;
  const uint32_t acc_f =
      as.AddAccess(Access(AccessBase::REF, 0, 4, {Dim(4, 0, 4)}));
  const uint32_t acc_b =
      as.AddAccess(Access(AccessBase::REF, 1, 2, {Dim(4, 0, 4)}));
  as.Emit(Op::ADDUPDATE_F32, 0, vf, 0, acc_f);
  as.Emit(Op::ADDUPDATE_BF16, 0, vb, 0, acc_b);
  as.Emit(Op::RETURN);
  as.AddFunction("k", 0);
  as.program().frame_size = 192;
  as.program().num_refs = 2;
  Buffer frame(192), rf(16), rb(8);
  for (int i = 0; i < 4; ++i) {
    frame.As<float>(vf)[i] = 0.5f * i;
    rf.As<float>(0)[i] = 10.f;
    frame.As<uint16_t>(vb)[i] = F32ToBf16(1.f / 256.f);  // below half an ulp
    rb.As<uint16_t>(0)[i] = F32ToBf16(i == 0 ? 1.f : 3.f);
  }
  ASSERT_TRUE(VerifyAndRun(as.program(), frame, {rf.data(), rb.data()}).ok());
  EXPECT_EQ(rf.As<float>(0)[3], 11.5f);
  // 1 + 2^-8 is a tie between 1 and 1 + 2^-7: rounds to even, 1.
  EXPECT_EQ(Bf16ToF32(rb.As<uint16_t>(0)[0]), 1.f);
  // 3 + 2^-8 is below the half ulp (2^-7) of 3: stays 3.
  EXPECT_EQ(Bf16ToF32(rb.As<uint16_t>(0)[1]), 3.f);
}

TEST(InterpreterTest, FrameBasedDynamicSlice) {
  // lax.dynamic_slice of a frame value: x[16] f32, slice 4 from slot start.
  Assembler as;
  const uint32_t start = 0, x = 64, out = 128;
  const uint32_t acc = as.AddAccess(
      Access(AccessBase::FRAME, static_cast<int32_t>(x), 4,
             {Dim(16, 0, 4, 1, static_cast<int32_t>(start))}, true));
  as.Emit(Op::LOAD, out, 0, 0, acc);
  as.Emit(Op::RETURN);
  as.AddFunction("k", 0);
  as.program().frame_size = 192;
  Buffer frame(192);
  for (int i = 0; i < 16; ++i) frame.As<float>(x)[i] = float(i);
  frame.Set<int32_t>(start, 14);  // clamps to 12
  ASSERT_TRUE(VerifyAndRun(as.program(), frame).ok());
  EXPECT_EQ(frame.As<float>(out)[0], 12.f);
  EXPECT_EQ(frame.As<float>(out)[3], 15.f);
}

TEST(InterpreterTest, StridedCopyTransposeBroadcastReverse) {
  Assembler as;
  const uint32_t src = 0;  // [3, 4] f32 constant
  for (int i = 0; i < 12; ++i) as.Constant<float>(float(i));
  const uint32_t t = 64, b = 128, r = 192, s = 256;
  // Transpose: out[j, i] = src[i, j].
  as.Emit(Op::STRIDED_COPY, t, src, 0, as.AddLayout(4, {4, 3}, {1, 4}));
  // Broadcast row 1 ([4]) to [2, 4].
  as.Emit(Op::STRIDED_COPY, b, src, 0, as.AddLayout(4, {2, 4}, {0, 1}, 4));
  // Reverse the first row.
  as.Emit(Op::STRIDED_COPY, r, src, 0, as.AddLayout(4, {4}, {-1}, 3));
  // Every other column of the last two rows: src[1:3, ::2].
  as.Emit(Op::STRIDED_COPY, s, src, 0, as.AddLayout(4, {2, 2}, {4, 2}, 4));
  as.Emit(Op::RETURN);
  as.AddFunction("k", 0);
  as.program().frame_size = 320;
  Buffer frame(320);
  ASSERT_TRUE(VerifyAndRun(as.program(), frame).ok())
      << VerifyAndRun(as.program(), frame);
  auto row = [&](uint32_t at, int n) {
    const float* p = frame.As<float>(at);
    return std::vector<float>(p, p + n);
  };
  EXPECT_EQ(row(t, 12),
            (std::vector<float>{0, 4, 8, 1, 5, 9, 2, 6, 10, 3, 7, 11}));
  EXPECT_EQ(row(b, 8), (std::vector<float>{4, 5, 6, 7, 4, 5, 6, 7}));
  EXPECT_EQ(row(r, 4), (std::vector<float>{3, 2, 1, 0}));
  EXPECT_EQ(row(s, 4), (std::vector<float>{4, 6, 8, 10}));
}

// Transposes larger than one tile of the tiled path, with partial tiles,
// and of a column slice (source row stride wider than the rows taken).
TEST(InterpreterTest, StridedCopyLargeTransposes) {
  const int rows = 37, cols = 20, width = 41;  // src is [cols, width]
  Assembler as;
  const uint32_t src = 0, t = 4096, u = 8192;
  // out[i, j] = src[j, i] over i < rows (a slice of width), j < cols.
  as.Emit(Op::STRIDED_COPY, t, src, 0,
          as.AddLayout(4, {rows, cols}, {1, width}));
  // The same from column 3 on: out[i, j] = src[j, 3 + i].
  as.Emit(Op::STRIDED_COPY, u, src, 0,
          as.AddLayout(4, {rows - 3, cols}, {1, width}, 3));
  as.Emit(Op::RETURN);
  as.AddFunction("k", 0);
  as.program().frame_size = 12288;
  Buffer frame(12288);
  for (int i = 0; i < cols * width; ++i) frame.As<int32_t>(src)[i] = i;
  ASSERT_TRUE(VerifyAndRun(as.program(), frame).ok());
  for (int i = 0; i < rows; ++i) {
    for (int j = 0; j < cols; ++j) {
      ASSERT_EQ(frame.As<int32_t>(t)[i * cols + j], j * width + i)
          << i << "," << j;
      if (i < rows - 3) {
        ASSERT_EQ(frame.As<int32_t>(u)[i * cols + j], j * width + 3 + i)
            << i << "," << j;
      }
    }
  }
}

TEST(InterpreterTest, IotaSelectFillCopyConvert) {
  Assembler as;
  const uint32_t two = as.Constant<int32_t>(2);
  const uint32_t iota = 64, pred = 128, sel = 192, fill = 256, copy = 320,
                 cvt = 384, bf = 448;
  as.Emit(Op::IOTA_S32, iota, 0, 0, as.AddLayout(4, {2, 3}), 0, /*aux=*/1);
  as.Emit(Op::LT_S32_VS, pred, iota, two, 0, 6);  // pred = iota < 2
  as.Emit(Op::FILL_B4, fill, two, 0, 0, 6);
  as.Emit(Op::SELECT_B4, sel, pred, fill, iota, 6);  // pred ? iota : 2
  as.Emit(Op::COPY, copy, sel, 0, 0, 24);
  as.Emit(Op::CVT_S32_F32_V, cvt, copy, 0, 0, 6);
  as.Emit(Op::CVT_F32_BF16_V, bf, cvt, 0, 0, 6);
  as.Emit(Op::RETURN);
  as.AddFunction("k", 0);
  as.program().frame_size = 512;
  Buffer frame(512);
  ASSERT_TRUE(VerifyAndRun(as.program(), frame).ok());
  const int32_t* io = frame.As<int32_t>(iota);
  EXPECT_EQ(std::vector<int32_t>(io, io + 6),
            (std::vector<int32_t>{0, 1, 2, 0, 1, 2}));
  const int32_t* c = frame.As<int32_t>(copy);
  EXPECT_EQ(std::vector<int32_t>(c, c + 6),
            (std::vector<int32_t>{0, 1, 2, 0, 1, 2}));
  EXPECT_EQ(frame.As<float>(cvt)[2], 2.f);
  EXPECT_EQ(frame.As<uint16_t>(bf)[1], 0x3f80);
}

// Reference reduction over one axis of a [2, 3, 4] value.
std::vector<float> NaiveReduce(const std::vector<float>& x, int axis,
                               bool is_max) {
  const int dims[3] = {2, 3, 4};
  int outer = 1, inner = 1;
  for (int i = 0; i < axis; ++i) outer *= dims[i];
  for (int i = axis + 1; i < 3; ++i) inner *= dims[i];
  std::vector<float> out(outer * inner);
  for (int o = 0; o < outer; ++o) {
    for (int i = 0; i < inner; ++i) {
      float acc = is_max ? -INFINITY : 0.f;
      for (int r = 0; r < dims[axis]; ++r) {
        const float v = x[(o * dims[axis] + r) * inner + i];
        acc = is_max
                  ? (std::isnan(acc) || std::isnan(v) ? kNaN : std::max(acc, v))
                  : acc + v;
      }
      out[o * inner + i] = acc;
    }
  }
  return out;
}

TEST(InterpreterTest, ReduceOverEachAxis) {
  std::vector<float> x(24);
  for (int i = 0; i < 24; ++i) x[i] = float((i * 7) % 11) - 5.f;
  x[13] = kNaN;
  const int dims[3] = {2, 3, 4};
  for (int axis = 0; axis < 3; ++axis) {
    uint32_t outer = 1, inner = 1;
    for (int i = 0; i < axis; ++i) outer *= dims[i];
    for (int i = axis + 1; i < 3; ++i) inner *= dims[i];
    Assembler as;
    for (float v : x) as.Constant<float>(v);
    const uint32_t sum = 128, max = 192, arg = 256;
    as.Emit(Op::REDUCE_SUM_F32, sum, 0, outer, dims[axis], inner);
    as.Emit(Op::REDUCE_MAX_F32, max, 0, outer, dims[axis], inner);
    as.Emit(Op::ARGMAX_F32, arg, 0, outer, dims[axis], inner);
    as.Emit(Op::RETURN);
    as.AddFunction("k", 0);
    as.program().frame_size = 320;
    Buffer frame(320);
    ASSERT_TRUE(VerifyAndRun(as.program(), frame).ok());
    const std::vector<float> want_sum = NaiveReduce(x, axis, false);
    const std::vector<float> want_max = NaiveReduce(x, axis, true);
    for (size_t i = 0; i < want_sum.size(); ++i) {
      const float got_sum = frame.As<float>(sum)[i];
      const float got_max = frame.As<float>(max)[i];
      if (std::isnan(want_sum[i])) {
        EXPECT_TRUE(std::isnan(got_sum)) << axis << " " << i;
        EXPECT_TRUE(std::isnan(got_max)) << axis << " " << i;
      } else {
        EXPECT_EQ(got_sum, want_sum[i]) << axis << " " << i;
        EXPECT_EQ(got_max, want_max[i]) << axis << " " << i;
      }
      // Argmax: the first maximal index, or the first NaN.
      const uint32_t o = i / inner, in = i % inner;
      int32_t best = 0;
      for (int r = 1; r < dims[axis]; ++r) {
        const float b = x[(o * dims[axis] + best) * inner + in];
        const float v = x[(o * dims[axis] + r) * inner + in];
        if (!std::isnan(b) && (std::isnan(v) || v > b)) best = r;
      }
      EXPECT_EQ(frame.As<int32_t>(arg)[i], best) << axis << " " << i;
    }
  }
}

TEST(InterpreterTest, ReduceWideAndLongRows) {
  // [3, 50, 40] summed over axis 1 (rows of 40: the batch path), and
  // [6, 1000] over axis 1 (horizontal), in S32 so the result is exact.
  Assembler as;
  const uint32_t src = 0, dst = 4 * 6000, dst2 = dst + 4 * 120;
  as.Emit(Op::REDUCE_SUM_S32, dst, src, 3, 50, 40);
  as.Emit(Op::REDUCE_MIN_S32, dst2, src, 6, 1000, 1);
  as.Emit(Op::REDUCE_MAX_U32, dst2 + 64, src, 6, 1000, 1);
  as.Emit(Op::RETURN);
  as.AddFunction("k", 0);
  as.program().frame_size = dst2 + 128;
  Buffer frame(as.program().frame_size);
  std::mt19937 rng(5);
  int32_t* s = frame.As<int32_t>(src);
  for (int i = 0; i < 6000; ++i)
    s[i] = static_cast<int32_t>(rng() % 2001) - 1000;
  s[4321] = -5000;
  ASSERT_TRUE(VerifyAndRun(as.program(), frame).ok());
  for (int o = 0; o < 3; ++o) {
    for (int i = 0; i < 40; ++i) {
      int32_t want = 0;
      for (int r = 0; r < 50; ++r) want += s[(o * 50 + r) * 40 + i];
      EXPECT_EQ(frame.As<int32_t>(dst)[o * 40 + i], want);
    }
  }
  for (int o = 0; o < 6; ++o) {
    int32_t want_min = INT32_MAX;
    uint32_t want_max = 0;
    for (int r = 0; r < 1000; ++r) {
      want_min = std::min(want_min, s[o * 1000 + r]);
      want_max = std::max(want_max, static_cast<uint32_t>(s[o * 1000 + r]));
    }
    EXPECT_EQ(frame.As<int32_t>(dst2)[o], want_min);
    EXPECT_EQ(frame.As<uint32_t>(dst2 + 64)[o], want_max);
  }
}

// C = A @ B through DOT_F32, against fma in k order (which DOT promises).
void CheckDotF32(int m, int k, int n) {
  Assembler as;
  const uint32_t a = 0;
  const uint32_t b = (a + 4 * m * k + 63) / 64 * 64;
  const uint32_t c = (b + 4 * k * n + 63) / 64 * 64;
  as.Emit(Op::DOT_F32, c, a, b, as.AddLayout(4, {m, k, n}));
  as.Emit(Op::RETURN);
  as.AddFunction("k", 0);
  as.program().frame_size = c + 4 * m * n;
  Buffer frame(as.program().frame_size);
  std::mt19937 rng(m * 10000 + k * 100 + n);
  std::uniform_real_distribution<float> d(-1.f, 1.f);
  for (int i = 0; i < m * k; ++i) frame.As<float>(a)[i] = d(rng);
  for (int i = 0; i < k * n; ++i) frame.As<float>(b)[i] = d(rng);
  ASSERT_TRUE(VerifyAndRun(as.program(), frame).ok());
  const float* A = frame.As<float>(a);
  const float* B = frame.As<float>(b);
  const float* C = frame.As<float>(c);
  for (int i = 0; i < m; ++i) {
    for (int j = 0; j < n; ++j) {
      float want = 0.f;
      for (int kk = 0; kk < k; ++kk)
        want = std::fma(A[i * k + kk], B[kk * n + j], want);
      ASSERT_EQ(C[i * n + j], want)
          << m << "x" << k << "x" << n << " at " << i << "," << j;
    }
  }
}

TEST(InterpreterTest, DotF32MatchesNaive) {
  CheckDotF32(7, 13, 9);
  CheckDotF32(128, 128, 128);
  CheckDotF32(1, 300, 70);    // one row, k past one block
  CheckDotF32(100, 257, 50);  // edge tiles in both directions
  CheckDotF32(16, 40, 100);   // few rows: B read in place, tail packed
  CheckDotF32(3, 600, 49);
  CheckDotF32(17, 520, 96);  // just past the in-place threshold
  CheckDotF32(40, 300, 64);  // last column panel of 16: a narrow tile
  CheckDotF32(9, 1, 1);
  CheckDotF32(3, 0, 5);  // empty contraction: zeros
}

// C += A @ B through DOT_ADD_F32 with its operands in refs (or, by `aux`,
// some in the frame): the product is the fma chain in k order, rounded, and
// then added to C once, exactly what DOT_F32 then ADD_F32_VV compute.
void CheckDotAddF32(int m, int k, int n, uint16_t aux) {
  Assembler as;
  Buffer a(4 * m * k + 64), b(4 * k * n + 64), c(4 * m * n + 64);
  // Each operand sits in its ref or, without its aux bit, at the same data
  // copied into the frame.
  const uint32_t fa = 0;
  const uint32_t fb = (fa + 4 * m * k + 63) / 64 * 64;
  const uint32_t fc = (fb + 4 * k * n + 63) / 64 * 64;
  as.Emit(Op::DOT_ADD_F32, (aux & kOperandRefA) ? 2 : fc,
          (aux & kOperandRefB) ? 0 : fa, (aux & kOperandRefC) ? 1 : fb,
          as.AddLayout(4, {m, k, n}), 0, aux);
  as.Emit(Op::RETURN);
  as.AddFunction("k", 0);
  Program& p = as.program();
  p.frame_size = fc + 4 * m * n + 64;
  p.num_refs = 3;
  p.ref_sizes = {4 * m * k, 4 * k * n, 4 * m * n};
  Buffer frame(p.frame_size);
  std::mt19937 rng(m * 10000 + k * 100 + n);
  std::uniform_real_distribution<float> d(-1.f, 1.f);
  for (int i = 0; i < m * k; ++i) a.As<float>(0)[i] = d(rng);
  for (int i = 0; i < k * n; ++i) b.As<float>(0)[i] = d(rng);
  for (int i = 0; i < m * n; ++i)
    c.As<float>(0)[i] = i % 7 == 0 ? -0.f : d(rng);
  std::vector<float> c0(c.As<float>(0), c.As<float>(0) + m * n);
  std::memcpy(frame.As<float>(fa), a.data(), 4 * m * k);
  std::memcpy(frame.As<float>(fb), b.data(), 4 * k * n);
  std::memcpy(frame.As<float>(fc), c.data(), 4 * m * n);
  ASSERT_TRUE(VerifyAndRun(p, frame, {a.data(), b.data(), c.data()}).ok());
  const float* A = a.As<float>(0);
  const float* B = b.As<float>(0);
  const float* C = (aux & kOperandRefA) ? c.As<float>(0) : frame.As<float>(fc);
  for (int i = 0; i < m; ++i) {
    for (int j = 0; j < n; ++j) {
      float product = 0.f;
      for (int kk = 0; kk < k; ++kk)
        product = std::fma(A[i * k + kk], B[kk * n + j], product);
      const float want = c0[i * n + j] + product;
      ASSERT_EQ(std::signbit(C[i * n + j]), std::signbit(want));
      ASSERT_EQ(C[i * n + j], want) << m << "x" << k << "x" << n << " aux "
                                    << aux << " at " << i << "," << j;
    }
  }
}

TEST(InterpreterTest, DotAddF32AddsTheRoundedProduct) {
  const uint16_t refs = kOperandRefA | kOperandRefB | kOperandRefC;
  CheckDotAddF32(7, 13, 9, refs);
  CheckDotAddF32(100, 256, 50, refs);  // one whole k block, edge tiles
  CheckDotAddF32(16, 40, 100, refs);   // few rows: B read in place
  CheckDotAddF32(20, 300, 33, refs);   // k past one block: via a buffer
  CheckDotAddF32(3, 0, 5, refs);       // empty contraction: C + 0 (-0 -> +0)
  CheckDotAddF32(24, 100, 80, refs);   // last column panel of 32
  CheckDotAddF32(33, 64, 48, kOperandRefB);  // frame dst, one ref source
  CheckDotAddF32(33, 64, 48, kOperandRefA | kOperandRefC);
  CheckDotAddF32(33, 64, 48, 0);  // all in the frame
}

// STORE with kOperandRefB copies a whole ref into a region of another.
TEST(InterpreterTest, StoreFromRefCopiesTheWholeRef) {
  Assembler as;
  // ref 1 is f32[4, 8]; ref 0 (f32[4, 4]) goes to rows 0..3, columns 1, 3,
  // 5, 7.
  const uint32_t region = as.AddAccess(
      Access(AccessBase::REF, 1, 4, {Dim(4, 0, 4), Dim(8, 1, 4, 2)}));
  as.Emit(Op::STORE, 0, 0, 0, region, 0, kOperandRefB);
  as.Emit(Op::RETURN);
  as.AddFunction("k", 0);
  Program& p = as.program();
  p.frame_size = 64;
  p.num_refs = 2;
  p.ref_sizes = {4 * 16, 4 * 32};
  Buffer frame(64), src(64), dst(128);
  for (int i = 0; i < 16; ++i) src.As<float>(0)[i] = static_cast<float>(i);
  for (int i = 0; i < 32; ++i) dst.As<float>(0)[i] = -1.f;
  ASSERT_TRUE(VerifyAndRun(p, frame, {src.data(), dst.data()}).ok());
  for (int r = 0; r < 4; ++r) {
    for (int col = 0; col < 8; ++col) {
      const float want =
          col % 2 == 1 ? static_cast<float>(r * 4 + col / 2) : -1.f;
      EXPECT_EQ(dst.As<float>(0)[r * 8 + col], want) << r << "," << col;
    }
  }
}

// Elementwise block sources read from whole refs (aux bits): each form
// against the same arithmetic written out.
TEST(InterpreterTest, ElementwiseSourcesFromRefs) {
  Assembler as;
  const uint32_t two = as.Constant<float>(2.f);
  const uint32_t vv = 64, vs = 128, sv = 192, v = 256, cvt = 320, mixed = 384;
  const uint32_t x = 448;  // f32[8] in the frame
  as.Emit(Op::ADD_F32_VV, vv, 0, 1, 0, 8, kOperandRefB | kOperandRefC);
  as.Emit(Op::MUL_F32_VS, vs, 0, two, 0, 8, kOperandRefB);
  as.Emit(Op::SUB_F32_SV, sv, two, 1, 0, 8, kOperandRefC);
  as.Emit(Op::NEG_F32_V, v, 1, 0, 0, 8, kOperandRefB);
  as.Emit(Op::CVT_BF16_F32_V, cvt, 2, 0, 0, 8, kOperandRefB);
  as.Emit(Op::SUB_F32_VV, mixed, x, 0, 0, 8, kOperandRefC);
  as.Emit(Op::RETURN);
  as.AddFunction("k", 0);
  Program& p = as.program();
  p.frame_size = 512;
  p.num_refs = 3;
  p.ref_sizes = {32, 32, 16};
  Buffer frame(512), r0(64), r1(64), r2(64);
  for (int i = 0; i < 8; ++i) {
    r0.As<float>(0)[i] = static_cast<float>(i);         // 0 .. 7
    r1.As<float>(0)[i] = 0.5f * static_cast<float>(i);  // 0 .. 3.5
    // bf16 of i + 1: the high half of the f32.
    const float f = static_cast<float>(i + 1);
    uint32_t bits;
    std::memcpy(&bits, &f, 4);
    r2.As<uint16_t>(0)[i] = static_cast<uint16_t>(bits >> 16);
    frame.As<float>(x)[i] = 10.f;
  }
  ASSERT_TRUE(VerifyAndRun(p, frame, {r0.data(), r1.data(), r2.data()}).ok());
  for (int i = 0; i < 8; ++i) {
    const float fi = static_cast<float>(i);
    EXPECT_EQ(frame.As<float>(vv)[i], fi + 0.5f * fi) << i;
    EXPECT_EQ(frame.As<float>(vs)[i], fi * 2.f) << i;
    EXPECT_EQ(frame.As<float>(sv)[i], 2.f - 0.5f * fi) << i;
    EXPECT_EQ(frame.As<float>(v)[i], -0.5f * fi) << i;
    EXPECT_EQ(frame.As<float>(cvt)[i], fi + 1.f) << i;
    EXPECT_EQ(frame.As<float>(mixed)[i], 10.f - fi) << i;
  }
}

TEST(InterpreterTest, DotS32Wraps) {
  const int m = 5, k = 11, n = 19;
  Assembler as;
  const uint32_t a = 0, b = 256, c = 1280;
  as.Emit(Op::DOT_S32, c, a, b, as.AddLayout(4, {m, k, n}));
  as.Emit(Op::RETURN);
  as.AddFunction("k", 0);
  as.program().frame_size = c + 4 * m * n;
  Buffer frame(as.program().frame_size);
  std::mt19937 rng(1);
  for (int i = 0; i < m * k; ++i)
    frame.As<int32_t>(a)[i] = static_cast<int32_t>(rng());
  for (int i = 0; i < k * n; ++i)
    frame.As<int32_t>(b)[i] = static_cast<int32_t>(rng());
  ASSERT_TRUE(VerifyAndRun(as.program(), frame).ok());
  for (int i = 0; i < m; ++i) {
    for (int j = 0; j < n; ++j) {
      uint32_t want = 0;
      for (int kk = 0; kk < k; ++kk) {
        want += static_cast<uint32_t>(frame.As<int32_t>(a)[i * k + kk]) *
                static_cast<uint32_t>(frame.As<int32_t>(b)[kk * n + j]);
      }
      EXPECT_EQ(frame.As<int32_t>(c)[i * n + j], static_cast<int32_t>(want));
    }
  }
}

TEST(InterpreterTest, ElementwiseBlockForms) {
  Assembler as;
  const uint32_t x = 0;
  for (int i = 0; i < 20; ++i) as.Constant<float>(float(i) - 10.f);
  const uint32_t two = as.Constant<float>(2.f);
  const uint32_t vv = 128, vs = 256, sv = 384, u = 512, cmp = 640;
  as.Emit(Op::MUL_F32_VV, vv, x, x, 0, 20);
  as.Emit(Op::SUB_F32_VS, vs, x, two, 0, 20);
  as.Emit(Op::SUB_F32_SV, sv, two, x, 0, 20);
  as.Emit(Op::ABS_F32_V, u, x, 0, 0, 20);
  as.Emit(Op::GE_F32_VS, cmp, x, two, 0, 20);
  as.Emit(Op::RETURN);
  as.AddFunction("k", 0);
  as.program().frame_size = 704;
  Buffer frame(704);
  ASSERT_TRUE(VerifyAndRun(as.program(), frame).ok());
  for (int i = 0; i < 20; ++i) {
    const float v = float(i) - 10.f;
    EXPECT_EQ(frame.As<float>(vv)[i], v * v);
    EXPECT_EQ(frame.As<float>(vs)[i], v - 2.f);
    EXPECT_EQ(frame.As<float>(sv)[i], 2.f - v);
    EXPECT_EQ(frame.As<float>(u)[i], std::fabs(v));
    EXPECT_EQ(frame.As<uint8_t>(cmp)[i], v >= 2.f ? 1 : 0);
  }
}

// FMA_F32 rounds once where MUL_F32_VV then ADD_F32_VV round twice:
// (1 + 2^-12)^2 - 1 is 2^-11 + 2^-24 fused, 2^-11 separately. In place too.
TEST(InterpreterTest, FmaF32RoundsOnce) {
  Assembler as;
  const uint32_t x = 0, z = 128, fused = 256, product = 384, separate = 512;
  const float e12 = std::ldexp(1.f, -12);
  for (int i = 0; i < 20; ++i) as.Constant<float>(1.f + e12);
  while (as.program().constants.size() < z) as.Constant<float>(0.f);
  for (int i = 0; i < 20; ++i) as.Constant<float>(-1.f);
  as.Emit(Op::FMA_F32, fused, x, x, z, 20);
  as.Emit(Op::MUL_F32_VV, product, x, x, 0, 20);
  as.Emit(Op::ADD_F32_VV, separate, product, z, 0, 20);
  as.Emit(Op::FMA_F32, product, product, x, product, 20);  // in place
  as.Emit(Op::RETURN);
  as.AddFunction("k", 0);
  as.program().frame_size = 640;
  Buffer frame(640);
  ASSERT_TRUE(VerifyAndRun(as.program(), frame).ok());
  const float square = (1.f + e12) * (1.f + e12);
  for (int i = 0; i < 20; ++i) {
    EXPECT_EQ(frame.As<float>(fused)[i],
              std::ldexp(1.f, -11) + std::ldexp(1.f, -24));
    EXPECT_EQ(frame.As<float>(separate)[i], std::ldexp(1.f, -11));
    EXPECT_EQ(frame.As<float>(product)[i],
              std::fma(square, 1.f + e12, square));
  }
  EXPECT_NE(Disassemble(as.program()).find("FMA_F32"), std::string::npos);
}

// GATHER_Bw: dst[i] := src[clamp(idx[i], 0, d-1)] for 1-, 2- and 4-byte
// elements; an index outside the source is clamped into it.
TEST(InterpreterTest, GatherByFlatIndexClampsEveryIndex) {
  Assembler as;
  const uint32_t src = 0, idx = 64, d1 = 128, d2 = 192, d4 = 256;
  for (int i = 0; i < 16; ++i) as.Constant<uint32_t>(0x01020304u * (i + 1));
  const int32_t index[8] = {3, 0, 15, -4, 99, 7, 7, 1};
  for (int32_t v : index) as.Constant<int32_t>(v);
  as.Emit(Op::GATHER_B1, d1, src, idx, 64, 8);  // 64 bytes as u8
  as.Emit(Op::GATHER_B2, d2, src, idx, 32, 8);
  as.Emit(Op::GATHER_B4, d4, src, idx, 16, 8);
  as.Emit(Op::RETURN);
  as.AddFunction("k", 0);
  as.program().frame_size = 320;
  Buffer frame(320);
  ASSERT_TRUE(VerifyAndRun(as.program(), frame).ok());
  const uint8_t* bytes = frame.As<uint8_t>(src);
  for (int i = 0; i < 8; ++i) {
    auto clamp = [&](int n) { return std::clamp(index[i], 0, n - 1); };
    EXPECT_EQ(frame.As<uint8_t>(d1)[i], bytes[clamp(64)]) << i;
    EXPECT_EQ(frame.As<uint16_t>(d2)[i],
              reinterpret_cast<const uint16_t*>(bytes)[clamp(32)])
        << i;
    EXPECT_EQ(frame.As<uint32_t>(d4)[i], 0x01020304u * (clamp(16) + 1)) << i;
  }
}

// ARGSORT_F32: stable, -0 == +0, every NaN (of either sign) after +inf; the
// S32 and U32 forms order as their types do.
TEST(InterpreterTest, ArgSortIsStableInXlaFloatOrder) {
  const float inf = std::numeric_limits<float>::infinity();
  const float x[10] = {1.f, -0.f, kNaN, 0.f, -inf, -kNaN, inf, 1.f, -2.f, 0.f};
  // View [1, 10, 1] and, transposed, [2, 5, 1] (two rows of five).
  Assembler as;
  for (float v : x) as.Constant<float>(v);
  while (as.program().constants.size() < 64) as.Constant<float>(0.f);
  const int32_t ints[6] = {5, -1, 5, std::numeric_limits<int32_t>::min(), 0,
                           -1};
  for (int32_t v : ints) as.Constant<int32_t>(v);
  const uint32_t f = 0, i = 64, out_f = 128, out_rows = 192, out_s = 256,
                 out_u = 320;
  as.Emit(Op::ARGSORT_F32, out_f, f, 1, 10, 1);
  as.Emit(Op::ARGSORT_F32, out_rows, f, 2, 5, 1);
  as.Emit(Op::ARGSORT_S32, out_s, i, 1, 6, 1);
  as.Emit(Op::ARGSORT_U32, out_u, i, 1, 6, 1);
  as.Emit(Op::RETURN);
  as.AddFunction("k", 0);
  as.program().frame_size = 384;
  Buffer frame(384);
  ASSERT_TRUE(VerifyAndRun(as.program(), frame).ok());
  const std::vector<int32_t> want_f = {4, 8, 1, 3, 9, 0, 7, 6, 2, 5};
  const std::vector<int32_t> want_rows = {4, 1, 3, 0, 2,   // 1 -0 nan 0 -inf
                                          3, 4, 2, 1, 0};  // -nan inf 1 -2 0
  const std::vector<int32_t> want_s = {3, 1, 5, 4, 0, 2};
  // As u32: 0 < 5 = 5 < 0x80000000 < 0xffffffff = 0xffffffff.
  const std::vector<int32_t> want_u = {4, 0, 2, 3, 1, 5};
  for (int k = 0; k < 10; ++k) {
    EXPECT_EQ(frame.As<int32_t>(out_f)[k], want_f[k]) << k;
    EXPECT_EQ(frame.As<int32_t>(out_rows)[k], want_rows[k]) << k;
  }
  for (int k = 0; k < 6; ++k) {
    EXPECT_EQ(frame.As<int32_t>(out_s)[k], want_s[k]) << k;
    EXPECT_EQ(frame.As<int32_t>(out_u)[k], want_u[k]) << k;
  }
}

// ARGSORT along a middle axis: [outer, size, inner] = [2, 3, 2].
TEST(InterpreterTest, ArgSortAlongAMiddleAxis) {
  Assembler as;
  const int32_t x[12] = {3, 0, 1, 2, 2, 1,    // o = 0: columns (3,1,2), (0,2,1)
                         -1, 9, -1, 8, -2, 7};  // o = 1
  for (int32_t v : x) as.Constant<int32_t>(v);
  as.Emit(Op::ARGSORT_S32, 64, 0, 2, 3, 2);
  as.Emit(Op::RETURN);
  as.AddFunction("k", 0);
  as.program().frame_size = 128;
  Buffer frame(128);
  ASSERT_TRUE(VerifyAndRun(as.program(), frame).ok());
  const int32_t want[12] = {1, 0, 2, 2, 0, 1, 2, 2, 0, 1, 1, 0};
  for (int k = 0; k < 12; ++k) EXPECT_EQ(frame.As<int32_t>(64)[k], want[k]) << k;
}

// REDUCE_PROD_* (wrapping for integers), ARGMAX/ARGMIN_U32 (unsigned order,
// first index on ties) and ERFC_F32_V / _S (the same values).
TEST(InterpreterTest, ReduceProdArgmaxU32AndErfc) {
  Assembler as;
  const uint32_t u[4] = {0x80000000u, 7u, 0xffffffffu, 0xffffffffu};
  for (uint32_t v : u) as.Constant<uint32_t>(v);        // 0
  for (float v : {1.5f, -2.f, 0.25f, 3.f}) as.Constant<float>(v);  // 16
  for (int32_t v : {65536, 65536, 3, -1}) as.Constant<int32_t>(v);  // 32
  for (float v : {-1.f, 0.5f, 3.f, 9.f}) as.Constant<float>(v);    // 48
  as.Emit(Op::REDUCE_PROD_U32, 64, 0, 1, 4, 1);
  as.Emit(Op::REDUCE_PROD_F32, 68, 16, 1, 4, 1);
  as.Emit(Op::REDUCE_PROD_S32, 72, 32, 1, 4, 1);
  as.Emit(Op::ARGMAX_U32, 76, 0, 1, 4, 1);
  as.Emit(Op::ARGMIN_U32, 80, 0, 1, 4, 1);
  as.Emit(Op::ERFC_F32_V, 128, 48, 0, 0, 4);
  for (int k = 0; k < 4; ++k) as.Emit(Op::ERFC_F32_S, 192 + 4 * k, 48 + 4 * k);
  as.Emit(Op::RETURN);
  as.AddFunction("k", 0);
  as.program().frame_size = 256;
  Buffer frame(256);
  ASSERT_TRUE(VerifyAndRun(as.program(), frame).ok());
  EXPECT_EQ(frame.As<uint32_t>(64)[0], 0x80000000u * 7u * 0xffffffffu *
                                           0xffffffffu);
  EXPECT_EQ(frame.As<float>(68)[0], -2.25f);
  EXPECT_EQ(frame.As<int32_t>(72)[0], 0);  // 2^32 * -3 wraps to 0
  EXPECT_EQ(frame.As<int32_t>(76)[0], 2);  // the first 0xffffffff
  EXPECT_EQ(frame.As<int32_t>(80)[0], 1);
  const float in[4] = {-1.f, 0.5f, 3.f, 9.f};
  for (int k = 0; k < 4; ++k) {
    const float v = frame.As<float>(128)[k];
    EXPECT_EQ(v, frame.As<float>(192)[k]) << k;  // _V and _S agree
    EXPECT_NEAR(v, std::erfc(double{in[k]}), 1e-5 * std::erfc(double{in[k]}))
        << k;
  }
}

// CHECK_INDEX: passes 0 <= R[a] <= b, fails outside with an OutOfRange
// error naming the dimension.
TEST(InterpreterTest, CheckIndexFailsOutsideItsRange) {
  for (int32_t start : {0, 3, -1, 4}) {
    Assembler as;
    const uint32_t at = as.Constant<int32_t>(start);
    as.Emit(Op::CHECK_INDEX, at, 3, 1, 0, 1, /*aux=*/1);
    as.Emit(Op::RETURN);
    as.AddFunction("k", 0);
    as.program().frame_size = 64;
    Buffer frame(64);
    const absl::Status s = VerifyAndRun(as.program(), frame);
    if (start >= 0 && start <= 3) {
      EXPECT_TRUE(s.ok()) << s;
    } else {
      EXPECT_EQ(s.code(), absl::StatusCode::kOutOfRange) << start;
      EXPECT_TRUE(absl::StrContains(s.message(), "Out-of-bounds write"))
          << s;
      EXPECT_TRUE(absl::StrContains(s.message(), "dimension 1")) << s;
    }
  }
}

TEST(InterpreterTest, DisassemblyNamesOperandsAndSource) {
  RowCopyProgram rc = MakeRowCopy();
  const std::string text = Disassemble(rc.program);
  EXPECT_NE(text.find("; function 0 'my_kernel'"), std::string::npos) << text;
  EXPECT_NE(text.find("LOAD"), std::string::npos) << text;
  EXPECT_NE(text.find("r@64 := ref0[ds(r@8, 2), ds(0, 128)]"),
            std::string::npos)
      << text;
  EXPECT_NE(text.find("ADD_F32_VS"), std::string::npos) << text;
  EXPECT_NE(text.find("r@64 := r@64, r@0  n=256"), std::string::npos) << text;
  EXPECT_NE(text.find("; get  kernel.py:42"), std::string::npos) << text;
  EXPECT_NE(text.find("RETURN"), std::string::npos) << text;
}

}  // namespace
}  // namespace pallasvm::vm
