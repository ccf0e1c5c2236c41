// The module format's limits (format/module_limits.cc), which the compiler
// and the runtime's loader both apply: each boundary, and the cases where
// the two used to disagree (tests/fuzz/regressions/interchange_binary:
// empty_array_huge_dim, block_dim_refused_by_runtime,
// grid_points_refused_by_runtime, alias_refused_by_runtime).
#include "format/module_limits.h"

#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "gtest/gtest.h"

namespace pallasvm::format {
namespace {

using ::absl::StatusCode;

TEST(CheckArrayShape, CountsOnlyNonZeroDimensions) {
  EXPECT_TRUE(CheckArrayShape({}, "x").ok());
  EXPECT_TRUE(CheckArrayShape({int64_t{1} << 20, int64_t{1} << 20}, "x").ok());
  EXPECT_TRUE(CheckArrayShape({0, int64_t{1} << 40}, "x").ok());
  // An empty array whose other dimension is past 2^40 is refused whatever
  // the order of its dimensions (the loader used to refuse one order only,
  // the compiler neither).
  for (const std::vector<int64_t>& shape :
       {std::vector<int64_t>{27091966654566664, 0},
        std::vector<int64_t>{0, 27091966654566664},
        std::vector<int64_t>{int64_t{1} << 20, int64_t{1} << 20, 2}}) {
    absl::Status s = CheckArrayShape(shape, "result 1");
    EXPECT_EQ(s.code(), StatusCode::kOutOfRange) << s;
    EXPECT_TRUE(absl::StrContains(s.message(), "result 1 has shape [")) << s;
    EXPECT_TRUE(absl::StrContains(s.message(), "more than 2^40 elements")) << s;
  }
}

TEST(CheckArrayShape, RankAndSign) {
  EXPECT_TRUE(CheckArrayShape(std::vector<int64_t>(kMaxRank, 1), "x").ok());
  absl::Status s = CheckArrayShape(std::vector<int64_t>(kMaxRank + 1, 1), "x");
  EXPECT_EQ(s.code(), StatusCode::kUnimplemented) << s;
  EXPECT_EQ(s.message(), "x has rank 9, over pallasvm's maximum of 8");
  s = CheckArrayShape({4, -1}, "operand 0");
  EXPECT_EQ(s.code(), StatusCode::kInvalidArgument) << s;
  EXPECT_EQ(s.message(), "operand 0 has a negative dimension: [4,-1]");
}

TEST(CheckGrid, CountsDynamicDimensions) {
  EXPECT_EQ(*CheckGrid({}), 0);
  EXPECT_EQ(*CheckGrid({kDynamicGridDimension, 4, kDynamicGridDimension}), 2);
  EXPECT_EQ(*CheckGrid({kMaxGridDimension, kMaxGridDimension}), 0);
}

TEST(CheckGrid, RefusesWhatTheRuntimeCannotRun) {
  for (int64_t size : {int64_t{0}, int64_t{-2}, kMaxGridDimension + 1}) {
    absl::StatusOr<int> n = CheckGrid({3, size});
    ASSERT_FALSE(n.ok());
    EXPECT_TRUE(absl::StrContains(
        n.status().message(),
        absl::StrCat("grid dimension 1 has size ", size,
                     "; pallasvm runs grid dimensions of 1 to 2^31 - 1")))
        << n.status();
  }
  // Under 2^63 points (what the compiler used to allow) but over 2^62.
  absl::StatusOr<int> n = CheckGrid({kMaxGridDimension, kMaxGridDimension, 2});
  ASSERT_FALSE(n.ok());
  EXPECT_EQ(n.status().message(),
            "the grid (2147483647, 2147483647, 2) has more than 2^62 points");
  n = CheckGrid(std::vector<int64_t>(kMaxRank + 1, 1));
  EXPECT_EQ(n.status().code(), StatusCode::kUnimplemented) << n.status();
}

TEST(CheckBlockDim, KindsAndSizes) {
  using K = bytecode::BlockDimKind;
  EXPECT_TRUE(CheckBlockDim(K::BLOCKED, kMaxBlockDimension, "b").ok());
  EXPECT_TRUE(CheckBlockDim(K::ELEMENT, 1, "b").ok());
  EXPECT_TRUE(CheckBlockDim(K::SQUEEZED, 1, "b").ok());
  EXPECT_EQ(CheckBlockDim(static_cast<K>(7), 8, "input 0: block dimension 1")
                .message(),
            "input 0: block dimension 1 has kind 7, not one of BLOCKED (0), "
            "SQUEEZED (1), ELEMENT (2)");
  EXPECT_EQ(CheckBlockDim(K::SQUEEZED, 2, "b").message(),
            "b is SQUEEZED with size 2 (a squeezed dimension has size 1)");
  for (int64_t size : {int64_t{0}, int64_t{-1}, kMaxBlockDimension + 1}) {
    EXPECT_EQ(CheckBlockDim(K::BLOCKED, size, "b").message(),
              absl::StrCat("b has size ", size, ", not in [1, 2^31 - 1]"));
  }
}

TEST(CheckAlias, RangesAndTypes) {
  auto same = [](int, int) { return true; };
  EXPECT_TRUE(CheckAlias(0, 1, 0, 2, 1, same).ok());
  EXPECT_EQ(CheckAlias(0, 7, 0, 2, 1, same).message(),
            "input_output_aliases[0] names operand 7 of the pallas_call's 2");
  EXPECT_EQ(CheckAlias(1, 0, -1, 2, 1, same).message(),
            "input_output_aliases[1] names result -1 of the pallas_call's 1");
  EXPECT_EQ(
      CheckAlias(0, 1, 0, 2, 1, [](int, int) { return false; }).message(),
      "input_output_aliases[0]: operand 1 and result 0 differ in dtype or "
      "shape");
}

}  // namespace
}  // namespace pallasvm::format
