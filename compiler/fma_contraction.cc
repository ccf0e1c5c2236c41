// Fused multiply-add contraction; see fma_contraction.h.
#include "compiler/fma_contraction.h"

#include <cstdint>
#include <optional>
#include <string>
#include <utility>

#include "absl/strings/str_cat.h"
#include "vm/opcodes.h"

namespace pallasvm::compiler {
namespace {

using vm::DType;

bool Contractible(const interchange::Var* v, bool f16) {
  if (v == nullptr || v->type() == nullptr ||
      v->type()->memory_space() != interchange::MemorySpace::VALUE) {
    return false;
  }
  const interchange::DType d = v->type()->dtype();
  return d == interchange::DType::F32 || (f16 && d == interchange::DType::F16);
}

std::string Primitive(const interchange::Eqn& e) {
  return e.primitive() ? e.primitive()->str() : std::string();
}

// The integer parameter `name` of an equation, or nullopt.
std::optional<int64_t> IntParam(const interchange::Eqn& e,
                                absl::string_view name) {
  if (e.params() == nullptr) return std::nullopt;
  for (const interchange::Param* p : *e.params()) {
    if (p->name() != nullptr && p->name()->str() == name &&
        p->kind() == interchange::ParamKind::INT) {
      return p->i();
    }
  }
  return std::nullopt;
}

// The equation's single result, or nullptr.
const interchange::Var* OnlyResult(const interchange::Eqn& e) {
  if (e.outvars() == nullptr || e.outvars()->size() != 1) return nullptr;
  return e.outvars()->Get(0);
}

// Lowers fma(±x, y, ±z) over the FmaContraction's operands (x, y, z), in
// f32 (f16 is widened and its result rounded once).
Lowerer::Rule FmaRule(bool negate_product, bool negate_addend) {
  return [=](Lowerer& l, const Lowerer::Eqn& e)
             -> absl::StatusOr<std::vector<Value>> {
    const Shape& shape = e.out_shapes.at(0);
    const DType out = e.out_dtypes.at(0);
    std::vector<Value> f32;
    for (const Value& v : e.in) {
      if (v.is_ref()) return l.Error("operand is a ref, not a value");
      if (v.dtype != out) {
        return l.Error(absl::StrCat("operand ", TypeString(v),
                                    " differs from the result's dtype ",
                                    vm::Name(out)));
      }
      // Single elements are filled out to the block: FMA_F32 has no
      // broadcasting forms.
      absl::StatusOr<Value> full = l.Broadcast(l.Convert(v, DType::F32), shape);
      if (!full.ok()) return full.status();
      f32.push_back(*full);
    }
    for (auto [negate, v] : {std::pair{negate_product, &f32[0]},
                             std::pair{negate_addend, &f32[2]}}) {
      if (!negate) continue;
      absl::StatusOr<Value> neg = l.Unary("NEG", *v, DType::F32);
      if (!neg.ok()) return neg.status();
      *v = *neg;
    }
    Value r = l.NewValue(DType::F32, shape);
    l.builder().Emit({vm::Op::FMA_F32, 0, r.slot, f32[0].slot, f32[1].slot,
                      f32[2].slot, static_cast<uint32_t>(r.count())});
    return std::vector<Value>{l.Convert(r, out)};
  };
}

// A multiply an add or subtract can absorb: a single-use product x * y, or
// its negation (LLVM rewrites -(x * y) to (-x) * y before contracting).
struct Product {
  const interchange::Atom* x;
  const interchange::Atom* y;
  bool negated = false;
  std::vector<size_t> eqns;  // the equations it folds away
};

}  // namespace

FmaContractions FmaContractions::Find(
    const interchange::Jaxpr& jaxpr,
    const absl::flat_hash_map<int, int>& uses, bool f16) {
  FmaContractions found;
  if (jaxpr.eqns() == nullptr) return found;
  const auto& eqns = *jaxpr.eqns();
  auto single_use = [&](const interchange::Var* v) {
    auto it = uses.find(v->id());
    return it != uses.end() && it->second == 1;
  };
  // Variable id -> the product that defines it, for products used once.
  absl::flat_hash_map<int, Product> products;
  for (size_t i = 0; i < eqns.size(); ++i) {
    const interchange::Eqn& e = *eqns.Get(i);
    const interchange::Var* result = OnlyResult(e);
    if (result == nullptr || !Contractible(result, f16) || e.invars() == nullptr) {
      continue;
    }
    const std::string primitive = Primitive(e);
    const auto& in = *e.invars();
    const bool product_use = single_use(result);
    // XLA lowers square and integer_pow(x, 2) to multiply(x, x).
    if (product_use && primitive == "mul" && in.size() == 2) {
      products[result->id()] = Product{in.Get(0), in.Get(1), false, {i}};
      continue;
    }
    if (product_use && in.size() == 1 &&
        (primitive == "square" ||
         (primitive == "integer_pow" && IntParam(e, "y") == 2))) {
      products[result->id()] = Product{in.Get(0), in.Get(0), false, {i}};
      continue;
    }
    if (product_use && primitive == "neg" && in.size() == 1 &&
        in.Get(0)->var() >= 0) {
      auto p = products.find(in.Get(0)->var());
      if (p == products.end()) continue;
      Product negated = std::move(p->second);
      products.erase(p);
      negated.negated = !negated.negated;
      negated.eqns.push_back(i);
      products[result->id()] = std::move(negated);
      continue;
    }
    if ((primitive != "add" && primitive != "sub") || in.size() != 2) continue;
    // Operand 0 first, as LLVM's DAGCombiner tries it; but LLVM first
    // rewrites (-p) + q to q - p, so then q first.
    auto candidate = [&](int side) -> const Product* {
      const interchange::Atom* a = in.Get(side);
      if (a == nullptr || a->var() < 0) return nullptr;
      auto it = products.find(a->var());
      return it == products.end() ? nullptr : &it->second;
    };
    const Product* first = candidate(0);
    const bool swap = primitive == "add" && first != nullptr &&
                      first->negated && candidate(1) != nullptr;
    for (int side : {swap ? 1 : 0, swap ? 0 : 1}) {
      const interchange::Atom* product = in.Get(side);
      const interchange::Atom* addend = in.Get(1 - side);
      if (product == nullptr || addend == nullptr || product->var() < 0) {
        continue;
      }
      auto p = products.find(product->var());
      if (p == products.end()) continue;
      if (OnlyResult(*eqns.Get(p->second.eqns[0]))->type()->dtype() !=
          result->type()->dtype()) {
        continue;
      }
      const bool sub = primitive == "sub";
      for (size_t folded : p->second.eqns) found.folded_.insert(folded);
      found.at_.emplace(
          i, FmaContraction{
                 {p->second.x, p->second.y, addend},
                 LoweringRule{FmaRule(p->second.negated != (sub && side == 1),
                                      sub && side == 0),
                              Arity::Exactly(3, 1), /*pure=*/true}});
      products.erase(p);
      break;
    }
  }
  return found;
}

}  // namespace pallasvm::compiler
