// Reading and writing NumPy .npy files (format versions 1-3, little-endian,
// C order). bfloat16 arrays are stored as NumPy stores ml_dtypes.bfloat16:
// descr '<V2' (raw 2-byte elements), with the real dtype coming from the
// kernel's signature.
#ifndef PALLASVM_TOOLS_NPY_H_
#define PALLASVM_TOOLS_NPY_H_

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "vm/dtype.h"

namespace pallasvm::tools {

struct NpyArray {
  std::string descr;               // as in the file, e.g. "<f4"
  std::optional<vm::DType> dtype;  // nullopt for "V2" until resolved
  int element_size = 0;
  std::vector<int64_t> shape;
  std::vector<uint8_t> data;
};

absl::StatusOr<NpyArray> ParseNpy(absl::string_view bytes,
                                  absl::string_view origin);
// Reads the header first and refuses (RESOURCE_EXHAUSTED, naming the file
// and its shape) data larger than `memory_limit` bytes (0: the default,
// vm/memory_limit.h) before allocating it; a file with more or less
// data than its shape says is an error.
absl::StatusOr<NpyArray> ReadNpy(const std::string& path,
                                 int64_t memory_limit = 0);

// Resolves an array against the dtype a kernel expects ('<V2' becomes
// BF16 or F16); errors if they disagree.
absl::Status ResolveDType(NpyArray& array, vm::DType expected,
                          absl::string_view what);

std::string SerializeNpy(vm::DType dtype, const std::vector<int64_t>& shape,
                         const void* data);
// Writes to a new temporary file beside `path` and renames it into place:
// the target is replaced whole or not at all, a failure leaves no
// temporary behind, and a directory at `path` is an error (never
// replaced).
absl::Status WriteFileBytes(const std::string& path, absl::string_view bytes);
absl::Status WriteNpy(const std::string& path, vm::DType dtype,
                      const std::vector<int64_t>& shape, const void* data);

// The whole file; an error for a directory, or for a file (or a device
// such as /dev/zero) longer than `max_bytes` (0: the default memory limit,
// vm/memory_limit.h).
absl::StatusOr<std::string> ReadFileBytes(const std::string& path,
                                          int64_t max_bytes = 0);

}  // namespace pallasvm::tools

#endif  // PALLASVM_TOOLS_NPY_H_
