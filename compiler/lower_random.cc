// Random numbers: the TPU's stateful PRNG (pltpu.prng_seed and
// pltpu.prng_random_bits, which pltpu.stateful_* and pltpu.sample_block are
// built on) and iota_2x32_shape, the counters of jax.random's threefry.
//
// jax.random's own primitives on keys (random_seed, random_bits, ...) never
// reach the compiler: the exporter replaces each by the jaxpr of its key
// implementation (tools/pallasvm/export.py), so in-kernel jax.random is
// JAX's own threefry code, bit for bit.
//
// The TPU PRNG. JAX's interpret mode returns zeros; pallasvm's generator is
// threefry2x32, with state in three u32 words of the frame that no other
// value shares (ProgramBuilder::AllocPersistent): a key (k0, k1) and a
// counter c. The runtime keeps one frame per simulated core for a whole
// call, zeroed at its start, so like a TPU core's the state is per core and
// persists across grid points until reseeded; an unseeded kernel draws from
// key (0, 0).
//   prng_seed(s_0, ..., s_m-1)   (every element of every seed, as u32)
//       (k0, k1) := (0, 0); then for each word i:
//       (k0, k1) := threefry2x32((k0, k1), (s_i, i));  c := 0
//   prng_random_bits(shape)      (N elements, row-major index j)
//       bits[j] := first word of threefry2x32((k0, k1), (c, j)), as int32;
//       c := c + 1
#include <limits>

#include "absl/strings/str_cat.h"
#include "compiler/lowering.h"
#include "vm/opcodes.h"

namespace pallasvm::compiler {
namespace {

using vm::DType;

// The PRNG state words (k0, k1, c) as u32 scalar values.
struct PrngState {
  Value k0, k1, counter;
};

PrngState StateOf(Lowerer& l) {
  const uint32_t slot = l.PrngStateSlot();
  auto word = [&](int i) {
    Value v;
    v.dtype = DType::U32;
    v.slot = slot + 4 * i;
    return v;
  };
  return {word(0), word(1), word(2)};
}

// An S32 iota 0 .. N-1 over `shape` in row-major order, as U32.
Value FlatIotaU32(Lowerer& l, const Shape& shape) {
  const int64_t n = NumElements(shape);
  vm::LayoutDesc layout;
  layout.elem_size = 4;
  layout.rank = 1;
  layout.shape[0] = n;
  Value iota = l.NewValue(DType::S32, {n});
  l.builder().Emit(
      {vm::Op::IOTA_S32, 0, iota.slot, 0, 0, l.builder().AddLayout(layout), 0});
  Value r = l.Convert(iota, DType::U32);
  r.shape = shape;
  return r;
}

absl::StatusOr<std::vector<Value>> LowerPrngSeed(Lowerer& l,
                                                 const Lowerer::Eqn& e) {
  Value k0 = l.ConstantScalar(DType::U32, 0);
  Value k1 = k0;
  int64_t word = 0;
  for (const Value& seed : e.in) {
    if (seed.is_ref() || vm::Info(seed.dtype).is_float ||
        vm::SizeOf(seed.dtype) > 4) {
      return l.Error(absl::StrCat("prng_seed takes integer seeds, not ",
                                  TypeString(seed)));
    }
    const Value s = l.Convert(seed, DType::U32);
    for (int64_t j = 0; j < s.count(); ++j, ++word) {
      Value element;
      element.dtype = DType::U32;
      element.slot = s.slot + 4 * static_cast<uint32_t>(j);
      absl::StatusOr<std::pair<Value, Value>> k = Threefry2x32(
          l, k0, k1, element, l.ConstantScalar(DType::U32, word), {});
      if (!k.ok()) return k.status();
      k0 = k->first;
      k1 = k->second;
    }
  }
  const PrngState state = StateOf(l);
  l.CopyInto(state.k0, k0);
  l.CopyInto(state.k1, k1);
  l.CopyInto(state.counter, l.ConstantScalar(DType::U32, 0));
  return std::vector<Value>{};
}

absl::StatusOr<std::vector<Value>> LowerPrngRandomBits(Lowerer& l,
                                                       const Lowerer::Eqn& e) {
  const Shape& shape = e.out_shapes.at(0);
  const PrngState state = StateOf(l);
  if (NumElements(shape) > 0) {
    absl::StatusOr<Value> counter = l.Broadcast(state.counter, shape);
    if (!counter.ok()) return counter.status();
    absl::StatusOr<std::pair<Value, Value>> y = Threefry2x32(
        l, state.k0, state.k1, *counter, FlatIotaU32(l, shape), shape);
    if (!y.ok()) return y.status();
    absl::StatusOr<Value> next = l.Binary(
        "ADD", state.counter, l.ConstantScalar(DType::U32, 1), DType::U32, {});
    if (!next.ok()) return next.status();
    l.CopyInto(state.counter, *next);
    Value bits = l.NewValue(e.out_dtypes.at(0), shape);
    l.CopyInto(bits, y->first);
    return std::vector<Value>{bits};
  }
  return std::vector<Value>{l.NewValue(e.out_dtypes.at(0), shape)};
}

// iota_2x32_shape(shape) -> (hi, lo): the row-major index of each element
// as a u64 split in two u32 words. Values are below 2^32 elements (a value
// is at most the memory limit), so hi is zero.
absl::StatusOr<std::vector<Value>> LowerIota2x32Shape(Lowerer& l,
                                                      const Lowerer::Eqn& e) {
  const Shape& shape = e.out_shapes.at(0);
  if (NumElements(shape) > std::numeric_limits<int32_t>::max()) {
    return l.Unsupported("iota_2x32_shape of 2^31 elements or more");
  }
  absl::StatusOr<Value> hi =
      l.Broadcast(l.ConstantScalar(DType::U32, 0), shape);
  if (!hi.ok()) return hi.status();
  return std::vector<Value>{*hi, FlatIotaU32(l, shape)};
}

}  // namespace

void AddRandomRules(RuleTable& t) {
  // Both change the PRNG state: never removed, never reordered.
  t.Effectful("prng_seed", Arity::AtLeast(0, 0), LowerPrngSeed);
  t.Effectful("prng_random_bits", Arity::Exactly(0, 1), LowerPrngRandomBits);
  t.Pure("iota_2x32_shape", Arity::Exactly(0, 2), LowerIota2x32Shape);
}

}  // namespace pallasvm::compiler
