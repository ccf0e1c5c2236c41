// Writes the fuzz targets' seed corpora and the JSON dictionary, from the
// golden fixtures and from the one place each fact is written:
//
//   fuzz_seed_corpus FIXTURES_DIR OUT_DIR
//
//   OUT_DIR/interchange_json/    each fixture's kernel.json
//   OUT_DIR/interchange_binary/  the same, as binary interchange (.pvmk)
//   OUT_DIR/module/              the same, compiled (.pvm)
//   OUT_DIR/npy/                 the fixtures' small .npy files, plus one
//                                small array of every dtype
//   OUT_DIR/interchange_json.dict  libFuzzer dictionary: the field and enum
//                                names of format/kernel.fbs, the primitives
//                                of the compiler's rule table, the param
//                                names the fixtures use, boundary numbers
//
// Nothing here is checked in: tests/fuzz/run.sh makes it at each run.
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <functional>
#include <set>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "compiler/compiler.h"
#include "compiler/interchange.h"
#include "compiler/lowering.h"
#include "flatbuffers/idl.h"
#include "kernel_schema_text.h"
#include "tools/npy.h"

namespace fs = std::filesystem;
using pallasvm::compiler::Interchange;
namespace ix = pallasvm::interchange;

namespace {

// .npy fixtures larger than this are left out: libFuzzer's inputs should
// stay small for speed.
constexpr uintmax_t kMaxNpySeedBytes = 16 << 10;

bool WriteFile(const fs::path& path, const std::string& bytes) {
  std::ofstream f(path, std::ios::binary | std::ios::trunc);
  f.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
  return static_cast<bool>(f);
}

// The param names used anywhere in `jaxpr` (sub-jaxprs included).
void CollectParamNames(const ix::Jaxpr* jaxpr, std::set<std::string>& names) {
  if (jaxpr == nullptr || jaxpr->eqns() == nullptr) return;
  for (const ix::Eqn* eqn : *jaxpr->eqns()) {
    if (eqn->params() == nullptr) continue;
    for (const ix::Param* p : *eqn->params()) {
      if (p->name() != nullptr) names.insert(p->name()->str());
      if (p->jaxprs() != nullptr) {
        for (const ix::Jaxpr* sub : *p->jaxprs()) CollectParamNames(sub, names);
      }
    }
  }
}

// One dictionary entry: a JSON string token, quotes included.
std::string DictString(const std::string& word) {
  return absl::StrCat("\"\\\"", word, "\\\"\"\n");
}

}  // namespace

int main(int argc, char** argv) {
  if (argc != 3) {
    std::fprintf(stderr, "usage: %s FIXTURES_DIR OUT_DIR\n", argv[0]);
    return 2;
  }
  const fs::path fixtures = argv[1], out = argv[2];
  for (const char* sub :
       {"interchange_json", "interchange_binary", "module", "npy"}) {
    fs::create_directories(out / sub);
  }

  // Fixture directories: tests/golden/<name>, tests/golden/errors/<name>.
  std::vector<fs::path> dirs;
  for (const fs::path& root : {fixtures, fixtures / "errors"}) {
    if (!fs::is_directory(root)) continue;
    for (const auto& e : fs::directory_iterator(root)) {
      if (fs::exists(e.path() / "kernel.json")) dirs.push_back(e.path());
    }
  }
  std::sort(dirs.begin(), dirs.end());

  std::set<std::string> param_names;
  int kernels = 0, modules = 0, npys = 0;
  for (const fs::path& dir : dirs) {
    const std::string name =
        dir.parent_path().filename() == "errors"
            ? "errors_" + dir.filename().string()
            : dir.filename().string();
    absl::StatusOr<std::string> json =
        pallasvm::tools::ReadFileBytes((dir / "kernel.json").string());
    if (!json.ok()) {
      std::fprintf(stderr, "%s\n", json.status().ToString().c_str());
      return 1;
    }
    WriteFile(out / "interchange_json" / (name + ".json"), *json);
    absl::StatusOr<Interchange> parsed =
        pallasvm::compiler::ParseInterchange(*json, name);
    if (!parsed.ok()) {
      std::fprintf(stderr, "%s\n", parsed.status().ToString().c_str());
      return 1;
    }
    ++kernels;
    WriteFile(out / "interchange_binary" / (name + ".pvmk"), parsed->bytes);
    CollectParamNames(parsed->kernel->jaxpr(), param_names);
    if (parsed->kernel->block_mappings() != nullptr) {
      for (const ix::BlockMapping* m : *parsed->kernel->block_mappings()) {
        CollectParamNames(m->index_map(), param_names);
      }
    }
    // Kernels the compiler refuses (tests/golden/errors) have no module.
    absl::StatusOr<std::string> module =
        pallasvm::compiler::CompileKernel(*parsed);
    if (module.ok()) {
      WriteFile(out / "module" / (name + ".pvm"), *module);
      ++modules;
    }
    for (const auto& e : fs::directory_iterator(dir)) {
      if (e.path().extension() == ".npy" &&
          fs::file_size(e.path()) <= kMaxNpySeedBytes) {
        fs::copy_file(e.path(),
                      out / "npy" / (name + "_" + e.path().filename().string()),
                      fs::copy_options::overwrite_existing);
        ++npys;
      }
    }
  }
  // One 2x3 array of every dtype (bf16 is written as '<V2').
  for (int t = 0; t < pallasvm::vm::kNumDTypes; ++t) {
    const auto dtype = static_cast<pallasvm::vm::DType>(t);
    const std::vector<uint8_t> data(6 * pallasvm::vm::SizeOf(dtype), 1);
    WriteFile(out / "npy" / absl::StrCat("dtype_", pallasvm::vm::Name(dtype),
                                         ".npy"),
              pallasvm::tools::SerializeNpy(dtype, {2, 3}, data.data()));
    ++npys;
  }

  // The dictionary.
  flatbuffers::Parser schema;
  if (!schema.Parse(std::string(kKernelSchemaText).c_str())) {
    std::fprintf(stderr, "kernel.fbs: %s\n", schema.error_.c_str());
    return 1;
  }
  std::set<std::string> words;
  for (const flatbuffers::StructDef* s : schema.structs_.vec) {
    for (const flatbuffers::FieldDef* f : s->fields.vec) words.insert(f->name);
  }
  for (const flatbuffers::EnumDef* e : schema.enums_.vec) {
    for (const flatbuffers::EnumVal* v : e->Vals()) words.insert(v->name);
  }
  for (const auto& [primitive, rule] : pallasvm::compiler::Rules().rules()) {
    words.insert(primitive);
  }
  words.insert(param_names.begin(), param_names.end());
  words.insert({"parallel", "arbitrary", "core_parallel"});
  std::string dict =
      "# Generated by fuzz_seed_corpus (tests/fuzz/seed_corpus_main.cc).\n";
  for (const std::string& w : words) dict += DictString(w);
  for (const char* n :
       {"-1", "0", "1", "2", "127", "128", "255", "256", "65536", "2147483647",
        "2147483648", "-2147483648", "4294967296", "9223372036854775807",
        "-9223372036854775808", "1e308", "nan", "inf", "true", "false", "[]",
        "{}", "[0, 0, 0, 0]"}) {
    dict += absl::StrCat("\"", n, "\"\n");
  }
  WriteFile(out / "interchange_json.dict", dict);
  std::printf("seeds: %d kernels, %d modules, %d npy files, %zu words\n",
              kernels, modules, npys, words.size());
  return 0;
}
