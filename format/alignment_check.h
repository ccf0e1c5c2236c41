// Reading a FlatBuffer that came from outside (an interchange file, a
// module, a cache entry) without a misaligned load.
//
// FlatBuffers 2.0.8's verifier checks a vector's length field for 4-byte
// alignment only, not its elements: a crafted buffer can start a vector of
// 8-byte elements ([long], [double], or structs holding them, such as
// bytecode.fbs's LayoutDesc) at 4 mod 8, and reading it through the
// generated accessors is undefined behaviour. FlatBuffers' builders align
// every such vector, so the check here refuses a misaligned one instead of
// reading it. It walks the buffer by its schema's reflection data (flatc
// --bfbs-gen-embed), so a field added to a schema is checked without a line
// written for it. Shared by the compiler's interchange reader and the
// runtime's module loader; knows nothing of either.
#ifndef PALLASVM_FORMAT_ALIGNMENT_CHECK_H_
#define PALLASVM_FORMAT_ALIGNMENT_CHECK_H_

#include <cstdint>
#include <memory>

#include "absl/status/status.h"
#include "absl/strings/string_view.h"

namespace pallasvm::format {

// Bytes at an 8-aligned address: the caller's own if they are (no copy),
// else an aligned copy owned by this object. FlatBuffers aligns fields
// relative to the buffer's start, so the start must be 8-aligned for them
// to be.
class AlignedBytes {
 public:
  explicit AlignedBytes(absl::string_view bytes);
  absl::string_view view() const { return view_; }

 private:
  std::unique_ptr<uint64_t[]> copy_;
  absl::string_view view_;
};

// OK if every vector and struct in `buffer` (a FlatBuffer already passed by
// FlatBuffers' verifier, rooted at the root table of `binary_schema`) lies
// at an address aligned for its elements. Else INVALID_ARGUMENT naming the
// field by its path from the root, e.g. "Kernel.in_types[1].shape is at 4
// mod 8, misaligned for its 8-byte elements". An empty vector is not
// checked: nothing of it is read.
absl::Status CheckAlignment(const uint8_t* buffer,
                            const uint8_t* binary_schema);

}  // namespace pallasvm::format

#endif  // PALLASVM_FORMAT_ALIGNMENT_CHECK_H_
