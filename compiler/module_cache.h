// The module cache: compiled modules stored by the content hash of their
// interchange (plus compiler and schema versions), under the user's cache
// directory. An entry is used only if it verifies, carries the current
// schema and compiler versions and names the same source hash; anything
// else is deleted and rebuilt. Entries are written to a temporary file and
// renamed into place, so a crash never leaves a half-written entry.
#ifndef PALLASVM_COMPILER_MODULE_CACHE_H_
#define PALLASVM_COMPILER_MODULE_CACHE_H_

#include <string>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace pallasvm::compiler {

class ModuleCache {
 public:
  // $PALLASVM_CACHE_DIR, else $XDG_CACHE_HOME/pallasvm, else
  // $HOME/.cache/pallasvm.
  static std::string DefaultDirectory();

  explicit ModuleCache(std::string directory)
      : directory_(std::move(directory)) {}

  // The key for an interchange's bytes.
  static std::string Key(absl::string_view interchange_bytes);

  // The module for `interchange_bytes`: from the cache when a valid entry
  // exists, else compiled and stored. `hit` (optional) says which.
  absl::StatusOr<std::string> GetOrCompile(absl::string_view interchange_bytes,
                                           absl::string_view origin,
                                           bool* hit = nullptr);

  // Removes the entry for `key` (e.g. after the runtime refused it).
  void Evict(absl::string_view key);

  std::string PathFor(absl::string_view key) const;

 private:
  std::string directory_;
};

}  // namespace pallasvm::compiler

#endif  // PALLASVM_COMPILER_MODULE_CACHE_H_
