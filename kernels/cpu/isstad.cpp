// ISSTAD anomaly-score fusion on the CPU: two passes over the image, no scipy round trips.
//
// Specification: edgesentry/kernels/isstad/reference.py (the seed's numpy/scipy path).
//
// Pass 1 (rows in parallel): P = mean_k sigmoid(l1_k - l0_k) (the 2-class softmax, fused
//   over the K heads), R = mean_c (recon - image)^2, the row min/max of R, and the
//   horizontal 33-tap Gaussian of P, R and P*R with half-sample-symmetric borders
//   (scipy's 'reflect'), all while the row is in cache.
// Pass 2 (rows in parallel): the vertical 33-tap pass and the epilogue. The blur is linear
//   and the min-max affine, so G(P * Rn) = (G(P*R) - m G(P)) / (M - m) and
//   G(Rn) = (G(R) - m) / (M - m): nothing has to wait for min/max before blurring.
//   The epilogue writes the selected pixel map and per-row partial sums of the image
//   score (float64); the weighted score's top-p means use nth_element on G(P), G(R).
//
// Accumulation is float32 (33 taps; the reference accumulates in float64 and rounds to
// float32 per pass: the difference is ~1e-7 relative).
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>

#include "simd.h"
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <functional>
#include <memory>
#include <stdexcept>
#include <string>
#include <type_traits>
#include <utility>
#include <vector>

#ifdef _OPENMP
#include <omp.h>
#endif
#ifdef EDGESENTRY_NEON
#include <arm_neon.h>
#endif

namespace py = pybind11;

// No FP-exception semantics are needed here; without this GCC will not if-convert the
// clamps of fast_exp, and the head loop stays scalar.
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC optimize("no-trapping-math")
#endif

