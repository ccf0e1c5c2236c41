// Finding and loading kernels from files for the command line, the golden
// tests and the benchmarks: a module (.pvm), an interchange (.json / .pvmk,
// compiled through the module cache), or a fixture directory holding
// kernel.json, input_<i>.npy and expected_<i>.npy.
#ifndef PALLASVM_TOOLS_KERNEL_FILES_H_
#define PALLASVM_TOOLS_KERNEL_FILES_H_

#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "runtime/pallasvm.h"
#include "tools/npy.h"

namespace pallasvm::tools {

struct Fixture {
  std::string kernel_path;
  std::vector<std::string> inputs;    // input_0.npy, input_1.npy, ...
  std::vector<std::string> expected;  // expected_0.npy, ...
};

// The fixture in directory `dir`.
absl::StatusOr<Fixture> FindFixture(const std::string& dir);

struct LoadOptions {
  bool use_cache = true;
  std::string cache_dir;  // empty: ModuleCache::DefaultDirectory()
  // Executable::Load's memory limit (0: the machine's; INT64_MAX: none,
  // for a module that will not be run).
  int64_t memory_limit = 0;
};

struct LoadedModule {
  std::string bytes;      // the module
  bool compiled = false;  // false: read as a module file
  bool cache_hit = false;
};

// The module for a kernel file: read as is if it is a module, else
// compiled (through the cache unless disabled).
absl::StatusOr<LoadedModule> LoadModuleBytes(const std::string& path,
                                             const LoadOptions& options);

// LoadModuleBytes + Executable::Load. A cached module that the runtime
// refuses is evicted and rebuilt once.
absl::StatusOr<std::unique_ptr<Executable>> LoadExecutable(
    const std::string& path, const LoadOptions& options);

// Reads .npy files as the kernel's inputs (checking count, dtype, shape),
// all of them together in `memory_limit` bytes (0: the default,
// vm/memory_limit.h).
absl::StatusOr<std::vector<NpyArray>> ReadInputs(
    const runtime::Kernel& kernel, const std::vector<std::string>& paths,
    int64_t memory_limit = 0);

// Reads .npy files as expected outputs (checking count, dtype, shape).
absl::StatusOr<std::vector<NpyArray>> ReadExpected(
    const runtime::Kernel& kernel, const std::vector<std::string>& paths,
    int64_t memory_limit = 0);

}  // namespace pallasvm::tools

#endif  // PALLASVM_TOOLS_KERNEL_FILES_H_
