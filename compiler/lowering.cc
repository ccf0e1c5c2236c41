// The core of the lowering: scopes, operands, the per-equation driver and
// the helpers the primitive rules share.
#include "compiler/lowering.h"

#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <limits>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "compiler/fma_contraction.h"
#include "format/module_limits.h"
#include "vm/opcodes.h"

namespace pallasvm::compiler {

int64_t NumElements(const Shape& shape) {
  int64_t n = 1;
  for (int64_t d : shape) n *= d;
  return n;
}

absl::Status CheckShape(const Shape& shape, vm::DType dtype,
                        int64_t memory_limit, absl::string_view what) {
  // The module format's limits first (the runtime's loader applies the
  // same), then the memory limit; under 2^40 elements no byte size
  // overflows.
  if (absl::Status s = format::CheckArrayShape(shape, what); !s.ok()) {
    return s;
  }
  const int64_t bytes = NumElements(shape) * vm::SizeOf(dtype);
  if (bytes > memory_limit) {
    return absl::ResourceExhaustedError(absl::StrCat(
        what, " is ", vm::Name(dtype), ShapeString(shape), " (",
        vm::FormatBytes(bytes), "), over pallasvm's memory limit of ",
        vm::FormatBytes(memory_limit)));
  }
  return absl::OkStatus();
}

absl::StatusOr<Shape> PaddedShape(const interchange::Type& type,
                                  const Shape& shape, absl::string_view what) {
  Shape padded;
  if (type.padded_shape() == nullptr || type.padded_shape()->size() == 0) {
    return padded;
  }
  padded.assign(type.padded_shape()->begin(), type.padded_shape()->end());
  bool ok = padded.size() == shape.size();
  for (size_t d = 0; ok && d < shape.size(); ++d) {
    ok = padded[d] >= shape[d] &&
         padded[d] - shape[d] <= std::numeric_limits<int32_t>::max();
  }
  if (!ok) {
    return absl::InvalidArgumentError(absl::StrCat(
        what, ": padded shape ", ShapeString(padded), " does not contain its ",
        "shape ", ShapeString(shape), " (expected the same rank, each ",
        "dimension at least as large and less than 2^31 larger)"));
  }
  return padded;
}

std::string ShapeString(const Shape& shape) {
  return absl::StrCat("[", absl::StrJoin(shape, ","), "]");
}

std::string TypeString(const Value& v) {
  return absl::StrCat(vm::Name(v.dtype), ShapeString(v.shape),
                      v.is_ref() ? " ref" : "");
}

absl::StatusOr<vm::DType> ToVmDType(interchange::DType dtype) {
  using D = interchange::DType;
  switch (dtype) {
    case D::PRED:
      return vm::DType::PRED;
    case D::S8:
      return vm::DType::S8;
    case D::U8:
      return vm::DType::U8;
    case D::S16:
      return vm::DType::S16;
    case D::U16:
      return vm::DType::U16;
    case D::S32:
      return vm::DType::S32;
    case D::U32:
      return vm::DType::U32;
    case D::F16:
      return vm::DType::F16;
    case D::BF16:
      return vm::DType::BF16;
    case D::F32:
      return vm::DType::F32;
    default:
      return absl::UnimplementedError(absl::StrCat(
          "dtype ", interchange::EnumNameDType(dtype),
          " is not supported (64-bit types need jax_enable_x64, which "
          "pallasvm does not support yet)"));
  }
}

void RuleTable::Pure(std::string primitive, Arity arity, Lowerer::Rule rule) {
  Add(std::move(primitive), arity, std::move(rule), true);
}

void RuleTable::Effectful(std::string primitive, Arity arity,
                          Lowerer::Rule rule) {
  Add(std::move(primitive), arity, std::move(rule), false);
}

void RuleTable::Add(std::string primitive, Arity arity, Lowerer::Rule rule,
                    bool pure) {
  // Two rules for one primitive would make one of them dead code.
  if (!rules_.emplace(primitive, LoweringRule{std::move(rule), arity, pure})
           .second) {
    std::fprintf(stderr, "pallasvm: two lowering rules for `%s`\n",
                 primitive.c_str());
    std::abort();
  }
}

const LoweringRule* RuleTable::Find(absl::string_view primitive) const {
  auto it = rules_.find(primitive);
  return it == rules_.end() ? nullptr : &it->second;
}

const RuleTable& Rules() {
  static const RuleTable* table = [] {
    auto* t = new RuleTable;
    AddElementwiseRules(*t);
    AddShapeRules(*t);
    AddRefRules(*t);
    AddControlRules(*t);
    AddMachineRules(*t);
    AddGatherRules(*t);
    AddRandomRules(*t);
    return t;
  }();
  return *table;
}

const interchange::Param* Lowerer::Eqn::Param(absl::string_view name) const {
  if (eqn->params() == nullptr) return nullptr;
  for (const interchange::Param* p : *eqn->params()) {
    if (p->name() != nullptr && p->name()->str() == name) return p;
  }
  return nullptr;
}

bool Lowerer::Eqn::Has(absl::string_view name) const {
  const interchange::Param* p = Param(name);
  return p != nullptr && p->kind() != interchange::ParamKind::NONE;
}

absl::StatusOr<int64_t> Lowerer::Eqn::Int(absl::string_view name) const {
  const interchange::Param* p = Param(name);
  if (p == nullptr || (p->kind() != interchange::ParamKind::INT &&
                       p->kind() != interchange::ParamKind::BOOL)) {
    return absl::InvalidArgumentError(
        absl::StrCat("missing integer parameter '", name, "'"));
  }
  return p->kind() == interchange::ParamKind::BOOL ? int64_t{p->b()} : p->i();
}

absl::StatusOr<std::vector<int64_t>> Lowerer::Eqn::Ints(
    absl::string_view name) const {
  const interchange::Param* p = Param(name);
  if (p == nullptr) {
    return absl::InvalidArgumentError(
        absl::StrCat("missing parameter '", name, "'"));
  }
  if (p->kind() == interchange::ParamKind::NONE) return std::vector<int64_t>{};
  if (p->kind() == interchange::ParamKind::INT) {
    return std::vector<int64_t>{p->i()};
  }
  if (p->kind() != interchange::ParamKind::INTS) {
    return absl::InvalidArgumentError(
        absl::StrCat("parameter '", name, "' is not a list of integers"));
  }
  std::vector<int64_t> out;
  if (p->ints() != nullptr) out.assign(p->ints()->begin(), p->ints()->end());
  return out;
}

absl::StatusOr<int64_t> Lowerer::Eqn::IntIn(absl::string_view name,
                                            int64_t lo, int64_t hi) const {
  absl::StatusOr<int64_t> v = Int(name);
  if (!v.ok()) return v.status();
  if (*v < lo || *v > hi) {
    return absl::InvalidArgumentError(absl::StrCat(
        "parameter '", name, "' = ", *v, " is outside [", lo, ", ", hi, "]"));
  }
  return v;
}

absl::StatusOr<int64_t> Lowerer::Eqn::Axis(absl::string_view name,
                                           int64_t rank) const {
  absl::StatusOr<int64_t> v = Int(name);
  if (!v.ok()) return v.status();
  if (*v < 0 || *v >= rank) {
    return absl::InvalidArgumentError(absl::StrCat(
        "parameter '", name, "' = ", *v, " is not an axis of a rank-", rank,
        " value"));
  }
  return v;
}

absl::StatusOr<std::vector<int64_t>> Lowerer::Eqn::Axes(
    absl::string_view name, int64_t rank) const {
  absl::StatusOr<std::vector<int64_t>> v = Ints(name);
  if (!v.ok()) return v.status();
  std::vector<bool> seen(rank > 0 ? rank : 0, false);
  for (int64_t a : *v) {
    if (a < 0 || a >= rank || seen[a]) {
      return absl::InvalidArgumentError(absl::StrCat(
          "parameter '", name, "' = [", absl::StrJoin(*v, ", "),
          "] is not a list of distinct axes of a rank-", rank, " value"));
    }
    seen[a] = true;
  }
  return v;
}

const interchange::Eqn* Lowerer::WithSource() const {
  for (auto it = eqn_stack_.rbegin(); it != eqn_stack_.rend(); ++it) {
    if ((*it)->source_file() != nullptr && (*it)->source_file()->size() > 0) {
      return *it;
    }
  }
  return nullptr;
}

absl::Status Lowerer::Error(absl::string_view message) const {
  return AtEquation(absl::StatusCode::kInvalidArgument, message);
}

absl::Status Lowerer::Unsupported(absl::string_view message) const {
  return AtEquation(absl::StatusCode::kUnimplemented, message);
}

absl::Status Lowerer::AtEquation(absl::StatusCode code,
                                 absl::string_view message) const {
  if (current_ == nullptr) return absl::Status(code, message);
  std::string where = absl::StrCat(
      "`", current_->primitive() ? current_->primitive()->str() : "?", "`");
  if (const interchange::Eqn* src = WithSource()) {
    const std::string at =
        absl::StrCat(src->source_file()->str(), ":", src->source_line());
    if (src == current_) {
      absl::StrAppend(&where, " at ", at);
    } else {
      absl::StrAppend(&where, " (inside `",
                      src->primitive() ? src->primitive()->str() : "?", "` at ",
                      at, ")");
    }
    if (src->source_function() != nullptr &&
        src->source_function()->size() > 0) {
      absl::StrAppend(&where, " (in ", src->source_function()->str(), ")");
    }
  }
  return absl::Status(code, absl::StrCat("equation ", where, ": ", message));
}

Value Lowerer::NewValue(vm::DType dtype, const Shape& shape) {
  Value v;
  v.dtype = dtype;
  v.shape = shape;
  v.slot = b_.Alloc(v.bytes());
  return v;
}

Value Lowerer::ConstantScalar(vm::DType dtype, int64_t value) {
  Value v;
  v.dtype = dtype;
  uint8_t bytes[8] = {};
  switch (vm::SizeOf(dtype)) {
    case 1: {
      uint8_t x = static_cast<uint8_t>(value);
      std::memcpy(bytes, &x, 1);
      break;
    }
    case 2: {
      uint16_t x = static_cast<uint16_t>(value);
      std::memcpy(bytes, &x, 2);
      break;
    }
    default: {
      uint32_t x = static_cast<uint32_t>(value);
      std::memcpy(bytes, &x, 4);
      break;
    }
  }
  if (dtype == vm::DType::F32) {
    float f = static_cast<float>(value);
    std::memcpy(bytes, &f, 4);
  }
  v.slot = b_.Constant(bytes, vm::SizeOf(dtype));
  return v;
}

Value Lowerer::ConstantF32(float value) {
  Value v;
  v.dtype = vm::DType::F32;
  v.slot = b_.Constant(&value, 4);
  return v;
}

Value Lowerer::Convert(const Value& v, vm::DType to) {
  if (v.dtype == to) return v;
  Value out = NewValue(to, v.shape);
  const bool scalar = v.count() == 1;
  b_.Emit({vm::ConvertOp(v.dtype, to, scalar), 0, out.slot, v.slot, 0, 0,
           static_cast<uint32_t>(v.count())});
  return out;
}

absl::StatusOr<Value> Lowerer::Broadcast(const Value& v, const Shape& shape) {
  const int64_t n = NumElements(shape);
  if (v.count() == n) {
    Value same = v;
    same.shape = shape;
    return same;
  }
  if (v.count() == 1) {
    Value out = NewValue(v.dtype, shape);
    vm::Op op = vm::SizeOf(v.dtype) == 1   ? vm::Op::FILL_B1
                : vm::SizeOf(v.dtype) == 2 ? vm::Op::FILL_B2
                                           : vm::Op::FILL_B4;
    b_.Emit({op, 0, out.slot, v.slot, 0, 0, static_cast<uint32_t>(n)});
    return out;
  }
  // Same rank, size-1 dimensions stretched (binary ops in recent JAX
  // broadcast these implicitly): one strided copy with zero strides.
  if (v.shape.size() == shape.size()) {
    std::vector<int64_t> strides(shape.size(), 0);
    int64_t stride = 1;
    bool ok = true;
    for (int i = static_cast<int>(shape.size()) - 1; i >= 0; --i) {
      if (v.shape[i] == shape[i]) {
        strides[i] = v.shape[i] == 1 ? 0 : stride;
      } else if (v.shape[i] != 1) {
        ok = false;
      }
      stride *= v.shape[i];
    }
    if (ok) return StridedCopy(v, shape, strides, 0);
  }
  return Error(absl::StrCat("cannot broadcast ", TypeString(v), " to ",
                            ShapeString(shape)));
}

Value Lowerer::Select(const Value& pred, const Value& on_true,
                      const Value& on_false) {
  const int size = vm::SizeOf(on_true.dtype);
  const vm::Op op = size == 1   ? vm::Op::SELECT_B1
                    : size == 2 ? vm::Op::SELECT_B2
                                : vm::Op::SELECT_B4;
  Value out = NewValue(on_true.dtype, on_true.shape);
  b_.Emit({op, 0, out.slot, pred.slot, on_false.slot, on_true.slot,
           static_cast<uint32_t>(on_true.count())});
  return out;
}

void Lowerer::CopyInto(const Value& dst, const Value& src) {
  if (dst.slot == src.slot) return;
  const int64_t bytes = src.bytes();
  if (bytes == 4) {
    b_.Emit({vm::Op::MOV_B4, 0, dst.slot, src.slot, 0, 0, 1});
  } else if (bytes == 2) {
    b_.Emit({vm::Op::MOV_B2, 0, dst.slot, src.slot, 0, 0, 1});
  } else if (bytes == 1) {
    b_.Emit({vm::Op::MOV_B1, 0, dst.slot, src.slot, 0, 0, 1});
  } else {
    b_.Emit({vm::Op::COPY, 0, dst.slot, src.slot, 0, 0,
             static_cast<uint32_t>(bytes)});
  }
}

absl::StatusOr<Value> Lowerer::Binary(absl::string_view name, const Value& x,
                                      const Value& y, vm::DType compute,
                                      const Shape& shape) {
  const int64_t n = NumElements(shape);
  Value xc = Convert(x, compute);
  Value yc = Convert(y, compute);
  // Operands with size-1 dimensions are stretched to the result's shape;
  // single elements stay single (the _VS / _SV forms broadcast them).
  for (Value* v : {&xc, &yc}) {
    if (v->count() != n && v->count() != 1) {
      absl::StatusOr<Value> b = Broadcast(*v, shape);
      if (!b.ok()) {
        return Error(absl::StrCat("operand shapes ", TypeString(x), " and ",
                                  TypeString(y), " do not match the result ",
                                  ShapeString(shape)));
      }
      *v = *b;
    }
  }
  vm::Layout layout;
  if (n == 1 && xc.count() == 1 && yc.count() == 1) {
    layout = vm::Layout::SS;
  } else if (xc.count() == n && yc.count() == n) {
    layout = vm::Layout::VV;
  } else if (xc.count() == n && yc.count() == 1) {
    layout = vm::Layout::VS;
  } else if (xc.count() == 1 && yc.count() == n) {
    layout = vm::Layout::SV;
  } else {
    return Error(absl::StrCat("operand shapes ", TypeString(x), " and ",
                              TypeString(y), " do not match the result ",
                              ShapeString(shape)));
  }
  std::optional<vm::Op> op = vm::BinaryOp(name, compute, layout);
  if (!op) {
    return Error(
        absl::StrCat("no ", name, " operation on ", vm::Name(compute)));
  }
  Value out = NewValue(static_cast<vm::DType>(vm::Info(*op).out), shape);
  b_.Emit({*op, 0, out.slot, xc.slot, yc.slot, 0, static_cast<uint32_t>(n)});
  return out;
}

absl::StatusOr<Value> Lowerer::Unary(absl::string_view name, const Value& x,
                                     vm::DType compute) {
  Value xc = Convert(x, compute);
  std::optional<vm::Op> op = vm::UnaryOp(name, compute, xc.count() == 1);
  if (!op) {
    return Error(
        absl::StrCat("no ", name, " operation on ", vm::Name(compute)));
  }
  Value out = NewValue(static_cast<vm::DType>(vm::Info(*op).out), x.shape);
  b_.Emit({*op, 0, out.slot, xc.slot, 0, 0, static_cast<uint32_t>(xc.count())});
  return out;
}

Value Lowerer::StridedCopy(const Value& src, const Shape& out_shape,
                           const std::vector<int64_t>& strides,
                           int64_t offset) {
  vm::LayoutDesc layout;
  layout.elem_size = vm::SizeOf(src.dtype);
  layout.rank = static_cast<int32_t>(out_shape.size());
  layout.offset = offset;
  for (size_t i = 0; i < out_shape.size(); ++i) {
    layout.shape[i] = out_shape[i];
    layout.strides[i] = strides[i];
  }
  Value out = NewValue(src.dtype, out_shape);
  b_.Emit({vm::Op::STRIDED_COPY, 0, out.slot, src.slot, 0, b_.AddLayout(layout),
           0});
  return out;
}

std::vector<int64_t> RowMajorStrides(const Shape& shape) {
  std::vector<int64_t> strides(shape.size(), 1);
  for (int i = static_cast<int>(shape.size()) - 2; i >= 0; --i) {
    strides[i] = strides[i + 1] * shape[i + 1];
  }
  return strides;
}

vm::DType Widen(vm::DType t) {
  switch (t) {
    case vm::DType::S8:
    case vm::DType::S16:
      return vm::DType::S32;
    case vm::DType::U8:
    case vm::DType::U16:
      return vm::DType::U32;
    case vm::DType::F16:
    case vm::DType::BF16:
      return vm::DType::F32;
    default:
      return t;
  }
}

vm::AccessDesc WholeFrameAccess(const Value& base) {
  vm::AccessDesc a;
  a.base_kind = vm::AccessBase::FRAME;
  a.base = static_cast<int32_t>(base.slot);
  a.elem_size = static_cast<uint8_t>(vm::SizeOf(base.dtype));
  a.rank = static_cast<uint8_t>(base.shape.size());
  for (size_t i = 0; i < base.shape.size(); ++i) {
    a.dims[i].extent = base.shape[i];
    a.dims[i].size = base.shape[i];
  }
  return a;
}

Value Lowerer::Transpose(const Value& src, const std::vector<int64_t>& perm) {
  bool identity = true;
  for (size_t i = 0; i < perm.size(); ++i) identity &= perm[i] == int64_t(i);
  if (identity) return src;
  std::vector<int64_t> in_strides = RowMajorStrides(src.shape);
  Shape out_shape(perm.size());
  std::vector<int64_t> strides(perm.size());
  for (size_t j = 0; j < perm.size(); ++j) {
    out_shape[j] = src.shape[perm[j]];
    strides[j] = in_strides[perm[j]];
  }
  return StridedCopy(src, out_shape, strides, 0);
}

static absl::StatusOr<int64_t> LiteralInt(const interchange::Literal& lit) {
  if (lit.type() == nullptr || lit.data() == nullptr) {
    return absl::InvalidArgumentError("literal without type or data");
  }
  const auto* d = lit.data()->data();
  const size_t n = lit.data()->size();
  using D = interchange::DType;
  auto need = [&](size_t k) -> absl::Status {
    if (n < k) return absl::InvalidArgumentError("literal data too short");
    return absl::OkStatus();
  };
  switch (lit.type()->dtype()) {
    case D::PRED:
    case D::U8:
      if (auto s = need(1); !s.ok()) return s;
      return d[0];
    case D::S8:
      if (auto s = need(1); !s.ok()) return s;
      return static_cast<int8_t>(d[0]);
    case D::S16: {
      if (auto s = need(2); !s.ok()) return s;
      int16_t v;
      std::memcpy(&v, d, 2);
      return v;
    }
    case D::U16: {
      if (auto s = need(2); !s.ok()) return s;
      uint16_t v;
      std::memcpy(&v, d, 2);
      return v;
    }
    case D::S32: {
      if (auto s = need(4); !s.ok()) return s;
      int32_t v;
      std::memcpy(&v, d, 4);
      return v;
    }
    case D::U32: {
      if (auto s = need(4); !s.ok()) return s;
      uint32_t v;
      std::memcpy(&v, d, 4);
      return v;
    }
    case D::S64:
    case D::U64: {
      if (auto s = need(8); !s.ok()) return s;
      int64_t v;
      std::memcpy(&v, d, 8);
      return v;
    }
    default:
      return absl::InvalidArgumentError("index literal is not an integer");
  }
}

absl::StatusOr<Lowerer::Index> Lowerer::ScalarIndex(
    const interchange::Atom* atom) {
  Index index;
  if (atom->var() < 0) {
    if (atom->literal() == nullptr)
      return Error("operand is neither a variable nor a literal");
    absl::StatusOr<int64_t> v = LiteralInt(*atom->literal());
    if (!v.ok()) return Error(v.status().message());
    index.value = *v;
    return index;
  }
  absl::StatusOr<Value> v = Materialize(atom);
  if (!v.ok()) return v.status();
  if (v->is_ref() || v->count() != 1 || vm::Info(v->dtype).is_float) {
    return Error(absl::StrCat("index operand must be an integer scalar, got ",
                              TypeString(*v)));
  }
  index.is_static = false;
  index.slot = Convert(*v, vm::DType::S32).slot;
  return index;
}

absl::StatusOr<Value> Lowerer::Materialize(const interchange::Atom* atom) {
  if (atom == nullptr) return Error("missing operand");
  if (atom->var() >= 0) {
    auto it = scopes_.back().find(atom->var());
    if (it == scopes_.back().end()) {
      return Error(absl::StrCat("operand variable ", atom->var(),
                                " is not defined before its use"));
    }
    return it->second;
  }
  const interchange::Literal* lit = atom->literal();
  if (lit == nullptr || lit->type() == nullptr) {
    return Error("operand is neither a variable nor a literal");
  }
  absl::StatusOr<vm::DType> dtype = ToVmDType(lit->type()->dtype());
  if (!dtype.ok()) {
    return AtEquation(dtype.status().code(), dtype.status().message());
  }
  Value v;
  v.dtype = *dtype;
  if (lit->type()->shape()) {
    v.shape.assign(lit->type()->shape()->begin(), lit->type()->shape()->end());
  }
  if (absl::Status s = CheckShape(v.shape, v.dtype, memory_limit_, "a literal");
      !s.ok()) {
    return AtEquation(s.code(), s.message());
  }
  const size_t have = lit->data() ? lit->data()->size() : 0;
  if (have != static_cast<size_t>(v.bytes())) {
    return Error(absl::StrCat("literal of type ", TypeString(v), " has ", have,
                              " bytes of data, expected ", v.bytes()));
  }
  v.slot = b_.Constant(have ? lit->data()->data() : nullptr, have);
  return v;
}

absl::StatusOr<Value> Lowerer::VarType(const interchange::Var* var,
                                       absl::string_view what) const {
  if (var == nullptr || var->type() == nullptr) {
    return absl::InvalidArgumentError(absl::StrCat(what, " has no type"));
  }
  Value v;
  absl::StatusOr<vm::DType> dtype = ToVmDType(var->type()->dtype());
  if (!dtype.ok()) return dtype.status();
  v.dtype = *dtype;
  if (var->type()->shape()) {
    v.shape.assign(var->type()->shape()->begin(), var->type()->shape()->end());
  }
  if (absl::Status s = CheckShape(v.shape, v.dtype, memory_limit_, what);
      !s.ok()) {
    return s;
  }
  return v;
}

absl::StatusOr<std::vector<Value>> Lowerer::LowerJaxpr(
    const interchange::Jaxpr& jaxpr, const std::vector<Value>& inputs) {
  const size_t num_invars = jaxpr.invars() ? jaxpr.invars()->size() : 0;
  if (num_invars != inputs.size()) {
    return Error(absl::StrCat("sub-jaxpr takes ", num_invars,
                              " inputs but is given ", inputs.size()));
  }
  scopes_.emplace_back();
  // Code the caller emits after this jaxpr (loop plumbing, result copies)
  // belongs to the caller's equation, not to the last one in here.
  const vm::SourceLoc caller_loc = b_.location();
  auto pop = [this, &caller_loc](absl::Status s) {
    scopes_.pop_back();
    b_.SetLocation(caller_loc);
    return s;
  };
  // Bind constants and inputs.
  const size_t num_consts = jaxpr.constvars() ? jaxpr.constvars()->size() : 0;
  const size_t num_const_values = jaxpr.consts() ? jaxpr.consts()->size() : 0;
  if (num_consts != num_const_values) {
    return pop(Error("jaxpr has a different number of constvars and consts"));
  }
  for (size_t i = 0; i < num_consts; ++i) {
    const interchange::Literal* lit = jaxpr.consts()->Get(i);
    absl::StatusOr<Value> declared =
        VarType(jaxpr.constvars()->Get(i), absl::StrCat("constant ", i));
    if (!declared.ok()) {
      return pop(AtEquation(declared.status().code(),
                            declared.status().message()));
    }
    Value v = *declared;
    const size_t have = lit && lit->data() ? lit->data()->size() : 0;
    if (have != static_cast<size_t>(v.bytes())) {
      return pop(Error(absl::StrCat("constant of type ", TypeString(v), " has ",
                                    have, " bytes of data")));
    }
    v.slot = b_.Constant(have ? lit->data()->data() : nullptr, have);
    scopes_.back()[jaxpr.constvars()->Get(i)->id()] = v;
  }
  for (size_t i = 0; i < num_invars; ++i) {
    const interchange::Var* var = jaxpr.invars()->Get(i);
    absl::StatusOr<Value> declared = VarType(var, absl::StrCat("input ", i));
    if (!declared.ok()) {
      return pop(AtEquation(declared.status().code(),
                            declared.status().message()));
    }
    const Value& given = inputs[i];
    if (declared->dtype != given.dtype || declared->shape != given.shape) {
      return pop(Error(absl::StrCat("input ", i, " of a jaxpr is declared ",
                                    TypeString(*declared), " but bound to ",
                                    TypeString(given))));
    }
    scopes_.back()[var->id()] = given;
  }
  // Count uses, so pure equations with unused results can be dropped.
  absl::flat_hash_map<int, int> uses;
  if (jaxpr.eqns()) {
    for (const interchange::Eqn* e : *jaxpr.eqns()) {
      if (e->invars()) {
        for (const interchange::Atom* a : *e->invars()) {
          if (a->var() >= 0) ++uses[a->var()];
        }
      }
    }
  }
  if (jaxpr.outvars()) {
    for (const interchange::Atom* a : *jaxpr.outvars()) {
      if (a->var() >= 0) ++uses[a->var()];
    }
  }
  const FmaContractions fma =
      contract_fma_ ? FmaContractions::Find(jaxpr, uses, contract_fma_f16_)
                    : FmaContractions();
  if (jaxpr.eqns()) {
    for (size_t i = 0; i < jaxpr.eqns()->size(); ++i) {
      const interchange::Eqn* e = jaxpr.eqns()->Get(i);
      if (fma.Folded(i)) continue;  // its add or sub emits it
      bool used = false;
      if (e->outvars()) {
        for (const interchange::Var* v : *e->outvars()) {
          used |= uses.contains(v->id());
        }
      }
      absl::Status s = LowerEqn(*e, used, fma.At(i));
      if (!s.ok()) return pop(s);
    }
  }
  std::vector<Value> outputs;
  if (jaxpr.outvars()) {
    for (const interchange::Atom* a : *jaxpr.outvars()) {
      absl::StatusOr<Value> v = Materialize(a);
      if (!v.ok()) return pop(v.status());
      outputs.push_back(*v);
    }
  }
  scopes_.pop_back();
  b_.SetLocation(caller_loc);
  return outputs;
}

// "1 operand", "2 results", ...
static std::string Count(int64_t n, absl::string_view noun) {
  return absl::StrCat(n, " ", noun, n == 1 ? "" : "s");
}

static std::string Range(int lo, int hi, absl::string_view noun) {
  if (lo == hi) return Count(lo, noun);
  if (hi == Arity::kAny) return absl::StrCat("at least ", Count(lo, noun));
  return absl::StrCat(lo, " to ", Count(hi, noun));
}

absl::Status Lowerer::CheckArity(const interchange::Eqn& eqn,
                                 const Arity& arity) const {
  const int64_t in = eqn.invars() ? eqn.invars()->size() : 0;
  const int64_t out = eqn.outvars() ? eqn.outvars()->size() : 0;
  if (in < arity.min_in || in > arity.max_in || out < arity.min_out ||
      out > arity.max_out) {
    return Error(absl::StrCat(
        "takes ", Range(arity.min_in, arity.max_in, "operand"), " and ",
        Range(arity.min_out, arity.max_out, "result"), ", but this equation "
        "has ", Count(in, "operand"), " and ", Count(out, "result")));
  }
  return absl::OkStatus();
}

absl::Status Lowerer::LowerEqn(const interchange::Eqn& eqn, bool outputs_used,
                               const FmaContraction* fma) {
  const interchange::Eqn* saved = current_;
  current_ = &eqn;
  eqn_stack_.push_back(&eqn);
  struct Restore {
    Lowerer* l;
    const interchange::Eqn* saved;
    ~Restore() {
      l->current_ = saved;
      l->eqn_stack_.pop_back();
    }
  } restore{this, saved};

  std::string primitive =
      eqn.primitive() ? eqn.primitive()->str() : std::string();
  vm::SourceLoc loc;
  loc.primitive = primitive;
  if (const interchange::Eqn* src = WithSource()) {
    loc.file = src->source_file()->str();
    loc.line = src->source_line();
    if (src->source_function()) loc.function = src->source_function()->str();
  }
  b_.SetLocation(loc);

  // The rule first: a primitive pallasvm does not know is an error even
  // where its results are unused, since it may have effects.
  const LoweringRule* rule = Rules().Find(primitive);
  if (rule == nullptr) {
    return Unsupported(absl::StrCat("primitive `", primitive,
                                    "` is not supported by pallasvm yet"));
  }
  if (absl::Status s = CheckArity(eqn, rule->arity); !s.ok()) return s;
  if (!outputs_used && rule->pure) return absl::OkStatus();

  Eqn ctx;
  ctx.eqn = &eqn;
  ctx.outputs_used = outputs_used;
  std::vector<const interchange::Atom*> operands;
  if (fma != nullptr) {
    rule = &fma->rule;  // an add or sub with its multiply folded in
    operands = fma->operands;
  } else if (eqn.invars()) {
    operands.assign(eqn.invars()->begin(), eqn.invars()->end());
  }
  for (const interchange::Atom* a : operands) {
    absl::StatusOr<Value> v = Materialize(a);
    if (!v.ok()) return v.status();
    ctx.in.push_back(*v);
  }
  std::vector<Value> declared;
  if (eqn.outvars()) {
    for (const interchange::Var* var : *eqn.outvars()) {
      absl::StatusOr<Value> v =
          VarType(var, absl::StrCat("result ", ctx.out_shapes.size()));
      if (!v.ok()) return AtEquation(v.status().code(), v.status().message());
      ctx.out_shapes.push_back(v->shape);
      ctx.out_dtypes.push_back(v->dtype);
      declared.push_back(*v);
    }
  }
  absl::StatusOr<std::vector<Value>> results = rule->lower(*this, ctx);
  if (absl::Status s = b_.CheckBudget(); !s.ok()) {
    return AtEquation(s.code(), s.message());
  }
  if (!results.ok()) {
    // Rules report with Error() already; add context for others.
    if (absl::StrContains(results.status().message(), "equation `")) {
      return results.status();
    }
    return AtEquation(results.status().code(), results.status().message());
  }
  if (results->size() != declared.size()) {
    return Error(absl::StrCat("lowering produced ", results->size(),
                              " results, the equation declares ",
                              declared.size()));
  }
  for (size_t i = 0; i < declared.size(); ++i) {
    Value& r = (*results)[i];
    if (r.dtype != declared[i].dtype || r.count() != declared[i].count()) {
      return Error(absl::StrCat("result ", i, " is declared ",
                                TypeString(declared[i]), " but computes ",
                                TypeString(r)));
    }
    r.shape = declared[i].shape;  // same bytes, declared view
    if (skip_fp_ && !r.is_ref() && vm::Info(r.dtype).is_float) {
      // A fresh value of +inf (never the constant itself: a later
      // equation may update its operand in place).
      Value inf = Convert(ConstantF32(std::numeric_limits<float>::infinity()),
                          r.dtype);
      if (r.count() == 1) {
        r = NewValue(r.dtype, r.shape);
        CopyInto(r, inf);
      } else {
        absl::StatusOr<Value> filled = Broadcast(inf, r.shape);  // a FILL
        if (!filled.ok()) return Error(filled.status().message());
        r = *filled;
      }
    }
    scopes_.back()[eqn.outvars()->Get(i)->id()] = r;
  }
  return absl::OkStatus();
}

}  // namespace pallasvm::compiler
