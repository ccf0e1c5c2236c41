// The opcode property table, generated from vm/opcodes.def.
#include "vm/opcodes.h"

namespace pallasvm::vm {

const OpInfo kOpInfo[kNumOps] = {
#define PALLASVM_OP_BINARY_INFO(NAME, IN, OUT, F, S)                       \
  {#NAME "_" #IN "_VV", Format::BINARY_VV, PALLASVM_DT_##IN,               \
   PALLASVM_DT_##OUT, S},                                                  \
      {#NAME "_" #IN "_VS", Format::BINARY_VS, PALLASVM_DT_##IN,           \
       PALLASVM_DT_##OUT, S},                                              \
      {#NAME "_" #IN "_SV", Format::BINARY_SV, PALLASVM_DT_##IN,           \
       PALLASVM_DT_##OUT, S},                                              \
      {#NAME "_" #IN "_SS", Format::BINARY_SS, PALLASVM_DT_##IN,           \
       PALLASVM_DT_##OUT, S},
    PALLASVM_BINARY_OPS(PALLASVM_OP_BINARY_INFO)
#undef PALLASVM_OP_BINARY_INFO
#define PALLASVM_OP_UNARY_INFO(NAME, IN, OUT, F, S)                          \
  {#NAME "_" #IN "_V", Format::UNARY_V, PALLASVM_DT_##IN, PALLASVM_DT_##OUT, \
   S},                                                                       \
      {#NAME "_" #IN "_S", Format::UNARY_S, PALLASVM_DT_##IN,                \
       PALLASVM_DT_##OUT, S},
        PALLASVM_UNARY_OPS(PALLASVM_OP_UNARY_INFO)
#undef PALLASVM_OP_UNARY_INFO
#define PALLASVM_OP_CVT_INFO(FROM, TO)                                    \
  {"CVT_" #FROM "_" #TO "_V", Format::UNARY_V,                            \
   static_cast<int8_t>(DType::FROM), static_cast<int8_t>(DType::TO),      \
   "convert " #FROM " to " #TO},                                          \
      {"CVT_" #FROM "_" #TO "_S", Format::UNARY_S,                        \
       static_cast<int8_t>(DType::FROM), static_cast<int8_t>(DType::TO),  \
       "convert " #FROM " to " #TO},
#define PALLASVM_OP_CVT_FROM(FROM) \
  PALLASVM_DTYPE_NAMES_INNER(PALLASVM_OP_CVT_INFO, FROM)
            PALLASVM_DTYPE_NAMES_OUTER(PALLASVM_OP_CVT_FROM)
#undef PALLASVM_OP_CVT_FROM
#undef PALLASVM_OP_CVT_INFO
#define PALLASVM_OP_OTHER_INFO(NAME, FMT, IN, OUT, S) \
  {#NAME, Format::FMT, PALLASVM_DT_##IN, PALLASVM_DT_##OUT, S},
                PALLASVM_OTHER_OPS(PALLASVM_OP_OTHER_INFO)
#undef PALLASVM_OP_OTHER_INFO
};

std::optional<Op> BinaryOp(absl::string_view name, DType in, Layout layout) {
  // Binary opcodes come in runs of four (VV, VS, SV, SS) in table order.
  for (int i = 0; i < kNumOps; ++i) {
    const OpInfo& info = kOpInfo[i];
    if (info.format != Format::BINARY_VV) continue;
    if (info.in != static_cast<int>(in)) continue;
    absl::string_view n = info.name;
    // name is NAME_IN_VV; compare the NAME part.
    if (n.size() > name.size() && n.substr(0, name.size()) == name &&
        n[name.size()] == '_') {
      absl::string_view rest = n.substr(name.size() + 1);
      // rest must be "<IN>_VV" with no further underscore-separated name.
      if (rest.find('_') == rest.rfind('_')) {
        return static_cast<Op>(i + static_cast<int>(layout));
      }
    }
  }
  return std::nullopt;
}

std::optional<Op> UnaryOp(absl::string_view name, DType in, bool scalar) {
  for (int i = 0; i < kNumOps; ++i) {
    const OpInfo& info = kOpInfo[i];
    if (info.format != Format::UNARY_V) continue;
    if (info.in != static_cast<int>(in)) continue;
    absl::string_view n = info.name;
    if (n.substr(0, 4) == "CVT_") continue;
    if (n.size() > name.size() && n.substr(0, name.size()) == name &&
        n[name.size()] == '_') {
      absl::string_view rest = n.substr(name.size() + 1);
      if (rest.find('_') == rest.rfind('_')) {
        return static_cast<Op>(i + (scalar ? 1 : 0));
      }
    }
  }
  return std::nullopt;
}

Op ConvertOp(DType from, DType to, bool scalar) {
  constexpr int kFirst = static_cast<int>(Op::CVT_PRED_PRED_V);
  return static_cast<Op>(kFirst +
                         2 * (static_cast<int>(from) * kNumDTypes +
                              static_cast<int>(to)) +
                         (scalar ? 1 : 0));
}

}  // namespace pallasvm::vm
