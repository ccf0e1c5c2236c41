// The text of a DEBUG_PRINT (jax.debug.print / pl.debug_print): the format
// with each `{}` replaced by the next value, written as interpret mode
// writes it (floats of every width as Python floats: float32 0.1 is
// "0.10000000149011612", 1.0 "1.0", 1e-5 "1e-05"; integers in decimal;
// bools True/False), and `{{` / `}}` as braces, as Python's str.format. The compiler accepts only formats
// of that kind (CheckDebugFormat).
#ifndef PALLASVM_VM_DEBUG_FORMAT_H_
#define PALLASVM_VM_DEBUG_FORMAT_H_

#include <cstdint>
#include <string>
#include <string_view>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "vm/dtype.h"

namespace pallasvm::vm {

// One queued value: its dtype and bytes (SizeOf(dtype) of them).
struct DebugValue {
  DType dtype = DType::F32;
  uint8_t bytes[4] = {};
};

// One scalar, as interpret mode prints it.
std::string FormatScalar(const DebugValue& value);

// The number of `{}` fields of `format`, or an error naming what is not
// supported (a field with a name, an index or a format spec, an unmatched
// brace).
absl::StatusOr<int> CheckDebugFormat(std::string_view format);

// `format` with its fields filled by values[0 .. count); fields past the
// values stay as "{}".
std::string FormatDebugPrint(std::string_view format, const DebugValue* values,
                             int count);

}  // namespace pallasvm::vm

#endif  // PALLASVM_VM_DEBUG_FORMAT_H_
