// Reading the kernel interchange (format/kernel.fbs) from JSON or binary,
// verified and version-checked. Nothing downstream sees unverified bytes.
#ifndef PALLASVM_COMPILER_INTERCHANGE_H_
#define PALLASVM_COMPILER_INTERCHANGE_H_

#include "absl/strings/string_view.h"
#include <cstdint>
#include <string>
#include <string_view>

#include "absl/status/statusor.h"
#include "kernel_generated.h"

namespace pallasvm::compiler {

// The only interchange version this compiler reads.
inline constexpr uint32_t kInterchangeVersion = 1;

// A verified interchange buffer; `kernel` points into `bytes`.
struct Interchange {
  std::string bytes;  // binary FlatBuffer
  const interchange::Kernel* kernel = nullptr;
};

// Parses `data`, which is either a binary interchange (file identifier
// "PVMK") or its JSON form. `origin` (a file name) is used in errors.
absl::StatusOr<Interchange> ParseInterchange(absl::string_view data,
                                             absl::string_view origin);

}  // namespace pallasvm::compiler

#endif  // PALLASVM_COMPILER_INTERCHANGE_H_
