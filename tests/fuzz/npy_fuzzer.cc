// Fuzz target: .npy parsing (tools/npy.h). An accepted array must be
// self-consistent (data size = elements * element size) and survive a
// write and read back unchanged.
#include <cstddef>
#include <cstdint>

#include "tests/fuzz/fuzz_checks.h"
#include "tools/npy.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using pallasvm::fuzz::Fail;
  using pallasvm::tools::NpyArray;
  absl::StatusOr<NpyArray> array = pallasvm::tools::ParseNpy(
      absl::string_view(reinterpret_cast<const char*>(data), size), "fuzz.npy");
  if (!array.ok()) return 0;
  int64_t elements = 1;
  for (int64_t d : array->shape) {
    if (d < 0) Fail("ParseNpy", "accepted a negative dimension");
    if (__builtin_mul_overflow(elements, d, &elements)) {
      Fail("ParseNpy", "accepted a shape whose size overflows");
    }
  }
  if (static_cast<uint64_t>(elements) * array->element_size !=
      array->data.size()) {
    Fail("ParseNpy", "data size differs from the shape's");
  }
  if (!array->dtype.has_value()) {
    // '<V2': what a kernel expecting bf16 makes of it.
    absl::Status s = pallasvm::tools::ResolveDType(
        *array, pallasvm::vm::DType::BF16, "fuzz");
    if (!s.ok()) return 0;
  }
  const std::string written = pallasvm::tools::SerializeNpy(
      *array->dtype, array->shape, array->data.data());
  absl::StatusOr<NpyArray> back = pallasvm::tools::ParseNpy(written, "written");
  if (!back.ok()) Fail("ParseNpy of SerializeNpy", back.status().ToString());
  if (back->shape != array->shape || back->data != array->data) {
    Fail("SerializeNpy", "the array read back differs");
  }
  return 0;
}
