#include "compiler/module_cache.h"

#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <sstream>

#include <unistd.h>

#include "absl/strings/str_cat.h"
#include "bytecode_generated.h"
#include "compiler/compiler.h"

namespace pallasvm::compiler {
namespace {

bool ReadFile(const std::string& path, std::string* out) {
  std::ifstream f(path, std::ios::binary);
  if (!f) return false;
  std::ostringstream ss;
  ss << f.rdbuf();
  *out = ss.str();
  return static_cast<bool>(f) || f.eof();
}

// Cheap checks that make an entry usable; the runtime verifies it in full
// when it loads it.
bool EntryIsValid(const std::string& bytes, absl::string_view key) {
  if (bytes.size() < 8 ||
      !flatbuffers::BufferHasIdentifier(bytes.data(),
                                        bytecode::ModuleIdentifier())) {
    return false;
  }
  flatbuffers::Verifier v(reinterpret_cast<const uint8_t*>(bytes.data()),
                          bytes.size(), 128, 10'000'000);
  if (!bytecode::VerifyModuleBuffer(v)) return false;
  const bytecode::Module* m = bytecode::GetModule(bytes.data());
  return m->schema_version() == kModuleSchemaVersion &&
         m->compiler_version() != nullptr &&
         m->compiler_version()->str() == kCompilerVersion &&
         m->source_hash() != nullptr && m->source_hash()->str() == key;
}

}  // namespace

std::string ModuleCache::DefaultDirectory() {
  if (const char* d = std::getenv("PALLASVM_CACHE_DIR"); d && *d) return d;
  if (const char* d = std::getenv("XDG_CACHE_HOME"); d && *d) {
    return absl::StrCat(d, "/pallasvm");
  }
  if (const char* h = std::getenv("HOME"); h && *h) {
    return absl::StrCat(h, "/.cache/pallasvm");
  }
  return "/tmp/pallasvm-cache";
}

std::string ModuleCache::Key(absl::string_view interchange_bytes) {
  return ContentHash(absl::StrCat(kCompilerVersion, "\n", kModuleSchemaVersion,
                                  "\n", interchange_bytes));
}

std::string ModuleCache::PathFor(absl::string_view key) const {
  return absl::StrCat(directory_, "/", key, ".pvm");
}

void ModuleCache::Evict(absl::string_view key) {
  std::error_code ec;
  std::filesystem::remove(PathFor(key), ec);
}

absl::StatusOr<std::string> ModuleCache::GetOrCompile(
    absl::string_view interchange_bytes, absl::string_view origin, bool* hit) {
  const std::string key = Key(interchange_bytes);
  const std::string path = PathFor(key);
  std::string cached;
  if (ReadFile(path, &cached)) {
    if (EntryIsValid(cached, key)) {
      if (hit) *hit = true;
      return cached;
    }
    Evict(key);  // corrupted or stale: rebuild
  }
  if (hit) *hit = false;
  absl::StatusOr<std::string> module =
      CompileInterchange(interchange_bytes, origin, key);
  if (!module.ok()) return module.status();
  // Best effort: a cache that cannot be written only costs a recompile.
  std::error_code ec;
  std::filesystem::create_directories(directory_, ec);
  if (!ec) {
    const std::string tmp =
        absl::StrCat(path, ".tmp.", static_cast<long>(::getpid()));
    {
      std::ofstream f(tmp, std::ios::binary | std::ios::trunc);
      f.write(module->data(), static_cast<std::streamsize>(module->size()));
      if (!f) {
        std::filesystem::remove(tmp, ec);
        return module;
      }
    }
    std::filesystem::rename(tmp, path, ec);
    if (ec) std::filesystem::remove(tmp, ec);
  }
  return module;
}

}  // namespace pallasvm::compiler
