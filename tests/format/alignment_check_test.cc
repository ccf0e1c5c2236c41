// The alignment check (format/alignment_check.cc) on crafted modules whose
// 8-byte data FlatBuffers' verifier lets through at 4 mod 8: a vector of
// structs, and a [long] nested in tables and vectors of tables (the
// regressions module/misaligned_table and module/misaligned_long_vector).
#include "format/alignment_check.h"

#include <functional>
#include <string>
#include <vector>

#include "absl/strings/match.h"
#include "bytecode_bfbs_generated.h"
#include "bytecode_generated.h"
#include "gtest/gtest.h"

namespace pallasvm::format {
namespace {

namespace bc = ::pallasvm::bytecode;
using VectorOffset = flatbuffers::Offset<flatbuffers::Vector<uint8_t>>;

// A module whose one vector is placed by `attach` at a word of a vector of
// uint32s, `words`: element 0 or 1 becomes its length field (a vector's
// Offset counts from the buffer's end to its length; element i is 4 + 4i
// bytes further), and one of the two choices puts its data at 4 mod 8.
// The status of CheckAlignment on that one, or a failure if neither is.
absl::Status CheckMisplaced(
    const std::vector<uint32_t>& words,
    const std::function<flatbuffers::Offset<bc::Module>(
        flatbuffers::FlatBufferBuilder&, VectorOffset)>& attach,
    const std::function<const void*(const bc::Module&)>& data) {
  for (uint32_t back : {4u, 8u}) {
    flatbuffers::FlatBufferBuilder b;
    auto v = b.CreateVector(words);
    bc::FinishModuleBuffer(b, attach(b, VectorOffset(v.o - back)));
    const std::string bytes(reinterpret_cast<const char*>(b.GetBufferPointer()),
                            b.GetSize());
    const AlignedBytes aligned(bytes);
    const uint8_t* buffer =
        reinterpret_cast<const uint8_t*>(aligned.view().data());
    flatbuffers::Verifier verifier(buffer, bytes.size());
    EXPECT_TRUE(bc::VerifyModuleBuffer(verifier));
    if (reinterpret_cast<uintptr_t>(data(*bc::GetModule(buffer))) % 8 == 0) {
      EXPECT_TRUE(CheckAlignment(buffer, bc::ModuleBinarySchema::data()).ok());
      continue;
    }
    return CheckAlignment(buffer, bc::ModuleBinarySchema::data());
  }
  return absl::InternalError("no misaligned candidate");
}

TEST(CheckAlignment, RefusesAMisalignedVectorOfStructs) {
  // One LayoutDesc (144 bytes, 8-aligned) after a length of 1.
  std::vector<uint32_t> words(2 + sizeof(bc::LayoutDesc) / 4, 0);
  words[0] = words[1] = 1;
  absl::Status s = CheckMisplaced(
      words,
      [](flatbuffers::FlatBufferBuilder& b, VectorOffset v) {
        bc::ModuleBuilder m(b);
        m.add_layouts(
            flatbuffers::Offset<flatbuffers::Vector<const bc::LayoutDesc*>>(
                v.o));
        return m.Finish();
      },
      [](const bc::Module& m) { return m.layouts()->Data(); });
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument) << s;
  EXPECT_EQ(s.message(),
            "Module.layouts is at 4 mod 8, misaligned for its 8-byte aligned "
            "structs (LayoutDesc)");
}

TEST(CheckAlignment, NamesANestedLongVectorByItsPath) {
  const std::vector<uint32_t> words = {2, 2, 1, 0, 1, 0, 1, 0};
  absl::Status s = CheckMisplaced(
      words,
      [](flatbuffers::FlatBufferBuilder& b, VectorOffset v) {
        auto good = bc::CreateRef(
            b, bc::RefKind::INPUT_BLOCK, 0, bc::MemorySpace::VMEM,
            bc::CreateArrayType(b, bc::DType::F32,
                                b.CreateVector(std::vector<int64_t>{8})));
        auto bad = bc::CreateRef(
            b, bc::RefKind::OUTPUT_BLOCK, 0, bc::MemorySpace::VMEM,
            bc::CreateArrayType(
                b, bc::DType::F32,
                flatbuffers::Offset<flatbuffers::Vector<int64_t>>(v.o)));
        auto refs = b.CreateVector(
            std::vector<flatbuffers::Offset<bc::Ref>>{good, bad});
        bc::ModuleBuilder m(b);
        m.add_refs(refs);
        return m.Finish();
      },
      [](const bc::Module& m) {
        return m.refs()->Get(1)->type()->shape()->Data();
      });
  EXPECT_EQ(s.message(),
            "Module.refs[1].type.shape is at 4 mod 8, misaligned for its "
            "8-byte elements");
}

TEST(CheckAlignment, AcceptsWhatABuilderWrites) {
  flatbuffers::FlatBufferBuilder b;
  std::vector<bc::LayoutDesc> layouts(3);
  auto layouts_vector = b.CreateVectorOfStructs(layouts);
  auto grid = b.CreateVector(std::vector<int64_t>{2, 3});
  auto empty = b.CreateVector(std::vector<int64_t>{});
  auto refs = b.CreateVector(std::vector<flatbuffers::Offset<bc::Ref>>{
      bc::CreateRef(b, bc::RefKind::SCRATCH, -1, bc::MemorySpace::SMEM,
                    bc::CreateArrayType(b, bc::DType::S32, empty))});
  bc::ModuleBuilder m(b);
  m.add_layouts(layouts_vector);
  m.add_grid(grid);
  m.add_refs(refs);
  bc::FinishModuleBuffer(b, m.Finish());
  const AlignedBytes bytes(absl::string_view(
      reinterpret_cast<const char*>(b.GetBufferPointer()), b.GetSize()));
  EXPECT_TRUE(
      CheckAlignment(reinterpret_cast<const uint8_t*>(bytes.view().data()),
                     bc::ModuleBinarySchema::data())
          .ok());
}

TEST(AlignedBytes, CopiesOnlyWhatIsMisaligned) {
  const std::string text(64, 'x');
  const AlignedBytes same(text);
  EXPECT_EQ(same.view().data(), text.data());  // std::string: heap, aligned
  const AlignedBytes shifted(absl::string_view(text).substr(1));
  EXPECT_NE(shifted.view().data(), text.data() + 1);
  EXPECT_EQ(reinterpret_cast<uintptr_t>(shifted.view().data()) % 8, 0u);
  EXPECT_EQ(shifted.view(), absl::string_view(text).substr(1));
}

}  // namespace
}  // namespace pallasvm::format
