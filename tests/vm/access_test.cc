// Ref accesses (vm/kernels/access.h): the filled LOAD of a region that
// leaves its buffer (out_of_bounds_reads="uninitialized"), and regions in a
// ref's padding (buffer_bounds="padded"), against values worked out by
// hand.
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

// Rows 2..5 of a 3 x 2 int32 buffer padded to 4 rows: `start` row 2.
AccessDesc PaddedRows(int64_t start, int64_t size) {
  AccessDesc access;
  access.elem_size = 4;
  access.rank = 2;
  access.dims[0] = AccessDim{3, start, -1, 0, size, 1, -1, /*padding=*/1};
  access.dims[1] = AccessDim{2, 0, -1, 0, 2, 1};
  return access;
}

TEST(InsidePadding, AcceptsOnlyRegionsWithinExtentAndPadding) {
  EXPECT_LT(ResolveAccess(PaddedRows(2, 2), nullptr).count, 0);
  EXPECT_TRUE(InsidePadding(PaddedRows(2, 2), nullptr));   // rows 2, 3
  EXPECT_FALSE(InsidePadding(PaddedRows(3, 2), nullptr));  // row 4: beyond
  AccessDesc unpadded = PaddedRows(2, 2);
  unpadded.dims[0].padding = 0;
  EXPECT_FALSE(InsidePadding(unpadded, nullptr));
  // The fault is named against the padded extent.
  const AccessFault fault = FindAccessFault(PaddedRows(3, 2), nullptr);
  EXPECT_EQ(fault.dim, 0);
  EXPECT_EQ(DescribeAccessFault(PaddedRows(3, 2), fault, "read"),
            "Out-of-bounds read of ref 0 (dims [3, 2] padded to [4, 2]): dim 0 "
            "start 3 size 2 (needs start + (size-1)*stride < 4)");
}

TEST(StoreRegionClipped, DropsThePadding) {
  std::vector<int32_t> buffer(6, 0);
  const std::vector<int32_t> src = {1, 2, 3, 4};
  StoreRegionClipped(reinterpret_cast<uint8_t*>(buffer.data()),
                     reinterpret_cast<const uint8_t*>(src.data()),
                     PaddedRows(2, 2), nullptr);
  EXPECT_EQ(buffer, (std::vector<int32_t>{0, 0, 0, 0, 1, 2}));
  AddUpdateRegionClipped<DType::S32>(
      reinterpret_cast<uint8_t*>(buffer.data()),
      reinterpret_cast<const uint8_t*>(src.data()), PaddedRows(2, 2), nullptr);
  EXPECT_EQ(buffer, (std::vector<int32_t>{0, 0, 0, 0, 2, 4}));
  // A masked store fails only for a masked-in element beyond the padding.
  const uint8_t mask[4] = {1, 1, 1, 1};
  AccessFault fault;
  EXPECT_TRUE(MaskedStoreRegion(reinterpret_cast<uint8_t*>(buffer.data()),
                                reinterpret_cast<const uint8_t*>(src.data()),
                                mask, PaddedRows(2, 2), nullptr, &fault));
  EXPECT_FALSE(MaskedStoreRegion(reinterpret_cast<uint8_t*>(buffer.data()),
                                 reinterpret_cast<const uint8_t*>(src.data()),
                                 mask, PaddedRows(3, 2), nullptr, &fault));
  EXPECT_EQ(fault.dim, 0);
  EXPECT_EQ(fault.start, 4);
}

}  // namespace
}  // namespace pallasvm::vm::kernels
