// Lowers interchange jaxprs to VM instructions, one equation at a time.
//
// Every value has a static shape and dtype and owns a frame slot; refs are
// entries of the ref table. Calls (jit, custom_jvp_call, custom_vjp_call,
// closed_call) are inlined by lowering their jaxpr in place; control flow
// (cond, while, scan) becomes jumps. Each primitive's lowering is written
// once, in the file for its kind (lower_elementwise.cc, lower_shape.cc,
// lower_ref.cc, lower_control.cc, lower_gather.cc, lower_random.cc), and
// registered in the table in lowering.cc.
//
// Knows nothing of grids or block mappings (compiler/compiler.cc does that).
#ifndef PALLASVM_COMPILER_LOWERING_H_
#define PALLASVM_COMPILER_LOWERING_H_

#include "absl/strings/string_view.h"
#include <cstdint>
#include <functional>
#include <limits>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "compiler/program_builder.h"
#include "kernel_generated.h"
#include "vm/dtype.h"
#include "vm/memory_limit.h"
#include "vm/program.h"

namespace pallasvm::compiler {

using Shape = std::vector<int64_t>;

// Element count of a shape already checked by CheckShape (every Value's).
int64_t NumElements(const Shape& shape);

// Checked size arithmetic and the memory limit: vm/memory_limit.h (one
// place for the compiler and the runtime).
using vm::CheckedAdd;
using vm::CheckedMul;
using vm::DefaultMemoryLimit;

// What a shape from an interchange file must be before anything sizes by
// it: within the module format's limits (format/module_limits.h: rank,
// no negative dimension, at most 2^40 elements), so no element count or
// byte size can overflow, and at most `memory_limit` bytes of `dtype`.
// Errors name `what`.
absl::Status CheckShape(const Shape& shape, vm::DType dtype,
                        int64_t memory_limit, absl::string_view what);
// A ref's Type.padded_shape (buffer_bounds="padded"): empty when absent,
// else checked against the ref's `shape` (same rank, no dimension smaller,
// padding below 2^31 per dimension, which AccessDim::padding holds).
absl::StatusOr<Shape> PaddedShape(const interchange::Type& type,
                                  const Shape& shape, absl::string_view what);

std::string ShapeString(const Shape& shape);
absl::StatusOr<vm::DType> ToVmDType(interchange::DType dtype);

// A lowered value (slot >= 0 in the frame) or ref (ref >= 0).
struct Value {
  vm::DType dtype = vm::DType::F32;
  Shape shape;
  uint32_t slot = 0;
  int ref = -1;
  bool is_ref() const { return ref >= 0; }
  int64_t count() const { return NumElements(shape); }
  int64_t bytes() const { return count() * vm::SizeOf(dtype); }
};

std::string TypeString(const Value& v);

// Row-major element strides of a dense value of `shape`.
std::vector<int64_t> RowMajorStrides(const Shape& shape);

// The dtype narrow types compute in (vm/opcodes.def): S8/S16 -> S32,
// U8/U16 -> U32, F16/BF16 -> F32; others unchanged.
vm::DType Widen(vm::DType t);

// An access descriptor covering all of the frame value `base` (sizes =
// extents, static starts 0), to be narrowed by the caller.
vm::AccessDesc WholeFrameAccess(const Value& base);

struct Arity;
struct FmaContraction;

class Lowerer {
 public:
  explicit Lowerer(ProgramBuilder& builder) : b_(builder) {}

  // Lowers `jaxpr` with its invars bound to `inputs`; returns its outvars.
  absl::StatusOr<std::vector<Value>> LowerJaxpr(const interchange::Jaxpr& jaxpr,
                                                const std::vector<Value>& inputs);

  // --- helpers shared by the lower_*.cc files
  Value NewValue(vm::DType dtype, const Shape& shape);
  Value ConstantScalar(vm::DType dtype, int64_t value);
  Value ConstantF32(float value);
  // The value in dtype `to`, converting if needed.
  Value Convert(const Value& v, vm::DType to);
  // `v` as `count` elements: v itself, or a FILL of its single element.
  absl::StatusOr<Value> Broadcast(const Value& v, const Shape& shape);
  // pred ? on_true : on_false elementwise, for three values of one element
  // count (pred is PRED; the result has on_true's dtype and shape).
  Value Select(const Value& pred, const Value& on_true, const Value& on_false);
  // Copies the bytes of `src` into the (same-sized) slot of `dst`.
  void CopyInto(const Value& dst, const Value& src);
  // Emits a binary op family NAME over compute dtype, with the layout
  // chosen from the operands' element counts; result has `shape`.
  absl::StatusOr<Value> Binary(absl::string_view name, const Value& x,
                               const Value& y, vm::DType compute,
                               const Shape& shape);
  absl::StatusOr<Value> Unary(absl::string_view name, const Value& x,
                              vm::DType compute);
  Value StridedCopy(const Value& src, const Shape& out_shape,
                    const std::vector<int64_t>& strides, int64_t offset);
  Value Transpose(const Value& src, const std::vector<int64_t>& perm);
  // A scalar S32 value from an atom (static when it is a literal).
  struct Index {
    bool is_static = true;
    int64_t value = 0;
    uint32_t slot = 0;
  };
  absl::StatusOr<Index> ScalarIndex(const interchange::Atom* atom);

