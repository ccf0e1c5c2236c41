// Ref primitives (get, swap, addupdate) and grid queries.
//
// A ref access is one LOAD/STORE/ADDUPDATE instruction with an access
// descriptor: the ref, its static extents, and per dimension a static or
// dynamic start, a size and a stride. Static accesses are bounds-checked
// here, at compile time; dynamic ones once per access by the VM.
#include <optional>

#include "absl/strings/str_cat.h"
#include "compiler/lowering.h"
#include "vm/opcodes.h"

namespace pallasvm::compiler {
namespace {

using vm::DType;

struct RefAccess {
  uint32_t access;  // descriptor index
  Shape shape;      // shape of the accessed value
};

// Builds the access descriptor for `ref` indexed by the equation's
// "indexers" param (absent or empty: the whole ref). `kind` ("read",
// "write", "masked swap") names the access in errors, as interpret mode
// names it. A `clipped` access (a masked store's) may hang over its ref:
// only its span must fit.
absl::StatusOr<RefAccess> BuildAccess(Lowerer& l, const Lowerer::Eqn& e,
                                      const Value& ref, absl::string_view kind,
                                      bool clipped = false) {
  vm::AccessDesc a;
  a.base_kind = vm::AccessBase::REF;
  a.base = ref.ref;
  a.elem_size = static_cast<uint8_t>(vm::SizeOf(ref.dtype));
  a.rank = static_cast<uint8_t>(ref.shape.size());
  RefAccess result;
  for (size_t i = 0; i < ref.shape.size(); ++i) {
    a.dims[i].extent = ref.shape[i];
    a.dims[i].size = ref.shape[i];
  }
  const interchange::Param* p = e.Param("indexers");
  const int num_indexers =
      p && p->indexers() ? static_cast<int>(p->indexers()->size()) : 0;
  if (num_indexers > 1) {
    return l.Unsupported(
        "chained ref transforms (indexing an already-indexed ref) are not "
        "supported yet");
  }
  if (num_indexers == 1) {
    const interchange::Indexer* ix = p->indexers()->Get(0);
    const int nd = ix->dims() ? static_cast<int>(ix->dims()->size()) : 0;
    if (nd != static_cast<int>(ref.shape.size())) {
      return l.Error(absl::StrCat(
          "indexer has ", nd, " dimensions but the ref is ", TypeString(ref)));
    }
    for (int i = 0; i < nd; ++i) {
      const interchange::IndexDim* d = ix->dims()->Get(i);
      vm::AccessDim& ad = a.dims[i];
      const bool is_index = d->kind() == interchange::IndexKind::INDEX;
      ad.squeezed = is_index ? 1 : 0;
      ad.size = is_index ? 1 : d->size();
      ad.stride = is_index ? 1 : d->stride();
      if (ad.size < 0 || ad.stride < 1) {
        return l.Error(absl::StrCat("invalid slice in dimension ", i, ": size ",
                                    ad.size, ", stride ", ad.stride));
      }
      if (d->start_operand() >= 0) {
        if (e.eqn->invars() == nullptr ||
            d->start_operand() >= static_cast<int>(e.eqn->invars()->size())) {
          return l.Error("indexer refers to a missing operand");
        }
        absl::StatusOr<Lowerer::Index> idx =
            l.ScalarIndex(e.eqn->invars()->Get(d->start_operand()));
        if (!idx.ok()) return idx.status();
        if (idx->is_static) {
          ad.start = idx->value;
        } else {
          ad.start_slot = static_cast<int32_t>(idx->slot);
        }
      } else {
        ad.start = d->start();
      }
      // The span (size-1)*stride, and with a static start its last
      // element, in checked arithmetic: sizes and strides come from the
      // file. A span no start can fit is out of bounds whatever the start.
      std::optional<int64_t> span = CheckedMul(ad.size - 1, ad.stride);
      std::optional<int64_t> last =
          span && ad.start_slot < 0 ? CheckedAdd(ad.start, *span) : span;
      if (clipped) last = span;
      if (ad.size > 0 && (!last || *last >= ad.extent ||
                          (!clipped && ad.start_slot < 0 && ad.start < 0))) {
        return l.Error(absl::StrCat(
            "Out-of-bounds ", kind, " of ", TypeString(ref), ": dimension ", i,
            " takes ", ad.size, " elements from ",
            ad.start_slot < 0 ? absl::StrCat(ad.start)
                              : std::string("a dynamic start"),
            " with stride ", ad.stride, " (needs start + (size-1)*stride < ",
            ad.extent, ")"));
      }
    }
  }
  for (int i = 0; i < a.rank; ++i) {
    if (!a.dims[i].squeezed) result.shape.push_back(a.dims[i].size);
  }
  result.access = l.builder().AddAccess(a);
  return result;
}

absl::StatusOr<Value> RefOperand(Lowerer& l, const Lowerer::Eqn& e) {
  if (e.in.empty() || !e.in[0].is_ref()) {
    return l.Error("first operand must be a ref");
  }
  return e.in[0];
}

// The LOAD of `ref` indexed by the equation's indexers: get, and an
// unmasked masked_load.
absl::StatusOr<std::vector<Value>> LoadRef(Lowerer& l, const Lowerer::Eqn& e,
                                           const Value& ref) {
  absl::StatusOr<RefAccess> acc = BuildAccess(l, e, ref, "read");
  if (!acc.ok()) return acc.status();
  if (NumElements(acc->shape) != NumElements(e.out_shapes.at(0))) {
    return l.Error(absl::StrCat("reads ", ShapeString(acc->shape),
                                " but the result is declared ",
                                ShapeString(e.out_shapes[0])));
  }
  Value r = l.NewValue(ref.dtype, e.out_shapes[0]);
  l.builder().Emit({vm::Op::LOAD, 0, r.slot, 0, 0, acc->access, 0});
  return std::vector<Value>{r};
}

absl::StatusOr<std::vector<Value>> LowerGet(Lowerer& l, const Lowerer::Eqn& e) {
  absl::StatusOr<Value> ref = RefOperand(l, e);
  if (!ref.ok()) return ref.status();
  return LoadRef(l, e, *ref);
}

// The value operand of swap/addupdate, broadcast to the region's shape.
absl::StatusOr<Value> StoredValue(Lowerer& l, const Lowerer::Eqn& e,
                                  const Value& ref, const Shape& region) {
  if (e.in.size() < 2 || e.in[1].is_ref()) {
    return l.Error("second operand must be the value to store");
  }
  const Value& v = e.in[1];
  if (v.dtype != ref.dtype) {
    return l.Error(
        absl::StrCat("stores ", TypeString(v), " into ", TypeString(ref)));
  }
  if (v.count() != NumElements(region)) {
    if (v.count() != 1) {
      return l.Error(absl::StrCat("stores ", TypeString(v),
                                  " into a region of shape ",
                                  ShapeString(region)));
    }
    return l.Broadcast(v, region);
  }
  return v;
}

// What swap and addupdate share: the ref, its access and the value.
struct RefWrite {
  Value ref;
  RefAccess access;
  Value value;
};

absl::StatusOr<RefWrite> PrepareRefWrite(Lowerer& l, const Lowerer::Eqn& e) {
  absl::StatusOr<Value> ref = RefOperand(l, e);
  if (!ref.ok()) return ref.status();
  absl::StatusOr<RefAccess> acc = BuildAccess(l, e, *ref, "write");
  if (!acc.ok()) return acc.status();
  absl::StatusOr<Value> v = StoredValue(l, e, *ref, acc->shape);
  if (!v.ok()) return v.status();
  return RefWrite{*ref, *acc, *v};
}

// A swap of the region `acc` of a `dtype` ref: its old contents (read only
// if the program uses them), then `value` stored there. The old value has
// the region's shape, not the declared result's: the equation driver checks
// one against the other, so a result declared larger than the region
// cannot take frame space that no instruction touches.
std::vector<Value> SwapRegion(Lowerer& l, const Lowerer::Eqn& e, DType dtype,
                              const RefAccess& acc, const Value& value) {
  Value old;
  old.dtype = dtype;
  old.shape = acc.shape;
  if (e.outputs_used) {
    old = l.NewValue(dtype, acc.shape);
    l.builder().Emit({vm::Op::LOAD, 0, old.slot, 0, 0, acc.access, 0});
  }
  l.builder().Emit({vm::Op::STORE, 0, 0, value.slot, 0, acc.access, 0});
  return std::vector<Value>{old};
}

absl::StatusOr<std::vector<Value>> LowerSwap(Lowerer& l,
                                             const Lowerer::Eqn& e) {
  absl::StatusOr<RefWrite> w = PrepareRefWrite(l, e);
  if (!w.ok()) return w.status();
  const auto& [ref, acc, v] = *w;
  return SwapRegion(l, e, ref.dtype, acc, v);
}

absl::StatusOr<std::vector<Value>> LowerAddUpdate(Lowerer& l,
                                                  const Lowerer::Eqn& e) {
  absl::StatusOr<RefWrite> w = PrepareRefWrite(l, e);
  if (!w.ok()) return w.status();
  const auto& [ref, acc, v] = *w;
  vm::Op op;
  switch (ref.dtype) {
    case DType::F32:
      op = vm::Op::ADDUPDATE_F32;
      break;
    case DType::S32:
      op = vm::Op::ADDUPDATE_S32;
      break;
    case DType::U32:
      op = vm::Op::ADDUPDATE_U32;
      break;
    case DType::BF16:
      op = vm::Op::ADDUPDATE_BF16;
      break;
    default:
      return l.Unsupported(absl::StrCat("addupdate on ", TypeString(ref),
                                  " is not supported yet"));
  }
  l.builder().Emit({op, 0, 0, v.slot, 0, acc.access, 0});
  return std::vector<Value>{};
}

// The operand that the param `<slot>_operand` of a masked_load/masked_swap
// names (the exporter's encoding of the primitive's args_tree); nullptr if
// the param is NONE (an absent mask).
absl::StatusOr<const Value*> NamedOperand(Lowerer& l, const Lowerer::Eqn& e,
                                          absl::string_view slot) {
  const std::string name = absl::StrCat(slot, "_operand");
  const interchange::Param* p = e.Param(name);
  if (p == nullptr) return l.Error(absl::StrCat("missing parameter '", name, "'"));
  if (p->kind() == interchange::ParamKind::NONE) return nullptr;
  absl::StatusOr<int64_t> i = e.Int(name);
  if (!i.ok()) return l.Error(i.status().message());
  if (*i < 0 || *i >= static_cast<int64_t>(e.in.size())) {
    return l.Error(absl::StrCat("parameter '", name, "' = ", *i,
                                " names no operand (the equation has ",
                                e.in.size(), ")"));
  }
  return &e.in[*i];
}

absl::StatusOr<Value> NamedRef(Lowerer& l, const Lowerer::Eqn& e) {
  absl::StatusOr<const Value*> ref = NamedOperand(l, e, "ref");
  if (!ref.ok()) return ref.status();
  if (*ref == nullptr || !(*ref)->is_ref()) {
    return l.Error("the 'ref' operand is not a ref");
  }
  return **ref;
}

// masked_load (pl.load, pltpu.load): a get. With a mask it is refused, as
// JAX refuses it: Mosaic cannot lower a masked load for a TPU, and
// interpret mode raises NotImplementedError('masked load_p').
absl::StatusOr<std::vector<Value>> LowerMaskedLoad(Lowerer& l,
                                                   const Lowerer::Eqn& e) {
  absl::StatusOr<Value> ref = NamedRef(l, e);
  if (!ref.ok()) return ref.status();
  absl::StatusOr<const Value*> mask = NamedOperand(l, e, "mask");
  if (!mask.ok()) return mask.status();
  if (*mask != nullptr) {
    return l.Unsupported(
        "a masked load (pl.load / pltpu.load with mask=) is not supported: "
        "Mosaic cannot lower it for a TPU, and JAX's interpret mode raises "
        "NotImplementedError for it too; load unmasked and select with "
        "jnp.where");
  }
  return LoadRef(l, e, *ref);
}

// masked_swap (pl.store, pltpu.store, pl.swap): as interpret mode does it,
// where mask is true the ref takes the value and the result is the old
// contents; where it is false the ref keeps its contents and the result is
// the value. The masked region may hang over the ref where the mask is
// false (interpret mode's numpy slicing cuts it there): a MASKED_STORE, and
// for the result a LOAD_CLIPPED and a select.
absl::StatusOr<std::vector<Value>> LowerMaskedSwap(Lowerer& l,
                                                   const Lowerer::Eqn& e) {
  absl::StatusOr<Value> ref = NamedRef(l, e);
  if (!ref.ok()) return ref.status();
  absl::StatusOr<const Value*> value = NamedOperand(l, e, "value");
  if (!value.ok()) return value.status();
  absl::StatusOr<const Value*> mask = NamedOperand(l, e, "mask");
  if (!mask.ok()) return mask.status();
  absl::StatusOr<RefAccess> acc =
      BuildAccess(l, e, *ref, "masked swap", /*clipped=*/*mask != nullptr);
  if (!acc.ok()) return acc.status();
  const int64_t n = NumElements(acc->shape);
  if (*value == nullptr || (*value)->is_ref() ||
      (*value)->dtype != ref->dtype || (*value)->count() != n) {
    return l.Error(absl::StrCat(
        "stores ", *value ? TypeString(**value) : "nothing", " into a ",
        ShapeString(acc->shape), " region of ", TypeString(*ref)));
  }
  Value v = **value;
  v.shape = acc->shape;
  if (*mask == nullptr) return SwapRegion(l, e, ref->dtype, *acc, v);
  Value m = **mask;
  if (m.is_ref() || m.dtype != DType::PRED ||
      (m.count() != n && m.count() != 1)) {
    return l.Error(absl::StrCat("the mask is ", TypeString(m),
                                ", expected a bool array of shape ",
                                ShapeString(acc->shape)));
  }
  absl::StatusOr<Value> mb = l.Broadcast(m, acc->shape);
  if (!mb.ok()) return mb.status();
  Value old = l.NewValue(ref->dtype, acc->shape);
  if (e.outputs_used) {
    l.builder().Emit({vm::Op::LOAD_CLIPPED, 0, old.slot, 0, 0, acc->access, 0});
  }
  l.builder().Emit(
      {vm::Op::MASKED_STORE, 0, 0, v.slot, mb->slot, acc->access, 0});
  if (!e.outputs_used) return std::vector<Value>{old};
  return std::vector<Value>{l.Select(*mb, old, v)};
}

Lowerer::Rule GridRule(vm::Op op) {
  return [op](Lowerer& l,
              const Lowerer::Eqn& e) -> absl::StatusOr<std::vector<Value>> {
    absl::StatusOr<int64_t> axis = e.Int("axis");
    if (!axis.ok()) return l.Error(axis.status().message());
    if (*axis < 0 || *axis >= vm::kMaxRank) return l.Error("bad grid axis");
    Value r = l.NewValue(DType::S32, {});
    l.builder().Emit({op, 0, r.slot, static_cast<uint32_t>(*axis), 0, 0, 1});
    return std::vector<Value>{l.Convert(r, e.out_dtypes.at(0))};
  };
}

}  // namespace

void AddRefRules(RuleTable& t) {
  t.Effectful("get", Arity::AtLeast(1, 1), LowerGet);
  t.Effectful("swap", Arity::AtLeast(2, 1), LowerSwap);
  t.Effectful("addupdate", Arity::AtLeast(2, 0), LowerAddUpdate);
  t.Effectful("masked_load", Arity::AtLeast(1, 1), LowerMaskedLoad);
  t.Effectful("masked_swap", Arity::AtLeast(2, 1), LowerMaskedSwap);
  t.Pure("program_id", Arity::Exactly(0, 1), GridRule(vm::Op::PROGRAM_ID));
  t.Pure("num_programs", Arity::Exactly(0, 1),
         GridRule(vm::Op::NUM_PROGRAMS));
}

}  // namespace pallasvm::compiler
