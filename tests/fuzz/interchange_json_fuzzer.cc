// Fuzz target: the JSON form of the kernel interchange (format/kernel.fbs)
// through the whole compiler (parse, verify, lower, emit, vm::Verify). Any
// input must give a module or an error status: never a crash, a hang, or
// "compiler bug: generated code fails verification".
#include <cstddef>
#include <cstdint>

#include "compiler/compiler.h"
#include "tests/fuzz/fuzz_checks.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const absl::string_view bytes(reinterpret_cast<const char*>(data), size);
  // Binary interchanges are the other target's (interchange_binary).
  if (pallasvm::fuzz::IsBinaryInterchange(bytes)) return -1;
  pallasvm::fuzz::CheckCompileResult(
      pallasvm::compiler::CompileInterchange(bytes, "fuzz.json"));
  return 0;
}
