// The opcode table (vm/opcodes.h, generated from vm/opcodes.def): lookups by
// family and the name table's agreement with the enum.
#include "vm/opcodes.h"

#include <gtest/gtest.h>

#include <set>
#include <string>

namespace pallasvm::vm {
namespace {

TEST(OpcodesTest, BinaryLookup) {
  EXPECT_EQ(BinaryOp("ADD", DType::F32, Layout::VS), Op::ADD_F32_VS);
  EXPECT_EQ(BinaryOp("ADD", DType::F32, Layout::VV), Op::ADD_F32_VV);
  EXPECT_EQ(BinaryOp("SHRA", DType::U32, Layout::SS), Op::SHRA_U32_SS);
  EXPECT_EQ(BinaryOp("SHRL", DType::S32, Layout::SV), Op::SHRL_S32_SV);
  EXPECT_EQ(BinaryOp("LT", DType::PRED, Layout::VV), Op::LT_PRED_VV);
  EXPECT_EQ(BinaryOp("EQ", DType::F32, Layout::SS), Op::EQ_F32_SS);
  EXPECT_EQ(BinaryOp("SHL", DType::F32, Layout::VV), std::nullopt);
  EXPECT_EQ(BinaryOp("ADD", DType::BF16, Layout::VV), std::nullopt);
  EXPECT_EQ(BinaryOp("SH", DType::S32, Layout::VV), std::nullopt);
  EXPECT_EQ(BinaryOp("NOPE", DType::S32, Layout::VV), std::nullopt);
}

TEST(OpcodesTest, UnaryLookup) {
  EXPECT_EQ(UnaryOp("ROUND_EVEN", DType::F32, true), Op::ROUND_EVEN_F32_S);
  EXPECT_EQ(UnaryOp("ROUND_EVEN", DType::F32, false), Op::ROUND_EVEN_F32_V);
  EXPECT_EQ(UnaryOp("ROUND", DType::F32, false), std::nullopt);
  EXPECT_EQ(UnaryOp("NOT", DType::PRED, false), Op::NOT_PRED_V);
  EXPECT_EQ(UnaryOp("IS_FINITE", DType::F32, true), Op::IS_FINITE_F32_S);
  EXPECT_EQ(UnaryOp("EXP", DType::S32, false), std::nullopt);
  EXPECT_EQ(UnaryOp("CVT", DType::F32, false), std::nullopt);
}

// The DType enumerators' own names, in enum order.
constexpr const char* kEnumNames[] = {
#define DTYPE_ENUM_NAME(E) #E,
    PALLASVM_DTYPE_NAMES_OUTER(DTYPE_ENUM_NAME)
#undef DTYPE_ENUM_NAME
};

TEST(OpcodesTest, ConvertLookup) {
  EXPECT_EQ(ConvertOp(DType::BF16, DType::F32, false), Op::CVT_BF16_F32_V);
  EXPECT_EQ(ConvertOp(DType::F32, DType::BF16, true), Op::CVT_F32_BF16_S);
  EXPECT_EQ(ConvertOp(DType::PRED, DType::PRED, false), Op::CVT_PRED_PRED_V);
  EXPECT_EQ(ConvertOp(DType::F32, DType::F32, true), Op::CVT_F32_F32_S);
  EXPECT_EQ(ConvertOp(DType::S8, DType::U16, false), Op::CVT_S8_U16_V);
  // Every pair maps to a conversion with the right dtypes.
  for (int from = 0; from < kNumDTypes; ++from) {
    for (int to = 0; to < kNumDTypes; ++to) {
      for (bool scalar : {false, true}) {
        const Op op =
            ConvertOp(static_cast<DType>(from), static_cast<DType>(to), scalar);
        const OpInfo& info = Info(op);
        EXPECT_EQ(info.in, from);
        EXPECT_EQ(info.out, to);
        EXPECT_EQ(info.format, scalar ? Format::UNARY_S : Format::UNARY_V);
        const std::string expected = std::string("CVT_") + kEnumNames[from] +
                                     "_" + kEnumNames[to] +
                                     (scalar ? "_S" : "_V");
        EXPECT_EQ(info.name, expected);
      }
    }
  }
}

TEST(OpcodesTest, NamesMatchEnum) {
  EXPECT_EQ(Info(Op::ADD_F32_VV).name, "ADD_F32_VV");
  EXPECT_EQ(Info(Op::ADD_F32_SS).name, "ADD_F32_SS");
  EXPECT_EQ(Info(Op::GE_PRED_SS).name, "GE_PRED_SS");
  EXPECT_EQ(Info(Op::NEG_F32_V).name, "NEG_F32_V");
  EXPECT_EQ(Info(Op::NOT_PRED_S).name, "NOT_PRED_S");
  EXPECT_EQ(Info(Op::CVT_PRED_PRED_V).name, "CVT_PRED_PRED_V");
  EXPECT_EQ(Info(Op::CVT_F32_BF16_S).name, "CVT_F32_BF16_S");
  EXPECT_EQ(Info(Op::COPY).name, "COPY");
  EXPECT_EQ(Info(Op::STRIDED_COPY).name, "STRIDED_COPY");
  EXPECT_EQ(Info(Op::DOT_F32).name, "DOT_F32");
  EXPECT_EQ(Info(Op::RETURN).name, "RETURN");
  EXPECT_EQ(Info(Op::DOT_ADD_F32).name, "DOT_ADD_F32");
  // Opcodes added after RETURN go last, in the order they were added,
  // keeping the numbers of the others.
  EXPECT_EQ(Info(Op::FMA_F32).name, "FMA_F32");
  EXPECT_EQ(Info(Op::FMA_F32).format, Format::TERNARY);
  EXPECT_EQ(static_cast<int>(Op::DOT_ADD_F32), static_cast<int>(Op::RETURN) + 1);
  EXPECT_EQ(static_cast<int>(Op::FMA_F32), static_cast<int>(Op::DOT_ADD_F32) + 1);
  EXPECT_EQ(static_cast<int>(Op::LOAD_CLIPPED),
            static_cast<int>(Op::FMA_F32) + 1);
  EXPECT_EQ(static_cast<int>(Op::MASKED_STORE),
            static_cast<int>(Op::LOAD_CLIPPED) + 1);
  EXPECT_EQ(static_cast<int>(Op::DMA_START),
            static_cast<int>(Op::MASKED_STORE) + 1);
  EXPECT_EQ(static_cast<int>(Op::SCOPE_EXIT),
            static_cast<int>(Op::DMA_START) + 5);
  EXPECT_EQ(static_cast<int>(Op::ERFC_F32_V),
            static_cast<int>(Op::SCOPE_EXIT) + 1);
  EXPECT_EQ(static_cast<int>(Op::CHECK_INDEX),
            static_cast<int>(Op::ARGSORT_U32) + 1);
  EXPECT_EQ(static_cast<int>(Op::DEBUG_ARG),
            static_cast<int>(Op::CHECK_INDEX) + 1);
  EXPECT_EQ(static_cast<int>(Op::DEBUG_PRINT), kNumOps - 1);
  // The UNARY_V / UNARY_S pair of ERFC is found like the family's.
  EXPECT_EQ(UnaryOp("ERFC", DType::F32, false), Op::ERFC_F32_V);
  EXPECT_EQ(UnaryOp("ERFC", DType::F32, true), Op::ERFC_F32_S);
}

TEST(OpcodesTest, TableIsConsistent) {
  std::set<std::string> names;
  for (int i = 0; i < kNumOps; ++i) {
    const OpInfo& info = kOpInfo[i];
    EXPECT_FALSE(info.name.empty()) << i;
    EXPECT_TRUE(names.insert(std::string(info.name)).second)
        << "duplicate " << info.name;
    EXPECT_FALSE(info.semantics.empty()) << info.name;
    EXPECT_GE(info.in, -1) << info.name;
    EXPECT_LT(info.in, kNumDTypes) << info.name;
    EXPECT_GE(info.out, -1) << info.name;
    EXPECT_LT(info.out, kNumDTypes) << info.name;
    // Typed formats have typed operands.
    switch (info.format) {
      case Format::BINARY_VV:
      case Format::BINARY_VS:
      case Format::BINARY_SV:
      case Format::BINARY_SS:
      case Format::UNARY_V:
      case Format::UNARY_S:
      case Format::REDUCE:
      case Format::DOT:
      case Format::TERNARY:
        EXPECT_GE(info.in, 0) << info.name;
        EXPECT_GE(info.out, 0) << info.name;
        break;
      default:
        break;
    }
  }
  // Families come in runs: binary VV, VS, SV, SS; unary V, S.
  const Op vv = Op::MUL_S32_VV;
  EXPECT_EQ(Info(static_cast<Op>(static_cast<int>(vv) + 1)).format,
            Format::BINARY_VS);
  EXPECT_EQ(Info(static_cast<Op>(static_cast<int>(vv) + 2)).format,
            Format::BINARY_SV);
  EXPECT_EQ(Info(static_cast<Op>(static_cast<int>(vv) + 3)).format,
            Format::BINARY_SS);
  EXPECT_EQ(Info(static_cast<Op>(static_cast<int>(Op::TANH_F32_V) + 1)).name,
            "TANH_F32_S");
}

TEST(OpcodesTest, DtypesOfSampleOps) {
  EXPECT_EQ(Info(Op::LT_F32_VV).in, static_cast<int>(DType::F32));
  EXPECT_EQ(Info(Op::LT_F32_VV).out, static_cast<int>(DType::PRED));
  EXPECT_EQ(Info(Op::IS_FINITE_F32_V).out, static_cast<int>(DType::PRED));
  EXPECT_EQ(Info(Op::ARGMAX_F32).out, static_cast<int>(DType::S32));
  EXPECT_EQ(Info(Op::ADDUPDATE_BF16).in, static_cast<int>(DType::BF16));
  EXPECT_EQ(Info(Op::LOAD).in, -1);
  EXPECT_EQ(Info(Op::SELECT_B4).format, Format::SELECT);
}

}  // namespace
}  // namespace pallasvm::vm
