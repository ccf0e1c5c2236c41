#include "runtime/pallasvm.h"

#include <new>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"

namespace pallasvm {
namespace {

absl::Status CheckArrays(absl::Span<const Array> given,
                         const std::vector<runtime::ArrayType>& want,
                         absl::string_view what, absl::string_view kernel) {
  if (given.size() != want.size()) {
    return absl::InvalidArgumentError(
        absl::StrCat("kernel '", kernel, "' takes ", want.size(), " ", what,
                     "s, got ", given.size()));
  }
  for (size_t i = 0; i < given.size(); ++i) {
    const Array& a = given[i];
    if (a.dtype != want[i].dtype || a.shape != want[i].shape) {
      return absl::InvalidArgumentError(
          absl::StrCat("kernel '", kernel, "': ", what, " ", i, " must be ",
                       want[i].ToString(), ", got ", vm::Name(a.dtype), "[",
                       absl::StrJoin(a.shape, ","), "]"));
    }
    if (a.data == nullptr && want[i].bytes() > 0) {
      return absl::InvalidArgumentError(absl::StrCat(
          "kernel '", kernel, "': ", what, " ", i, " has no data"));
    }
  }
  return absl::OkStatus();
}

}  // namespace

absl::StatusOr<std::unique_ptr<Executable>> Executable::Load(
    absl::string_view module_bytes, absl::string_view origin,
    int64_t memory_limit) {
  try {
    absl::StatusOr<std::shared_ptr<const runtime::Kernel>> kernel =
        runtime::LoadModule(module_bytes, origin, memory_limit);
    if (!kernel.ok()) return kernel.status();
    return std::unique_ptr<Executable>(new Executable(*std::move(kernel)));
  } catch (const std::bad_alloc&) {
    return absl::ResourceExhaustedError(
        absl::StrCat(origin, ": out of memory while loading the module"));
  }
}

absl::Status Executable::Run(absl::Span<const Array> inputs,
                             absl::Span<const Array> outputs,
                             const RunOptions& options) {
  const runtime::Kernel& k = kernel();
  if (absl::Status s = CheckArrays(inputs, k.in_types, "input", k.name);
      !s.ok()) {
    return s;
  }
  if (absl::Status s = CheckArrays(outputs, k.out_types, "output", k.name);
      !s.ok()) {
    return s;
  }
  // The driver checks its allocations against options.memory_limit; what
  // the C++ library allocates beyond them (small vectors) can still throw,
  // and an exception must not cross the API.
  try {
    in_ptrs_.clear();
    out_ptrs_.clear();
    for (const Array& a : inputs) in_ptrs_.push_back(a.data);
    for (const Array& a : outputs) out_ptrs_.push_back(a.data);
    return driver_.Run(in_ptrs_, out_ptrs_, options);
  } catch (const std::bad_alloc&) {
    return absl::ResourceExhaustedError(
        absl::StrCat("kernel '", k.name, "': out of memory"));
  }
}

}  // namespace pallasvm
