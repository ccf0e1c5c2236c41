// Ref primitives (get, swap, addupdate) and grid queries.
//
// A ref access is one LOAD/STORE/ADDUPDATE instruction with an access
// descriptor: the ref, its static extents, and per dimension a static or
// dynamic start, a size and a stride. Static accesses are bounds-checked
// here, at compile time; dynamic ones once per access by the VM.
#include <limits>
#include <optional>

#include "absl/strings/str_cat.h"
#include "compiler/lowering.h"
#include "compiler/ref_access.h"
#include "vm/opcodes.h"

namespace pallasvm::compiler {
namespace {

using vm::DType;


// The packed region `narrow` ([..., rows, pack, lanes]) as the wide value
// [..., rows, lanes] it reads as: lanes and pack swapped, bytes kept.
Value PackRows(Lowerer& l, const RefAccess& acc, const Value& narrow) {
  std::vector<int64_t> perm(narrow.shape.size());
  for (size_t i = 0; i < perm.size(); ++i) perm[i] = static_cast<int64_t>(i);
  std::swap(perm[perm.size() - 1], perm[perm.size() - 2]);
  Value t = l.Transpose(narrow, perm);
  Value wide = l.NewValue(acc.dtype, acc.shape);
  l.CopyInto(wide, t);
  return wide;
}

// The wide value `wide` as the packed region it is stored as.
Value UnpackRows(Lowerer& l, const RefAccess& acc, const Value& wide) {
  Shape swapped = acc.stored_shape;
  std::swap(swapped[swapped.size() - 1], swapped[swapped.size() - 2]);
  Value narrow = l.NewValue(acc.stored, swapped);
  l.CopyInto(narrow, wide);
  std::vector<int64_t> perm(swapped.size());
  for (size_t i = 0; i < perm.size(); ++i) perm[i] = static_cast<int64_t>(i);
  std::swap(perm[perm.size() - 1], perm[perm.size() - 2]);
  return l.Transpose(narrow, perm);
}

// A scalar S32 start, static or in a frame slot.
struct Start {
  bool is_static = true;
  int64_t value = 0;
  uint32_t slot = 0;
};

// base + index * stride, static when both are.
absl::StatusOr<Start> AddScaled(Lowerer& l, const Start& base,
                                const Start& index, int64_t stride) {
  if (base.is_static && index.is_static) {
    std::optional<int64_t> scaled = CheckedMul(index.value, stride);
    std::optional<int64_t> sum =
        scaled ? CheckedAdd(base.value, *scaled) : std::nullopt;
    if (!sum) return l.Error("ref index arithmetic overflows");
    return Start{true, *sum, 0};
  }
  auto value = [&](const Start& s) {
    if (s.is_static) return l.ConstantScalar(DType::S32, s.value);
    Value v;
    v.dtype = DType::S32;
    v.slot = s.slot;
    return v;
  };
  Value scaled = value(index);
  if (stride != 1) {
    absl::StatusOr<Value> m = l.Binary(
        "MUL", scaled, l.ConstantScalar(DType::S32, stride), DType::S32, {});
    if (!m.ok()) return m.status();
    scaled = *m;
  }
  if (base.is_static && base.value == 0) return Start{false, 0, scaled.slot};
  absl::StatusOr<Value> sum =
      l.Binary("ADD", value(base), scaled, DType::S32, {});
  if (!sum.ok()) return sum.status();
  return Start{false, 0, sum->slot};
}

// Applies one NDIndexer to the view `a` (its non-squeezed dims, in order):
// each dim's start, size and stride become the view's composed with the
// indexer's. Static parts are bounds-checked against the view here; a
// dynamic start into a narrowed view by a CHECK_INDEX against the view, and
// the composed access by the VM against the ref's own extents.
absl::Status ApplyIndexer(Lowerer& l, const Lowerer::Eqn& e,
                          const interchange::Indexer& ix, const Value& ref,
                          absl::string_view kind, const AccessOptions& options,
                          vm::AccessDesc& a, int packed_dim) {
  const bool clipped = options.clipped;
  std::vector<int> view;
  for (int u = 0; u < a.rank; ++u) {
    if (!a.dims[u].squeezed && u != packed_dim) view.push_back(u);
  }
  const int nd = ix.dims() ? static_cast<int>(ix.dims()->size()) : 0;
  if (nd != static_cast<int>(view.size())) {
    return l.Error(absl::StrCat("indexer has ", nd,
                                " dimensions but the ref is ", TypeString(ref),
                                view.size() != ref.shape.size()
                                    ? absl::StrCat(" viewed with rank ",
                                                   view.size())
                                    : ""));
  }
  for (int i = 0; i < nd; ++i) {
    const interchange::IndexDim* d = ix.dims()->Get(i);
    vm::AccessDim& ad = a.dims[view[i]];
    const vm::AccessDim old = ad;
    const bool is_index = d->kind() == interchange::IndexKind::INDEX;
    int64_t size = is_index ? 1 : d->size();
    const int64_t stride = is_index ? 1 : d->stride();
    if (old.size_slot >= 0) {
      return l.Unsupported("indexing a slice of dynamic size again");
    }
    // A dynamic size (DMAs only: emit_pipeline's edge blocks): the
    // descriptor's size is its bound, every element the stride reaches in
    // the view, and the slot holds the size, checked when the DMA starts.
    int32_t size_slot = -1;
    if (!is_index && d->size_operand() >= 0) {
      if (!options.dynamic_sizes) {
        return l.Unsupported(
            "a slice with a dynamic size outside a DMA is not supported");
      }
      if (e.eqn->invars() == nullptr ||
          d->size_operand() >= static_cast<int>(e.eqn->invars()->size())) {
        return l.Error("indexer refers to a missing operand");
      }
      absl::StatusOr<Lowerer::Index> n =
          l.ScalarIndex(e.eqn->invars()->Get(d->size_operand()));
      if (!n.ok()) return n.status();
      if (n->is_static) {
        size = n->value;
      } else {
        size = stride < 1 || old.size == 0 ? 0 : (old.size - 1) / stride + 1;
        size_slot = static_cast<int32_t>(n->slot);
      }
    }
    if (size < 0 || stride < 1) {
      return l.Error(absl::StrCat("invalid slice in dimension ", i, ": size ",
                                  size, ", stride ", stride));
    }
    Start start;
    if (d->start_operand() >= 0) {
      if (e.eqn->invars() == nullptr ||
          d->start_operand() >= static_cast<int>(e.eqn->invars()->size())) {
        return l.Error("indexer refers to a missing operand");
      }
      absl::StatusOr<Lowerer::Index> idx =
          l.ScalarIndex(e.eqn->invars()->Get(d->start_operand()));
      if (!idx.ok()) return idx.status();
      start = idx->is_static ? Start{true, idx->value, 0}
                             : Start{false, 0, idx->slot};
    } else {
      start.value = d->start();
    }
    // The span (size-1)*stride, and with a static start its last
    // element, in checked arithmetic: sizes and strides come from the
    // file. A span no start can fit is out of bounds whatever the start.
    const int64_t extent = old.size;  // the view's extent in this dim
    std::optional<int64_t> span = CheckedMul(size - 1, stride);
    std::optional<int64_t> last =
        span && start.is_static ? CheckedAdd(start.value, *span) : span;
    if (clipped) last = span;
    const bool narrowed = old.start_slot >= 0 || old.start != 0 ||
                          old.size != old.extent || old.stride != 1;
    // What fits: the view, and for a whole dimension of a padded ref its
    // padding too (the VM checks against both).
    const int64_t limit = narrowed ? extent : extent + old.padding;
    // Checked when it runs rather than here: a static start that leaves
    // the view (in program order, as interpret mode checks, so a kernel
    // fails at the first bad access it executes, and not at all for one
    // in a branch never taken), a DMA source (which may leave its ref
    // under out_of_bounds_reads="uninitialized") and a dynamic size.
    // (A static start outside a narrowed view stays a compile error: at run
    // time only the whole ref's bounds would be checked.)
    const bool static_outside =
        !narrowed && size > 0 && start.is_static && !clipped && span &&
        *span < limit && (!last || *last >= extent || start.value < 0);
    const bool at_run_time =
        size_slot >= 0 || static_outside || options.runtime_bounds;
    if (!at_run_time && size > 0 &&
        (!last || *last >= limit ||
         (!clipped && start.is_static && start.value < 0))) {
      return l.Error(absl::StrCat(
          "Out-of-bounds ", kind, " of ", TypeString(ref), ": dimension ", i,
          " takes ", size, " elements from ",
          start.is_static ? absl::StrCat(start.value)
                          : std::string("a dynamic start"),
          " with stride ", stride, " (needs start + (size-1)*stride < ",
          limit, ")"));
    }
    // Indexing a narrowed view with a dynamic start: the VM checks the
    // composed access against the whole ref, so the start is checked
    // against the view here (the span fits, checked above).
    if (narrowed && !start.is_static && size > 0 && span) {
      const int64_t largest = extent - 1 - *span;
      l.builder().Emit({vm::Op::CHECK_INDEX,
                        static_cast<uint16_t>(kind == "read" ? 0 : 1),
                        start.slot, static_cast<uint32_t>(largest),
                        static_cast<uint32_t>(i), 0, 1});
    }
    const Start old_start = old.start_slot < 0
                                ? Start{true, old.start, 0}
                                : Start{false, 0,
                                        static_cast<uint32_t>(old.start_slot)};
    absl::StatusOr<Start> composed = AddScaled(l, old_start, start, old.stride);
    if (!composed.ok()) return composed.status();
    ad.start = composed->is_static ? composed->value : 0;
    ad.start_slot =
        composed->is_static ? -1 : static_cast<int32_t>(composed->slot);
    std::optional<int64_t> new_stride = CheckedMul(old.stride, stride);
    if (!new_stride) return l.Error("ref stride overflows");
    ad.size = size;
    ad.size_slot = size_slot;
    ad.stride = *new_stride;
    ad.squeezed = is_index ? 1 : 0;
    if (at_run_time && ad.start_slot < 0) {
      if (ad.start < std::numeric_limits<int32_t>::min() ||
          ad.start > std::numeric_limits<int32_t>::max()) {
        return l.Error(absl::StrCat("slice start ", ad.start,
                                    " does not fit in int32"));
      }
      ad.start_slot = static_cast<int32_t>(
          l.ConstantScalar(DType::S32, ad.start).slot);
    }
  }
  return absl::OkStatus();
}

// ref.reshape(*shape) of the view `a`: the view must be contiguous in the
// ref's buffer as leading integer indices, then one dimension taken with
// stride 1, then whole dimensions. Its whole dimensions (or all of it,
// when the first one is whole too) are replaced by the new ones.
absl::Status ApplyReshape(Lowerer& l, const interchange::Indexer& ix,
                          const Value& ref, vm::AccessDesc& a) {
  Shape shape;
  if (ix.shape()) shape.assign(ix.shape()->begin(), ix.shape()->end());
  int first = 0;
  while (first < a.rank && a.dims[first].squeezed) ++first;
  auto whole = [&](const vm::AccessDim& d) {
    return d.start_slot < 0 && d.start == 0 && d.size == d.extent &&
           !d.squeezed;
  };
  bool contiguous = first < a.rank &&
                    (a.dims[first].stride == 1 || a.dims[first].size == 1);
  int64_t rest = 1;
  for (int u = first + 1; u < a.rank && contiguous; ++u) {
    contiguous = whole(a.dims[u]);
    rest *= a.dims[u].size;
  }
  const bool first_whole = contiguous && whole(a.dims[first]);
  const int64_t view_count =
      contiguous ? rest * a.dims[first].size : 0;
  const int64_t shape_count = NumElements(shape);
  const bool keeps_first =
      !first_whole && !shape.empty() && contiguous &&
      shape[0] == a.dims[first].size && shape_count == view_count;
  if (!contiguous || (!first_whole && !keeps_first) ||
      shape_count != view_count ||
      first + static_cast<int64_t>(shape.size()) + (keeps_first ? 0 : 0) >
          vm::kMaxRank) {
    return l.Unsupported(absl::StrCat(
        "a reshape of a view of ", TypeString(ref), " to ", ShapeString(shape),
        " that is not a contiguous region ending in whole dimensions is not "
        "supported yet"));
  }
  vm::AccessDesc r = a;
  int u = first;
  size_t k = 0;
  if (keeps_first) {
    ++u;  // the partial dimension stays as it is
    k = 1;
  }
  r.rank = static_cast<uint8_t>(u + (shape.size() - k));
  for (; k < shape.size(); ++k, ++u) {
    r.dims[u] = vm::AccessDim{};
    r.dims[u].extent = shape[k];
    r.dims[u].size = shape[k];
  }
  a = r;
  return absl::OkStatus();
}

// ref.bitcast(to) of the view `a` where `to` is wider than `from` by p
// (jax/_src/state/utils.py's bitcast, pltpu.bitcast's layout): wide row i
// is narrow rows p*i .. p*i+p-1, so the view's second-minor dimension
// (static start and size multiples of p, stride 1) is split into
// [rows / p, p] and the p part hidden from later indexers. Unpacking (to a
// narrower dtype) is refused.
absl::Status ApplyPackingBitcast(Lowerer& l, const Value& ref, DType from,
                                 DType to, vm::AccessDesc& a, int& packed_dim,
                                 int64_t& pack, DType& stored) {
  const int64_t from_size = vm::SizeOf(from), to_size = vm::SizeOf(to);
  std::vector<int> view;
  for (int u = 0; u < a.rank; ++u) {
    if (!a.dims[u].squeezed && u != packed_dim) view.push_back(u);
  }
  auto refuse = [&](absl::string_view why) {
    return l.Unsupported(absl::StrCat("a ref bitcast of ", TypeString(ref),
                                      " from ", vm::Name(from), " to ",
                                      vm::Name(to), " ", why,
                                      " is not supported yet"));
  };
  if (to_size < from_size) return refuse("to a narrower dtype");
  if (packed_dim >= 0) return refuse("after another one");
  if (view.size() < 2) return refuse("of a view of rank below 2");
  if (a.rank + 1 > vm::kMaxRank) return refuse("of a view of rank 8");
  const int64_t p = to_size / from_size;
  const int u = view[view.size() - 2];
  const vm::AccessDim d = a.dims[u];
  if (d.start_slot >= 0 || d.stride != 1 || d.start % p != 0 ||
      d.size % p != 0 || d.extent % p != 0) {
    return refuse(absl::StrCat(
        "whose second-minor dimension is not whole rows of ", p,
        " (a static start and size that are multiples of ", p,
        ", stride 1)"));
  }
  for (int i = a.rank; i > u + 1; --i) a.dims[i] = a.dims[i - 1];
  a.rank += 1;
  a.dims[u].extent = d.extent / p;
  a.dims[u].start = d.start / p;
  a.dims[u].size = d.size / p;
  // Padding by whole wide rows only; a part-row of it bounds nothing.
  a.dims[u].padding = d.padding / static_cast<int32_t>(p);
  a.dims[u + 1] = vm::AccessDim{};
  a.dims[u + 1].extent = p;
  a.dims[u + 1].size = p;
  packed_dim = u + 1;
  pack = p;
  stored = from;
  return absl::OkStatus();
}

// Builds the access descriptor for `ref` through the equation's
// "indexers" param: its transforms in order (absent or empty: the whole
// ref). `kind` ("read", "write", "masked swap") names the access in
// errors, as interpret mode names it. A `clipped` access (a masked
// store's) may hang over its ref: only its span must fit.
}  // namespace

absl::StatusOr<RefAccess> BuildAccess(Lowerer& l, const Lowerer::Eqn& e,
                                      const Value& ref, absl::string_view kind,
                                      const AccessOptions& options) {
  const bool clipped = options.clipped;
  vm::AccessDesc a;
  a.base_kind = vm::AccessBase::REF;
  a.base = ref.ref;
  a.rank = static_cast<uint8_t>(ref.shape.size());
  // buffer_bounds="padded": the ref's padding bounds the access too.
  const std::vector<int64_t>& padded =
      l.builder().refs().at(static_cast<size_t>(ref.ref)).padded_shape;
  for (size_t i = 0; i < ref.shape.size(); ++i) {
    a.dims[i].extent = ref.shape[i];
    a.dims[i].size = ref.shape[i];
    if (padded.size() == ref.shape.size()) {
      a.dims[i].padding = static_cast<int32_t>(padded[i] - ref.shape[i]);
    }
  }
  DType dtype = ref.dtype;
  // After a bitcast to a wider dtype: the descriptor dim holding the
  // packed rows (hidden from later indexers), the packing and the dtype
  // the ref holds.
  int packed_dim = -1;
  int64_t pack = 1;
  DType stored = ref.dtype;
  const interchange::Param* p = e.Param(options.param);
  const int num = p && p->indexers() ? static_cast<int>(p->indexers()->size())
                                     : 0;
  if (clipped && num > 1) {
    return l.Unsupported(
        "a masked store through chained ref transforms is not supported yet");
  }
  for (int t = 0; t < num; ++t) {
    const interchange::Indexer& ix = *p->indexers()->Get(t);
    switch (ix.transform()) {
      case interchange::TransformKind::INDEX: {
        if (absl::Status s =
                ApplyIndexer(l, e, ix, ref, kind, options, a, packed_dim);
            !s.ok()) {
          return s;
        }
        break;
      }
      case interchange::TransformKind::RESHAPE:
        if (packed_dim >= 0) {
          return l.Unsupported(
              "a reshape of a ref bitcast to a wider dtype is not supported "
              "yet");
        }
        if (absl::Status s = ApplyReshape(l, ix, ref, a); !s.ok()) return s;
        break;
      case interchange::TransformKind::BITCAST: {
        absl::StatusOr<DType> to = ToVmDType(ix.dtype());
        if (!to.ok()) return l.Error(to.status().message());
        if (vm::SizeOf(*to) != vm::SizeOf(dtype)) {
          if (absl::Status s = ApplyPackingBitcast(l, ref, dtype, *to, a,
                                                   packed_dim, pack, stored);
              !s.ok()) {
            return s;
          }
        }
        dtype = *to;
        break;
      }
      default:
        return l.Error("unknown ref transform");
    }
  }
  a.elem_size = static_cast<uint8_t>(vm::SizeOf(stored));
  RefAccess result;
  result.dtype = dtype;
  result.pack = pack;
  result.stored = stored;
  for (int i = 0; i < a.rank; ++i) {
    if (a.dims[i].squeezed) continue;
    const bool dynamic = a.dims[i].size_slot >= 0;
    if (dynamic) {
      if (packed_dim >= 0) {
        return l.Unsupported("a dynamic-size slice of a packed ref view");
      }
      result.size_slots.push_back(static_cast<uint32_t>(a.dims[i].size_slot));
    }
    result.stored_shape.push_back(dynamic ? kDynamicSize : a.dims[i].size);
    if (i != packed_dim) {
      result.shape.push_back(dynamic ? kDynamicSize : a.dims[i].size);
    }
  }
  if (packed_dim >= 0 && result.stored_shape.size() < 2) {
    return l.Error("a packed ref view lost its lanes");
  }
  result.access = l.builder().AddAccess(a);
  return result;
}

absl::Status CheckDirectlyAccessible(Lowerer& l, const Lowerer::Eqn& e,
                                     const Value& ref) {
  const vm::MemorySpace space = l.RefSpace(ref);
  if (space == vm::MemorySpace::SEMAPHORE) {
    return l.Error(absl::StrCat(
        "a semaphore ref cannot be read or written directly; use "
        "pl.semaphore_signal / pl.semaphore_wait / pl.semaphore_read"));
  }
  if (space != vm::MemorySpace::HBM) return absl::OkStatus();
  // Interpret mode's message, which names the primitive as `<name>_p`.
  std::string primitive = e.eqn->primitive() ? e.eqn->primitive()->str() : "";
  if (primitive == "masked_load") primitive = "load";
  if (primitive == "masked_swap") primitive = "swap";
  return l.Error(absl::StrCat(
      primitive, "_p: Buffers with a memory space of HBM or ANY cannot be "
      "referenced directly. Instead, use `pltpu.sync_copy` or "
      "`pltpu.async_copy`."));
}

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


namespace {

absl::StatusOr<Value> RefOperand(Lowerer& l, const Lowerer::Eqn& e) {
  if (e.in.empty() || !e.in[0].is_ref()) {
    return l.Error("first operand must be a ref");
  }
  if (absl::Status s = CheckDirectlyAccessible(l, e, e.in[0]); !s.ok()) {
    return s;
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
  if (acc->pack > 1) {
    Value narrow = l.NewValue(acc->stored, acc->stored_shape);
    l.builder().Emit({vm::Op::LOAD, 0, narrow.slot, 0, 0, acc->access, 0});
    Value r = PackRows(l, *acc, narrow);
    r.shape = e.out_shapes[0];
    return std::vector<Value>{r};
  }
  Value r = l.NewValue(acc->dtype, e.out_shapes[0]);
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
  Value view = *ref;  // the ref as its transforms leave it
  view.dtype = acc->dtype;
  absl::StatusOr<Value> v = StoredValue(l, e, view, acc->shape);
  if (!v.ok()) return v.status();
  return RefWrite{view, *acc, *v};
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
  if (acc.pack > 1) {  // through a bitcast to a wider dtype
    // The old value (read only if the program uses it) has the region's
    // shape, as SwapRegion's.
    Value old;
    old.dtype = ref.dtype;
    old.shape = acc.shape;
    if (e.outputs_used) {
      Value narrow = l.NewValue(acc.stored, acc.stored_shape);
      l.builder().Emit({vm::Op::LOAD, 0, narrow.slot, 0, 0, acc.access, 0});
      old = PackRows(l, acc, narrow);
      old.shape = acc.shape;
    }
    const Value packed = UnpackRows(l, acc, v);
    l.builder().Emit({vm::Op::STORE, 0, 0, packed.slot, 0, acc.access, 0});
    return std::vector<Value>{old};
  }
  return SwapRegion(l, e, ref.dtype, acc, v);
}

absl::StatusOr<std::vector<Value>> LowerAddUpdate(Lowerer& l,
                                                  const Lowerer::Eqn& e) {
  absl::StatusOr<RefWrite> w = PrepareRefWrite(l, e);
  if (!w.ok()) return w.status();
  const auto& [ref, acc, v] = *w;
  if (acc.pack > 1) {
    return l.Unsupported(
        "addupdate through a ref bitcast to a wider dtype is not supported "
        "yet");
  }
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

absl::StatusOr<Value> NamedRef(Lowerer& l, const Lowerer::Eqn& e) {
  absl::StatusOr<const Value*> ref = NamedOperand(l, e, "ref");
  if (!ref.ok()) return ref.status();
  if (*ref == nullptr || !(*ref)->is_ref()) {
    return l.Error("the 'ref' operand is not a ref");
  }
  if (absl::Status s = CheckDirectlyAccessible(l, e, **ref); !s.ok()) {
    return s;
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
      BuildAccess(l, e, *ref, "masked swap", [&] {
        AccessOptions options;
        options.clipped = *mask != nullptr;
        return options;
      }());
  if (!acc.ok()) return acc.status();
  if (acc->pack > 1) {
    return l.Unsupported(
        "a masked store through a ref bitcast to a wider dtype is not "
        "supported yet");
  }
  ref->dtype = acc->dtype;
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

// axis_index(axis): program_id of a named grid axis, which the exporter has
// resolved to its grid dimension `axis`. An axis name it could not resolve
// (a mesh axis, several names at once) stays `axis_name`.
absl::StatusOr<std::vector<Value>> LowerAxisIndex(Lowerer& l,
                                                  const Lowerer::Eqn& e) {
  if (!e.Has("axis")) {
    const interchange::Param* name = e.Param("axis_name");
    return l.Unsupported(absl::StrCat(
        "axis_index of axis ",
        name && name->s() ? absl::StrCat("'", name->s()->str(), "'")
                          : std::string("(unnamed)"),
        ", which is not a named grid axis of this pallas_call (mesh axes "
        "are not supported yet)"));
  }
  return GridRule(vm::Op::PROGRAM_ID)(l, e);
}

}  // namespace

void AddRefRules(RuleTable& t) {
  t.Effectful("get", Arity::AtLeast(1, 1), LowerGet);
  t.Effectful("swap", Arity::AtLeast(2, 1), LowerSwap);
  t.Effectful("addupdate", Arity::AtLeast(2, 0), LowerAddUpdate);
  t.Effectful("masked_load", Arity::AtLeast(1, 1), LowerMaskedLoad);
  t.Effectful("masked_swap", Arity::AtLeast(2, 1), LowerMaskedSwap);
  t.Pure("program_id", Arity::Exactly(0, 1), GridRule(vm::Op::PROGRAM_ID));
  t.Pure("axis_index", Arity::Exactly(0, 1), LowerAxisIndex);
  t.Pure("num_programs", Arity::Exactly(0, 1),
         GridRule(vm::Op::NUM_PROGRAMS));
}

}  // namespace pallasvm::compiler
