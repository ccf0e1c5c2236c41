// Shape and data-movement primitives (broadcasts, reshapes, transposes,
// slices, iota), reductions and dot_general.
//
// Reshapes of dense values are free: the result shares the operand's slot.
// Everything that permutes or repeats elements is one STRIDED_COPY.
#include <algorithm>
#include <limits>
#include <numeric>
#include <optional>
#include <tuple>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "compiler/lowering.h"
#include "vm/opcodes.h"

namespace pallasvm::compiler {
namespace {

using vm::DType;

// Whether `perm` is a permutation of 0 .. rank-1.
bool IsPermutation(const std::vector<int64_t>& perm, size_t rank) {
  if (perm.size() != rank) return false;
  std::vector<bool> seen(rank, false);
  for (int64_t p : perm) {
    if (p < 0 || p >= static_cast<int64_t>(rank) || seen[p]) return false;
    seen[p] = true;
  }
  return true;
}

absl::StatusOr<std::vector<Value>> LowerBroadcastInDim(Lowerer& l,
                                                       const Lowerer::Eqn& e) {
  const Value& x = e.in.at(0);
  const Shape& out = e.out_shapes.at(0);
  if (x.count() == NumElements(out)) {
    return std::vector<Value>{x};  // only size-1 dims added: same bytes
  }
  if (x.count() == 1) {
    absl::StatusOr<Value> r = l.Broadcast(x, out);
    if (!r.ok()) return r.status();
    return std::vector<Value>{*r};
  }
  absl::StatusOr<std::vector<int64_t>> dims = e.Ints("broadcast_dimensions");
  if (!dims.ok()) return l.Error(dims.status().message());
  if (dims->size() != x.shape.size()) {
    return l.Error("broadcast_dimensions does not match the operand's rank");
  }
  std::vector<int64_t> in_strides = RowMajorStrides(x.shape);
  std::vector<int64_t> strides(out.size(), 0);
  for (size_t i = 0; i < dims->size(); ++i) {
    int64_t d = (*dims)[i];
    if (d < 0 || d >= static_cast<int64_t>(out.size()) ||
        (x.shape[i] != 1 && x.shape[i] != out[d])) {
      return l.Error(absl::StrCat("cannot broadcast ", TypeString(x), " to ",
                                  ShapeString(out)));
    }
    if (x.shape[i] != 1) strides[d] = in_strides[i];
  }
  return std::vector<Value>{l.StridedCopy(x, out, strides, 0)};
}

// reshape: the bytes stay where they are (with `dimensions`, a transpose
// first).
absl::StatusOr<std::vector<Value>> LowerReshape(Lowerer& l,
                                                const Lowerer::Eqn& e) {
  const Value& x = e.in.at(0);
  if (e.Has("dimensions")) {
    absl::StatusOr<std::vector<int64_t>> dims = e.Ints("dimensions");
    if (dims.ok() && !dims->empty()) {
      if (!IsPermutation(*dims, x.shape.size())) {
        return l.Error("reshape's dimensions are not a permutation of the "
                       "operand's dims");
      }
      Value t = l.Transpose(x, *dims);
      return std::vector<Value>{t};
    }
  }
  if (x.count() != NumElements(e.out_shapes.at(0))) {
    return l.Error(absl::StrCat("cannot reshape ", TypeString(x), " to ",
                                ShapeString(e.out_shapes[0])));
  }
  return std::vector<Value>{x};
}

// squeeze, expand_dims: their `dimensions` name the size-1 dims removed or
// added (not a permutation, as reshape's are); the bytes stay.
absl::StatusOr<std::vector<Value>> LowerSqueezeOrExpand(Lowerer& l,
                                                        const Lowerer::Eqn& e) {
  Value x = e.in.at(0);
  if (x.count() != NumElements(e.out_shapes.at(0))) {
    return l.Error(absl::StrCat("cannot reshape ", TypeString(x), " to ",
                                ShapeString(e.out_shapes[0])));
  }
  x.shape = e.out_shapes[0];
  return std::vector<Value>{x};
}

absl::StatusOr<std::vector<Value>> LowerTranspose(Lowerer& l,
                                                  const Lowerer::Eqn& e) {
  absl::StatusOr<std::vector<int64_t>> perm = e.Ints("permutation");
  if (!perm.ok()) return l.Error(perm.status().message());
  const Value& x = e.in.at(0);
  if (!IsPermutation(*perm, x.shape.size())) {
    return l.Error("permutation is not a permutation of the operand's dims");
  }
  return std::vector<Value>{l.Transpose(x, *perm)};
}

absl::StatusOr<std::vector<Value>> LowerRev(Lowerer& l, const Lowerer::Eqn& e) {
  const Value& x = e.in.at(0);
  absl::StatusOr<std::vector<int64_t>> dims =
      e.Axes("dimensions", x.shape.size());
  if (!dims.ok()) return dims.status();
  std::vector<int64_t> strides = RowMajorStrides(x.shape);
  int64_t offset = 0;
  for (int64_t d : *dims) {
    offset += (x.shape[d] - 1) * strides[d];
    strides[d] = -strides[d];
  }
  return std::vector<Value>{l.StridedCopy(x, x.shape, strides, offset)};
}

absl::StatusOr<std::vector<Value>> LowerSlice(Lowerer& l,
                                              const Lowerer::Eqn& e) {
  const Value& x = e.in.at(0);
  absl::StatusOr<std::vector<int64_t>> start = e.Ints("start_indices");
  if (!start.ok()) return l.Error(start.status().message());
  std::vector<int64_t> step(x.shape.size(), 1);
  if (e.Has("strides")) {
    absl::StatusOr<std::vector<int64_t>> s = e.Ints("strides");
    if (!s.ok()) return l.Error(s.status().message());
    step = *s;
  }
  const Shape& out = e.out_shapes.at(0);
  if (start->size() != x.shape.size() || step.size() != x.shape.size() ||
      out.size() != x.shape.size()) {
    return l.Error("slice parameters do not match the operand's rank");
  }
  std::vector<int64_t> in_strides = RowMajorStrides(x.shape);
  std::vector<int64_t> strides(out.size());
  int64_t offset = 0;
  for (size_t i = 0; i < out.size(); ++i) {
    // start + (out - 1) * step < extent, in checked arithmetic: the params
    // come from the file.
    int64_t span = 0, last = 0;
    const bool overflow =
        __builtin_mul_overflow(out[i] - 1, step[i], &span) ||
        __builtin_add_overflow(span, (*start)[i], &last);
    if ((*start)[i] < 0 || step[i] < 1 ||
        (out[i] > 0 && (overflow || last >= x.shape[i]))) {
      return l.Error(absl::StrCat("slice out of bounds in dimension ", i));
    }
    offset += (*start)[i] * in_strides[i];
    strides[i] = in_strides[i] * step[i];
  }
  return std::vector<Value>{l.StridedCopy(x, out, strides, offset)};
}

absl::StatusOr<std::vector<Value>> LowerDynamicSlice(Lowerer& l,
                                                     const Lowerer::Eqn& e) {
  const Value& x = e.in.at(0);
  const Shape& out = e.out_shapes.at(0);
  if (e.in.size() != 1 + x.shape.size() || out.size() != x.shape.size()) {
    return l.Error("dynamic_slice needs one start index per dimension");
  }
  vm::AccessDesc a = WholeFrameAccess(x);
  a.clamp = 1;  // lax.dynamic_slice clamps its starts into range
  for (size_t i = 0; i < x.shape.size(); ++i) {
    absl::StatusOr<Lowerer::Index> idx =
        l.ScalarIndex(e.eqn->invars()->Get(1 + i));
    if (!idx.ok()) return idx.status();
    a.dims[i].size = out[i];
    if (out[i] > x.shape[i]) return l.Error("slice larger than its operand");
    if (idx->is_static) {
      a.dims[i].start = std::clamp<int64_t>(idx->value, 0, x.shape[i] - out[i]);
    } else {
      a.dims[i].start_slot = static_cast<int32_t>(idx->slot);
    }
  }
  Value r = l.NewValue(x.dtype, out);
  l.builder().Emit({vm::Op::LOAD, 0, r.slot, 0, 0, l.builder().AddAccess(a), 0});
  return std::vector<Value>{r};
}

absl::StatusOr<std::vector<Value>> LowerDynamicUpdateSlice(
    Lowerer& l, const Lowerer::Eqn& e) {
  const Value& x = e.in.at(0);
  const Value& u = e.in.at(1);
  if (e.in.size() != 2 + x.shape.size() || u.shape.size() != x.shape.size() ||
      u.dtype != x.dtype) {
    return l.Error("dynamic_update_slice operands do not match");
  }
  Value r = l.NewValue(x.dtype, x.shape);
  l.CopyInto(r, x);
  vm::AccessDesc a = WholeFrameAccess(r);
  a.clamp = 1;
  for (size_t i = 0; i < x.shape.size(); ++i) {
    absl::StatusOr<Lowerer::Index> idx =
        l.ScalarIndex(e.eqn->invars()->Get(2 + i));
    if (!idx.ok()) return idx.status();
    a.dims[i].size = u.shape[i];
    if (u.shape[i] > x.shape[i]) return l.Error("update larger than operand");
    if (idx->is_static) {
      a.dims[i].start = std::clamp<int64_t>(idx->value, 0, x.shape[i] - u.shape[i]);
    } else {
      a.dims[i].start_slot = static_cast<int32_t>(idx->slot);
    }
  }
  l.builder().Emit({vm::Op::STORE, 0, 0, u.slot, 0, l.builder().AddAccess(a), 0});
  return std::vector<Value>{r};
}

absl::StatusOr<std::vector<Value>> LowerConcatenate(Lowerer& l,
                                                    const Lowerer::Eqn& e) {
  const Shape& out = e.out_shapes.at(0);
  absl::StatusOr<int64_t> dim = e.Axis("dimension", out.size());
  if (!dim.ok()) return dim.status();
  Value r = l.NewValue(e.out_dtypes.at(0), out);
  int64_t at = 0;
  for (const Value& x : e.in) {
    bool same = x.shape.size() == out.size() && x.dtype == r.dtype;
    for (size_t i = 0; same && i < out.size(); ++i) {
      same = static_cast<int64_t>(i) == *dim || x.shape[i] == out[i];
    }
    if (!same) {
      return l.Error(absl::StrCat("concatenate operand ", TypeString(x),
                                  " does not fit the result ",
                                  TypeString(r), " along dimension ", *dim));
    }
    vm::AccessDesc a = WholeFrameAccess(r);
    for (size_t i = 0; i < out.size(); ++i) a.dims[i].size = x.shape[i];
    a.dims[*dim].start = at;
    at += x.shape[*dim];
    if (at > out[*dim]) return l.Error("concatenate operands overflow result");
    l.builder().Emit({vm::Op::STORE, 0, 0, x.slot, 0, l.builder().AddAccess(a), 0});
  }
  return std::vector<Value>{r};
}

// split(x; sizes, axis) (lax.split): consecutive pieces along `axis`, each
// a slice.
absl::StatusOr<std::vector<Value>> LowerSplit(Lowerer& l,
                                              const Lowerer::Eqn& e) {
  const Value& x = e.in.at(0);
  if (x.is_ref()) return l.Error("split of a ref");
  absl::StatusOr<int64_t> axis = e.Axis("axis", x.shape.size());
  if (!axis.ok()) return axis.status();
  absl::StatusOr<std::vector<int64_t>> sizes = e.Ints("sizes");
  if (!sizes.ok()) return l.Error(sizes.status().message());
  if (sizes->size() != e.out_shapes.size()) {
    return l.Error("split has one result per size");
  }
  const std::vector<int64_t> strides = RowMajorStrides(x.shape);
  std::vector<Value> pieces;
  int64_t at = 0;
  for (size_t i = 0; i < sizes->size(); ++i) {
    Shape part = x.shape;
    part[*axis] = (*sizes)[i];
    if ((*sizes)[i] < 0 || at + (*sizes)[i] > x.shape[*axis] ||
        NumElements(part) != NumElements(e.out_shapes[i])) {
      return l.Error(absl::StrCat("split sizes [", absl::StrJoin(*sizes, ", "),
                                  "] do not fit ", TypeString(x)));
    }
    Value piece = l.StridedCopy(x, part, strides, at * strides[*axis]);
    piece.shape = e.out_shapes[i];
    pieces.push_back(piece);
    at += (*sizes)[i];
  }
  if (at != x.shape[*axis]) return l.Error("split sizes do not add up");
  return pieces;
}

// stack(*xs; axis) (lax.stack, as jnp.stack emits it): the operands side by
// side along a new dimension `axis` of the result; one STORE each.
absl::StatusOr<std::vector<Value>> LowerStack(Lowerer& l,
                                              const Lowerer::Eqn& e) {
  const Shape& out = e.out_shapes.at(0);
  absl::StatusOr<int64_t> axis = e.Axis("axis", out.size());
  if (!axis.ok()) return axis.status();
  if (out[*axis] != static_cast<int64_t>(e.in.size())) {
    return l.Error("stack has one operand per index of its new dimension");
  }
  Value r = l.NewValue(e.out_dtypes.at(0), out);
  for (size_t k = 0; k < e.in.size(); ++k) {
    const Value& x = e.in[k];
    if (x.is_ref() || x.dtype != r.dtype ||
        x.count() * static_cast<int64_t>(e.in.size()) != r.count()) {
      return l.Error(absl::StrCat("stack operand ", TypeString(x),
                                  " does not fit the result ", TypeString(r)));
    }
    vm::AccessDesc a = WholeFrameAccess(r);
    a.dims[*axis].start = static_cast<int64_t>(k);
    a.dims[*axis].size = 1;
    l.builder().Emit({vm::Op::STORE, 0, 0, x.slot, 0,
                      l.builder().AddAccess(a), 0});
  }
  return std::vector<Value>{r};
}

// unstack(x; axis) (lax.unstack): the slices of x at each index of `axis`.
absl::StatusOr<std::vector<Value>> LowerUnstack(Lowerer& l,
                                                const Lowerer::Eqn& e) {
  const Value& x = e.in.at(0);
  if (x.is_ref()) return l.Error("unstack of a ref");
  absl::StatusOr<int64_t> axis = e.Axis("axis", x.shape.size());
  if (!axis.ok()) return axis.status();
  if (x.shape[*axis] != static_cast<int64_t>(e.out_shapes.size())) {
    return l.Error("unstack has one result per index of its dimension");
  }
  const std::vector<int64_t> strides = RowMajorStrides(x.shape);
  std::vector<Value> pieces;
  for (size_t k = 0; k < e.out_shapes.size(); ++k) {
    Shape part = x.shape;
    part[*axis] = 1;
    Value piece = l.StridedCopy(x, part, strides,
                                static_cast<int64_t>(k) * strides[*axis]);
    piece.shape = e.out_shapes[k];
    pieces.push_back(piece);
  }
  return pieces;
}

// tile(x, reps): x repeated reps[i] times along each dimension i; one
// STORE of all of x per repetition.
absl::StatusOr<std::vector<Value>> LowerTile(Lowerer& l,
                                             const Lowerer::Eqn& e) {
  absl::StatusOr<std::vector<int64_t>> reps = e.Ints("reps");
  if (!reps.ok()) return l.Error(reps.status().message());
  const Value& x = e.in.at(0);
  const Shape& out = e.out_shapes.at(0);
  if (x.is_ref() || reps->size() != x.shape.size() ||
      out.size() != x.shape.size()) {
    return l.Error("tile: operand, reps and result ranks differ");
  }
  if (e.out_dtypes.at(0) != x.dtype) return l.Error("tile changes the dtype");
  for (size_t i = 0; i < out.size(); ++i) {
    std::optional<int64_t> n = CheckedMul(x.shape[i], (*reps)[i]);
    if ((*reps)[i] < 0 || !n || *n != out[i]) {
      return l.Error(absl::StrCat("tile of ", TypeString(x), " by reps [",
                                  absl::StrJoin(*reps, ", "),
                                  "] is not the result ", ShapeString(out)));
    }
  }
  // One repetition (pltpu.repeat by 1, as flash attention does when its
  // blocks are one lane-width wide) is the operand itself, as a reshape is.
  if (NumElements(*reps) == 1) return std::vector<Value>{x};
  Value r = l.NewValue(e.out_dtypes.at(0), out);
  std::vector<int64_t> at(out.size(), 0);  // repetition index, row-major
  for (int64_t n = NumElements(*reps); n > 0; --n) {
    vm::AccessDesc a = WholeFrameAccess(r);
    for (size_t i = 0; i < out.size(); ++i) {
      a.dims[i].size = x.shape[i];
      a.dims[i].start = at[i] * x.shape[i];
    }
    l.builder().Emit({vm::Op::STORE, 0, 0, x.slot, 0, l.builder().AddAccess(a), 0});
    if (l.builder().over_budget()) break;  // the equation fails
    for (int i = static_cast<int>(at.size()) - 1; i >= 0; --i) {
      if (++at[i] < (*reps)[i]) break;
      at[i] = 0;
    }
  }
  return std::vector<Value>{r};
}

// roll(x, shift; axis, stride, stride_axis) (pltpu.roll): jnp.roll along
// `axis`, out[(i + shift) % n] = x[i]; with a stride, slice k along
// stride_axis is rolled by shift + k * stride (the primitive's own
// definition in jax/_src/pallas/mosaic/primitives.py).
//
// A static shift without stride is two slices stored side by side. Any
// other roll reads each slice as a window of x doubled along `axis`
// (x ++ x): rolled by s, the window starts at n - (s mod n), a start
// computed with scalar ops when the shift is dynamic.
absl::StatusOr<std::vector<Value>> LowerRoll(Lowerer& l,
                                             const Lowerer::Eqn& e) {
  const Value& x = e.in.at(0);
  if (x.is_ref()) return l.Error("roll of a ref");
  absl::StatusOr<int64_t> axis = e.Axis("axis", x.shape.size());
  if (!axis.ok()) return axis.status();
  std::optional<int64_t> stride, stride_axis;
  if (e.Int("stride").ok()) {
    absl::StatusOr<int64_t> st = e.IntIn("stride", 0, 1 << 30);
    if (!st.ok()) return st.status();
    absl::StatusOr<int64_t> sa = e.Axis("stride_axis", x.shape.size());
    if (!sa.ok()) return sa.status();
    if (*sa == *axis) return l.Error("roll's stride_axis is its axis");
    stride = *st;
    stride_axis = *sa;
  }
  absl::StatusOr<Lowerer::Index> shift =
      l.ScalarIndex(e.eqn->invars()->Get(1));
  if (!shift.ok()) return shift.status();
  const int64_t n = x.shape[*axis];
  if (n == 0 || x.count() == 0) return std::vector<Value>{x};
  const std::vector<int64_t> strides = RowMajorStrides(x.shape);
  if (shift->is_static && !stride) {
    const int64_t s = ((shift->value % n) + n) % n;
    if (s == 0) return std::vector<Value>{x};
    Value r = l.NewValue(x.dtype, x.shape);
    // (start in x, length, start in r)
    const int64_t parts[2][3] = {{n - s, s, 0}, {0, n - s, s}};
    for (const auto& [from, len, to] : parts) {
      Shape part = x.shape;
      part[*axis] = len;
      Value piece = l.StridedCopy(x, part, strides, from * strides[*axis]);
      vm::AccessDesc a = WholeFrameAccess(r);
      for (size_t i = 0; i < part.size(); ++i) a.dims[i].size = part[i];
      a.dims[*axis].start = to;
      l.builder().Emit({vm::Op::STORE, 0, 0, piece.slot, 0,
                        l.builder().AddAccess(a), 0});
    }
    return std::vector<Value>{r};
  }
  // x ++ x along axis.
  Shape doubled = x.shape;
  doubled[*axis] = 2 * n;
  Value xx = l.NewValue(x.dtype, doubled);
  for (int half = 0; half < 2; ++half) {
    vm::AccessDesc a = WholeFrameAccess(xx);
    for (size_t i = 0; i < x.shape.size(); ++i) a.dims[i].size = x.shape[i];
    a.dims[*axis].start = half * n;
    l.builder().Emit({vm::Op::STORE, 0, 0, x.slot, 0,
                      l.builder().AddAccess(a), 0});
  }
  // The window start for a shift of shift + k * stride: static, or an S32
  // scalar n - ((s % n + n) % n) (in [1, n]).
  Value dynamic_shift;
  if (!shift->is_static) {
    dynamic_shift.dtype = DType::S32;
    dynamic_shift.slot = shift->slot;
  }
  Composer c{l, {}, absl::OkStatus()};
  auto window_start = [&](int64_t k, vm::AccessDim& dim) {
    const int64_t extra = stride ? k * *stride : 0;
    if (shift->is_static) {
      const int64_t s = (((shift->value + extra) % n) + n) % n;
      dim.start = n - s;
      return;
    }
    // Reduce extra first so the S32 sum cannot overflow.
    Value s = c.Bin("REM", dynamic_shift, c.S32(n), DType::S32);
    s = c.Bin("ADD", s, c.S32(n + extra % n), DType::S32);
    s = c.Bin("REM", s, c.S32(n), DType::S32);
    Value start = c.Bin("SUB", c.S32(n), s, DType::S32);
    dim.start_slot = static_cast<int32_t>(start.slot);
  };
  const int64_t slices = stride ? x.shape[*stride_axis] : 1;
  Value r = stride ? l.NewValue(x.dtype, x.shape) : Value{};
  for (int64_t k = 0; k < slices && !l.builder().over_budget(); ++k) {
    vm::AccessDesc window = WholeFrameAccess(xx);
    window.dims[*axis].size = n;
    if (stride) {
      window.dims[*stride_axis].start = k;
      window.dims[*stride_axis].size = 1;
    }
    window_start(k, window.dims[*axis]);
    if (!c.status.ok()) return c.status;
    Shape part = x.shape;
    if (stride) part[*stride_axis] = 1;
    Value piece = l.NewValue(x.dtype, stride ? part : x.shape);
    l.builder().Emit({vm::Op::LOAD, 0, piece.slot, 0, 0,
                      l.builder().AddAccess(window), 0});
    if (!stride) return std::vector<Value>{piece};
    vm::AccessDesc into = WholeFrameAccess(r);
    into.dims[*stride_axis].start = k;
    into.dims[*stride_axis].size = 1;
    l.builder().Emit({vm::Op::STORE, 0, 0, piece.slot, 0,
                      l.builder().AddAccess(into), 0});
  }
  return std::vector<Value>{r};
}

// bitcast(x; ty) (pltpu.bitcast): the bytes of x as dtype ty, the
// second-minor dimension scaled by the ratio of element sizes. As the
// primitive's own lowering defines it: packing p narrow elements into a
// wide one takes p consecutive rows (x viewed as [.., m/p, p, n],
// transposed to [.., m/p, n, p]); unpacking is the reverse.
absl::StatusOr<std::vector<Value>> LowerTpuBitcast(Lowerer& l,
                                                   const Lowerer::Eqn& e) {
  const Value& x = e.in.at(0);
  const DType to = e.out_dtypes.at(0);
  const Shape& out = e.out_shapes.at(0);
  if (x.is_ref()) return l.Error("bitcast of a ref value");
  const int rank = static_cast<int>(x.shape.size());
  if (rank < 2 || out.size() != x.shape.size()) {
    return l.Error("pltpu.bitcast needs a value of rank 2 or more");
  }
  const int64_t from_size = vm::SizeOf(x.dtype), to_size = vm::SizeOf(to);
  const int64_t m = x.shape[rank - 2], n = x.shape[rank - 1];
  if (x.dtype == DType::PRED || to == DType::PRED ||
      m * from_size % to_size != 0 || out[rank - 2] * to_size != m * from_size) {
    return l.Error(absl::StrCat("cannot bitcast ", TypeString(x), " to ",
                                vm::Name(to), ShapeString(out)));
  }
  const int64_t lead = x.count() / std::max<int64_t>(m * n, 1);
  Value r = l.NewValue(to, out);
  if (from_size == to_size || x.count() == 0) {
    l.CopyInto(r, x);
    return std::vector<Value>{r};
  }
  if (from_size < to_size) {
    const int64_t p = to_size / from_size;
    Value v = x;
    v.shape = {lead, m / p, p, n};
    Value t = l.Transpose(v, {0, 1, 3, 2});
    l.CopyInto(r, t);
    return std::vector<Value>{r};
  }
  const int64_t p = from_size / to_size;
  Value v = l.NewValue(to, {lead, m, n, p});
  l.CopyInto(v, x);
  Value t = l.Transpose(v, {0, 1, 3, 2});
  t.shape = out;
  return std::vector<Value>{t};
}

// cumsum / cumprod / cummax / cummin(x; axis, reverse): an inclusive scan
// along `axis` in log2(n) steps (Hillis-Steele): y = op(y, y shifted by s
// with the identity shifted in), s = 1, 2, 4, ... Float sums therefore
// associate differently from a sequential scan.
Lowerer::Rule ScanRule(std::string op) {
  return [op](Lowerer& l, const Lowerer::Eqn& e)
             -> absl::StatusOr<std::vector<Value>> {
    const Value& x = e.in.at(0);
    absl::StatusOr<int64_t> axis = e.Axis("axis", x.shape.size());
    if (!axis.ok()) return axis.status();
    absl::StatusOr<int64_t> reverse_param = e.Int("reverse");
    if (!reverse_param.ok()) return l.Error(reverse_param.status().message());
    const bool reverse = *reverse_param != 0;
    if (x.is_ref()) return l.Error("a cumulative reduction of a ref");
    const DType compute = Widen(x.dtype == DType::PRED ? DType::S32 : x.dtype);
    Value identity;
    if (compute == DType::F32) {
      const float inf = std::numeric_limits<float>::infinity();
      identity = l.ConstantF32(op == "ADD" ? 0.0f : op == "MUL" ? 1.0f
                               : op == "MAX" ? -inf : inf);
    } else if (compute == DType::S32 || compute == DType::U32) {
      const bool u = compute == DType::U32;
      const int64_t lowest = u ? 0 : std::numeric_limits<int32_t>::min();
      const int64_t highest = u ? std::numeric_limits<uint32_t>::max()
                                : std::numeric_limits<int32_t>::max();
      identity = l.ConstantScalar(compute, op == "ADD" ? 0 : op == "MUL" ? 1
                                           : op == "MAX" ? lowest : highest);
    } else {
      return l.Unsupported(absl::StrCat("scan over ", TypeString(x),
                                  " is not supported yet"));
    }
    const int64_t n = x.shape[*axis];
    const std::vector<int64_t> strides = RowMajorStrides(x.shape);
    Value y = l.Convert(x, compute);
    for (int64_t shift = 1; shift < n; shift *= 2) {
      absl::StatusOr<Value> shifted = l.Broadcast(identity, x.shape);
      if (!shifted.ok()) return shifted.status();
      Shape part = x.shape;
      part[*axis] = n - shift;
      // Forward: shifted[shift:] = y[:n-shift]; reverse: shifted[:n-shift] =
      // y[shift:].
      Value piece = l.StridedCopy(y, part, strides,
                                  reverse ? shift * strides[*axis] : 0);
      vm::AccessDesc a = WholeFrameAccess(*shifted);
      for (size_t i = 0; i < part.size(); ++i) a.dims[i].size = part[i];
      a.dims[*axis].start = reverse ? 0 : shift;
      l.builder().Emit({vm::Op::STORE, 0, 0, piece.slot, 0,
                        l.builder().AddAccess(a), 0});
      absl::StatusOr<Value> next = l.Binary(op, y, *shifted, compute, x.shape);
      if (!next.ok()) return next.status();
      y = *next;
    }
    return std::vector<Value>{l.Convert(y, e.out_dtypes.at(0))};
  };
}

absl::StatusOr<std::vector<Value>> LowerIota(Lowerer& l,
                                             const Lowerer::Eqn& e) {
  const Shape& out = e.out_shapes.at(0);
  absl::StatusOr<int64_t> dim = e.Axis("dimension", out.size());
  if (!dim.ok()) return dim.status();
  vm::LayoutDesc layout;
  layout.elem_size = 4;
  layout.rank = static_cast<int32_t>(out.size());
  for (size_t i = 0; i < out.size(); ++i) layout.shape[i] = out[i];
  Value r = l.NewValue(DType::S32, out);
  l.builder().Emit({vm::Op::IOTA_S32, static_cast<uint16_t>(*dim), r.slot, 0,
                    0, l.builder().AddLayout(layout), 0});
  return std::vector<Value>{l.Convert(r, e.out_dtypes.at(0))};
}

// Views `x` as [outer, reduced, inner] over `axes`, transposing first when
// the reduced axes are not adjacent.
struct ReduceView {
  Value src;
  int64_t outer = 1, reduced = 1, inner = 1;
};

absl::StatusOr<ReduceView> ViewForReduce(Lowerer& l, const Value& x,
                                         std::vector<int64_t> axes) {
  std::sort(axes.begin(), axes.end());
  const int rank = static_cast<int>(x.shape.size());
  for (int64_t a : axes) {
    if (a < 0 || a >= rank) return l.Error("reduction axis out of range");
  }
  ReduceView v;
  v.src = x;
  if (axes.empty()) {
    v.outer = x.count();
    return v;
  }
  bool adjacent = axes.back() - axes.front() + 1 ==
                  static_cast<int64_t>(axes.size());
  if (!adjacent) {
    std::vector<int64_t> perm;
    for (int i = 0; i < rank; ++i) {
      if (!std::binary_search(axes.begin(), axes.end(), i)) perm.push_back(i);
    }
    const int64_t kept = static_cast<int64_t>(perm.size());
    for (int64_t a : axes) perm.push_back(a);
    v.src = l.Transpose(x, perm);
    axes.clear();
    for (int i = static_cast<int>(kept); i < rank; ++i) axes.push_back(i);
  }
  for (int i = 0; i < rank; ++i) {
    if (i < axes.front()) v.outer *= v.src.shape[i];
    else if (i <= axes.back()) v.reduced *= v.src.shape[i];
    else v.inner *= v.src.shape[i];
  }
  return v;
}

Lowerer::Rule ReduceRule(std::string kind) {
  return [kind](Lowerer& l, const Lowerer::Eqn& e)
             -> absl::StatusOr<std::vector<Value>> {
    Value x = e.in.at(0);
    absl::StatusOr<std::vector<int64_t>> axes = e.Axes("axes", x.shape.size());
    if (!axes.ok()) return axes.status();
    DType compute = Widen(x.dtype);
    if (kind == "AND" || kind == "OR") {
      if (x.dtype != DType::PRED) return l.Error("reduce_and/or need bool");
    } else if (compute == DType::PRED) {
      compute = DType::S32;
    }
    x = l.Convert(x, compute);
    absl::StatusOr<ReduceView> v = ViewForReduce(l, x, *axes);
    if (!v.ok()) return v.status();
    std::string name = absl::StrCat("REDUCE_", kind, "_", [&] {
      switch (compute) {
        case DType::F32: return "F32";
        case DType::S32: return "S32";
        case DType::U32: return "U32";
        default: return "PRED";
      }
    }());
    std::optional<vm::Op> op;
    for (int i = 0; i < vm::kNumOps; ++i) {
      if (vm::kOpInfo[i].name == name) op = static_cast<vm::Op>(i);
    }
    if (!op) return l.Error(absl::StrCat("no ", name, " operation"));
    Value r = l.NewValue(compute, e.out_shapes.at(0));
    if (r.count() != v->outer * v->inner) {
      return l.Error("reduction result has the wrong number of elements");
    }
    l.builder().Emit({*op, 0, r.slot, v->src.slot,
                      static_cast<uint32_t>(v->outer),
                      static_cast<uint32_t>(v->reduced),
                      static_cast<uint32_t>(v->inner)});
    return std::vector<Value>{l.Convert(r, e.out_dtypes.at(0))};
  };
}

Lowerer::Rule ArgRule(bool is_max) {
  return [is_max](Lowerer& l, const Lowerer::Eqn& e)
             -> absl::StatusOr<std::vector<Value>> {
    Value x = e.in.at(0);
    absl::StatusOr<std::vector<int64_t>> axes = e.Axes("axes", x.shape.size());
    if (!axes.ok()) return axes.status();
    if (axes->size() != 1) return l.Error("argmax/argmin over one axis only");
    DType compute = Widen(x.dtype);
    if (compute == DType::PRED) compute = DType::S32;
    x = l.Convert(x, compute);
    absl::StatusOr<ReduceView> v = ViewForReduce(l, x, *axes);
    if (!v.ok()) return v.status();
    vm::Op op = compute == DType::F32
                    ? (is_max ? vm::Op::ARGMAX_F32 : vm::Op::ARGMIN_F32)
                : compute == DType::U32
                    ? (is_max ? vm::Op::ARGMAX_U32 : vm::Op::ARGMIN_U32)
                    : (is_max ? vm::Op::ARGMAX_S32 : vm::Op::ARGMIN_S32);
    Value r = l.NewValue(DType::S32, e.out_shapes.at(0));
    l.builder().Emit({op, 0, r.slot, v->src.slot,
                      static_cast<uint32_t>(v->outer),
                      static_cast<uint32_t>(v->reduced),
                      static_cast<uint32_t>(v->inner)});
    return std::vector<Value>{l.Convert(r, e.out_dtypes.at(0))};
  };
}

// dot_general: operands are transposed to [batch, M, K] and [batch, K, N]
// (a no-op when already so), converted to the compute dtype (f32 for
// floats, s32 for integers), multiplied one batch at a time, and the
// [batch, M, N] result converted to the declared result dtype.
absl::StatusOr<std::vector<Value>> LowerDotGeneral(Lowerer& l,
                                                   const Lowerer::Eqn& e) {
  Value x = e.in.at(0);
  Value y = e.in.at(1);
  // dimension_numbers = ((lhs_contract, rhs_contract), (lhs_batch,
  // rhs_batch)); the exporter flattens nested tuples into dotted names.
  std::vector<int64_t> lc, rc, lb, rb;
  for (auto [name, dst, rank] :
       {std::tuple{"dimension_numbers.0.0", &lc, x.shape.size()},
        std::tuple{"dimension_numbers.0.1", &rc, y.shape.size()},
        std::tuple{"dimension_numbers.1.0", &lb, x.shape.size()},
        std::tuple{"dimension_numbers.1.1", &rb, y.shape.size()}}) {
    absl::StatusOr<std::vector<int64_t>> v = e.Axes(name, rank);
    if (!v.ok()) return v.status();
    *dst = *v;
  }
  if (lc.size() != rc.size() || lb.size() != rb.size()) {
    return l.Error("dot_general dimension numbers do not pair up");
  }
  // A dimension is contracted or batched, not both.
  for (auto [c, b] : {std::pair{&lc, &lb}, std::pair{&rc, &rb}}) {
    for (int64_t d : *c) {
      if (std::find(b->begin(), b->end(), d) != b->end()) {
        return l.Error(absl::StrCat("dot_general dimension ", d,
                                    " is both contracted and batched"));
      }
    }
  }
  auto free_dims = [](const Value& v, const std::vector<int64_t>& a,
                      const std::vector<int64_t>& b) {
    std::vector<int64_t> out;
    for (int64_t i = 0; i < static_cast<int64_t>(v.shape.size()); ++i) {
      if (std::find(a.begin(), a.end(), i) == a.end() &&
          std::find(b.begin(), b.end(), i) == b.end()) {
        out.push_back(i);
      }
    }
    return out;
  };
  std::vector<int64_t> fl = free_dims(x, lc, lb), fr = free_dims(y, rc, rb);
  auto prod = [](const Value& v, const std::vector<int64_t>& dims) {
    int64_t p = 1;
    for (int64_t d : dims) p *= v.shape[d];
    return p;
  };
  for (size_t i = 0; i < lc.size(); ++i) {
    if (x.shape[lc[i]] != y.shape[rc[i]]) {
      return l.Error(absl::StrCat("contracting dimensions of ", TypeString(x),
                                  " and ", TypeString(y), " do not match"));
    }
  }
  for (size_t i = 0; i < lb.size(); ++i) {
    if (x.shape[lb[i]] != y.shape[rb[i]]) {
      return l.Error("batch dimensions do not match");
    }
  }
  const int64_t B = prod(x, lb), M = prod(x, fl), K = prod(x, lc),
                N = prod(y, fr);
  const bool is_float =
      vm::Info(x.dtype).is_float || vm::Info(y.dtype).is_float;
  const DType compute = is_float ? DType::F32 : DType::S32;
  std::vector<int64_t> px = lb, py = rb;
  px.insert(px.end(), fl.begin(), fl.end());
  px.insert(px.end(), lc.begin(), lc.end());
  py.insert(py.end(), rc.begin(), rc.end());
  py.insert(py.end(), fr.begin(), fr.end());
  x = l.Transpose(l.Convert(x, compute), px);
  y = l.Transpose(l.Convert(y, compute), py);
  Value r = l.NewValue(compute, e.out_shapes.at(0));
  if (r.count() != B * M * N) {
    return l.Error("dot_general result has the wrong number of elements");
  }
  vm::LayoutDesc dims;
  dims.elem_size = 4;
  dims.rank = 3;
  dims.shape[0] = M;
  dims.shape[1] = K;
  dims.shape[2] = N;
  const uint32_t layout = l.builder().AddLayout(dims);
  const vm::Op op = compute == DType::F32 ? vm::Op::DOT_F32 : vm::Op::DOT_S32;
  for (int64_t b = 0; b < B && !l.builder().over_budget(); ++b) {
    l.builder().Emit({op, 0, static_cast<uint32_t>(r.slot + b * M * N * 4),
                      static_cast<uint32_t>(x.slot + b * M * K * 4),
                      static_cast<uint32_t>(y.slot + b * K * N * 4), layout,
                      0});
  }
  return std::vector<Value>{l.Convert(r, e.out_dtypes.at(0))};
}

}  // namespace

void AddShapeRules(RuleTable& t) {
  t.Pure("broadcast_in_dim", Arity::Exactly(1, 1), LowerBroadcastInDim);
  t.Pure("reshape", Arity::Exactly(1, 1), LowerReshape);
  t.Pure("squeeze", Arity::Exactly(1, 1), LowerSqueezeOrExpand);
  t.Pure("expand_dims", Arity::Exactly(1, 1), LowerSqueezeOrExpand);
  t.Pure("transpose", Arity::Exactly(1, 1), LowerTranspose);
  t.Pure("rev", Arity::Exactly(1, 1), LowerRev);
  t.Pure("slice", Arity::Exactly(1, 1), LowerSlice);
  t.Pure("dynamic_slice", Arity::AtLeast(1, 1), LowerDynamicSlice);
  t.Pure("dynamic_update_slice", Arity::AtLeast(2, 1), LowerDynamicUpdateSlice);
  t.Pure("concatenate", Arity::AtLeast(1, 1), LowerConcatenate);
  t.Pure("iota", Arity::Exactly(0, 1), LowerIota);
  t.Pure("tile", Arity::Exactly(1, 1), LowerTile);
  t.Pure("split", Arity{1, 1, 0, Arity::kAny}, LowerSplit);
  t.Pure("stack", Arity::AtLeast(1, 1), LowerStack);
  t.Pure("unstack", Arity{1, 1, 0, Arity::kAny}, LowerUnstack);
  t.Pure("roll", Arity::Exactly(2, 1), LowerRoll);
  t.Pure("bitcast", Arity::Exactly(1, 1), LowerTpuBitcast);
  t.Pure("cumsum", Arity::Exactly(1, 1), ScanRule("ADD"));
  t.Pure("cumprod", Arity::Exactly(1, 1), ScanRule("MUL"));
  t.Pure("cummax", Arity::Exactly(1, 1), ScanRule("MAX"));
  t.Pure("cummin", Arity::Exactly(1, 1), ScanRule("MIN"));
  t.Pure("reduce_sum", Arity::Exactly(1, 1), ReduceRule("SUM"));
  t.Pure("reduce_prod", Arity::Exactly(1, 1), ReduceRule("PROD"));
  t.Pure("reduce_max", Arity::Exactly(1, 1), ReduceRule("MAX"));
  t.Pure("reduce_min", Arity::Exactly(1, 1), ReduceRule("MIN"));
  t.Pure("reduce_and", Arity::Exactly(1, 1), ReduceRule("AND"));
  t.Pure("reduce_or", Arity::Exactly(1, 1), ReduceRule("OR"));
  t.Pure("argmax", Arity::Exactly(1, 1), ArgRule(true));
  t.Pure("argmin", Arity::Exactly(1, 1), ArgRule(false));
  t.Pure("dot_general", Arity::Exactly(2, 1), LowerDotGeneral);
}

}  // namespace pallasvm::compiler
