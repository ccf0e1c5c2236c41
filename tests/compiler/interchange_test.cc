// Reading the interchange (compiler/interchange.cc) from hostile bytes: a
// [long] vector placed at 4 mod 8, which FlatBuffers' verifier lets
// through, is refused rather than read misaligned.
#include "compiler/interchange.h"

#include <string>
#include <vector>

#include "absl/strings/match.h"
#include "gtest/gtest.h"

namespace pallasvm::compiler {
namespace {

TEST(Interchange, AMisalignedVectorOfLongsIsRefused) {
  // `grid` points into a vector of uint32s: element 0 or 1 (value 2) is
  // its length, and its two int64s follow; one of the two choices puts
  // them at 4 mod 8 (a vector's Offset counts from the buffer's end to
  // its length, and element i is 4 + 4i bytes further).
  const std::vector<uint32_t> words = {2, 2, 1, 0, 1, 0, 1, 0};
  for (uint32_t back : {4u, 8u}) {
    flatbuffers::FlatBufferBuilder b;
    auto v = b.CreateVector(words);
    interchange::KernelBuilder k(b);
    k.add_version(kInterchangeVersion);
    k.add_grid(flatbuffers::Offset<flatbuffers::Vector<int64_t>>(v.o - back));
    interchange::FinishKernelBuffer(b, k.Finish());
    std::string bytes(reinterpret_cast<const char*>(b.GetBufferPointer()),
                      b.GetSize());
    const interchange::Kernel* parsed = interchange::GetKernel(bytes.data());
    if (reinterpret_cast<uintptr_t>(parsed->grid()->Data()) % 8 == 0) continue;
    absl::StatusOr<Interchange> result = ParseInterchange(bytes, "bad.pvmk");
    ASSERT_FALSE(result.ok());
    EXPECT_TRUE(absl::StrContains(result.status().message(),
                                  "bad.pvmk: corrupted interchange: "
                                  "Kernel.grid is at 4 mod 8, misaligned for "
                                  "its 8-byte elements"))
        << result.status();
    return;
  }
  FAIL() << "no misaligned candidate";
}

}  // namespace
}  // namespace pallasvm::compiler
