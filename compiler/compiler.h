// The compiler's entry point: a kernel interchange in, a module out.
//
//   interchange (format/kernel.fbs) -> verify refs, grid and block mappings
//   -> lower the kernel body and each index map (compiler/lowering.h)
//   -> vm::Verify -> module (format/bytecode.fbs)
#ifndef PALLASVM_COMPILER_COMPILER_H_
#define PALLASVM_COMPILER_COMPILER_H_

#include "absl/strings/string_view.h"
#include <cstdint>
#include <string>
#include <string_view>

#include "absl/status/statusor.h"
#include "compiler/interchange.h"

namespace pallasvm::compiler {

// Module schema version written into every module; see format/bytecode.fbs.
inline constexpr uint32_t kModuleSchemaVersion = 5;
inline constexpr absl::string_view kCompilerVersion = "pallasvm-compiler 0.7.0";

struct CompileOptions {
  // The most bytes one value, ref or array of the kernel, and all its refs
  // together, may take (a crafted file must not make the compiler or the
  // runtime allocate more): by default the machine's physical memory.
  // Past it, compiling fails with RESOURCE_EXHAUSTED naming the buffer.
  int64_t memory_limit = 0;  // 0: vm::DefaultMemoryLimit()
};

// Compiles a parsed interchange into module bytes. Errors name the kernel,
// the equation and its source line.
// `source_hash` is recorded in the module (the cache checks it).
absl::StatusOr<std::string> CompileKernel(const Interchange& interchange,
                                          absl::string_view source_hash = "",
                                          const CompileOptions& options = {});

// Parses (JSON or binary) and compiles.
absl::StatusOr<std::string> CompileInterchange(
    absl::string_view data, absl::string_view origin,
    absl::string_view source_hash = "", const CompileOptions& options = {});

// The content hash of an interchange, as hex: the module cache's key.
std::string ContentHash(absl::string_view bytes);

}  // namespace pallasvm::compiler

#endif  // PALLASVM_COMPILER_COMPILER_H_
