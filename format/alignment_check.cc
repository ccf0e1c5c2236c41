#include "format/alignment_check.h"

#include <cstring>

#include "absl/strings/str_cat.h"
#include "flatbuffers/flatbuffers.h"
#include "flatbuffers/reflection.h"

namespace pallasvm::format {
namespace {

absl::string_view View(const flatbuffers::String& s) {
  return absl::string_view(s.c_str(), s.size());
}

// The name of a schema object without its namespace: "Module", not
// "pallasvm.bytecode.Module".
absl::string_view ShortName(const reflection::Object& object) {
  absl::string_view name = View(*object.name());
  const size_t dot = name.rfind('.');
  return dot == absl::string_view::npos ? name : name.substr(dot + 1);
}

// `field` and what the check below it said: the path is built on the way
// out, so a buffer that passes costs no string.
absl::Status Within(absl::string_view field, const absl::Status& inner) {
  return absl::Status(inner.code(), absl::StrCat(field, inner.message()));
}

absl::Status CheckAddress(const void* p, size_t alignment,
                          absl::string_view what) {
  const uintptr_t rest = reinterpret_cast<uintptr_t>(p) % alignment;
  if (rest == 0) return absl::OkStatus();
  return absl::InvalidArgumentError(absl::StrCat(
      " is at ", rest, " mod ", alignment, ", misaligned for its ", what));
}

class Checker {
 public:
  explicit Checker(const reflection::Schema& schema) : schema_(schema) {}

  // Recursion is bounded by the FlatBuffers verifier's max_depth, which the
  // buffer has passed; it visits the tables the verifier visited, so no
  // more of them than its max_tables.
  absl::Status CheckTable(const flatbuffers::Table& table,
                          const reflection::Object& object) const {
    for (const reflection::Field* field : *object.fields()) {
      if (absl::Status s = CheckField(table, *field); !s.ok()) {
        return Within(absl::StrCat(".", View(*field->name())), s);
      }
    }
    return absl::OkStatus();
  }

 private:
  const reflection::Object& ObjectOf(const reflection::Type& type) const {
    return *schema_.objects()->Get(type.index());
  }

  absl::Status CheckField(const flatbuffers::Table& table,
                          const reflection::Field& field) const {
    const reflection::Type& type = *field.type();
    switch (type.base_type()) {
      case reflection::Obj: {
        const reflection::Object& object = ObjectOf(type);
        if (object.is_struct()) {
          const uint8_t* s = table.GetStruct<const uint8_t*>(field.offset());
          return s == nullptr ? absl::OkStatus()
                              : CheckAddress(s, object.minalign(), "struct");
        }
        const auto* sub =
            table.GetPointer<const flatbuffers::Table*>(field.offset());
        return sub == nullptr ? absl::OkStatus() : CheckTable(*sub, object);
      }
      case reflection::Vector:
        return CheckVector(table, field);
      case reflection::Union:
        // None of pallasvm's schemas has one; a schema that adds one must
        // teach this walk to follow it.
        return absl::InternalError(
            " is a union, which the alignment check does not follow");
      default:
        // Scalars in a table: FlatBuffers' verifier checks their
        // alignment. Strings hold bytes.
        return absl::OkStatus();
    }
  }

  absl::Status CheckVector(const flatbuffers::Table& table,
                           const reflection::Field& field) const {
    const reflection::Type& type = *field.type();
    const auto* bytes =
        table.GetPointer<const flatbuffers::Vector<uint8_t>*>(field.offset());
    if (bytes == nullptr || bytes->size() == 0) return absl::OkStatus();
    if (type.element() == reflection::Obj) {
      const reflection::Object& object = ObjectOf(type);
      if (object.is_struct()) {
        return CheckAddress(
            bytes->Data(), object.minalign(),
            absl::StrCat(object.minalign(), "-byte aligned structs (",
                         ShortName(object), ")"));
      }
      const auto* tables = reinterpret_cast<
          const flatbuffers::Vector<flatbuffers::Offset<flatbuffers::Table>>*>(
          bytes);
      for (flatbuffers::uoffset_t i = 0; i < tables->size(); ++i) {
        const flatbuffers::Table* element = tables->Get(i);
        if (absl::Status s = CheckTable(*element, object); !s.ok()) {
          return Within(absl::StrCat("[", i, "]"), s);
        }
      }
      return absl::OkStatus();
    }
    if (type.element() == reflection::Union) {
      return absl::InternalError(
          " is a vector of unions, which the alignment check does not follow");
    }
    if (!flatbuffers::IsScalar(type.element())) return absl::OkStatus();
    const size_t size = flatbuffers::GetTypeSize(type.element());
    return CheckAddress(bytes->Data(), size,
                        absl::StrCat(size, "-byte elements"));
  }

  const reflection::Schema& schema_;
};

}  // namespace

AlignedBytes::AlignedBytes(absl::string_view bytes) : view_(bytes) {
  if (reinterpret_cast<uintptr_t>(bytes.data()) % alignof(uint64_t) == 0) {
    return;
  }
  copy_.reset(new uint64_t[bytes.size() / sizeof(uint64_t) + 1]);
  std::memcpy(copy_.get(), bytes.data(), bytes.size());
  view_ = absl::string_view(reinterpret_cast<const char*>(copy_.get()),
                            bytes.size());
}

absl::Status CheckAlignment(const uint8_t* buffer,
                            const uint8_t* binary_schema) {
  const reflection::Schema& schema = *reflection::GetSchema(binary_schema);
  const reflection::Object& root = *schema.root_table();
  absl::Status s =
      Checker(schema).CheckTable(*flatbuffers::GetAnyRoot(buffer), root);
  return s.ok() ? s : Within(ShortName(root), s);
}

}  // namespace pallasvm::format
