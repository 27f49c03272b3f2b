// 4 x 4 transpose of doubles held in four 4-lane GCC/Clang vectors: rows (a, b, c, d) ->
// columns out[0..3]. Shared by the RX kernels (packing pixels band-major, interleaving four
// pixels' covariances); one AVX2 register per vector in the x86-64-v3/v4 clones.
#pragma once

#include "simd.h"

namespace edgesentry_simd {

typedef long long mask4 __attribute__((vector_size(32)));

template <typename V>
__attribute__((always_inline)) inline void transpose4(V a, V b, V c, V d, V* out) {
  const V t0 = __builtin_shuffle(a, b, mask4{0, 4, 2, 6}), t1 = __builtin_shuffle(a, b, mask4{1, 5, 3, 7});
  const V t2 = __builtin_shuffle(c, d, mask4{0, 4, 2, 6}), t3 = __builtin_shuffle(c, d, mask4{1, 5, 3, 7});
  out[0] = __builtin_shuffle(t0, t2, mask4{0, 1, 4, 5});
  out[1] = __builtin_shuffle(t1, t3, mask4{0, 1, 4, 5});
  out[2] = __builtin_shuffle(t0, t2, mask4{2, 3, 6, 7});
  out[3] = __builtin_shuffle(t1, t3, mask4{2, 3, 6, 7});
}

#ifdef EDGESENTRY_NEON
// The same transpose of Wide 4-double vectors (two NEON registers each): zip1 / zip2 of halves.
typedef long long mask2 __attribute__((vector_size(16)));

__attribute__((always_inline)) inline void transpose4(const v4d& a, const v4d& b, const v4d& c, const v4d& d,
                                                      v4d* out) {
  const mask2 lo = {0, 2}, hi = {1, 3};
  for (int h = 0; h < 2; ++h) {  // h = 0: lanes 0, 1 -> out[0], out[1]; h = 1: lanes 2, 3 -> out[2], out[3]
    out[2 * h].part[0] = __builtin_shuffle(a.part[h], b.part[h], lo);
    out[2 * h].part[1] = __builtin_shuffle(c.part[h], d.part[h], lo);
    out[2 * h + 1].part[0] = __builtin_shuffle(a.part[h], b.part[h], hi);
    out[2 * h + 1].part[1] = __builtin_shuffle(c.part[h], d.part[h], hi);
  }
}
#endif

}  // namespace edgesentry_simd
