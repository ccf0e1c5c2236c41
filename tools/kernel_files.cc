#include "tools/kernel_files.h"

#include <algorithm>
#include <filesystem>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/strip.h"
#include "compiler/compiler.h"
#include "compiler/module_cache.h"
#include "flatbuffers/flatbuffers.h"
#include "vm/memory_limit.h"

namespace pallasvm::tools {
namespace {

// Files named <prefix><i>.npy in `dir`, in order of i; gaps are an error.
absl::StatusOr<std::vector<std::string>> NumberedFiles(
    const std::string& dir, absl::string_view prefix) {
  std::vector<std::pair<int, std::string>> found;
  std::error_code ec;
  for (const auto& entry : std::filesystem::directory_iterator(dir, ec)) {
    std::string name = entry.path().filename().string();
    absl::string_view rest = name;
    if (!absl::ConsumePrefix(&rest, prefix) ||
        !absl::ConsumeSuffix(&rest, ".npy")) {
      continue;
    }
    int i;
    if (absl::SimpleAtoi(rest, &i))
      found.emplace_back(i, entry.path().string());
  }
  if (ec) return absl::NotFoundError(absl::StrCat("cannot list ", dir));
  std::sort(found.begin(), found.end());
  std::vector<std::string> paths;
  for (size_t k = 0; k < found.size(); ++k) {
    if (found[k].first != static_cast<int>(k)) {
      return absl::InvalidArgumentError(
          absl::StrCat(dir, ": ", prefix, k, ".npy is missing"));
    }
    paths.push_back(found[k].second);
  }
  return paths;
}

absl::StatusOr<std::vector<NpyArray>> ReadArrays(
    const std::vector<runtime::ArrayType>& types,
    const std::vector<std::string>& paths, absl::string_view what,
    absl::string_view kernel, int64_t memory_limit) {
  if (paths.size() != types.size()) {
    return absl::InvalidArgumentError(
        absl::StrCat("kernel '", kernel, "' has ", types.size(), " ", what,
                     "s, given ", paths.size(), " .npy files"));
  }
  std::vector<NpyArray> arrays;
  int64_t left = vm::ResolveMemoryLimit(memory_limit);
  for (size_t i = 0; i < paths.size(); ++i) {
    absl::StatusOr<NpyArray> a = ReadNpy(paths[i], left);
    if (!a.ok()) return a.status();
    left -= static_cast<int64_t>(a->data.size());
    if (left <= 0) left = 1;  // the next non-empty file is refused
    std::string label = absl::StrCat(what, " ", i, " (", paths[i], ")");
    if (absl::Status s = ResolveDType(*a, types[i].dtype, label); !s.ok()) {
      return s;
    }
    if (a->shape != types[i].shape) {
      return absl::InvalidArgumentError(
          absl::StrCat(label, " has shape (", absl::StrJoin(a->shape, ", "),
                       ") but the kernel expects ", types[i].ToString()));
    }
    arrays.push_back(*std::move(a));
  }
  return arrays;
}

}  // namespace

absl::StatusOr<Fixture> FindFixture(const std::string& dir) {
  Fixture f;
  f.kernel_path = dir + "/kernel.json";
  if (!std::filesystem::exists(f.kernel_path)) {
    return absl::NotFoundError(
        absl::StrCat(dir, " is not a fixture directory (no kernel.json)"));
  }
  absl::StatusOr<std::vector<std::string>> in = NumberedFiles(dir, "input_");
  if (!in.ok()) return in.status();
  absl::StatusOr<std::vector<std::string>> ex = NumberedFiles(dir, "expected_");
  if (!ex.ok()) return ex.status();
  f.inputs = *in;
  f.expected = *ex;
  return f;
}

absl::StatusOr<LoadedModule> LoadModuleBytes(const std::string& path,
                                             const LoadOptions& options) {
  absl::StatusOr<std::string> bytes = ReadFileBytes(path);
  if (!bytes.ok()) return bytes.status();
  LoadedModule m;
  if (bytes->size() >= 8 &&
      flatbuffers::BufferHasIdentifier(bytes->data(), "PVMB")) {
    m.bytes = *std::move(bytes);
    return m;
  }
  m.compiled = true;
  if (!options.use_cache) {
    absl::StatusOr<std::string> module =
        compiler::CompileInterchange(*bytes, path);
    if (!module.ok()) return module.status();
    m.bytes = *std::move(module);
    return m;
  }
  compiler::ModuleCache cache(options.cache_dir.empty()
                                  ? compiler::ModuleCache::DefaultDirectory()
                                  : options.cache_dir);
  absl::StatusOr<std::string> module =
      cache.GetOrCompile(*bytes, path, &m.cache_hit);
  if (!module.ok()) return module.status();
  m.bytes = *std::move(module);
  return m;
}

absl::StatusOr<std::unique_ptr<Executable>> LoadExecutable(
    const std::string& path, const LoadOptions& options) {
  absl::StatusOr<LoadedModule> m = LoadModuleBytes(path, options);
  if (!m.ok()) return m.status();
  absl::StatusOr<std::unique_ptr<Executable>> exe =
      Executable::Load(m->bytes, path, options.memory_limit);
  if (!exe.ok() && m->cache_hit &&
      exe.status().code() != absl::StatusCode::kResourceExhausted) {
    // A cached entry the runtime refuses is never trusted: rebuild it.
    absl::StatusOr<std::string> bytes = ReadFileBytes(path);
    if (!bytes.ok()) return bytes.status();
    compiler::ModuleCache cache(options.cache_dir.empty()
                                    ? compiler::ModuleCache::DefaultDirectory()
                                    : options.cache_dir);
    cache.Evict(compiler::ModuleCache::Key(*bytes));
    absl::StatusOr<std::string> module = cache.GetOrCompile(*bytes, path);
    if (!module.ok()) return module.status();
    return Executable::Load(*module, path, options.memory_limit);
  }
  return exe;
}

absl::StatusOr<std::vector<NpyArray>> ReadInputs(
    const runtime::Kernel& kernel, const std::vector<std::string>& paths,
    int64_t memory_limit) {
  return ReadArrays(kernel.in_types, paths, "input", kernel.name, memory_limit);
}

absl::StatusOr<std::vector<NpyArray>> ReadExpected(
    const runtime::Kernel& kernel, const std::vector<std::string>& paths,
    int64_t memory_limit) {
  return ReadArrays(kernel.out_types, paths, "expected output", kernel.name,
                    memory_limit);
}

}  // namespace pallasvm::tools
