// Comparing a kernel's outputs with expected ones (from JAX): exact for
// integers and bools, |actual - expected| <= atol + rtol * |expected| for
// floats, NaN matching NaN. Shared by `pallasvm run --check`, the golden
// tests and the benchmarks.
#ifndef PALLASVM_TOOLS_OUTPUT_CHECK_H_
#define PALLASVM_TOOLS_OUTPUT_CHECK_H_

#include <cstdint>
#include <string>

#include "vm/dtype.h"

namespace pallasvm::tools {

struct Tolerance {
  double atol = 0;
  double rtol = 0;
};

// The default for a dtype: exact for integers and bool, 1e-5 for f32 and
// 1e-2 for the 2-byte floats.
Tolerance DefaultTolerance(vm::DType dtype);

struct CheckResult {
  int64_t count = 0;
  int64_t mismatches = 0;
  double max_abs_diff = 0;
  double max_rel_diff = 0;
  int64_t worst_index = -1;  // flat index of the largest violation
  double worst_actual = 0, worst_expected = 0;
  bool ok() const { return mismatches == 0; }
  std::string Summary() const;
};

CheckResult CompareArrays(vm::DType dtype, const void* actual,
                          const void* expected, int64_t count,
                          Tolerance tolerance);

// One element as a double (bf16/f16 widened exactly).
double ElementAsDouble(vm::DType dtype, const void* data, int64_t index);

}  // namespace pallasvm::tools

#endif  // PALLASVM_TOOLS_OUTPUT_CHECK_H_
