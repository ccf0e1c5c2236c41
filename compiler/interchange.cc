// JSON goes through FlatBuffers' own parser with the schema text embedded at
// build time, so the JSON and binary forms cannot drift apart.
#include "compiler/interchange.h"

#include <cstdint>
#include <memory>

#include "absl/strings/str_cat.h"
#include "flatbuffers/flatbuffers.h"
#include "flatbuffers/idl.h"
#include "format/alignment_check.h"
#include "kernel_bfbs_generated.h"
#include "kernel_schema_text.h"

namespace pallasvm::compiler {

absl::StatusOr<Interchange> ParseInterchange(absl::string_view data,
                                             absl::string_view origin) {
  Interchange result;
  const bool is_binary =
      data.size() >= 8 &&
      flatbuffers::BufferHasIdentifier(data.data(),
                                       interchange::KernelIdentifier());
  if (is_binary) {
    result.bytes = std::string(data);
  } else {
    size_t first = data.find_first_not_of(" \t\r\n");
    if (first == absl::string_view::npos || data[first] != '{') {
      return absl::InvalidArgumentError(absl::StrCat(
          origin,
          ": not a pallasvm kernel interchange (neither JSON starting with "
          "'{' nor a binary file with identifier PVMK)"));
    }
    flatbuffers::IDLOptions options;
    options.strict_json = false;
    flatbuffers::Parser parser(options);
    std::string schema(kKernelSchemaText);
    if (!parser.Parse(schema.c_str())) {
      return absl::InternalError(
          absl::StrCat("embedded kernel.fbs failed to parse: ", parser.error_));
    }
    std::string json(data);
    if (!parser.Parse(json.c_str())) {
      return absl::InvalidArgumentError(
          absl::StrCat(origin, ": malformed interchange JSON: ", parser.error_));
    }
    result.bytes.assign(
        reinterpret_cast<const char*>(parser.builder_.GetBufferPointer()),
        parser.builder_.GetSize());
  }
  flatbuffers::Verifier verifier(
      reinterpret_cast<const uint8_t*>(result.bytes.data()), result.bytes.size(),
      /*max_depth=*/256, /*max_tables=*/100'000'000);
  if (!interchange::VerifyKernelBuffer(verifier)) {
    return absl::InvalidArgumentError(absl::StrCat(
        origin, ": corrupted interchange: FlatBuffers verification failed"));
  }
  // `bytes` is heap storage, aligned for any scalar, as FlatBuffers'
  // alignment of its fields relative to the buffer's start needs.
  if (absl::Status s = format::CheckAlignment(
          reinterpret_cast<const uint8_t*>(result.bytes.data()),
          interchange::KernelBinarySchema::data());
      !s.ok()) {
    return absl::Status(
        s.code(),
        absl::StrCat(origin, ": corrupted interchange: ", s.message()));
  }
  result.kernel = interchange::GetKernel(result.bytes.data());
  if (result.kernel->version() != kInterchangeVersion) {
    return absl::InvalidArgumentError(absl::StrCat(
        origin, ": interchange version ", result.kernel->version(),
        " is not supported; this pallasvm reads version ", kInterchangeVersion,
        " (re-export the kernel with the matching pallasvm exporter)"));
  }
  if (result.kernel->jaxpr() == nullptr) {
    return absl::InvalidArgumentError(
        absl::StrCat(origin, ": interchange has no kernel jaxpr"));
  }
  return result;
}

}  // namespace pallasvm::compiler
