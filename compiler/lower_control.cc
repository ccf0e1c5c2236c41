// Control flow and calls. cond, while and scan become jumps in the one
// instruction stream; jit / closed_call / custom_jvp_call / custom_vjp_call
// are inlined by lowering their jaxpr in place (no calls in the VM).
//
// Sub-jaxpr inputs are bound to the caller's values without copies (jaxpr
// values are immutable; refs are shared by design). Loop-carried values get
// slots of their own, written back after each iteration.
#include <algorithm>
#include <limits>

#include "absl/strings/str_cat.h"
#include "compiler/lowering.h"
#include "vm/opcodes.h"

namespace pallasvm::compiler {
namespace {

using vm::DType;

absl::StatusOr<const interchange::Jaxpr*> SubJaxpr(Lowerer& l,
                                                   const Lowerer::Eqn& e,
                                                   absl::string_view name,
                                                   int index = 0) {
  const interchange::Param* p = e.Param(name);
  if (p == nullptr || p->jaxprs() == nullptr ||
      index >= static_cast<int>(p->jaxprs()->size())) {
    return l.Error(absl::StrCat("missing jaxpr parameter '", name, "'"));
  }
  return p->jaxprs()->Get(index);
}

// A fresh value with the same type, for results and loop carries.
Value Fresh(Lowerer& l, const Value& like) {
  if (like.is_ref()) return like;
  return l.NewValue(like.dtype, like.shape);
}

bool Overlaps(const Value& a, const Value& b) {
  if (a.is_ref() || b.is_ref()) return false;
  const int64_t a0 = a.slot, a1 = a.slot + std::max<int64_t>(a.bytes(), 1);
  const int64_t b0 = b.slot, b1 = b.slot + std::max<int64_t>(b.bytes(), 1);
  return a0 < b1 && b0 < a1;
}

// dst[i] := src[i] for all i, as if simultaneously: a source that overlaps
// another destination goes through a temporary first.
void ParallelCopy(Lowerer& l, const std::vector<Value>& dst,
                  std::vector<Value> src) {
  for (size_t i = 0; i < src.size(); ++i) {
    if (dst[i].is_ref()) continue;
    for (size_t j = 0; j < dst.size(); ++j) {
      if (j != i && Overlaps(src[i], dst[j])) {
        Value tmp = Fresh(l, src[i]);
        l.CopyInto(tmp, src[i]);
        src[i] = tmp;
        break;
      }
    }
  }
  for (size_t i = 0; i < src.size(); ++i) {
    if (!dst[i].is_ref()) l.CopyInto(dst[i], src[i]);
  }
}

absl::Status CheckSameTypes(Lowerer& l, const std::vector<Value>& a,
                            const std::vector<Value>& b, absl::string_view what) {
  if (a.size() != b.size()) {
    return l.Error(absl::StrCat(what, ": ", a.size(), " values vs ", b.size()));
  }
  for (size_t i = 0; i < a.size(); ++i) {
    if (a[i].dtype != b[i].dtype || a[i].count() != b[i].count()) {
      return l.Error(absl::StrCat(what, ": ", TypeString(a[i]), " vs ",
                                  TypeString(b[i])));
    }
  }
  return absl::OkStatus();
}

// jit / pjit / closed_call / custom_jvp_call / custom_vjp_call: inline.
absl::StatusOr<std::vector<Value>> LowerCall(Lowerer& l,
                                             const Lowerer::Eqn& e) {
  const interchange::Jaxpr* body = nullptr;
  for (const char* name : {"jaxpr", "call_jaxpr", "fun_jaxpr"}) {
    const interchange::Param* p = e.Param(name);
    if (p && p->jaxprs() && p->jaxprs()->size() > 0) {
      body = p->jaxprs()->Get(0);
      break;
    }
  }
  if (body == nullptr) return l.Error("call without a jaxpr to inline");
  return l.LowerJaxpr(*body, e.in);
}

// cond(index, *operands; branches): branch k runs when index == k (the
// index is clamped into range, as lax.switch does).
absl::StatusOr<std::vector<Value>> LowerCond(Lowerer& l,
                                             const Lowerer::Eqn& e) {
  const interchange::Param* p = e.Param("branches");
  if (p == nullptr || p->jaxprs() == nullptr || p->jaxprs()->size() == 0) {
    return l.Error("cond without branches");
  }
  const int num_branches = static_cast<int>(p->jaxprs()->size());
  if (e.in.empty() || e.in[0].count() != 1 || e.in[0].is_ref()) {
    return l.Error("cond index must be a scalar");
  }
  std::vector<Value> operands(e.in.begin() + 1, e.in.end());
  Value index = l.Convert(e.in[0], DType::S32);
  std::vector<Value> results;
  for (size_t i = 0; i < e.out_shapes.size(); ++i) {
    results.push_back(l.NewValue(e.out_dtypes[i], e.out_shapes[i]));
  }
  ProgramBuilder& b = l.builder();
  // Dispatch: for k = 1 .. n-1, if index >= k skip forward; the chain of
  // tests picks the largest k <= index, i.e. clamps high and low.
  std::vector<uint32_t> to_branch(num_branches, 0);
  std::vector<uint32_t> jumps;  // JUMP_IF_TRUE pcs for branches n-1 .. 1
  for (int k = num_branches - 1; k >= 1; --k) {
    absl::StatusOr<Value> ge = l.Binary(
        "GE", index, l.ConstantScalar(DType::S32, k), DType::S32, {});
    if (!ge.ok()) return ge.status();
    to_branch[k] = b.Emit({vm::Op::JUMP_IF_TRUE, 0, ge->slot, 0, 0, 0, 1});
  }
  std::vector<uint32_t> to_end;
  for (int k = 0; k < num_branches; ++k) {
    if (k > 0) b.at(to_branch[k]).b = b.pc();
    absl::StatusOr<std::vector<Value>> outs =
        l.LowerJaxpr(*p->jaxprs()->Get(k), operands);
    if (!outs.ok()) return outs.status();
    absl::Status s = CheckSameTypes(l, results, *outs, "cond branch results");
    if (!s.ok()) return s;
    ParallelCopy(l, results, *outs);
    if (k + 1 < num_branches) {
      to_end.push_back(b.Emit({vm::Op::JUMP, 0, 0, 0, 0, 0, 0}));
    }
  }
  for (uint32_t pc : to_end) b.at(pc).a = b.pc();
  return results;
}

// while(cond_consts, body_consts, *init; cond_jaxpr, body_jaxpr).
absl::StatusOr<std::vector<Value>> LowerWhile(Lowerer& l,
                                              const Lowerer::Eqn& e) {
  absl::StatusOr<const interchange::Jaxpr*> cond = SubJaxpr(l, e, "cond_jaxpr");
  if (!cond.ok()) return cond.status();
  absl::StatusOr<const interchange::Jaxpr*> body = SubJaxpr(l, e, "body_jaxpr");
  if (!body.ok()) return body.status();
  const int64_t num_in = static_cast<int64_t>(e.in.size());
  absl::StatusOr<int64_t> cn = e.IntIn("cond_nconsts", 0, num_in);
  if (!cn.ok()) return cn.status();
  absl::StatusOr<int64_t> bn = e.IntIn("body_nconsts", 0, num_in - *cn);
  if (!bn.ok()) return bn.status();
  std::vector<Value> cond_consts(e.in.begin(), e.in.begin() + *cn);
  std::vector<Value> body_consts(e.in.begin() + *cn, e.in.begin() + *cn + *bn);
  std::vector<Value> init(e.in.begin() + *cn + *bn, e.in.end());
  std::vector<Value> carry;
  for (const Value& v : init) carry.push_back(Fresh(l, v));
  ParallelCopy(l, carry, init);
  ProgramBuilder& b = l.builder();
  const uint32_t top = b.pc();
  std::vector<Value> cond_in = cond_consts;
  cond_in.insert(cond_in.end(), carry.begin(), carry.end());
  absl::StatusOr<std::vector<Value>> pred = l.LowerJaxpr(**cond, cond_in);
  if (!pred.ok()) return pred.status();
  if (pred->size() != 1 || (*pred)[0].dtype != DType::PRED ||
      (*pred)[0].count() != 1) {
    return l.Error("while condition must return one bool scalar");
  }
  const uint32_t exit = b.Emit({vm::Op::JUMP_IF_FALSE, 0, (*pred)[0].slot, 0,
                                0, 0, 1});
  std::vector<Value> body_in = body_consts;
  body_in.insert(body_in.end(), carry.begin(), carry.end());
  absl::StatusOr<std::vector<Value>> next = l.LowerJaxpr(**body, body_in);
  if (!next.ok()) return next.status();
  absl::Status s = CheckSameTypes(l, carry, *next, "while body carry");
  if (!s.ok()) return s;
  ParallelCopy(l, carry, *next);
  b.Emit({vm::Op::JUMP, 0, top, 0, 0, 0, 0});
  b.at(exit).b = b.pc();
  return carry;
}

// A FRAME access to row `i` (dynamic) of a value's leading axis.
uint32_t RowAccess(Lowerer& l, const Value& stacked, uint32_t index_slot) {
  vm::AccessDesc a = WholeFrameAccess(stacked);
  a.dims[0].size = 1;
  a.dims[0].squeezed = 1;
  a.dims[0].start_slot = static_cast<int32_t>(index_slot);
  return l.builder().AddAccess(a);
}

// scan(consts, init, xs; jaxpr, length, reverse, num_consts, num_carry):
// iteration i reads row i of each xs and writes row i of each ys.
absl::StatusOr<std::vector<Value>> LowerScan(Lowerer& l,
                                             const Lowerer::Eqn& e) {
  absl::StatusOr<const interchange::Jaxpr*> body = SubJaxpr(l, e, "jaxpr");
  if (!body.ok()) return body.status();
  const int64_t num_in = static_cast<int64_t>(e.in.size());
  const int64_t num_out = static_cast<int64_t>(e.out_shapes.size());
  // The loop counts in int32 registers.
  absl::StatusOr<int64_t> length =
      e.IntIn("length", 0, std::numeric_limits<int32_t>::max());
  if (!length.ok()) return length.status();
  absl::StatusOr<int64_t> num_consts = e.IntIn("num_consts", 0, num_in);
  if (!num_consts.ok()) return num_consts.status();
  absl::StatusOr<int64_t> num_carry =
      e.IntIn("num_carry", 0, std::min(num_in - *num_consts, num_out));
  if (!num_carry.ok()) return num_carry.status();
  const bool reverse = e.Int("reverse").value_or(0) != 0;
  const int64_t nc = *num_consts, nk = *num_carry;
  std::vector<Value> consts(e.in.begin(), e.in.begin() + nc);
  std::vector<Value> init(e.in.begin() + nc, e.in.begin() + nc + nk);
  std::vector<Value> xs(e.in.begin() + nc + nk, e.in.end());
  for (const Value& x : xs) {
    if (x.shape.empty() || x.shape[0] != *length) {
      return l.Error("scan input does not have `length` rows");
    }
  }
  const size_t num_ys = e.out_shapes.size() - nk;
  std::vector<Value> ys;
  for (size_t i = 0; i < num_ys; ++i) {
    const Shape& shape = e.out_shapes[nk + i];
    if (shape.empty() || shape[0] != *length) {
      return l.Error(absl::StrCat("scan output ", nk + i, " is ",
                                  ShapeString(shape), ", not ", *length,
                                  " rows"));
    }
    ys.push_back(l.NewValue(e.out_dtypes[nk + i], shape));
  }
  std::vector<Value> carry;
  for (const Value& v : init) carry.push_back(Fresh(l, v));
  ParallelCopy(l, carry, init);

  ProgramBuilder& b = l.builder();
  Value counter = l.NewValue(DType::S32, {});
  l.CopyInto(counter, l.ConstantScalar(DType::S32, 0));
  Value row = reverse ? l.NewValue(DType::S32, {}) : counter;
  const uint32_t top = b.pc();
  absl::StatusOr<Value> more = l.Binary(
      "LT", counter, l.ConstantScalar(DType::S32, *length), DType::S32, {});
  if (!more.ok()) return more.status();
  const uint32_t exit = b.Emit({vm::Op::JUMP_IF_FALSE, 0, more->slot, 0, 0, 0, 1});
  if (reverse) {
    b.Emit({vm::Op::SUB_S32_SS, 0, row.slot,
            l.ConstantScalar(DType::S32, *length - 1).slot, counter.slot, 0, 1});
  }
  std::vector<Value> body_in = consts;
  body_in.insert(body_in.end(), carry.begin(), carry.end());
  for (const Value& x : xs) {
    Shape row_shape(x.shape.begin() + 1, x.shape.end());
    Value xi = l.NewValue(x.dtype, row_shape);
    b.Emit({vm::Op::LOAD, 0, xi.slot, 0, 0, RowAccess(l, x, row.slot), 0});
    body_in.push_back(xi);
  }
  absl::StatusOr<std::vector<Value>> outs = l.LowerJaxpr(**body, body_in);
  if (!outs.ok()) return outs.status();
  if (outs->size() != static_cast<size_t>(nk) + num_ys) {
    return l.Error("scan body returns the wrong number of values");
  }
  std::vector<Value> next(outs->begin(), outs->begin() + nk);
  absl::Status s = CheckSameTypes(l, carry, next, "scan carry");
  if (!s.ok()) return s;
  for (size_t i = 0; i < num_ys; ++i) {
    const Value& y = (*outs)[nk + i];
    if (y.dtype != ys[i].dtype || y.count() * *length != ys[i].count()) {
      return l.Error(absl::StrCat("scan body's output ", nk + i, " is ",
                                  TypeString(y), ", not a row of ",
                                  TypeString(ys[i])));
    }
  }
  for (size_t i = 0; i < num_ys; ++i) {
    const Value& y = (*outs)[nk + i];
    b.Emit({vm::Op::STORE, 0, 0, y.slot, 0, RowAccess(l, ys[i], row.slot), 0});
  }
  ParallelCopy(l, carry, next);
  b.Emit({vm::Op::ADD_S32_SS, 0, counter.slot, counter.slot,
          l.ConstantScalar(DType::S32, 1).slot, 0, 1});
  b.Emit({vm::Op::JUMP, 0, top, 0, 0, 0, 0});
  b.at(exit).b = b.pc();
  std::vector<Value> results = carry;
  results.insert(results.end(), ys.begin(), ys.end());
  return results;
}

}  // namespace

void AddControlRules(RuleTable& t) {
  for (const char* p : {"pjit", "jit", "closed_call", "core_call",
                        "custom_jvp_call", "custom_vjp_call",
                        "custom_vjp_call_jaxpr", "remat", "checkpoint"}) {
    t.Effectful(p, Arity::Any(), LowerCall);
  }
  t.Effectful("cond", {1, Arity::kAny, 0, Arity::kAny}, LowerCond);
  t.Effectful("while", Arity::Any(), LowerWhile);
  t.Effectful("scan", Arity::Any(), LowerScan);
}

}  // namespace pallasvm::compiler
