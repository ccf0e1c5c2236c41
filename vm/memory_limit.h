// How much memory a kernel may make pallasvm allocate, and the checked size
// arithmetic every allocation's size goes through.
//
// A module is data from outside (a file, an XLA attribute): its sizes are
// claims, not facts. The loader checks each buffer a module asks for (the
// frame, each ref, their total per core) against a memory limit, and so do
// the grid driver (per call: cores x workspace, race detection marks) and
// the command line (outputs, input files), before allocating. An
// allocation that fails anyway is a RESOURCE_EXHAUSTED status naming the
// buffer, never a crash. The default limit is the machine's physical
// memory, or the address-space limit (RLIMIT_AS) when that is lower.
// In vm/ because every layer that sizes buffers (compiler, runtime, the
// command line) depends on it; it knows nothing of them.
#ifndef PALLASVM_VM_MEMORY_LIMIT_H_
#define PALLASVM_VM_MEMORY_LIMIT_H_

#include <cstdint>
#include <optional>
#include <string>

#include "absl/status/status.h"
#include "absl/strings/string_view.h"

namespace pallasvm::vm {

// min(physical memory, RLIMIT_AS) when first asked; 2^62 if neither is
// known.
int64_t DefaultMemoryLimit();

// `limit` itself when positive, else DefaultMemoryLimit(): the meaning of
// a memory_limit option of 0.
int64_t ResolveMemoryLimit(int64_t limit);

// "4096 bytes", "1.5 KiB", "4 GiB": a size as a person reads it.
std::string FormatBytes(int64_t bytes);

// a * b and a + b for non-negative sizes; nullopt when negative or past
// int64.
std::optional<int64_t> CheckedMul(int64_t a, int64_t b);
std::optional<int64_t> CheckedAdd(int64_t a, int64_t b);

// OK if `bytes` fits in `limit` (resolved as ResolveMemoryLimit does),
// else RESOURCE_EXHAUSTED: "<what> needs <size>, more than the memory
// limit of <limit>".
absl::Status CheckMemory(absl::string_view what, int64_t bytes, int64_t limit);

}  // namespace pallasvm::vm

#endif  // PALLASVM_VM_MEMORY_LIMIT_H_
