// The public C++ embedding API.
//
//   auto exe = pallasvm::Executable::Load(module_bytes);       // verify once
//   std::vector<pallasvm::Array> in = {...}, out = {...};
//   absl::Status s = exe->Run(in, out);                          // many times
//
// An Array describes caller-owned, dense, row-major memory. Run checks the
// number, dtypes and shapes of the arrays against the kernel and never
// writes outside the outputs. An Executable is not safe for concurrent Run
// calls (it owns one workspace); load one per thread instead.
#ifndef PALLASVM_RUNTIME_PALLASVM_H_
#define PALLASVM_RUNTIME_PALLASVM_H_

#include <cstdint>
#include <memory>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/types/span.h"
#include "runtime/grid_driver.h"
#include "runtime/kernel.h"
#include "vm/dtype.h"

namespace pallasvm {

using runtime::RunOptions;
using runtime::UninitializedMemory;
using vm::DType;

struct Array {
  DType dtype = DType::F32;
  std::vector<int64_t> shape;
  void* data = nullptr;  // inputs are only read
};

class Executable {
 public:
  // Loads and verifies a module (format/bytecode.fbs). `origin` names it
  // in errors (e.g. the file name). The module's buffers are checked
  // against `memory_limit` bytes (0: the machine's physical memory, see
  // vm/memory_limit.h) but not allocated: Run allocates them.
  static absl::StatusOr<std::unique_ptr<Executable>> Load(
      absl::string_view module_bytes, absl::string_view origin = "module",
      int64_t memory_limit = 0);

  const runtime::Kernel& kernel() const { return driver_.kernel(); }
  const runtime::GridDriver& driver() const { return driver_; }

  // Runs the whole grid once. Never throws: an allocation that fails is
  // RESOURCE_EXHAUSTED.
  absl::Status Run(absl::Span<const Array> inputs,
                   absl::Span<const Array> outputs,
                   const RunOptions& options = {});

 private:
  explicit Executable(std::shared_ptr<const runtime::Kernel> kernel)
      : driver_(std::move(kernel)) {}
  runtime::GridDriver driver_;
  std::vector<const void*> in_ptrs_;
  std::vector<void*> out_ptrs_;
};

}  // namespace pallasvm

#endif  // PALLASVM_RUNTIME_PALLASVM_H_