  // The most bytes one value may have (CheckShape); DefaultMemoryLimit()
  // unless set.
  void set_memory_limit(int64_t bytes) { memory_limit_ = bytes; }
  int64_t memory_limit() const { return memory_limit_; }

  // Interpret mode's skip_floating_point_ops: every floating-point result
  // of an equation is replaced by +inf (so every float value read is inf).
  void set_skip_floating_point_ops(bool skip) { skip_fp_ = skip; }

  // XLA:CPU's fused multiply-add contraction (compiler/fma_contraction.h):
  // a single-use f32 or f16 multiply feeding an add or subtract becomes one
  // FMA_F32, rounded once.
  void set_contract_fma(bool contract) { contract_fma_ = contract; }
  // With contract_fma, whether f16 products contract too.
  void set_contract_fma_f16(bool contract) { contract_fma_f16_ = contract; }

  // Interpret mode's allow_hbm_allocation_in_run_scoped.
  void set_allow_hbm_in_run_scoped(bool allow) { allow_hbm_scoped_ = allow; }
  bool allow_hbm_in_run_scoped() const { return allow_hbm_scoped_; }
  // The ref of pltpu.get_barrier_semaphore(), made by its first use; -1
  // before.
  int barrier_semaphore() const { return barrier_semaphore_; }
  void set_barrier_semaphore(int ref) { barrier_semaphore_ = ref; }

  // The memory space of ref `ref` (a Value's ref index).
  vm::MemorySpace RefSpace(const Value& ref) const {
    return ref.ref >= 0 && static_cast<size_t>(ref.ref) < b_.refs().size()
               ? b_.refs()[ref.ref].space
               : vm::MemorySpace::VMEM;
  }

  // Error about the equation being lowered (INVALID_ARGUMENT: the kernel
  // is wrong).
  absl::Status Error(absl::string_view message) const;
  // A feature of the equation that pallasvm lacks yet (UNIMPLEMENTED: the
  // bridge raises pallasvm.UnsupportedError for it).
  absl::Status Unsupported(absl::string_view message) const;

  ProgramBuilder& builder() { return b_; }

  // The frame offset of the TPU PRNG's state (three u32 words, see
  // compiler/lower_random.cc), allocated on first use and never shared.
  uint32_t PrngStateSlot() {
    if (!prng_state_slot_) prng_state_slot_ = b_.AllocPersistent(12);
    return *prng_state_slot_;
  }

  // Equation context, valid while an equation is being lowered.
  struct Eqn {
    const interchange::Eqn* eqn;
    std::vector<Value> in;       // invars (literals materialised)
    std::vector<Shape> out_shapes;
    std::vector<vm::DType> out_dtypes;
    bool outputs_used = true;  // false: only the effects matter
    const interchange::Param* Param(absl::string_view name) const;
    absl::StatusOr<int64_t> Int(absl::string_view name) const;
    absl::StatusOr<std::vector<int64_t>> Ints(absl::string_view name) const;
    bool Has(absl::string_view name) const;
    // Checked reads of params that index something: each error names the
    // param, its value and the range it must lie in.
    // An integer in [lo, hi].
    absl::StatusOr<int64_t> IntIn(absl::string_view name, int64_t lo,
                                  int64_t hi) const;
    // An axis of a rank-`rank` value: in [0, rank).
    absl::StatusOr<int64_t> Axis(absl::string_view name, int64_t rank) const;
    // Distinct axes of a rank-`rank` value.
    absl::StatusOr<std::vector<int64_t>> Axes(absl::string_view name,
                                              int64_t rank) const;
  };
  using Rule = std::function<absl::StatusOr<std::vector<Value>>(Lowerer&,
                                                                 const Eqn&)>;

 private:
  absl::Status AtEquation(absl::StatusCode code,
                          absl::string_view message) const;
  absl::StatusOr<Value> Materialize(const interchange::Atom* atom);
  // With `fma`, the equation (an add or sub) lowers by fma->rule over
  // fma->operands instead.
  absl::Status LowerEqn(const interchange::Eqn& eqn, bool outputs_used,
                        const FmaContraction* fma = nullptr);
  absl::Status CheckArity(const interchange::Eqn& eqn,
                          const Arity& arity) const;

