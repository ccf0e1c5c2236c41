// .npy reading and writing, including the files the exporter writes.
#include "tools/npy.h"

#include <cstdio>
#include <cstring>
#include <string>
#include <vector>

#include "absl/strings/match.h"
#include "gtest/gtest.h"

namespace pallasvm::tools {
namespace {

TEST(Npy, RoundTrips) {
  std::vector<int32_t> v = {1, -2, 3, 4, 5, 6};
  std::string bytes = SerializeNpy(vm::DType::S32, {2, 3}, v.data());
  absl::StatusOr<NpyArray> a = ParseNpy(bytes, "mem");
  ASSERT_TRUE(a.ok()) << a.status();
  EXPECT_EQ(a->descr, "<i4");
  EXPECT_EQ(a->shape, (std::vector<int64_t>{2, 3}));
  ASSERT_EQ(a->data.size(), 24u);
  int32_t second;
  std::memcpy(&second, a->data.data() + 4, 4);
  EXPECT_EQ(second, -2);
}

TEST(Npy, ReadsWhatNumpyWrote) {
  // input_0.npy of add_vectors was written by numpy (f32[8]).
  absl::StatusOr<NpyArray> a =
      ReadNpy(std::string(PALLASVM_FIXTURES_DIR) + "/add_vectors/input_0.npy");
  ASSERT_TRUE(a.ok()) << a.status();
  EXPECT_EQ(a->dtype, vm::DType::F32);
  EXPECT_EQ(a->shape, std::vector<int64_t>{8});
}

TEST(Npy, Bfloat16IsResolvedFromTheKernel) {
  std::vector<uint16_t> v = {0x3f80, 0x4000};
  std::string bytes = SerializeNpy(vm::DType::BF16, {2}, v.data());
  absl::StatusOr<NpyArray> a = ParseNpy(bytes, "mem");
  ASSERT_TRUE(a.ok()) << a.status();
  EXPECT_FALSE(a->dtype.has_value());
  EXPECT_TRUE(ResolveDType(*a, vm::DType::BF16, "x").ok());
  NpyArray b = *a;
  b.dtype.reset();
  absl::Status s = ResolveDType(b, vm::DType::F32, "input 0");
  ASSERT_FALSE(s.ok());
  EXPECT_TRUE(absl::StrContains(s.message(), "expects float32")) << s;
}

TEST(Npy, BadFilesAreClearErrors) {
  std::vector<float> v(4, 1.0f);
  std::string good = SerializeNpy(vm::DType::F32, {4}, v.data());
  struct Bad {
    std::string bytes;
    const char* expect;
  } cases[] = {
      {"not numpy at all", "magic"},
      {good.substr(0, good.size() - 3), "data is"},
      {good.substr(0, 12), "truncated"},
  };
  for (const Bad& b : cases) {
    absl::StatusOr<NpyArray> a = ParseNpy(b.bytes, "f.npy");
    ASSERT_FALSE(a.ok());
    EXPECT_TRUE(absl::StrContains(a.status().message(), b.expect))
        << a.status();
    EXPECT_TRUE(absl::StrContains(a.status().message(), "f.npy"));
  }
  std::string fortran = good;
  size_t at = fortran.find("False");
  fortran.replace(at, 5, "True ");
  absl::StatusOr<NpyArray> f = ParseNpy(fortran, "f.npy");
  ASSERT_FALSE(f.ok());
  EXPECT_TRUE(absl::StrContains(f.status().message(), "Fortran"));
}

// ReadNpy reads the header, checks the data's size against the memory
// limit, then reads exactly that much: no more, no less.
TEST(Npy, ReadNpyChecksSizesBeforeReading) {
  const std::string path = ::testing::TempDir() + "/npy_test_sizes.npy";
  std::vector<int32_t> v = {1, 2, 3, 4, 5, 6};
  ASSERT_TRUE(WriteNpy(path, vm::DType::S32, {2, 3}, v.data()).ok());
  absl::StatusOr<NpyArray> a = ReadNpy(path, 24);
  ASSERT_TRUE(a.ok()) << a.status();
  EXPECT_EQ(a->data.size(), 24u);
  a = ReadNpy(path, 23);
  ASSERT_FALSE(a.ok());
  EXPECT_EQ(a.status().code(), absl::StatusCode::kResourceExhausted);
  EXPECT_TRUE(absl::StrContains(a.status().message(),
                                "(<i4 array of shape (2, 3)) needs 24 bytes, "
                                "more than the memory limit of 23 bytes"))
      << a.status();
  const std::string bytes = SerializeNpy(vm::DType::S32, {2, 3}, v.data());
  for (const std::string& bad :
       {bytes + "x", bytes.substr(0, bytes.size() - 1)}) {
    ASSERT_TRUE(WriteFileBytes(path, bad).ok());
    a = ReadNpy(path);
    EXPECT_FALSE(a.ok());
    EXPECT_TRUE(absl::StrContains(a.status().message(), "not a valid .npy"))
        << a.status();
  }
  a = ReadNpy("/dev/zero");
  EXPECT_FALSE(a.ok());
  EXPECT_TRUE(absl::StrContains(a.status().message(), "magic"));
  absl::StatusOr<std::string> all = ReadFileBytes("/dev/zero", 1 << 20);
  ASSERT_FALSE(all.ok());
  EXPECT_TRUE(absl::StrContains(all.status().message(),
                                "/dev/zero is larger than 1 MiB"))
      << all.status();
  std::remove(path.c_str());
}

}  // namespace
}  // namespace pallasvm::tools
