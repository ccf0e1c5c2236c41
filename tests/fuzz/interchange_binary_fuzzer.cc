// Fuzz target: the binary (FlatBuffers) kernel interchange through the whole
// compiler. The FlatBuffers verifier sees arbitrary bytes here; what passes
// it reaches the compiler with every field value the schema allows.
#include <cstddef>
#include <cstdint>

#include "compiler/compiler.h"
#include "tests/fuzz/fuzz_checks.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const absl::string_view bytes(reinterpret_cast<const char*>(data), size);
  // Without the "PVMK" identifier the input would be read as JSON, the
  // other target's (interchange_json).
  if (!pallasvm::fuzz::IsBinaryInterchange(bytes)) return -1;
  pallasvm::fuzz::CheckCompileResult(
      pallasvm::compiler::CompileInterchange(bytes, "fuzz.pvmk"));
  return 0;
}
