// 4 x 4 transpose of doubles held in four 4-lane GCC/Clang vectors: rows (a, b, c, d) ->
// columns out[0..3]. Shared by the RX kernels (packing pixels band-major, interleaving four
// pixels' covariances); one AVX2 register per vector in the x86-64-v3/v4 clones.
#pragma once

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

}  // namespace edgesentry_simd
