// What the fuzz targets check besides "no crash": properties every result
// must have. A violated property aborts, which libFuzzer reports as a crash.
#ifndef PALLASVM_TESTS_FUZZ_FUZZ_CHECKS_H_
#define PALLASVM_TESTS_FUZZ_FUZZ_CHECKS_H_

#include <cstdio>
#include <cstdlib>
#include <string>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "compiler/compiler.h"
#include "flatbuffers/flatbuffers.h"
#include "kernel_generated.h"
#include "runtime/kernel.h"

namespace pallasvm::fuzz {

// What the compiler may let one kernel's buffers take: far below
// libFuzzer's -malloc_limit_mb=2048 (tests/fuzz/run.sh), so that a kernel
// over it is an error, and one under it a finding if it allocates GBs.
inline compiler::CompileOptions FuzzCompileOptions() {
  compiler::CompileOptions options;
  options.memory_limit = int64_t{256} << 20;
  return options;
}

inline bool IsBinaryInterchange(absl::string_view bytes) {
  return bytes.size() >= 8 &&
         flatbuffers::BufferHasIdentifier(bytes.data(),
                                          interchange::KernelIdentifier());
}

[[noreturn]] inline void Fail(absl::string_view what, absl::string_view why) {
  std::fprintf(stderr, "FUZZ CHECK FAILED: %.*s: %.*s\n",
               static_cast<int>(what.size()), what.data(),
               static_cast<int>(why.size()), why.data());
  std::abort();
}

// A compile either fails with an error a kernel author can act on, or gives
// a module the runtime accepts. An internal error ("compiler bug: ...")
// means the compiler emitted code its own verifier refuses. (The status
// code, not the text: messages quote the file's own strings.)
inline void CheckCompileResult(const absl::StatusOr<std::string>& module) {
  if (!module.ok()) {
    if (absl::IsInternal(module.status())) {
      Fail("compile", module.status().ToString());
    }
    return;
  }
  absl::StatusOr<std::shared_ptr<const runtime::Kernel>> kernel =
      runtime::LoadModule(*module, "compiled");
  if (!kernel.ok()) {
    Fail("the runtime refuses a compiled module", kernel.status().ToString());
  }
}

}  // namespace pallasvm::fuzz

#endif  // PALLASVM_TESTS_FUZZ_FUZZ_CHECKS_H_
