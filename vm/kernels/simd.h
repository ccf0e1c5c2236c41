// The one include of xsimd, for every kernel, and the fused multiply-add
// that DOT and FMA_F32 share.
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

#include <cmath>

namespace pallasvm::vm::kernels {

// a * b + c per lane, rounded once. xsimd 8's fma is a separate multiply and
// add on AVX-512 (fused only if the compiler happens to contract it), so the
// fused instruction is asked for by name: DOT promises one rounding per k
// step and FMA_F32 one per element, whatever the build flags. The FMA
// instructions honour the thread's denormals-are-zero and flush-to-zero.
inline xsimd::batch<float> FusedMultiplyAdd(xsimd::batch<float> a,
                                            xsimd::batch<float> b,
                                            xsimd::batch<float> c) {
#if defined(__AVX512F__)
  static_assert(xsimd::batch<float>::size == 16,
                "xsimd's default arch is AVX-512 here");
  return xsimd::batch<float>(_mm512_fmadd_ps(a, b, c));
#elif defined(__FMA__) && defined(__AVX__)
  static_assert(xsimd::batch<float>::size == 8,
                "xsimd's default arch is AVX here");
  return xsimd::batch<float>(_mm256_fmadd_ps(a, b, c));
#else
  // No fused instruction on this target: the C library's, lane by lane.
  constexpr size_t kW = xsimd::batch<float>::size;
  alignas(64) float x[kW], y[kW], z[kW];
  a.store_aligned(x);
  b.store_aligned(y);
  c.store_aligned(z);
  for (size_t i = 0; i < kW; ++i) x[i] = std::fma(x[i], y[i], z[i]);
  return xsimd::batch<float>::load_aligned(x);
#endif
}

}  // namespace pallasvm::vm::kernels

#endif  // PALLASVM_VM_KERNELS_SIMD_H_
