// The one include of xsimd, for every kernel.
//
// GCC 12 warns "'__Y' [may be] used uninitialized" inside its own AVX-512
// intrinsics (_mm512_undefined_ps, GCC bug 105593) wherever xsimd's
// transcendentals are instantiated. The warning is about the compiler's
// header, not ours, so it is silenced for the headers included here only;
// this must be the first include of <immintrin.h> in a translation unit for
// the pragma to cover it.
#ifndef PALLASVM_VM_KERNELS_SIMD_H_
#define PALLASVM_VM_KERNELS_SIMD_H_

#pragma GCC diagnostic push
#ifndef __clang__  // clang has no -Wmaybe-uninitialized (and no GCC bug)
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#endif
#pragma GCC diagnostic ignored "-Wuninitialized"
#include <xsimd/xsimd.hpp>
#pragma GCC diagnostic pop

#endif  // PALLASVM_VM_KERNELS_SIMD_H_