  ProgramBuilder& b_;
  bool skip_fp_ = false;
  bool contract_fma_ = false;
  bool contract_fma_f16_ = true;
  bool allow_hbm_scoped_ = false;
  int barrier_semaphore_ = -1;
  std::optional<uint32_t> prng_state_slot_;
  int64_t memory_limit_ = DefaultMemoryLimit();
  absl::StatusOr<Value> VarType(const interchange::Var* var,
                                absl::string_view what) const;
  // One scope per jaxpr being lowered (jaxprs are closed).
  std::vector<absl::flat_hash_map<int, Value>> scopes_;
  const interchange::Eqn* current_ = nullptr;
  // Equations being lowered, outermost first: an equation without a source
  // line (one JAX made inside e.g. jnp.cumsum's jit) is reported at the
  // nearest enclosing one that has it.
  std::vector<const interchange::Eqn*> eqn_stack_;
  const interchange::Eqn* WithSource() const;
};

// Builds a composite lowering out of VM ops over one result shape; the
// first error is kept in `status` (later ops then return their first
// operand, and the rule returns the error).
struct Composer {
  Lowerer& l;
  Shape shape;
  absl::Status status;

  Value Keep(absl::StatusOr<Value> r, const Value& fallback) {
    if (r.ok()) return *r;
    if (status.ok()) status = r.status();
    return fallback;
  }
  Value Bin(absl::string_view name, const Value& a, const Value& b,
            vm::DType compute) {
    return Keep(l.Binary(name, a, b, compute, shape), a);
  }
  Value Un(absl::string_view name, const Value& a) {
    return Keep(l.Unary(name, a, a.dtype), a);
  }
  Value F32(float c) { return l.ConstantF32(c); }
  Value U32(uint32_t c) { return l.ConstantScalar(vm::DType::U32, c); }
  Value S32(int64_t c) { return l.ConstantScalar(vm::DType::S32, c); }
  // pred ? on_true : on_false, elementwise.
  Value Select(const Value& pred, const Value& on_true,
               const Value& on_false) {
    Value p = Keep(l.Broadcast(pred, shape), pred);
    Value t = Keep(l.Broadcast(on_true, shape), on_true);
    Value f = Keep(l.Broadcast(on_false, shape), on_false);
    return l.Select(p, t, f);
  }
};

// A primitive's lowering rule and what the rule declares about it: whether
// an equation of the primitive may be removed when its results are unused.
// Pure means no effect besides the results: ref reads are not pure (an
// out-of-bounds read must still raise), nor are writes, control flow and
// calls (their bodies may write). A primitive without a rule is a compile
// error wherever it appears, used or not: nothing is dropped unknowingly.
//
// A rule also declares its arity: how many operands and results an
// equation of the primitive has. The driver checks them before the rule
// runs, so a rule indexes its operands and results within those counts
// and never past them, whatever the interchange file says.
struct Arity {
  static constexpr int kAny = std::numeric_limits<int>::max();
  int min_in = 0, max_in = kAny, min_out = 0, max_out = kAny;
  static constexpr Arity Exactly(int in, int out) { return {in, in, out, out}; }
  // At least `in` operands (indices, cases, ...) and exactly `out` results.
  static constexpr Arity AtLeast(int in, int out) {
    return {in, kAny, out, out};
  }
  static constexpr Arity Any() { return {}; }
};

struct LoweringRule {
  Lowerer::Rule lower;
  Arity arity;
  bool pure = false;
};

// The primitives pallasvm lowers; each lower_*.cc registers its own.
class RuleTable {
 public:
  void Pure(std::string primitive, Arity arity, Lowerer::Rule rule);
  void Effectful(std::string primitive, Arity arity, Lowerer::Rule rule);
  // nullptr if pallasvm has no rule for `primitive`.
  const LoweringRule* Find(absl::string_view primitive) const;
  const absl::flat_hash_map<std::string, LoweringRule>& rules() const {
    return rules_;
  }

 private:
  void Add(std::string primitive, Arity arity, Lowerer::Rule rule, bool pure);
  absl::flat_hash_map<std::string, LoweringRule> rules_;
};
// JAX's threefry2x32 hash of counters (x0, x1) over `shape` under the key
// (k1, k2) (compiler/lower_elementwise.cc); the in-kernel jax.random keys
// and pallasvm's TPU PRNG (compiler/lower_random.cc) both use it.
absl::StatusOr<std::pair<Value, Value>> Threefry2x32(Lowerer& l,
                                                    const Value& k1,
                                                    const Value& k2,
                                                    const Value& x0,
                                                    const Value& x1,
                                                    const Shape& shape);

void AddElementwiseRules(RuleTable& table);
void AddShapeRules(RuleTable& table);
void AddRefRules(RuleTable& table);
void AddControlRules(RuleTable& table);
void AddMachineRules(RuleTable& table);
void AddGatherRules(RuleTable& table);
void AddRandomRules(RuleTable& table);
const RuleTable& Rules();

}  // namespace pallasvm::compiler

#endif  // PALLASVM_COMPILER_LOWERING_H_