namespace {

enum PixelMode { kOriginal = 0, kHam = 1, kAlpha = 2, kMax = 3 };
enum ImageMode { kMean = 0, kAlphaMean = 1, kWeighted = 2 };

// Row helpers are leaf functions cloned per ISA (AVX2+FMA / FMA / baseline) so that one
// portable wheel still runs 8-wide FMA where the CPU has it; on ARM NEON is the baseline.
#ifdef EDGESENTRY_X86
#define ES_CLONES __attribute__((target_clones("arch=x86-64-v3", "fma", "default")))
#else
#define ES_CLONES
#endif

// exp(x) for float without a libm call, so the head loop vectorises: 2^n * p(r) with the
// Cephes polynomial, |rel err| < 2e-7 on [-87, 88] (inputs are clamped there).
__attribute__((always_inline)) inline float fast_exp(float x) {
  x = x > 88.0f ? 88.0f : x;
  x = x < -87.0f ? -87.0f : x;
  const float magic = 12582912.0f;  // 1.5 * 2^23: adding it rounds to the nearest integer
  const float n = (x * 1.44269504088896341f + magic) - magic;
  float r = x - n * 0.693145751953125f;  // ln2 split in hi + lo for an exact reduction
  r = r - n * 1.428606765330187045e-06f;
  float p = 1.9875691500e-4f;
  p = p * r + 1.3981999507e-3f;
  p = p * r + 8.3334519073e-3f;
  p = p * r + 4.1665795894e-2f;
  p = p * r + 1.6666665459e-1f;
  p = p * r + 5.0000001201e-1f;
  p = p * r * r + r + 1.0f;
  union {
    int32_t i;
    float f;
  } scale;  // 2^n built in the exponent field (n in [-126, 127] after the clamp)
  scale.i = (static_cast<int32_t>(n) + 127) << 23;
  return p * scale.f;
}

// out[j] = mean_k 1 / (1 + exp(l0_k[j] - l1_k[j])); l0 of head k at heads + 2k * hw.
ES_CLONES void prob_row(const float* heads, int64_t k, int64_t hw, int64_t w, float* out) {
  for (int64_t j = 0; j < w; ++j) out[j] = 0.0f;
  for (int64_t q = 0; q < k; ++q) {
    const float* l0 = heads + 2 * q * hw;
    const float* l1 = l0 + hw;
#pragma omp simd
    for (int64_t j = 0; j < w; ++j) out[j] += 1.0f / (1.0f + fast_exp(l0[j] - l1[j]));
  }
  const float inv_k = 1.0f / static_cast<float>(k);
#pragma omp simd
  for (int64_t j = 0; j < w; ++j) out[j] *= inv_k;
}

// out[j] = mean_c (a_c[j] - b_c[j])^2; channel planes hw apart.
ES_CLONES void error_row(const float* a, const float* b, int64_t c, int64_t hw, int64_t w, float* out) {
  for (int64_t j = 0; j < w; ++j) out[j] = 0.0f;
  for (int64_t q = 0; q < c; ++q) {
    const float* x = a + q * hw;
    const float* y = b + q * hw;
#pragma omp simd
    for (int64_t j = 0; j < w; ++j) {
      const float d = x[j] - y[j];
      out[j] += d * d;
    }
  }
  const float inv_c = 1.0f / static_cast<float>(c);
#pragma omp simd
  for (int64_t j = 0; j < w; ++j) out[j] *= inv_c;
}

// The FIRs below keep 8..16 output columns in registers and run over the taps fully
// unrolled (NT is a template constant: 33 for the seed's sigma 4 / truncate 4). The taps are
// symmetric, so mirrored samples are added first: 16 adds + 17 FMAs per output instead of
// 33 FMAs, and on cores with separate add and FMA pipes the two halves overlap.
// Horizontal FIR of a padded row: out[j] = sum_t taps[t] * pad[j + t].
template <int NT>
ES_CLONES void hblur_row(const float* __restrict pad, const float* __restrict taps, int64_t w,
                         float* __restrict out) {
  constexpr int R = NT / 2;
#pragma omp simd
  for (int64_t j = 0; j < w; ++j) {
    // four partial sums: one chain of 17 dependent FMAs would make the loop latency-bound
    float acc[4] = {taps[R] * pad[j + R], 0.0f, 0.0f, 0.0f};
#pragma GCC unroll 64
    for (int t = 0; t < R; ++t) acc[t % 4] += taps[t] * (pad[j + t] + pad[j + NT - 1 - t]);
    out[j] = (acc[0] + acc[1]) + (acc[2] + acc[3]);
  }
}

// Vertical FIR: out[j] = sum_t taps[t] * rows[t][j] (rows = the reflected source rows).
template <int NT>
ES_CLONES void vblur_row(const float* const* __restrict rows, const float* __restrict taps, int64_t w,
                         float* __restrict out) {
  constexpr int R = NT / 2;
#pragma omp simd
  for (int64_t j = 0; j < w; ++j) {
    float acc = taps[R] * rows[R][j];
#pragma GCC unroll 64
    for (int t = 0; t < R; ++t) acc += taps[t] * (rows[t][j] + rows[NT - 1 - t][j]);
    out[j] = acc;
  }
}

// Vertical FIR of two consecutive output rows at once: out0 from rows[0 .. NT-1], out1 from
// rows[1 .. NT]. The two rows share all NT + 1 loads, and the row pointers are read once per
// 16 columns rather than once per column vector: the one-row version (vblur_row) reloaded its
// 33 spilled pointers and 33 samples for every 8 outputs and ran load-bound at ~3x this cost.
typedef float v8f __attribute__((vector_size(32)));
typedef float v8f_u __attribute__((vector_size(32), aligned(alignof(float))));

__attribute__((always_inline)) inline v8f load8(const float* p) { return *reinterpret_cast<const v8f_u*>(p); }
__attribute__((always_inline)) inline void store8(float* p, v8f v) { *reinterpret_cast<v8f_u*>(p) = v; }

template <int NT>
ES_CLONES void vblur_pair(const float* const* __restrict rows, const float* __restrict taps, int64_t w,
                          float* __restrict out0, float* __restrict out1) {
  constexpr int R = NT / 2;
  int64_t j = 0;
  for (; j + 16 <= w; j += 16) {
    const v8f centre = v8f{} + taps[R];
    // two partial sums per output vector (even / odd taps): 8 independent FMA chains
    v8f a0[2] = {centre * load8(rows[R] + j), v8f{}}, a1[2] = {centre * load8(rows[R] + j + 8), v8f{}};
    v8f b0[2] = {centre * load8(rows[R + 1] + j), v8f{}}, b1[2] = {centre * load8(rows[R + 1] + j + 8), v8f{}};
#pragma GCC unroll 64
    for (int t = 0; t < R; ++t) {
      const v8f tap = v8f{} + taps[t];
      const float *lo = rows[t] + j, *hi = rows[NT - 1 - t] + j;
      const float *lo1 = rows[t + 1] + j, *hi1 = rows[NT - t] + j;
      a0[t % 2] += tap * (load8(lo) + load8(hi));
      a1[t % 2] += tap * (load8(lo + 8) + load8(hi + 8));
      b0[t % 2] += tap * (load8(lo1) + load8(hi1));
      b1[t % 2] += tap * (load8(lo1 + 8) + load8(hi1 + 8));
    }
    store8(out0 + j, a0[0] + a0[1]);
    store8(out0 + j + 8, a1[0] + a1[1]);
    store8(out1 + j, b0[0] + b0[1]);
    store8(out1 + j + 8, b1[0] + b1[1]);
  }
  for (; j < w; ++j) {
    float a = taps[R] * rows[R][j], b = taps[R] * rows[R + 1][j];
    for (int t = 0; t < R; ++t) {
      a += taps[t] * (rows[t][j] + rows[NT - 1 - t][j]);
      b += taps[t] * (rows[t + 1][j] + rows[NT - t][j]);
    }
    out0[j] = a;
    out1[j] = b;
  }
}

// Any other tap count (not used by the seed's blur; kept so the op stays general).
void hblur_row_any(const float* pad, const float* taps, int ntaps, int64_t w, float* out) {
  for (int64_t j = 0; j < w; ++j) {
    float acc = 0.0f;
    for (int t = 0; t < ntaps; ++t) acc += taps[t] * pad[j + t];
    out[j] = acc;
  }
}

void vblur_row_any(const float* const* rows, const float* taps, int ntaps, int64_t w, float* out) {
  for (int64_t j = 0; j < w; ++j) {
    float acc = 0.0f;
    for (int t = 0; t < ntaps; ++t) acc += taps[t] * rows[t][j];
    out[j] = acc;
  }
}

#ifdef EDGESENTRY_NEON
// aarch64: the seed's FIRs with the taps held in registers, four per register, each FMA taking
// its tap by lane (fmla v.4s, v.4s, v.s[i]). The generic loops above splat every tap into a
// register of its own: with 17 taps and 16 accumulators they outgrew NEON's 32 registers and
// reloaded taps and row pointers from the stack (84 spills per 128 FMAs in vblur_pair). The
// mirrored samples are not folded here (33 FMAs per output instead of 16 adds + 17 FMAs: the
// same count of FP operations, one pipe kind); 8 accumulators cover the FMA latency of two
// pipes. float32 accumulation as on x86-64, in another order: ~1e-7 relative between them.
template <int NT>
struct NeonTaps {
  static constexpr int kRegs = (NT + 3) / 4;
  float32x4_t q[kRegs];
  explicit NeonTaps(const float* taps) {
    float padded[kRegs * 4] = {};
    std::memcpy(padded, taps, sizeof(float) * NT);
    for (int i = 0; i < kRegs; ++i) q[i] = vld1q_f32(padded + 4 * i);
  }
  template <int T>
  __attribute__((always_inline)) float32x4_t fma(float32x4_t acc, float32x4_t x) const {
    return vfmaq_laneq_f32(acc, x, q[T / 4], T % 4);
  }
  // GCC expands the by-lane FMA into a lane splat + FMA and hoists the 33 splats out of the
  // loop, which then spill. Marking the tap registers as changed once per block (an empty asm,
  // no instruction) keeps the splats inside, where they fuse back into by-lane FMAs.
  __attribute__((always_inline)) void pin() {
    for (int i = 0; i < kRegs; ++i) asm volatile("" : "+w"(q[i]));
  }
};

// f(std::integral_constant<int, T>) for T = 0 .. N - 1, unrolled at compile time (lane
// indices must be constants).
template <typename F, int... T>
__attribute__((always_inline)) inline void unroll(F&& f, std::integer_sequence<int, T...>) {
  (f(std::integral_constant<int, T>{}), ...);
}

// NV vectors of outputs at column j: out[j + c] = sum_t taps[t] * pad[j + c + t]. Each
// (unaligned) source vector pad[j + C ..] is loaded once and feeds every output vector V whose
// window holds it, with tap C - 4 V: 4 (NV - 1) + NT loads per NV x NT FMAs, each value used
// right after its load (loading per output vector and tap made GCC merge the repeated
// addresses and keep them live across taps: 108 spills per 264 FMAs).
template <int NT, int NV>
__attribute__((always_inline)) inline void hblur_block(const float* pad, NeonTaps<NT>& k, int64_t j, float* out) {
  k.pin();
  float32x4_t acc[NV];
  for (int v = 0; v < NV; ++v) acc[v] = vdupq_n_f32(0.0f);
  unroll([&](auto c) {
    constexpr int C = decltype(c)::value;
    const float32x4_t x = vld1q_f32(pad + j + C);
    unroll([&](auto v) {
      constexpr int V = decltype(v)::value, T = C - 4 * V;
      if constexpr (T >= 0 && T < NT) acc[V] = k.template fma<T>(acc[V], x);
    }, std::make_integer_sequence<int, NV>{});
  }, std::make_integer_sequence<int, 4 * (NV - 1) + NT>{});
  for (int v = 0; v < NV; ++v) vst1q_f32(out + j + 4 * v, acc[v]);
}

template <int NT>
void hblur_row_neon(const float* pad, const float* taps, int64_t w, float* out) {
  NeonTaps<NT> k(taps);
  int64_t j = 0;
  for (; j + 32 <= w; j += 32) hblur_block<NT, 8>(pad, k, j, out);
  for (; j + 4 <= w; j += 4) hblur_block<NT, 1>(pad, k, j, out);
  for (; j < w; ++j) {
    float acc = 0.0f;
    for (int t = 0; t < NT; ++t) acc += taps[t] * pad[j + t];
    out[j] = acc;
  }
}

// Two output rows from the NT + 1 source rows: out0 = sum_s taps[s] rows[s],
// out1 = sum_s taps[s] rows[s + 1]; each source vector is loaded once for both.
template <int NT>
void vblur_pair_neon(const float* const* __restrict rows, const float* taps, int64_t w, float* out0, float* out1) {
  NeonTaps<NT> k(taps);
  int64_t j = 0;
  for (; j + 16 <= w; j += 16) {
    k.pin();
    float32x4_t a[4], b[4];
    for (int v = 0; v < 4; ++v) a[v] = b[v] = vdupq_n_f32(0.0f);
    unroll([&](auto s) {
      constexpr int S = decltype(s)::value;
      const float* row = rows[S] + j;
      for (int v = 0; v < 4; ++v) {
        const float32x4_t x = vld1q_f32(row + 4 * v);
        if constexpr (S < NT) a[v] = k.template fma<S>(a[v], x);
        if constexpr (S > 0) b[v] = k.template fma<S - 1>(b[v], x);
      }
    }, std::make_integer_sequence<int, NT + 1>{});
    for (int v = 0; v < 4; ++v) {
      vst1q_f32(out0 + j + 4 * v, a[v]);
      vst1q_f32(out1 + j + 4 * v, b[v]);
    }
  }
  for (; j < w; ++j) {
    float a = 0.0f, b = 0.0f;
    for (int t = 0; t < NT; ++t) {
      a += taps[t] * rows[t][j];
      b += taps[t] * rows[t + 1][j];
    }
    out0[j] = a;
    out1[j] = b;
  }
}
#endif

constexpr int kSeedTaps = 33;

// Symmetric 33 taps (the seed's) take the unrolled path; anything else the generic loop.
inline void hblur(const float* pad, const float* taps, int ntaps, int64_t w, float* out) {
#ifdef EDGESENTRY_NEON
  if (ntaps == kSeedTaps) hblur_row_neon<kSeedTaps>(pad, taps, w, out);
#else
  if (ntaps == kSeedTaps) hblur_row<kSeedTaps>(pad, taps, w, out);
#endif
  else hblur_row_any(pad, taps, ntaps, w, out);
}

inline void vblur(const float* const* rows, const float* taps, int ntaps, int64_t w, float* out) {
  if (ntaps == kSeedTaps) vblur_row<kSeedTaps>(rows, taps, w, out);
  else vblur_row_any(rows, taps, ntaps, w, out);
}

// rows: ntaps + 1 source rows; out0 / out1 the two output rows they cover.
inline void vblur2(const float* const* rows, const float* taps, int ntaps, int64_t w, float* out0, float* out1) {
  if (ntaps == kSeedTaps) {
#ifdef EDGESENTRY_NEON
    vblur_pair_neon<kSeedTaps>(rows, taps, w, out0, out1);
#else
    vblur_pair<kSeedTaps>(rows, taps, w, out0, out1);
#endif
  } else {
    vblur_row_any(rows, taps, ntaps, w, out0);
    vblur_row_any(rows + 1, taps, ntaps, w, out1);
  }
}

// Row min and max of R (vectorised reductions).
ES_CLONES void row_min_max(const float* __restrict r, int64_t w, float* lo_out, float* hi_out) {
  float lo = r[0], hi = r[0];
#pragma omp simd reduction(min : lo) reduction(max : hi)
  for (int64_t j = 0; j < w; ++j) {
    lo = r[j] < lo ? r[j] : lo;
    hi = r[j] > hi ? r[j] : hi;
  }
  *lo_out = lo;
  *hi_out = hi;
}

// The epilogue of one output row: the pixel map by linearity and the row's share of the
// image score (float64 sum).
ES_CLONES double epilogue_row(const float* __restrict ap, const float* __restrict ar, const float* __restrict apr,
                              int64_t w, int pixel_mode, int image_mode, float m, float inv_span,
                              float* __restrict out) {
  if (pixel_mode == 0 || pixel_mode == 1) {
    const float scale = pixel_mode == 0 ? 255.0f * inv_span : inv_span;
#pragma omp simd
    for (int64_t j = 0; j < w; ++j) out[j] = (apr[j] - m * ap[j]) * scale;
  } else if (pixel_mode == 2) {
#pragma omp simd
    for (int64_t j = 0; j < w; ++j) out[j] = 0.5f * ap[j] + 0.5f * ((ar[j] - m) * inv_span);
  } else {
#pragma omp simd
    for (int64_t j = 0; j < w; ++j) {
      const float rnb = (ar[j] - m) * inv_span;
      out[j] = ap[j] > rnb ? ap[j] : rnb;
    }
  }
  double acc = 0.0;
  if (image_mode == 0) {
#pragma omp simd reduction(+ : acc)
    for (int64_t j = 0; j < w; ++j) acc += static_cast<double>(ap[j] * ar[j]);
  } else if (image_mode == 1) {
#pragma omp simd reduction(+ : acc)
    for (int64_t j = 0; j < w; ++j) acc += static_cast<double>(0.5f * ap[j] + 0.5f * ((ar[j] - m) * inv_span));
  }
  return acc;
}

// Half-sample-symmetric index (scipy 'reflect'), valid for any offset (period 2n).
inline int64_t reflect(int64_t k, int64_t n) {
  const int64_t period = 2 * n;
  k %= period;
  if (k < 0) k += period;
  return k < n ? k : period - 1 - k;
}

struct Shape {
  int64_t b, k, c, h, w;
  bool logits;
};

// Mean of the k largest values, exactly, in linear time: a 4096-bin histogram over the value
// range [min, max] (the bin index is monotonic in the value, so every bin above the threshold
// bin is wholly in the top k), then nth_element over the threshold bin's few values only.
// Blurred maps are smooth, so bins by value spread them well (bins by the float's high bits
// put most of a map in one or two bins and needed a second 64 K-bin level).
double top_mean(const std::vector<float>& values, int64_t k) {
  constexpr int kBins = 4096;
  const auto [lo_it, hi_it] = std::minmax_element(values.begin(), values.end());
  const float lo = *lo_it, hi = *hi_it;
  if (!(hi > lo)) return static_cast<double>(lo);  // constant map
  const float scale = static_cast<float>(kBins) / (hi - lo);
  const auto bin_of = [&](float v) { return std::min(kBins - 1, static_cast<int>((v - lo) * scale)); };
  std::vector<int32_t> hist(kBins, 0);
  for (const float v : values) ++hist[bin_of(v)];
  int64_t above = 0;
  int bin = kBins - 1;
  for (; bin > 0 && above + hist[bin] < k; --bin) above += hist[bin];
  double sum = 0.0;
  std::vector<float> edge;
  edge.reserve(static_cast<size_t>(hist[bin]));
  for (const float v : values) {
    const int b = bin_of(v);
    if (b > bin) sum += v;
    else if (b == bin) edge.push_back(v);
  }
  const int64_t need = k - above;  // 1 <= need <= edge.size()
  std::nth_element(edge.begin(), edge.end() - need, edge.end());
  for (auto it = edge.end() - need; it != edge.end(); ++it) sum += *it;
  return sum / static_cast<double>(k);
}

// An uninitialised float buffer (std::vector would zero-fill it first).
struct Scratch {
  std::unique_ptr<float[]> buffer;
  float* data() const { return buffer.get(); }
};
inline Scratch scratch(int64_t n) { return Scratch{std::unique_ptr<float[]>(n > 0 ? new float[n] : nullptr)}; }

// One image. heads: K*2*H*W logits or H*W probabilities; recon/image: C*H*W.
void fuse_one(const float* heads, const float* recon, const float* image, const Shape& s, const float* taps, int radius,
              int pixel_mode, int image_mode, double top_p, double w_m, double w_r, int threads, float* prob,
              float* rerr, float* pixel, double* score) {
  const int64_t h = s.h, w = s.w, hw = h * w;
  const bool need_pr = pixel_mode == kOriginal || pixel_mode == kHam;
  const int ntaps = 2 * radius + 1;
  // pass 1 writes every element before pass 2 reads it: no zero fill (3 x 200 KB per image)
  Scratch hp = scratch(hw), hr = scratch(hw), hpr = scratch(need_pr ? hw : 0);
  std::vector<float> row_min(h), row_max(h);
  std::vector<double> row_sum(h);
  const bool weighted = image_mode == kWeighted;
  std::vector<float> pb_all(weighted ? hw : 0), rb_all(weighted ? hw : 0);
  std::vector<int64_t> col_src(w + 2 * radius);
  for (int64_t j = -radius; j < w + radius; ++j) col_src[j + radius] = reflect(j, w);

  // One parallel region for both passes (the implicit barrier of the first `omp for` orders
  // them): a second region would pay the thread wake-up again for ~0.1 ms of work.
  float m = 0.0f, inv_span = 0.0f;
  double top_p_mean = 0.0, top_r_mean = 0.0;
  const int64_t top_k = std::min(hw, std::max<int64_t>(1, static_cast<int64_t>(std::ceil(top_p * static_cast<double>(hw)))));
#pragma omp parallel num_threads(threads)
  {
    // ---------------------------------------------------------------- pass 1: rows
    std::vector<float> pad_p(w + 2 * radius), pad_r(w + 2 * radius), pad_pr(w + 2 * radius);
#pragma omp for schedule(static)
    for (int64_t i = 0; i < h; ++i) {
      float* p_row = prob + i * w;
      float* r_row = rerr + i * w;
      if (s.logits) {
        prob_row(heads + i * w, s.k, hw, w, p_row);
      } else {
        std::memcpy(p_row, heads + i * w, sizeof(float) * w);
      }
      error_row(recon + i * w, image + i * w, s.c, hw, w, r_row);
      row_min_max(r_row, w, &row_min[i], &row_max[i]);
      // Interior by memcpy, the 2 x radius border samples through the reflected index.
      std::memcpy(pad_p.data() + radius, p_row, sizeof(float) * w);
      std::memcpy(pad_r.data() + radius, r_row, sizeof(float) * w);
      for (int64_t j = 0; j < radius; ++j) {
        const int64_t lo_src = col_src[j], hi_src = col_src[w + radius + j];
        pad_p[j] = p_row[lo_src];
        pad_r[j] = r_row[lo_src];
        pad_p[w + radius + j] = p_row[hi_src];
        pad_r[w + radius + j] = r_row[hi_src];
      }
      hblur(pad_p.data(), taps, ntaps, w, hp.data() + i * w);
      hblur(pad_r.data(), taps, ntaps, w, hr.data() + i * w);
      if (need_pr) {
        for (int64_t j = 0; j < w + 2 * radius; ++j) pad_pr[j] = pad_p[j] * pad_r[j];
        hblur(pad_pr.data(), taps, ntaps, w, hpr.data() + i * w);
      }
    }
#pragma omp single
    {
      m = *std::min_element(row_min.begin(), row_min.end());
      const float mx = *std::max_element(row_max.begin(), row_max.end());
      // Constant R: the seed divides by zero; Rn is defined as 0 here (see reference.py).
      inv_span = mx > m ? 1.0f / (mx - m) : 0.0f;
    }  // implicit barrier: every thread sees m and inv_span

    // --------------------------------------------------------- pass 2: columns + epilogue
    // Output rows in pairs (i, i + 1): they share 33 of their 34 source rows (vblur_pair).
    std::vector<float> ap(2 * w), ar(2 * w), apr(need_pr ? 2 * w : 0);
    std::vector<const float*> rows_p(ntaps + 1), rows_r(ntaps + 1), rows_pr(ntaps + 1);
#pragma omp for schedule(static)
    for (int64_t pair = 0; pair < (h + 1) / 2; ++pair) {
      const int64_t i = 2 * pair;
      const int64_t count = std::min<int64_t>(2, h - i);
      for (int t = 0; t <= ntaps; ++t) {
        const int64_t off = reflect(i + t - radius, h) * w;
        rows_p[t] = hp.data() + off;
        rows_r[t] = hr.data() + off;
        if (need_pr) rows_pr[t] = hpr.data() + off;
      }
      if (count == 2) {
        vblur2(rows_p.data(), taps, ntaps, w, ap.data(), ap.data() + w);
        vblur2(rows_r.data(), taps, ntaps, w, ar.data(), ar.data() + w);
        if (need_pr) vblur2(rows_pr.data(), taps, ntaps, w, apr.data(), apr.data() + w);
      } else {
        vblur(rows_p.data(), taps, ntaps, w, ap.data());
        vblur(rows_r.data(), taps, ntaps, w, ar.data());
        if (need_pr) vblur(rows_pr.data(), taps, ntaps, w, apr.data());
      }
      for (int64_t k = 0; k < count; ++k) {
        const int64_t row = i + k, at = k * w;
        row_sum[row] = epilogue_row(ap.data() + at, ar.data() + at, need_pr ? apr.data() + at : ap.data() + at, w,
                                    pixel_mode, image_mode, m, inv_span, pixel + row * w);
        if (image_mode == kWeighted) {
          std::memcpy(pb_all.data() + row * w, ap.data() + at, sizeof(float) * w);
          std::memcpy(rb_all.data() + row * w, ar.data() + at, sizeof(float) * w);
        }
      }
    }
    if (weighted) {  // the two top-p means are independent: one per thread
#pragma omp sections
      {
#pragma omp section
        top_p_mean = top_mean(pb_all, top_k);
#pragma omp section
        top_r_mean = top_mean(rb_all, top_k);
      }
    }
  }
  if (weighted) {
    *score = std::pow(1.0 + top_p_mean, w_m) * std::pow(1.0 + top_r_mean, w_r);
  } else {
    double total = 0.0;
    for (int64_t i = 0; i < h; ++i) total += row_sum[i];
    *score = total / static_cast<double>(hw);
  }
}

using FArray = py::array_t<float, py::array::c_style | py::array::forcecast>;
using DArray = py::array_t<double, py::array::c_style | py::array::forcecast>;

std::string shape_str(const py::array& a) {
  std::string out = "(";
  for (py::ssize_t i = 0; i < a.ndim(); ++i) out += (i ? ", " : "") + std::to_string(a.shape(i));
  return out + ")";
}

py::tuple fusion(FArray heads, FArray recon, FArray image, int pixel_mode, int image_mode, double top_p, double w_m,
                 double w_r, DArray taps64, int threads, bool poison) {
  if (recon.ndim() != 4 || image.ndim() != 4)
    throw std::invalid_argument("recon and image must be (B, C, H, W); got " + shape_str(recon) + " and " +
                                shape_str(image));
  for (int d = 0; d < 4; ++d)
    if (recon.shape(d) != image.shape(d))
      throw std::invalid_argument("recon " + shape_str(recon) + " and image " + shape_str(image) + " differ");
  Shape s{recon.shape(0), 0, recon.shape(1), recon.shape(2), recon.shape(3), false};
  if (heads.ndim() == 5) {
    if (heads.shape(0) != s.b || heads.shape(2) != 2 || heads.shape(3) != s.h || heads.shape(4) != s.w)
      throw std::invalid_argument("logits must be (B, K, 2, H, W) = (" + std::to_string(s.b) + ", K, 2, " +
                                  std::to_string(s.h) + ", " + std::to_string(s.w) + "); got " + shape_str(heads));
    s.k = heads.shape(1);
    s.logits = true;
    if (s.k < 1) throw std::invalid_argument("logits need at least one head; got " + shape_str(heads));
  } else if (heads.ndim() == 3) {
    if (heads.shape(0) != s.b || heads.shape(1) != s.h || heads.shape(2) != s.w)
      throw std::invalid_argument("probability must be (B, H, W) matching recon; got " + shape_str(heads));
  } else {
    throw std::invalid_argument("heads must be (B, K, 2, H, W) logits or (B, H, W) probability; got " +
                                shape_str(heads));
  }
  if (pixel_mode < 0 || pixel_mode > 3 || image_mode < 0 || image_mode > 2)
    throw std::invalid_argument("pixel_mode must be 0..3 and image_mode 0..2");
  if (taps64.ndim() != 1 || taps64.shape(0) % 2 == 0)
    throw std::invalid_argument("taps must be a 1-D array of odd length; got " + shape_str(taps64));
  if (s.b < 1 || s.c < 1 || s.h < 1 || s.w < 1) throw std::invalid_argument("empty input " + shape_str(recon));
  const int radius = static_cast<int>(taps64.shape(0) / 2);
  std::vector<float> taps(taps64.shape(0));
  for (size_t t = 0; t < taps.size(); ++t) taps[t] = static_cast<float>(taps64.data()[t]);
  for (size_t t = 0; t < taps.size(); ++t)
    if (taps[t] != taps[taps.size() - 1 - t])
      throw std::invalid_argument("taps must be symmetric (the blur folds mirrored samples)");

  FArray prob({s.b, s.h, s.w}), rerr({s.b, s.h, s.w}), pixel({s.b, s.h, s.w});
  DArray score({s.b});
  const float* hd = heads.data();
  const float* rc = recon.data();
  const float* im = image.data();
  float* pp = prob.mutable_data();
  float* rp = rerr.mutable_data();
  float* xp = pixel.mutable_data();
  double* sp = score.mutable_data();
  const int64_t hw = s.h * s.w;
  if (poison) {  // tests: an element the kernel never writes stays NaN
    std::fill(pp, pp + s.b * hw, NAN);
    std::fill(rp, rp + s.b * hw, NAN);
    std::fill(xp, xp + s.b * hw, NAN);
    std::fill(sp, sp + s.b, NAN);
  }
  const int64_t head_stride = s.logits ? s.k * 2 * hw : hw;
  {
    py::gil_scoped_release release;
#ifdef _OPENMP
    const int nthreads = threads > 0 ? threads : omp_get_max_threads();
#else
    const int nthreads = 1;
#endif
    // A batch of at least one image per thread runs image-parallel (no barriers inside an
    // image); otherwise each image is row-parallel (the inner regions get the threads).
    const bool by_image = s.b >= 2 && nthreads > 1;
    // A single image is row-parallel on all cores by default (one parallel region, one
    // barrier between the passes: 1.5x on 2 idle cores). On an oversubscribed machine the
    // barrier can stall for a scheduler quantum; threads = 1 opts out.
    const int row_threads = nthreads;
#pragma omp parallel for schedule(dynamic, 1) num_threads(nthreads) if (by_image)
    for (int64_t b = 0; b < s.b; ++b) {
      fuse_one(hd + b * head_stride, rc + b * s.c * hw, im + b * s.c * hw, s, taps.data(), radius, pixel_mode,
               image_mode, top_p, w_m, w_r, by_image ? 1 : row_threads, pp + b * hw, rp + b * hw, xp + b * hw, sp + b);
    }
  }
  return py::make_tuple(prob, rerr, pixel, score);
}

}  // namespace

PYBIND11_MODULE(_cpu_isstad, m) {
  m.doc() = "ISSTAD anomaly-score fusion (P, R, 33-tap symmetric Gaussian, min-max, scores), CPU tier";
  m.def("fusion", &fusion, py::arg("heads"), py::arg("recon"), py::arg("image"), py::arg("pixel_mode"),
        py::arg("image_mode"), py::arg("top_p"), py::arg("w_m"), py::arg("w_r"), py::arg("taps"), py::arg("threads") = 0, py::arg("poison") = false,
        "Fused post-processing; returns (P, R, pixel_map, score).");
}
