// Fused multiply-add contraction, the lowering's `contract_fma` option:
// interpret mode's results are XLA:CPU's, and XLA:CPU's fused elementwise
// loops are compiled with LLVM's fp-contract=fast, which turns a multiply
// whose only use is an add or subtract into one fused multiply-add (x86's
// vfmadd: rounded once). A TPU, and the jaxpr as written, round after the
// multiply; that is pallasvm's default, and this option gives XLA's
// results instead.
//
// The pattern, per jaxpr (calls are not looked into, as XLA's separate
// computations are not): a product of f32, or of f16 (XLA computes f16's
// fused multiply-add in f32 and rounds to f16 once), whose single result
// has exactly one use, that use being an `add` or `sub` equation of the
// same dtype in the same jaxpr. A product is a `mul`, a `square` or an
// `integer_pow` with y = 2 (XLA lowers both to multiply(x, x)), or the
// single-use `neg` of a product (LLVM rewrites -(a * b) to (-a) * b). bf16
// never contracts: XLA keeps every f32 -> bf16 -> f32 conversion between
// the two. The product's equations are not emitted; the add or subtract
// emits FMA_F32 instead (m = a * b; negation is exact):
//   add(m, c), add(c, m) -> fma(a, b, c)
//   sub(m, c)            -> fma(a, b, -c)
//   sub(c, m)            -> fma(-a, b, c)
// When both operands are products, the first is contracted and the second
// emitted as it is, as LLVM's DAGCombiner does for fadd and for fsub (use
// counts being equal); except add(-p, q), which LLVM has rewritten to
// sub(q, p) first, so q is contracted.
//
// Measured against interpret mode (tests/python/test_fma_contraction.py):
// these forms match it bit for bit. Not covered: integer_pow with y >= 3
// (XLA multiplies, rounding each, and contracts the last), products and
// adds in different jaxprs (XLA inlines calls, so it may contract across a
// pjit boundary), and converts between the two.
//
// Knows nothing of grids, refs or the VM's dispatch.
#ifndef PALLASVM_COMPILER_FMA_CONTRACTION_H_
#define PALLASVM_COMPILER_FMA_CONTRACTION_H_

#include <cstddef>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/container/flat_hash_set.h"
#include "compiler/lowering.h"
#include "kernel_generated.h"

namespace pallasvm::compiler {

// How one add or subtract equation is lowered instead: `rule` over
// `operands` (the multiply's two, then the addend), for the add's results.
struct FmaContraction {
  std::vector<const interchange::Atom*> operands;
  LoweringRule rule;
};

class FmaContractions {
 public:
  // The contractions in `jaxpr`'s own equations; `uses` counts each
  // variable's uses by its equations and outvars.
  // f16 products are contracted only with `f16` (XLA:CPU's choice depends
  // on the CPU: see Kernel.contract_fma_f16 in format/kernel.fbs).
  static FmaContractions Find(const interchange::Jaxpr& jaxpr,
                              const absl::flat_hash_map<int, int>& uses,
                              bool f16 = true);

  // Whether equation `eqn` (an index into jaxpr.eqns) is a multiply folded
  // into the add or subtract that uses it, and so emits nothing itself.
  bool Folded(size_t eqn) const { return folded_.contains(eqn); }
  // The contraction equation `eqn` lowers by, or nullptr.
  const FmaContraction* At(size_t eqn) const {
    auto it = at_.find(eqn);
    return it == at_.end() ? nullptr : &it->second;
  }

 private:
  absl::flat_hash_set<size_t> folded_;
  absl::flat_hash_map<size_t, FmaContraction> at_;
};

}  // namespace pallasvm::compiler

#endif  // PALLASVM_COMPILER_FMA_CONTRACTION_H_
