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
absl::StatusOr<NpyArray> ReadNpy(const std::string& path);

// Resolves an array against the dtype a kernel expects ('<V2' becomes
// BF16 or F16); errors if they disagree.
absl::Status ResolveDType(NpyArray& array, vm::DType expected,
                          absl::string_view what);

std::string SerializeNpy(vm::DType dtype, const std::vector<int64_t>& shape,
                         const void* data);
// Writes to a temporary file and renames it into place.
absl::Status WriteNpy(const std::string& path, vm::DType dtype,
                      const std::vector<int64_t>& shape, const void* data);

absl::StatusOr<std::string> ReadFileBytes(const std::string& path);

}  // namespace pallasvm::tools

#endif  // PALLASVM_TOOLS_NPY_H_
