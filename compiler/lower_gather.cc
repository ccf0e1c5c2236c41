// Data movement by computed index: lax.gather (jnp.take_along_axis, x[idx],
// jnp.take) and lax.sort (jnp.sort, jnp.argsort, lax.sort_key_val).
//
// Both end in one GATHER_Bw of the result's elements by flat index into the
// operand. A gather's flat indices are computed with block S32 arithmetic
// over the result's shape (iotas for the window offsets, the start indices
// broadcast from the indices operand, clamped or masked as the gather's mode
// says); a sort's come from ARGSORT, one stable sort per key, last key
// first.
#include <algorithm>
#include <limits>
#include <string>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "compiler/lowering.h"
#include "vm/opcodes.h"

namespace pallasvm::compiler {
namespace {

using vm::DType;

// An S32 value over `shape` holding its index along `dim`.
Value IotaAlong(Lowerer& l, const Shape& shape, int dim) {
  vm::LayoutDesc layout;
  layout.elem_size = 4;
  layout.rank = static_cast<int32_t>(shape.size());
  for (size_t i = 0; i < shape.size(); ++i) layout.shape[i] = shape[i];
  Value r = l.NewValue(DType::S32, shape);
  l.builder().Emit({vm::Op::IOTA_S32, static_cast<uint16_t>(dim), r.slot, 0, 0,
                    l.builder().AddLayout(layout), 0});
  return r;
}

// dst[i] := src[flat[i]] for the S32 `flat` (every index in range), as a
// value of src's dtype and flat's shape.
absl::StatusOr<Value> GatherFlat(Lowerer& l, const Value& src,
                                 const Value& flat) {
  if (src.count() == 0 || flat.count() == 0) {
    return l.NewValue(src.dtype, flat.shape);
  }
  vm::Op op;
  switch (vm::SizeOf(src.dtype)) {
    case 1:
      op = vm::Op::GATHER_B1;
      break;
    case 2:
      op = vm::Op::GATHER_B2;
      break;
    case 4:
      op = vm::Op::GATHER_B4;
      break;
    default:
      return l.Unsupported(absl::StrCat("a gather of ", TypeString(src),
                                        " is not supported yet"));
  }
  if (src.count() > std::numeric_limits<int32_t>::max()) {
    return l.Unsupported("a gather from more than 2^31 elements");
  }
  Value r = l.NewValue(src.dtype, flat.shape);
  l.builder().Emit({op, 0, r.slot, src.slot, flat.slot,
                    static_cast<uint32_t>(src.count()),
                    static_cast<uint32_t>(flat.count())});
  return r;
}

std::vector<int64_t> IntsOr(const Lowerer::Eqn& e, absl::string_view name) {
  absl::StatusOr<std::vector<int64_t>> v = e.Ints(name);
  return v.ok() ? *v : std::vector<int64_t>{};
}

bool Contains(const std::vector<int64_t>& v, int64_t x) {
  return std::find(v.begin(), v.end(), x) != v.end();
}

// The constant `value` in `dtype` (a float for float dtypes).
Value ConstantOf(Lowerer& l, DType dtype, double value) {
  if (vm::Info(dtype).is_float) {
    return l.Convert(l.ConstantF32(static_cast<float>(value)), dtype);
  }
  return l.ConstantScalar(dtype, static_cast<int64_t>(value));
}

// gather(operand, indices; dimension_numbers, slice_sizes, mode,
// fill_value), XLA's semantics with JAX's index_vector_dim (the last dim
// of indices). Modes CLIP and PROMISE_IN_BOUNDS clamp each window into the
// operand (XLA's behaviour for both); FILL_OR_DROP gives fill_value for
// every window with a start outside [0, dim - slice size], as JAX's
// _gather_fill does.
absl::StatusOr<std::vector<Value>> LowerGather(Lowerer& l,
                                               const Lowerer::Eqn& e) {
  const Value& x = e.in.at(0);
  const Value& idx_in = e.in.at(1);
  if (x.is_ref() || idx_in.is_ref()) return l.Error("gather of a ref");
  if (vm::Info(idx_in.dtype).is_float || idx_in.dtype == DType::PRED) {
    return l.Error(absl::StrCat("gather indices are ", TypeString(idx_in)));
  }
  const Shape& out = e.out_shapes.at(0);
  const int rank = static_cast<int>(x.shape.size());
  const int irank = static_cast<int>(idx_in.shape.size());
  const std::vector<int64_t> offset_dims =
      IntsOr(e, "dimension_numbers.offset_dims");
  const std::vector<int64_t> collapsed =
      IntsOr(e, "dimension_numbers.collapsed_slice_dims");
  const std::vector<int64_t> start_map =
      IntsOr(e, "dimension_numbers.start_index_map");
  const std::vector<int64_t> operand_batching =
      IntsOr(e, "dimension_numbers.operand_batching_dims");
  const std::vector<int64_t> indices_batching =
      IntsOr(e, "dimension_numbers.start_indices_batching_dims");
  absl::StatusOr<std::vector<int64_t>> slice_sizes = e.Ints("slice_sizes");
  if (!slice_sizes.ok()) return l.Error(slice_sizes.status().message());
  std::string mode = "CLIP";
  if (const interchange::Param* p = e.Param("mode");
      p != nullptr && p->kind() == interchange::ParamKind::STRING && p->s()) {
    mode = p->s()->str();
  }
  if (mode != "CLIP" && mode != "PROMISE_IN_BOUNDS" && mode != "FILL_OR_DROP") {
    return l.Unsupported(
        absl::StrCat("gather in mode ", mode, " is not supported yet"));
  }
  // Shapes, checked: the params come from the file.
  const int batch_rank = irank - 1;
  const int64_t num_starts = irank == 0 ? 0 : idx_in.shape[irank - 1];
  if (irank < 1 || static_cast<int>(slice_sizes->size()) != rank ||
      static_cast<int64_t>(start_map.size()) != num_starts ||
      operand_batching.size() != indices_batching.size() ||
      static_cast<int>(out.size()) !=
          batch_rank + static_cast<int>(offset_dims.size())) {
    return l.Error("gather dimension numbers do not fit its operands");
  }
  for (int64_t d : start_map) {
    if (d < 0 || d >= rank) return l.Error("start_index_map out of range");
  }
  for (size_t t = 0; t < operand_batching.size(); ++t) {
    if (operand_batching[t] < 0 || operand_batching[t] >= rank ||
        indices_batching[t] < 0 || indices_batching[t] >= batch_rank) {
      return l.Error("gather batching dims out of range");
    }
  }
  // The result's batch positions (those not in offset_dims), in order, are
  // the indices' dims 0 .. batch_rank-1; its offset positions, in order,
  // the operand's dims that are neither collapsed nor batching.
  std::vector<int> batch_pos, offset_operand_dim(out.size(), -1);
  for (int q = 0; q < static_cast<int>(out.size()); ++q) {
    if (!Contains(offset_dims, q)) batch_pos.push_back(q);
  }
  {
    size_t k = 0;
    for (int d = 0; d < rank; ++d) {
      if (Contains(collapsed, d) || Contains(operand_batching, d)) continue;
      if (k >= offset_dims.size()) {
        return l.Error("gather has fewer offset dims than window dims");
      }
      const int64_t q = offset_dims[k++];
      if (q < 0 || q >= static_cast<int64_t>(out.size()) ||
          out[q] != (*slice_sizes)[d]) {
        return l.Error("gather offset dims do not match the slice sizes");
      }
      offset_operand_dim[q] = d;
    }
    if (k != offset_dims.size()) return l.Error("gather offset dims mismatch");
  }
  for (int j = 0; j < batch_rank; ++j) {
    if (out[batch_pos[j]] != idx_in.shape[j]) {
      return l.Error("gather batch dims do not match the indices");
    }
  }
  for (int d = 0; d < rank; ++d) {
    const int64_t s = (*slice_sizes)[d];
    if (s < 0 || s > x.shape[d]) return l.Error("gather slice size too large");
  }
  if (NumElements(out) == 0) {
    return std::vector<Value>{l.NewValue(x.dtype, out)};
  }
  if (x.count() == 0) return l.Error("gather from an empty operand");

  Composer c{l, out, absl::OkStatus()};
  const Value idx = l.Convert(idx_in, DType::S32);
  const std::vector<int64_t> idx_strides = RowMajorStrides(idx_in.shape);
  const std::vector<int64_t> x_strides = RowMajorStrides(x.shape);
  Value flat = l.ConstantScalar(DType::S32, 0);
  std::optional<Value> in_bounds;  // FILL_OR_DROP's mask
  for (int d = 0; d < rank; ++d) {
    std::optional<Value> start;
    for (int64_t k = 0; k < num_starts; ++k) {
      if (start_map[k] != d) continue;
      // The k-th start index of each result element's window.
      std::vector<int64_t> strides(out.size(), 0);
      for (int j = 0; j < batch_rank; ++j)
        strides[batch_pos[j]] = idx_strides[j];
      start = l.StridedCopy(idx, out, strides, k * idx_strides[irank - 1]);
    }
    const int64_t bound = x.shape[d] - (*slice_sizes)[d];
    if (start) {
      if (mode == "FILL_OR_DROP") {
        Value ok =
            c.Bin("AND", c.Bin("GE", *start, c.S32(0), DType::S32),
                  c.Bin("LE", *start, c.S32(bound), DType::S32), DType::PRED);
        in_bounds = in_bounds ? c.Bin("AND", *in_bounds, ok, DType::PRED) : ok;
      }
      start = c.Bin("MIN", c.Bin("MAX", *start, c.S32(0), DType::S32),
                    c.S32(bound), DType::S32);
    }
    for (size_t t = 0; t < operand_batching.size(); ++t) {
      if (operand_batching[t] == d) {
        start = IotaAlong(l, out, batch_pos[indices_batching[t]]);
      }
    }
    std::optional<Value> pos = start;
    for (int q = 0; q < static_cast<int>(out.size()); ++q) {
      if (offset_operand_dim[q] != d) continue;
      Value offset = IotaAlong(l, out, q);
      pos = pos ? c.Bin("ADD", *pos, offset, DType::S32) : offset;
    }
    if (!pos) continue;
    flat = c.Bin("ADD", flat,
                 x_strides[d] == 1
                     ? *pos
                     : c.Bin("MUL", *pos, c.S32(x_strides[d]), DType::S32),
                 DType::S32);
  }
  if (!c.status.ok()) return c.status;
  absl::StatusOr<Value> flat_all = l.Broadcast(flat, out);
  if (!flat_all.ok()) return flat_all.status();
  absl::StatusOr<Value> r = GatherFlat(l, x, *flat_all);
  if (!r.ok()) return r.status();
  if (in_bounds) {
    double fill = 0;
    if (const interchange::Param* p = e.Param("fill_value")) {
      switch (p->kind()) {
        case interchange::ParamKind::FLOAT:
          fill = p->f();
          break;
        case interchange::ParamKind::INT:
          fill = static_cast<double>(p->i());
          break;
        case interchange::ParamKind::BOOL:
          fill = p->b() ? 1 : 0;
          break;
        default:
          return l.Unsupported("a gather fill_value of this kind");
      }
    }
    Value fill_value = ConstantOf(l, x.dtype, fill);
    Value result = c.Select(*in_bounds, *r, fill_value);
    if (!c.status.ok()) return c.status;
    return std::vector<Value>{result};
  }
  return std::vector<Value>{*r};
}

// sort(*operands; dimension, is_stable, num_keys): every operand permuted
// by the order of the first num_keys (lexicographic, XLA's float order:
// vm/kernels/sort.h). Always stable, which an unstable sort may be too.
absl::StatusOr<std::vector<Value>> LowerSort(Lowerer& l,
                                             const Lowerer::Eqn& e) {
  const Value& first = e.in.at(0);
  const Shape& shape = first.shape;
  for (const Value& v : e.in) {
    if (v.is_ref() || v.shape != shape) {
      return l.Error("sort operands must be values of one shape");
    }
  }
  if (e.out_shapes.size() != e.in.size()) {
    return l.Error("sort has one result per operand");
  }
  absl::StatusOr<int64_t> dim = e.Axis("dimension", shape.size());
  if (!dim.ok()) return dim.status();
  absl::StatusOr<int64_t> num_keys =
      e.IntIn("num_keys", 1, static_cast<int64_t>(e.in.size()));
  if (!num_keys.ok()) return num_keys.status();
  if (NumElements(shape) == 0) return e.in;
  int64_t outer = 1, inner = 1;
  for (int64_t i = 0; i < *dim; ++i) outer *= shape[i];
  for (size_t i = *dim + 1; i < shape.size(); ++i) inner *= shape[i];
  const int64_t n = shape[*dim];
  const Shape view = {outer, n, inner};
  // base[o, j, i] = o*n*inner + i: the flat index of (o, 0, i).
  Composer c{l, view, absl::OkStatus()};
  const Value base = c.Bin(
      "ADD", c.Bin("MUL", IotaAlong(l, view, 0), c.S32(n * inner), DType::S32),
      IotaAlong(l, view, 2), DType::S32);
  auto take = [&](const Value& v, const Value& perm) -> absl::StatusOr<Value> {
    Value flat =
        c.Bin("ADD", base,
              inner == 1 ? perm : c.Bin("MUL", perm, c.S32(inner), DType::S32),
              DType::S32);
    if (!c.status.ok()) return c.status;
    Value src = v;
    src.shape = view;
    return GatherFlat(l, src, flat);
  };
  std::optional<Value> perm;
  for (int64_t k = *num_keys - 1; k >= 0; --k) {
    Value key = e.in[k];
    key.shape = view;
    if (perm) {
      absl::StatusOr<Value> in_order = take(key, *perm);
      if (!in_order.ok()) return in_order.status();
      key = *in_order;
    }
    DType compute = Widen(key.dtype);
    if (compute == DType::PRED) compute = DType::U32;
    vm::Op op;
    switch (compute) {
      case DType::F32:
        op = vm::Op::ARGSORT_F32;
        break;
      case DType::S32:
        op = vm::Op::ARGSORT_S32;
        break;
      case DType::U32:
        op = vm::Op::ARGSORT_U32;
        break;
      default:
        return l.Unsupported(absl::StrCat("a sort by ", TypeString(key),
                                          " is not supported yet"));
    }
    key = l.Convert(key, compute);
    Value order = l.NewValue(DType::S32, view);
    l.builder().Emit({op, 0, order.slot, key.slot, static_cast<uint32_t>(outer),
                      static_cast<uint32_t>(n), static_cast<uint32_t>(inner)});
    if (perm) {
      absl::StatusOr<Value> composed = take(*perm, order);
      if (!composed.ok()) return composed.status();
      perm = *composed;
    } else {
      perm = order;
    }
  }
  std::vector<Value> results;
  for (size_t i = 0; i < e.in.size(); ++i) {
    absl::StatusOr<Value> r = take(e.in[i], *perm);
    if (!r.ok()) return r.status();
    Value v = *r;
    v.shape = shape;
    results.push_back(v);
  }
  if (!c.status.ok()) return c.status;
  return results;
}

}  // namespace

void AddGatherRules(RuleTable& t) {
  t.Pure("gather", Arity::Exactly(2, 1), LowerGather);
  t.Pure("sort", Arity{1, Arity::kAny, 1, Arity::kAny}, LowerSort);
}

}  // namespace pallasvm::compiler
