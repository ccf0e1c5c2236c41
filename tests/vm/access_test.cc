// Ref accesses (vm/kernels/access.h): the filled LOAD of a region that
// leaves its buffer (out_of_bounds_reads="uninitialized"), against values
// worked out by hand.
#include "vm/kernels/access.h"

#include <gtest/gtest.h>

#include <cstdint>
#include <cstring>
#include <vector>

namespace pallasvm::vm::kernels {
namespace {

TEST(LoadRegionFilled, OutsideElementsReadTheFill) {
  // A 4 x 5 int32 buffer holding 10 * row + col.
  std::vector<int32_t> buffer(20);
  for (int r = 0; r < 4; ++r) {
    for (int c = 0; c < 5; ++c) buffer[r * 5 + c] = 10 * r + c;
  }
  // Rows 2, 3, 4 (4 is outside); columns -1, 1, 3 (start from the frame,
  // stride 2; -1 is outside).
  AccessDesc access;
  access.elem_size = 4;
  access.rank = 2;
  access.dims[0] = AccessDim{4, 2, -1, 0, 3, 1};
  access.dims[1] = AccessDim{5, 0, 0, 0, 3, 2};
  alignas(8) uint8_t frame[8] = {};
  const int32_t col_start = -1;
  std::memcpy(frame, &col_start, 4);
  EXPECT_LT(ResolveAccess(access, frame).count, 0);  // refused as a LOAD

  const int32_t fill = -7;
  std::vector<int32_t> out(9, 0);
  LoadRegionFilled(reinterpret_cast<uint8_t*>(out.data()),
                   reinterpret_cast<const uint8_t*>(buffer.data()), access,
                   frame, reinterpret_cast<const uint8_t*>(&fill));
  EXPECT_EQ(out, (std::vector<int32_t>{-7, 21, 23,    //
                                       -7, 31, 33,    //
                                       -7, -7, -7}));  // row 4
}

TEST(LoadRegionFilled, SqueezedIndexOutsideFillsEverything) {
  // x[5, 0:2] of a 4 x 2 bf16-sized (2-byte) buffer: row 5 does not exist.
  std::vector<uint16_t> buffer = {1, 2, 3, 4, 5, 6, 7, 8};
  AccessDesc access;
  access.elem_size = 2;
  access.rank = 2;
  access.dims[0] = AccessDim{4, 5, -1, 1, 1, 1};
  access.dims[1] = AccessDim{2, 0, -1, 0, 2, 1};
  const uint16_t fill = 0x7fc0;
  std::vector<uint16_t> out(2, 0);
  LoadRegionFilled(reinterpret_cast<uint8_t*>(out.data()),
                   reinterpret_cast<const uint8_t*>(buffer.data()), access,
                   nullptr, reinterpret_cast<const uint8_t*>(&fill));
  EXPECT_EQ(out, (std::vector<uint16_t>{0x7fc0, 0x7fc0}));
}

}  // namespace
}  // namespace pallasvm::vm::kernels
