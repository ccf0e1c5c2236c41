// JSON goes through FlatBuffers' own parser with the schema text embedded at
// build time, so the JSON and binary forms cannot drift apart.
#include "compiler/interchange.h"

#include <cstdint>
#include <memory>

#include "absl/strings/str_cat.h"
#include "flatbuffers/flatbuffers.h"
#include "flatbuffers/idl.h"
#include "kernel_schema_text.h"

namespace pallasvm::compiler {
namespace {

namespace ic = ::pallasvm::interchange;

// FlatBuffers 2.0.8's verifier checks a vector's length field for 4-byte
// alignment only, so a crafted interchange can put a [long] vector's
// elements at 4 mod 8, where reading them is undefined behaviour. The
// builder aligns every non-empty one (and `bytes` is 8-aligned heap
// storage), so a misaligned one is refused. The interchange's 8-byte
// vectors are Type.shape, Param.ints and Kernel.grid; table fields are
// checked by the verifier itself.
bool Aligned8(const flatbuffers::Vector<int64_t>* v) {
  return v == nullptr || v->size() == 0 ||
         reinterpret_cast<uintptr_t>(v->Data()) % alignof(int64_t) == 0;
}

bool TypeAligned(const ic::Type* t) {
  return t == nullptr || Aligned8(t->shape());
}

bool VarsAligned(
    const flatbuffers::Vector<flatbuffers::Offset<ic::Var>>* vars) {
  if (vars == nullptr) return true;
  for (const ic::Var* v : *vars) {
    if (v != nullptr && !TypeAligned(v->type())) return false;
  }
  return true;
}

bool LiteralAligned(const ic::Literal* l) {
  return l == nullptr || TypeAligned(l->type());
}

bool AtomsAligned(
    const flatbuffers::Vector<flatbuffers::Offset<ic::Atom>>* atoms) {
  if (atoms == nullptr) return true;
  for (const ic::Atom* a : *atoms) {
    if (a != nullptr && !LiteralAligned(a->literal())) return false;
  }
  return true;
}

// Recursion is bounded by the verifier's max_depth.
bool JaxprAligned(const ic::Jaxpr* j) {
  if (j == nullptr) return true;
  if (!VarsAligned(j->constvars()) || !VarsAligned(j->invars()) ||
      !AtomsAligned(j->outvars())) {
    return false;
  }
  if (j->consts()) {
    for (const ic::Literal* l : *j->consts()) {
      if (!LiteralAligned(l)) return false;
    }
  }
  if (j->eqns()) {
    for (const ic::Eqn* e : *j->eqns()) {
      if (e == nullptr) continue;
      if (!AtomsAligned(e->invars()) || !VarsAligned(e->outvars())) {
        return false;
      }
      if (e->params() == nullptr) continue;
      for (const ic::Param* p : *e->params()) {
        if (p == nullptr) continue;
        if (!Aligned8(p->ints())) return false;
        if (p->jaxprs()) {
          for (const ic::Jaxpr* sub : *p->jaxprs()) {
            if (!JaxprAligned(sub)) return false;
          }
        }
      }
    }
  }
  return true;
}

bool TypesAligned(
    const flatbuffers::Vector<flatbuffers::Offset<ic::Type>>* types) {
  if (types == nullptr) return true;
  for (const ic::Type* t : *types) {
    if (!TypeAligned(t)) return false;
  }
  return true;
}

bool KernelAligned(const ic::Kernel* k) {
  if (!Aligned8(k->grid()) || !TypesAligned(k->in_types()) ||
      !TypesAligned(k->out_types()) || !TypesAligned(k->scratch_types()) ||
      !JaxprAligned(k->jaxpr())) {
    return false;
  }
  if (k->block_mappings()) {
    for (const ic::BlockMapping* bm : *k->block_mappings()) {
      if (bm == nullptr) continue;
      if (!TypeAligned(bm->array_type()) || !JaxprAligned(bm->index_map())) {
        return false;
      }
    }
  }
  return true;
}

}  // namespace

absl::StatusOr<Interchange> ParseInterchange(absl::string_view data,
                                             absl::string_view origin) {
  Interchange result;
  const bool is_binary =
      data.size() >= 8 &&
      flatbuffers::BufferHasIdentifier(data.data(),
                                       interchange::KernelIdentifier());
  if (is_binary) {
    result.bytes = std::string(data);
  } else {
    size_t first = data.find_first_not_of(" \t\r\n");
    if (first == absl::string_view::npos || data[first] != '{') {
      return absl::InvalidArgumentError(absl::StrCat(
          origin,
          ": not a pallasvm kernel interchange (neither JSON starting with "
          "'{' nor a binary file with identifier PVMK)"));
    }
    flatbuffers::IDLOptions options;
    options.strict_json = false;
    flatbuffers::Parser parser(options);
    std::string schema(kKernelSchemaText);
    if (!parser.Parse(schema.c_str())) {
      return absl::InternalError(
          absl::StrCat("embedded kernel.fbs failed to parse: ", parser.error_));
    }
    std::string json(data);
    if (!parser.Parse(json.c_str())) {
      return absl::InvalidArgumentError(
          absl::StrCat(origin, ": malformed interchange JSON: ", parser.error_));
    }
    result.bytes.assign(
        reinterpret_cast<const char*>(parser.builder_.GetBufferPointer()),
        parser.builder_.GetSize());
  }
  flatbuffers::Verifier verifier(
      reinterpret_cast<const uint8_t*>(result.bytes.data()), result.bytes.size(),
      /*max_depth=*/256, /*max_tables=*/100'000'000);
  if (!interchange::VerifyKernelBuffer(verifier)) {
    return absl::InvalidArgumentError(absl::StrCat(
        origin, ": corrupted interchange: FlatBuffers verification failed"));
  }
  result.kernel = interchange::GetKernel(result.bytes.data());
  if (reinterpret_cast<uintptr_t>(result.bytes.data()) % alignof(int64_t) !=
          0 ||
      !KernelAligned(result.kernel)) {
    return absl::InvalidArgumentError(
        absl::StrCat(origin,
                     ": corrupted interchange: a vector of 64-bit integers is "
                     "misaligned"));
  }
  if (result.kernel->version() != kInterchangeVersion) {
    return absl::InvalidArgumentError(absl::StrCat(
        origin, ": interchange version ", result.kernel->version(),
        " is not supported; this pallasvm reads version ", kInterchangeVersion,
        " (re-export the kernel with the matching pallasvm exporter)"));
  }
  if (result.kernel->jaxpr() == nullptr) {
    return absl::InvalidArgumentError(
        absl::StrCat(origin, ": interchange has no kernel jaxpr"));
  }
  return result;
}

}  // namespace pallasvm::compiler
