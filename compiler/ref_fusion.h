// Peephole rewrites of emitted code that keep VMEM blocks in their refs
// instead of copying them through the frame.
//
// The lowering copies a ref into a frame value at every `get` and back at
// every `swap`, one equation at a time. For a blocked matmul step
// (`acc[...] += jnp.dot(x[...], y[...])`, then `o[...] = acc[...]`) that is
// five block copies and an elementwise add around one DOT: as much memory
// traffic as the DOT itself at 256x256 blocks, against a 1.25 MiB L2. Two
// rewrites remove it, on straight-line code only, and only where the
// result is the same bit for bit:
//
//  1. Accumulate: LOAD v := ref R (whole); DOT d := x @ y; ADD_F32_VV
//     s := v + d (either order); STORE ref R (whole) := s, where v, d and s
//     are used nowhere else and nothing else touches R in between, becomes
//     DOT_ADD_F32 ref R := ref R + x @ y at the DOT, which rounds the
//     product and then adds, exactly as DOT then ADD do.
//  2. Forward: LOAD v := ref R (whole), where every other use of v is a
//     block source of a DOT, a STORE/ADDUPDATE or an elementwise op, and R
//     is not written before the last of them, becomes those instructions
//     reading R in place (the kOperandRef aux bits of vm/opcodes.h).
//
// "Whole" means static starts 0, full sizes, stride 1: the dense value is
// the ref's buffer byte for byte. Runs on provisional slots, before they are
// packed by liveness; knows nothing of grids.
#ifndef PALLASVM_COMPILER_REF_FUSION_H_
#define PALLASVM_COMPILER_REF_FUSION_H_

#include <cstdint>
#include <functional>

#include "vm/program.h"

namespace pallasvm::compiler {

// `allocation_of(slot)` names the frame allocation a slot operand points
// into (any index, the same for every slot inside one allocation), or -1
// for constants and slots of no allocation.
// Instructions removed are dropped from the code, with jump targets,
// function entries and debug_index updated.
void FuseRefAccesses(vm::Program& program,
                     const std::function<int(uint32_t)>& allocation_of);

}  // namespace pallasvm::compiler

#endif  // PALLASVM_COMPILER_REF_FUSION_H_
