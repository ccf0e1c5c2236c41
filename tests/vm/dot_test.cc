// DOT_F32's kernel against a naive triple loop. The kernel promises one
// fused multiply-add per k step in increasing k order, whatever its
// blocking, so the naive loop written the same way must agree bit for bit;
// and it keeps its packing buffers per thread, so concurrent callers must
// not disturb each other.
#include "vm/kernels/dot.h"

#include <cmath>
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
