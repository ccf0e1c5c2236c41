// DOT_F32's kernel against a naive triple loop. The kernel promises one
// fused multiply-add per k step in increasing k order, whatever its
// blocking, so the naive loop written the same way must agree bit for bit;
// and it keeps its packing buffers per thread, so concurrent callers must
// not disturb each other. Large products are shared with a worker thread
// in chunks of rows: the result must not depend on who computes which
// chunk, nor on whether the worker runs at all.
#include "vm/kernels/dot.h"

#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <bit>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <random>
#include <thread>
#include <vector>

#include "gtest/gtest.h"

namespace pallasvm::vm::kernels {
namespace {

std::vector<float> Naive(const std::vector<float>& a,
                         const std::vector<float>& b, int64_t m, int64_t k,
                         int64_t n) {
  std::vector<float> c(m * n);
  for (int64_t i = 0; i < m; ++i) {
    for (int64_t j = 0; j < n; ++j) {
      float acc = 0.f;
      for (int64_t p = 0; p < k; ++p)
        acc = std::fma(a[i * k + p], b[p * n + j], acc);
      c[i * n + j] = acc;
    }
  }
  return c;
}

void Check(int64_t m, int64_t k, int64_t n) {
  std::mt19937 rng(static_cast<unsigned>(m * 131 + k * 7 + n));
  std::normal_distribution<float> normal;
  std::vector<float> a(m * k), b(k * n), c(m * n, -1.f);
  for (float& x : a) x = normal(rng);
  for (float& x : b) x = normal(rng);
  DotF32(c.data(), a.data(), b.data(), m, k, n);
  const std::vector<float> want = Naive(a, b, m, k, n);
  for (int64_t i = 0; i < m * n; ++i) {
    ASSERT_EQ(c[i], want[i]) << m << "x" << k << "x" << n << " at " << i;
  }
}

// Sizes past every block size of the kernel (kc 256, mc 96), with edges.
TEST(DotF32, MatchesNaiveExactly) {
  Check(256, 300, 200);
  Check(263, 256, 129);  // odd row count: the halves differ in size
}

// Random operands for an m x k x n product, and a C to add to.
struct Operands {
  Operands(int64_t m, int64_t k, int64_t n) : a(m * k), b(k * n), c(m * n) {
    std::mt19937 rng(static_cast<unsigned>(m * 131 + k * 7 + n));
    std::normal_distribution<float> normal;
    for (float& x : a) x = normal(rng);
    for (float& x : b) x = normal(rng);
    for (float& x : c) x = normal(rng);
  }
  std::vector<float> a, b, c;
};

// DotF32 and DotAddF32 with the current thread settings.
std::vector<float> DotBoth(const Operands& x, int64_t m, int64_t k, int64_t n) {
  std::vector<float> out(2 * m * n, -1.f);
  DotF32(out.data(), x.a.data(), x.b.data(), m, k, n);
  std::copy(x.c.begin(), x.c.end(), out.begin() + m * n);
  DotAddF32(out.data() + m * n, x.a.data(), x.b.data(), m, k, n);
  return out;
}

void ExpectSameBits(const std::vector<float>& got,
                    const std::vector<float>& want, const char* what) {
  ASSERT_EQ(got.size(), want.size());
  for (size_t i = 0; i < got.size(); ++i) {
    ASSERT_EQ(std::bit_cast<uint32_t>(got[i]), std::bit_cast<uint32_t>(want[i]))
        << what << " at " << i;
  }
}

// Large enough to be shared (64 rows, 2^23 multiply-adds), ragged in every
// direction, with one and with several k blocks (DotAddF32 past 256 goes
// through a buffer), two column blocks (n past 1056), and a tall one that
// makes many chunks.
constexpr int64_t kSharedShapes[][3] = {
    {64, 512, 256},  {256, 256, 256}, {263, 300, 200}, {67, 513, 257},
    {199, 256, 193}, {1029, 64, 129}, {96, 600, 150},  {130, 256, 1100},
};

class DotThreadsTest : public ::testing::Test {
 protected:
  void TearDown() override {
    SetDotWorkerHookForTesting(DotWorkerHookForTesting::kNone);
    SetDotThreads(0);
  }
};

TEST_F(DotThreadsTest, TwoThreadsGiveTheOneThreadBits) {
  for (const auto& [m, k, n] : kSharedShapes) {
    SCOPED_TRACE(testing::Message() << m << "x" << k << "x" << n);
    const Operands x(m, k, n);
    SetDotThreads(1);
    const std::vector<float> want = DotBoth(x, m, k, n);
    SetDotThreads(2);
    // The worker takes at least the first chunk of every block, so both
    // threads really compute parts of C.
    SetDotWorkerHookForTesting(DotWorkerHookForTesting::kWorkerTakesFirstChunk);
    const int64_t before = DotWorkerChunksForTesting();
    ExpectSameBits(DotBoth(x, m, k, n), want, "worker takes chunks");
    EXPECT_GT(DotWorkerChunksForTesting(), before);
    SetDotWorkerHookForTesting(DotWorkerHookForTesting::kNone);
    ExpectSameBits(DotBoth(x, m, k, n), want, "either takes chunks");
  }
}

TEST_F(DotThreadsTest, CompletesWhenTheWorkerNeverRuns) {
  // As when the OS does not schedule the worker: the caller must not wait
  // for it, and computes every chunk itself.
  SetDotThreads(2);
  SetDotWorkerHookForTesting(DotWorkerHookForTesting::kWorkerPaused);
  for (const auto& [m, k, n] : kSharedShapes) {
    SCOPED_TRACE(testing::Message() << m << "x" << k << "x" << n);
    const Operands x(m, k, n);
    const int64_t before = DotWorkerChunksForTesting();
    const std::vector<float> paused = DotBoth(x, m, k, n);
    EXPECT_EQ(DotWorkerChunksForTesting(), before);
    SetDotThreads(1);
    ExpectSameBits(paused, DotBoth(x, m, k, n), "worker paused");
    SetDotThreads(2);
  }
  Check(263, 300, 200);  // and against the naive loop
}

TEST_F(DotThreadsTest, AForkedChildRunsSharedSizesAlone) {
  // The child has no worker thread: a product must not wait for one.
  constexpr int64_t m = 256, k = 256, n = 256;
  const Operands x(m, k, n);
  SetDotThreads(1);
  const std::vector<float> want = DotBoth(x, m, k, n);
  SetDotThreads(2);
  SetDotWorkerHookForTesting(DotWorkerHookForTesting::kWorkerTakesFirstChunk);
  ExpectSameBits(DotBoth(x, m, k, n), want, "before the fork");  // a worker
  SetDotWorkerHookForTesting(DotWorkerHookForTesting::kNone);
  std::vector<float> got(2 * m * n);
  const pid_t pid = fork();
  ASSERT_GE(pid, 0);
  if (pid == 0) {
    DotF32(got.data(), x.a.data(), x.b.data(), m, k, n);
    std::copy(x.c.begin(), x.c.end(), got.begin() + m * n);
    DotAddF32(got.data() + m * n, x.a.data(), x.b.data(), m, k, n);
    _exit(std::memcmp(got.data(), want.data(), got.size() * sizeof(float)) == 0
              ? 0
              : 1);
  }
  int status = 0;
  ASSERT_EQ(waitpid(pid, &status, 0), pid);
  EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0) << status;
}

TEST(DotF32, ConcurrentCallersAllGetExactResults) {
  // Several threads at once, as with several simulated cores.
  std::vector<std::thread> threads;
  for (int t = 0; t < 4; ++t) {
    threads.emplace_back([] { Check(256, 256, 128); });
  }
  for (std::thread& t : threads) t.join();
}

}  // namespace
}  // namespace pallasvm::vm::kernels
