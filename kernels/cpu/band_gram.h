// Band-major packing and lower-triangle Gram tiles, shared by the RX kernels: global RX's
// moments (rx_global.cpp) and the outer-window scatter, bordered factorisation and guard Gram
// of local RX (rx.cpp).
//
// Functions are in an unnamed namespace: each kernel gets its own copy, target clones
// included (x86-64-v4/v3 clones pick AVX-512VL/AVX2 at load time, by ISA, on any vendor).
#pragma once

#include "simd.h"
#include "transpose4.h"

#include <algorithm>

namespace edgesentry_tiles {
namespace {

using edgesentry_simd::load4;
using edgesentry_simd::store4;
using edgesentry_simd::v4d;

inline long round_up4(long n) { return (n + 3) & ~3L; }

// The Gram tiles' vector: one native register of doubles. On x86-64 that is v4d; on NEON two
// lanes, so that the 16 accumulators and 8 loads of a tile fit the 32 q registers (16 v4d
// accumulators alone would take all 32, and the loop spilled 41 registers per iteration).
typedef double vgram __attribute__((vector_size(edgesentry_simd::kVectorBytes), aligned(8)));
constexpr int kGramLanes = edgesentry_simd::kVectorBytes / sizeof(double);

// 8 doubles: one AVX-512 register, the width OpenBLAS's own float64 kernels use on such CPUs
// (global RX's moments take it there; elsewhere the type is only instantiated for tests).
typedef double v8d __attribute__((vector_size(64), aligned(8)));

template <typename VG>
__attribute__((always_inline)) inline VG load_vec(const double* p) {
  VG v;
  __builtin_memcpy(&v, p, sizeof v);  // an unaligned vector load
  return v;
}
template <typename VG>
__attribute__((always_inline)) inline double hsum_vec(VG v) {  // a pairwise tree, lane order fixed
  constexpr int L = sizeof(VG) / sizeof(double);
  if constexpr (L == 2) return v[0] + v[1];
  else if constexpr (L == 4) return (v[0] + v[1]) + (v[2] + v[3]);
  else return ((v[0] + v[1]) + (v[2] + v[3])) + ((v[4] + v[5]) + (v[6] + v[7]));
}
__attribute__((always_inline)) inline vgram load_gram(const double* p) { return load_vec<vgram>(p); }
__attribute__((always_inline)) inline double hsum(vgram v) { return hsum_vec(v); }

// out[m][q] = sum_{k < len} a[i0 + m][k] a[j0 + q][k] (rows of a row-major matrix, len a multiple
// of the vector's lanes): 16 vector accumulators fed by 8 loads per 16 FMAs.
template <typename VG>
__attribute__((always_inline)) inline void tile_dots_t(const double* a, long ld, long i0, long j0, long len,
                                                       double out[4][4]) {
  constexpr int L = sizeof(VG) / sizeof(double);
  VG acc[4][4] = {};
  const double *ri = a + i0 * ld, *rj = a + j0 * ld;
  for (long k = 0; k < len; k += L) {
    VG x[4], y[4];
    for (int m = 0; m < 4; ++m) {
      x[m] = load_vec<VG>(ri + m * ld + k);
      y[m] = load_vec<VG>(rj + m * ld + k);
    }
    for (int m = 0; m < 4; ++m)
      for (int q = 0; q < 4; ++q) acc[m][q] += x[m] * y[q];
  }
  for (int m = 0; m < 4; ++m)
    for (int q = 0; q < 4; ++q) out[m][q] = hsum_vec(acc[m][q]);
}

__attribute__((always_inline)) inline void tile_dots(const double* a, long ld, long i0, long j0, long len,
                                                     double out[4][4]) {
  tile_dots_t<vgram>(a, ld, i0, j0, len, out);
}

// zt[b][k] = px[k][b] - mean[b] (band-major, zero-padded to bp rows and `len` columns), four
// pixels x four bands per register transpose (scalar strided stores were ~1/5 of global RX).
#if defined(EDGESENTRY_X86) && defined(__GNUC__) && !defined(__clang__)
__attribute__((target_clones("arch=x86-64-v4", "arch=x86-64-v3", "default")))
#endif
void pack_band_major(const double* const* px, long count, long bands, long bp, long len, const double* mean,
                     double* zt, long ldz) {
  for (long b = 0; b < bp; ++b) std::fill(zt + b * ldz + count, zt + b * ldz + len, 0.0);
  for (long b = bands; b < bp; ++b) std::fill(zt + b * ldz, zt + b * ldz + count, 0.0);
  const long count4 = count & ~3L, bands4 = bands & ~3L;
  for (long k = 0; k < count4; k += 4) {
    long b = 0;
    for (; b < bands4; b += 4) {
      const v4d m = load4(mean + b);
      v4d col[4];
      edgesentry_simd::transpose4(load4(px[k] + b) - m, load4(px[k + 1] + b) - m, load4(px[k + 2] + b) - m,
                                  load4(px[k + 3] + b) - m, col);
      for (int i = 0; i < 4; ++i) store4(zt + (b + i) * ldz + k, col[i]);
    }
    for (; b < bands; ++b)
      for (long q = 0; q < 4; ++q) zt[b * ldz + k + q] = px[k + q][b] - mean[b];
  }
  for (long k = count4; k < count; ++k)
    for (long b = 0; b < bands; ++b) zt[b * ldz + k] = px[k][b] - mean[b];
}

// f[i][j] (+)= sum_{k < len} zt[i][k] zt[j][k] for the lower triangle of the n x n result
// (n % 4 == 0), in 4 x 4 tiles; `accumulate` adds to f instead of overwriting it.
template <typename VG>
__attribute__((always_inline)) inline void lower_gram_t(const double* zt, long ldz, long len, long n, double* f,
                                                        long ldf, bool accumulate) {
  double s[4][4];
  for (long i0 = 0; i0 < n; i0 += 4)
    for (long j0 = 0; j0 <= i0; j0 += 4) {
      tile_dots_t<VG>(zt, ldz, i0, j0, len, s);
      for (int m = 0; m < 4; ++m)
        for (int q = 0; q < 4; ++q) {
          double& dst = f[(i0 + m) * ldf + j0 + q];
          dst = accumulate ? dst + s[m][q] : s[m][q];
        }
    }
}

#if defined(EDGESENTRY_X86) && defined(__GNUC__) && !defined(__clang__)
__attribute__((target_clones("arch=x86-64-v4", "arch=x86-64-v3", "default")))
#endif
void lower_gram(const double* zt, long ldz, long len, long n, double* f, long ldf, bool accumulate) {
  lower_gram_t<vgram>(zt, ldz, len, n, f, ldf, accumulate);
}

}  // namespace
}  // namespace edgesentry_tiles
