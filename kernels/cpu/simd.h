// The target's instruction set, from the compiler's own target macros (so a cross build for
// aarch64 on an x86-64 host takes the aarch64 paths), and the small vector types the kernels
// share.
//
// EDGESENTRY_X86:  x86-64. Hot loops carry target_clones (x86-64-v4 / v3 / baseline): one
//                  portable wheel runs AVX-512VL or AVX2 + FMA where the CPU has them.
// EDGESENTRY_NEON: aarch64 (Jetson Orin's Cortex-A78AE, Graviton, Ampere). NEON (ASIMD) is part
//                  of the base architecture, so there is nothing to dispatch; register blocks
//                  are sized for its 32 x 128-bit registers.
//
// On x86-64 the 4-double and 16-float vectors are GCC vector types, which GCC maps
// to one AVX2 / AVX-512 register or splits into SSE2 registers per clone. On aarch64 GCC has
// no register mode for vector types wider than 16 bytes: it keeps such variables in memory
// and round-trips every operation through the stack (accumulators included; the checked
// objdump showed a store and a reload around each fmla). There they are `Wide`: an array of
// 16-byte NEON vectors with the same arithmetic, which GCC keeps in registers.
#pragma once

#include <type_traits>

#if defined(__x86_64__) || defined(_M_X64)
#ifndef EDGESENTRY_X86
#define EDGESENTRY_X86 1
#endif
#elif defined(__aarch64__) && defined(__ARM_NEON)
#define EDGESENTRY_NEON 1
#endif

namespace edgesentry_simd {

// Bytes in one native vector register.
#ifdef EDGESENTRY_NEON
constexpr int kVectorBytes = 16;
#else
constexpr int kVectorBytes = 32;  // AVX2 (two SSE2 registers in the baseline clone)
#endif

#ifdef EDGESENTRY_NEON
typedef double v2d __attribute__((vector_size(16)));
typedef float v4f __attribute__((vector_size(16)));

// N native vectors V of lanes E, used as one (N x lanes)-wide vector: elementwise arithmetic
// with vectors and scalars, brace initialisation and lane reads like a GCC vector (lane writes
// take the address: fine outside hot loops).
template <typename V, typename E, int N>
struct Wide {
  typedef V Part;
  static constexpr int kParts = N, kPartLanes = sizeof(V) / sizeof(E);
  V part[N];

  Wide() = default;
  template <typename... T, typename = typename std::enable_if<sizeof...(T) == N * kPartLanes>::type>
  Wide(T... lanes) {  // {a, b, c, d}
    const E values[] = {static_cast<E>(lanes)...};
    __builtin_memcpy(part, values, sizeof part);
  }
  E& operator[](int i) { return reinterpret_cast<E*>(part)[i]; }
  E operator[](int i) const { return part[i / kPartLanes][i % kPartLanes]; }

#define EDGESENTRY_WIDE_OP(op)                                       \
  friend Wide operator op(const Wide& a, const Wide& b) {           \
    Wide r;                                                          \
    for (int i = 0; i < N; ++i) r.part[i] = a.part[i] op b.part[i];  \
    return r;                                                        \
  }                                                                  \
  friend Wide operator op(const Wide& a, E b) {                      \
    Wide r;                                                          \
    for (int i = 0; i < N; ++i) r.part[i] = a.part[i] op b;          \
    return r;                                                        \
  }                                                                  \
  friend Wide operator op(E a, const Wide& b) {                      \
    Wide r;                                                          \
    for (int i = 0; i < N; ++i) r.part[i] = a op b.part[i];          \
    return r;                                                        \
  }                                                                  \
  Wide& operator op##=(const Wide& b) {                              \
    for (int i = 0; i < N; ++i) part[i] = part[i] op b.part[i];      \
    return *this;                                                    \
  }
  EDGESENTRY_WIDE_OP(+)
  EDGESENTRY_WIDE_OP(-)
  EDGESENTRY_WIDE_OP(*)
  EDGESENTRY_WIDE_OP(/)
#undef EDGESENTRY_WIDE_OP
};

typedef Wide<v2d, double, 2> v4d;
typedef Wide<v4f, float, 4> v16f;

// Unaligned loads and stores of a Wide from / to plain arrays.
template <typename W, typename E>
__attribute__((always_inline)) inline W load_wide(const E* p) {
  W w;
  for (int i = 0; i < W::kParts; ++i) __builtin_memcpy(&w.part[i], p + i * W::kPartLanes, sizeof w.part[i]);
  return w;
}
template <typename W, typename E>
__attribute__((always_inline)) inline void store_wide(E* p, const W& w) {
  for (int i = 0; i < W::kParts; ++i) __builtin_memcpy(p + i * W::kPartLanes, &w.part[i], sizeof w.part[i]);
}
template <typename W>
__attribute__((always_inline)) inline W relu_wide(const W& w) {
  W r;
  for (int i = 0; i < W::kParts; ++i) {
    const typename W::Part zero = {};
    r.part[i] = w.part[i] > zero ? w.part[i] : zero;
  }
  return r;
}

__attribute__((always_inline)) inline v4d load4(const double* p) { return load_wide<v4d>(p); }
__attribute__((always_inline)) inline void store4(double* p, const v4d& v) { store_wide(p, v); }
#else
// 4 doubles, loaded and stored unaligned: one AVX2 register (one of the 32 AVX-512VL registers
// in the v4 clones, which keeps 16-accumulator tiles in registers), two SSE2 registers in the
// baseline clones.
typedef double v4d __attribute__((vector_size(32), aligned(8)));

__attribute__((always_inline)) inline v4d load4(const double* p) { return *reinterpret_cast<const v4d*>(p); }
__attribute__((always_inline)) inline void store4(double* p, v4d v) { *reinterpret_cast<v4d*>(p) = v; }
#endif

}  // namespace edgesentry_simd
