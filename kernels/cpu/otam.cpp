// Fused soft-OTAM distance fusion of CLIP-MDMF on the CPU (cosine -> 4 OTAM DPs -> logits).
//
// Specification: edgesentry/kernels/otam/reference.py (fuse_reference / otam_stable).
// One call computes the frame norms, the 1 - a.b / (|a||b| + eps) tiles of every (query, class)
// pair and both OTAM directions of both views. The dot products are a vectorised loop rather
// than BLAS: the tiles are tiny (T x T), and a threaded sgemm next to OpenMP regions made the
// call ~1000x slower on a busy 2-core machine (threads spinning against each other). OpenMP over
// pairs is used only for large galleries. The DPs of 8 (pair, view, direction) problems run in
// lockstep, one per SIMD lane, with two rows of T + 2 cells each and a max-subtracted
// log-sum-exp soft-min, so they equal the seed's float32 recurrence where that is finite and stay
// finite past the point (~52) where the seed's exp(-C / 0.5) underflows to log(0) = inf.
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>

#include "simd.h"
#include "threads.h"
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <memory>
#include <stdexcept>
#include <string>
#include <vector>

namespace py = pybind11;

namespace {

using edgesentry_threads::max_threads;

// softmin(x...) = -lam log sum exp(-x / lam), with the minimum m factored out: its own term
// is exp(0) = 1, so two arguments cost one exp + one log1p and three cost two exps + one log.
// Templated: the fused kernel runs it in float (expf/logf are ~2x cheaper, ~1e-7 relative per
// cell), the single-direction entry point in double.
template <typename F>
inline F softmin2(F a, F b, F lam) {
  const F m = std::min(a, b);
  return m - lam * std::log1p(std::exp(-std::fabs(a - b) / lam));
}

template <typename F>
inline F softmin3(F a, F b, F c, F lam) {
  const F m = std::min(a, std::min(b, c));
  return m - lam * std::log(std::exp((m - a) / lam) + std::exp((m - b) / lam) + std::exp((m - c) / lam));
}

// OTAM of an R x M cost matrix addressed as d(l, j) = base[l * rs + j * cs] (strides let the
// same code read delta and its transpose). prev/cur hold M + 2 cells each.
template <typename F>
F otam_dp(const F* base, int rows, int m_cols, long rs, long cs, F lam, F* prev, F* cur) {
  const int last = m_cols + 1;
  prev[0] = F(0);
  for (int m = 1; m <= m_cols; ++m) prev[m] = prev[m - 1] + base[(m - 1) * cs];
  prev[last] = prev[m_cols];
  for (int l = 1; l < rows; ++l) {
    const F* row = base + l * rs;
    cur[0] = F(0);
    cur[1] = row[0] + softmin3(prev[0], prev[1], cur[0], lam);
    for (int m = 2; m <= m_cols; ++m) cur[m] = row[(m - 1) * cs] + softmin2(prev[m - 1], cur[m - 1], lam);
    cur[last] = softmin3(prev[m_cols], prev[last], cur[m_cols], lam);
    std::swap(prev, cur);
  }
  return prev[last];
}

// ---------------------------------------------------------------- lockstep DP (SIMD)
// The fused kernel runs the OTAM DPs of 8 problems ((pair, view, direction) triples) in
// lockstep, one problem per SIMD lane, so every cell update is a handful of vector ops. The
// lanes are a GCC/Clang vector type rather than an `omp simd` loop: an 8-trip loop was left
// scalar by the vectoriser (alignment peeling), and the vector type maps to one AVX2 register
// in the x86-64-v3 clone, two SSE registers in the baseline. On aarch64 the block is 4
// problems, one NEON register: 8 lanes would be a 32-byte vector, which GCC keeps in memory
// there, and whose compares and selects it turned into 24 scalar fcmpe / fcsel per cell.
// exp and log are branch-free Cody-Waite/Cephes-style polynomials (~2 ulp in float); arguments
// are in the ranges the soft-min produces (exp of <= 0, log of [1, 3]).
#ifdef EDGESENTRY_NEON
constexpr int kLanes = 4;
#else
constexpr int kLanes = 8;
#endif
typedef float vf __attribute__((vector_size(kLanes * sizeof(float))));
typedef int32_t vi __attribute__((vector_size(kLanes * sizeof(int32_t))));
typedef float vf_unaligned __attribute__((vector_size(kLanes * sizeof(float)), aligned(alignof(float))));

__attribute__((always_inline)) inline vf load(const float* p) { return *reinterpret_cast<const vf_unaligned*>(p); }
__attribute__((always_inline)) inline void store(float* p, vf v) { *reinterpret_cast<vf_unaligned*>(p) = v; }
__attribute__((always_inline)) inline vf splat(float x) { return vf{} + x; }
__attribute__((always_inline)) inline vf vmin(vf a, vf b) { return a < b ? a : b; }
__attribute__((always_inline)) inline vf vabs(vf x) {
  return reinterpret_cast<vf>(reinterpret_cast<vi>(x) & 0x7fffffff);
}

__attribute__((always_inline)) inline vf fast_exp(vf x) {
  x = x > -87.0f ? x : splat(-87.0f);
  // round to nearest with the 1.5 * 2^23 trick: branch-free on every ISA
  const vf n = (x * 1.44269504088896341f + 12582912.0f) - 12582912.0f;
  const vf r = (x - n * 0.693359375f) - n * -2.12194440e-4f;
  vf y = splat(1.9875691500e-4f);
  y = y * r + 1.3981999507e-3f;
  y = y * r + 8.3334519073e-3f;
  y = y * r + 4.1665795894e-2f;
  y = y * r + 1.6666665459e-1f;
  y = y * r + 5.0000001201e-1f;
  y = y * r * r + r + 1.0f;
  const vi bits = (__builtin_convertvector(n, vi) + 127) << 23;
  return y * reinterpret_cast<vf>(bits);
}

__attribute__((always_inline)) inline vf fast_log(vf x) {  // x >= 1
  vi bits = reinterpret_cast<vi>(x);
  vf e = __builtin_convertvector(((bits >> 23) & 0xff) - 126, vf);
  bits = (bits & 0x807fffff) | 0x3f000000;  // mantissa in [0.5, 1)
  vf m = reinterpret_cast<vf>(bits);
  const vf low = m < 0.707106781186547524f ? splat(1.0f) : splat(0.0f);
  e -= low;
  m = m + low * m - 1.0f;
  const vf z = m * m;
  vf y = splat(7.0376836292e-2f);
  y = y * m - 1.1514610310e-1f;
  y = y * m + 1.1676998740e-1f;
  y = y * m - 1.2420140846e-1f;
  y = y * m + 1.4249322787e-1f;
  y = y * m - 1.6668057665e-1f;
  y = y * m + 2.0000714765e-1f;
  y = y * m - 2.4999993993e-1f;
  y = y * m + 3.3333331174e-1f;
  y = y * m * z;
  y += -2.12194440e-4f * e;
  y += -0.5f * z;
  return (m + y) + 0.693359375f * e;
}

// Problems per dp_block call: kGroup vectors of kLanes. One vector alone leaves the CPU waiting:
// a row's cells form a dependency chain (each soft-min needs the cell before), ~40 dependent
// vector operations per cell; kGroup independent chains in flight fill the pipelines (measured
// on Zen 3, one thread: the DP stage of a 25 x 100 gallery 4.0 -> 1.9 ms).
constexpr int kGroup = 4;
constexpr int kBlock = kLanes * kGroup;

// d: [rows * m_cols][kBlock] costs; prev/cur: [(m_cols + 2)][kBlock]; out: [kBlock].
#ifdef EDGESENTRY_X86
__attribute__((target_clones("arch=x86-64-v3", "default")))
#endif
void dp_block(const float* d, int rows, int m_cols, float lam, float* prev, float* cur, float* out) {
  const int last = m_cols + 1;
  const float inv = 1.0f / lam;
  for (int g = 0; g < kGroup; ++g) {
    const int o = g * kLanes;
    vf acc = splat(0.0f);
    store(prev + o, acc);
    for (int m = 1; m <= m_cols; ++m) {
      acc += load(d + (m - 1) * kBlock + o);
      store(prev + m * kBlock + o, acc);
    }
    store(prev + last * kBlock + o, acc);
  }
  for (int r = 1; r < rows; ++r) {
    const float* row = d + static_cast<long>(r) * m_cols * kBlock;
    for (int g = 0; g < kGroup; ++g) {  // cur[0] = 0, so softmin(prev[0], prev[1], 0)
      const int o = g * kLanes;
      const vf a = load(prev + o), b = load(prev + kBlock + o);
      const vf mn = vmin(vmin(a, b), splat(0.0f));
      const vf s = fast_exp((mn - a) * inv) + fast_exp((mn - b) * inv) + fast_exp(mn * inv);
      store(cur + o, splat(0.0f));
      store(cur + kBlock + o, load(row + o) + (mn - lam * fast_log(s)));
    }
    for (int m = 2; m <= m_cols; ++m)
      for (int g = 0; g < kGroup; ++g) {
        const int o = g * kLanes;
        const vf a = load(prev + (m - 1) * kBlock + o), b = load(cur + (m - 1) * kBlock + o);
        const vf mn = vmin(a, b);
        store(cur + m * kBlock + o,
              load(row + (m - 1) * kBlock + o) + (mn - lam * fast_log(1.0f + fast_exp(-vabs(a - b) * inv))));
      }
    for (int g = 0; g < kGroup; ++g) {
      const int o = g * kLanes;
      const vf a = load(prev + m_cols * kBlock + o), b = load(prev + last * kBlock + o),
               c = load(cur + m_cols * kBlock + o);
      const vf mn = vmin(a, vmin(b, c));
      const vf s = fast_exp((mn - a) * inv) + fast_exp((mn - b) * inv) + fast_exp((mn - c) * inv);
      store(cur + last * kBlock + o, mn - lam * fast_log(s));
    }
    std::swap(prev, cur);
  }
  for (int g = 0; g < kGroup; ++g) store(out + g * kLanes, load(prev + last * kBlock + g * kLanes));
}

using farr = py::array_t<float, py::array::c_style | py::array::forcecast>;
using darr = py::array_t<double, py::array::c_style | py::array::forcecast>;

// Dot product of two float rows; vectorised (AVX2 + FMA clone on x86-64, SSE2 otherwise, NEON on aarch64) with
// 32 partial sums, i.e. several independent vector accumulators: one accumulator would make the
// loop wait on the FMA latency and run ~4x slower.
#ifdef EDGESENTRY_X86
__attribute__((target_clones("arch=x86-64-v3", "default")))
#endif
float dot(const float* __restrict a, const float* __restrict b, int d) {
  float acc[32] = {0.0f};  // lanes are independent: vectorises without reassociating
  int k = 0;
  for (; k + 32 <= d; k += 32) {
    const float* pa = a + k;
    const float* pb = b + k;
    for (int l = 0; l < 32; ++l) acc[l] += pa[l] * pb[l];
  }
  float sum = 0.0f;
  for (int l = 0; l < 32; ++l) sum += acc[l];
  for (; k < d; ++k) sum += a[k] * b[k];
  return sum;
}

// Frame dot products c[i][j] = a_i . b_j between a block of query frames (rows of a) and a block
// of prototype frames (rows of b), D contiguous in both: a small GEMM, C = A B^T, written the way
// BLAS micro-kernels are. The query block is packed into panels of 2 vectors of frames,
// frame-minor (for each k, the panel's frames side by side); the register block is 6 prototype
// frames x one panel: per k, two vector loads of the panel, six broadcasts of the prototype
// frames' k-th values (read in place, no packing: they are the operand streamed once), twelve
// FMAs into twelve accumulators (enough independent chains to cover the FMA latency of two
// pipes). K is blocked by 256, so the panel (and the six prototype rows) stay in L1 while the
// packed query block stays in L2. Vector width by ISA, checked at run time on x86-64: AVX-512
// (16 floats), AVX2 + FMA (8 floats); NEON (4 floats) on aarch64; elsewhere, and for prototype
// rows beyond a multiple of six, the portable ``dot``.
#if defined(EDGESENTRY_X86)
#include <immintrin.h>
#define ES_AVX2 __attribute__((target("avx2,fma")))
#define ES_AVX512 __attribute__((target("avx512f,avx512vl,avx2,fma")))

struct Avx2Ops {  // 8 floats per AVX2 register
  typedef __m256 V;
  static constexpr int kWidth = 8;
  ES_AVX2 static V zero() { return _mm256_setzero_ps(); }
  ES_AVX2 static V load(const float* p) { return _mm256_loadu_ps(p); }
  ES_AVX2 static void store(float* p, V v) { _mm256_storeu_ps(p, v); }
  ES_AVX2 static V splat(const float* p) { return _mm256_broadcast_ss(p); }
  ES_AVX2 static V fma(V a, V b, V acc) { return _mm256_fmadd_ps(a, b, acc); }
};

struct Avx512Ops {  // 16 floats per AVX-512 register
  typedef __m512 V;
  static constexpr int kWidth = 16;
  ES_AVX512 static V zero() { return _mm512_setzero_ps(); }
  ES_AVX512 static V load(const float* p) { return _mm512_loadu_ps(p); }
  ES_AVX512 static void store(float* p, V v) { _mm512_storeu_ps(p, v); }
  ES_AVX512 static V splat(const float* p) { return _mm512_set1_ps(*p); }
  ES_AVX512 static V fma(V a, V b, V acc) { return _mm512_fmadd_ps(a, b, acc); }
};
#elif defined(EDGESENTRY_NEON)
#include <arm_neon.h>

struct NeonOps {  // 4 floats per NEON register
  typedef float32x4_t V;
  static constexpr int kWidth = 4;
  static V zero() { return vdupq_n_f32(0.0f); }
  static V load(const float* p) { return vld1q_f32(p); }
  static void store(float* p, V v) { vst1q_f32(p, v); }
  static V splat(const float* p) { return vld1q_dup_f32(p); }
  static V fma(V a, V b, V acc) { return vfmaq_f32(acc, a, b); }
};
#endif

// W floats in a GCC vector: the panel code of an instruction set the CPU lacks (isa 2 without
// AVX-512, ...) runs at the same width in portable vectors, which the compiler splits into the
// registers it has, so the blocking and packing of every width are tested on any CPU.
template <int W>
struct VecOps {
  typedef float V __attribute__((vector_size(4 * W)));
  static constexpr int kWidth = W;
  __attribute__((always_inline)) static V zero() { return V{}; }
  __attribute__((always_inline)) static V load(const float* p) {
    V v;
    std::memcpy(&v, p, sizeof v);
    return v;
  }
  __attribute__((always_inline)) static void store(float* p, V v) { std::memcpy(p, &v, sizeof v); }
  __attribute__((always_inline)) static V splat(const float* p) { return V{} + *p; }
  __attribute__((always_inline)) static V fma(V a, V b, V acc) { return a * b + acc; }
};

constexpr int kDotRows = 6;      // prototype frames per register block (fewer in the last one)
constexpr int kDotDepth = 256;   // K block

// Query frames [rows, d] packed for block_dots: pack[p][k][l] = a[p pw + l][k], zero past `rows`.
void pack_panels(const float* a, long rows, int d, int pw, float* pack) {
  const long panels = (rows + pw - 1) / pw;
  for (long p = 0; p < panels; ++p)
    for (int l = 0; l < pw; ++l) {
      const long i = p * pw + l;
      float* dst = pack + p * static_cast<long>(d) * pw + l;
      if (i < rows) {
        const float* src = a + i * d;
        for (int k = 0; k < d; ++k) dst[static_cast<long>(k) * pw] = src[k];
      } else {
        for (int k = 0; k < d; ++k) dst[static_cast<long>(k) * pw] = 0.0f;
      }
    }
}

// c[i * ldc + j .. j + MR) += the dot products of the query frames of one packed panel (`lanes`
// of them) with the prototype frames br[0 .. MR), over kc values.
template <typename Ops, int MR>
__attribute__((always_inline)) inline void panel_dots(const float* ap, const float* const* br, int kc, long lanes,
                                                      float* c, long ldc) {
  typedef typename Ops::V V;
  constexpr int W = Ops::kWidth, PW = 2 * W;
  V acc[MR][2];
  for (int r = 0; r < MR; ++r) acc[r][0] = acc[r][1] = Ops::zero();
#pragma GCC unroll 4
  for (int k = 0; k < kc; ++k) {
    const V a0 = Ops::load(ap + k * PW), a1 = Ops::load(ap + k * PW + W);
    for (int r = 0; r < MR; ++r) {
      const V s = Ops::splat(br[r] + k);
      acc[r][0] = Ops::fma(s, a0, acc[r][0]);
      acc[r][1] = Ops::fma(s, a1, acc[r][1]);
    }
  }
  alignas(64) float out[MR][PW];
  for (int r = 0; r < MR; ++r) {
    Ops::store(out[r], acc[r][0]);
    Ops::store(out[r] + W, acc[r][1]);
  }
  for (long l = 0; l < lanes; ++l)
    for (int r = 0; r < MR; ++r) c[l * ldc + r] += out[r][l];
}

// c[i * ldc + j] = a_i . b_j for the query frames i < rows_a (packed by pack_panels with 2 vectors
// per panel) and the prototype frames j < rows_b (rows d floats apart, read in place).
template <typename Ops>
__attribute__((always_inline)) inline void block_dots_with(const float* pack, long rows_a, const float* b, long rows_b,
                                                           int d, float* c, long ldc) {
  constexpr int PW = 2 * Ops::kWidth;
  const long panels = (rows_a + PW - 1) / PW;
  for (long i = 0; i < rows_a; ++i) std::fill(c + i * ldc, c + i * ldc + rows_b, 0.0f);
  for (int k0 = 0; k0 < d; k0 += kDotDepth) {
    const int kc = std::min(kDotDepth, d - k0);
    for (long j = 0; j < rows_b; j += kDotRows) {
      const float* br[kDotRows];
      const int rows = static_cast<int>(std::min<long>(kDotRows, rows_b - j));
      for (int r = 0; r < rows; ++r) br[r] = b + (j + r) * d + k0;
      for (long p = 0; p < panels; ++p) {
        const float* ap = pack + (p * d + k0) * PW;
        const long lanes = std::min<long>(PW, rows_a - p * PW);
        float* cp = c + p * PW * ldc + j;
        switch (rows) {  // the last block of prototype frames may be short
          case 6: panel_dots<Ops, 6>(ap, br, kc, lanes, cp, ldc); break;
          case 5: panel_dots<Ops, 5>(ap, br, kc, lanes, cp, ldc); break;
          case 4: panel_dots<Ops, 4>(ap, br, kc, lanes, cp, ldc); break;
          case 3: panel_dots<Ops, 3>(ap, br, kc, lanes, cp, ldc); break;
          case 2: panel_dots<Ops, 2>(ap, br, kc, lanes, cp, ldc); break;
          default: panel_dots<Ops, 1>(ap, br, kc, lanes, cp, ldc); break;
        }
      }
    }
  }
}

#if defined(EDGESENTRY_X86)
ES_AVX2 void block_dots_avx2(const float* pack, long ra, const float* b, long rb, int d, float* c, long ldc) {
  block_dots_with<Avx2Ops>(pack, ra, b, rb, d, c, ldc);
}
ES_AVX512 void block_dots_avx512(const float* pack, long ra, const float* b, long rb, int d, float* c, long ldc) {
  block_dots_with<Avx512Ops>(pack, ra, b, rb, d, c, ldc);
}
#endif

// Instruction set of the frame dot products: 0 = portable `dot`, 1 = AVX2 + FMA (NEON on
// aarch64), 2 = AVX-512.
int best_isa() {
#if defined(EDGESENTRY_X86)
  static const int level = __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512vl")
                               ? 2
                               : (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") ? 1 : 0);
  return level;
#elif defined(EDGESENTRY_NEON)
  return 1;
#else
  return 0;
#endif
}

// Floats per register at instruction set `isa` (0: none, rows as they are); an isa above
// best_isa() runs at this width in portable vectors (VecOps).
int isa_width(int isa) {
#if defined(EDGESENTRY_NEON)
  return isa >= 2 ? 16 : isa == 1 ? NeonOps::kWidth : 0;
#else
  return isa >= 2 ? 16 : isa == 1 ? 8 : 0;
#endif
}

// Query frames per packed panel (two registers) at instruction set `isa`.
int panel_width(int isa) { return 2 * isa_width(isa); }

// `a`: the query frames as packed by pack_panels(panel_width(isa)), or as they are for isa 0.
void block_dots(int isa, const float* a, long ra, const float* b, long rb, int d, float* c, long ldc) {
  const bool native = isa <= best_isa();
#if defined(EDGESENTRY_X86)
  if (isa >= 2 && native) return block_dots_avx512(a, ra, b, rb, d, c, ldc);
  if (isa == 1 && native) return block_dots_avx2(a, ra, b, rb, d, c, ldc);
#elif defined(EDGESENTRY_NEON)
  if (isa == 1) return block_dots_with<NeonOps>(a, ra, b, rb, d, c, ldc);
#endif
  if (isa >= 2) return block_dots_with<VecOps<16>>(a, ra, b, rb, d, c, ldc);
  if (isa == 1) return block_dots_with<VecOps<8>>(a, ra, b, rb, d, c, ldc);
  for (long i = 0; i < ra; ++i)
    for (long j = 0; j < rb; ++j) c[i * ldc + j] = dot(a + i * d, b + j * d, d);
}

void check_views(const farr& z, const farr& p, const char* what) {
  if (z.ndim() != 3 || p.ndim() != 3 || z.shape(1) != p.shape(1) || z.shape(2) != p.shape(2))
    throw std::invalid_argument(std::string(what) + ": z [Q, T, D] and p [N, T, D] must share T and D");
}

// Runs the 4 * pairs OTAM problems of the tiles delta[pair][view][i * t + j] (8 per SIMD
// block) and writes dists [4, pairs] (problem pair * 4 + view * 2 + direction) and logits.
void run_dps(const std::vector<float>& delta, long pairs, int t, float lam, int team, float* out, float* lg) {
  const long tt = static_cast<long>(t) * t;
  const long problems = pairs * 4, blocks = (problems + kBlock - 1) / kBlock;
  std::vector<float> result(static_cast<size_t>(blocks) * kBlock, 0.0f);
#pragma omp parallel num_threads(team) if (team > 1 && blocks > 1)
  {
    std::vector<float> packed(static_cast<size_t>(tt) * kBlock), rows(2 * static_cast<size_t>(t + 2) * kBlock);
#pragma omp for schedule(static)
    for (long blk = 0; blk < blocks; ++blk) {
      for (int l = 0; l < kBlock; ++l) {
        const long k = blk * kBlock + l;
        if (k >= problems) {
          for (long c = 0; c < tt; ++c) packed[c * kBlock + l] = 0.0f;
          continue;
        }
        const float* tile = delta.data() + (k / 4 * 2 + (k % 4) / 2) * tt;
        if (k % 2 == 0) {
          for (long c = 0; c < tt; ++c) packed[c * kBlock + l] = tile[c];
        } else {  // s -> q direction: the transposed tile
          for (int i = 0; i < t; ++i)
            for (int j = 0; j < t; ++j) packed[(static_cast<long>(i) * t + j) * kBlock + l] = tile[j * t + i];
        }
      }
      dp_block(packed.data(), t, t, lam, rows.data(), rows.data() + (t + 2) * kBlock, result.data() + blk * kBlock);
    }
  }
  for (long pair = 0; pair < pairs; ++pair) {
    double total = 0.0;
    for (int k = 0; k < 4; ++k) {
      const float value = result[pair * 4 + k];
      out[k * pairs + pair] = value;
      total += value;
    }
    lg[pair] = static_cast<float>(-total);
  }
}

// zl/zg [Q, T, D] query outputs, pl/pg [N, T, D] prototypes of the local and global views.
// `threads`: 0 = by the amount of work, else that many; `isa`: -1 = the best this CPU has.
py::tuple fuse(farr zl, farr pl, farr zg, farr pg, double lam, double eps, int threads, int isa) {
  check_views(zl, pl, "local view");
  check_views(zg, pg, "global view");
  if (zl.shape(0) != zg.shape(0) || pl.shape(0) != pg.shape(0) || zl.shape(1) != zg.shape(1) ||
      zl.shape(2) != zg.shape(2))
    throw std::invalid_argument("local and global views must have the same shapes");
  if (!(lam > 0)) throw std::invalid_argument("lam must be > 0");
  if (threads < 0) throw std::invalid_argument("threads must be >= 0");
  const long q_count = zl.shape(0), n_count = pl.shape(0);
  const int t = static_cast<int>(zl.shape(1)), d = static_cast<int>(zl.shape(2));
  const float* zs[2] = {zl.data(), zg.data()};
  const float* ps[2] = {pl.data(), pg.data()};
  py::array_t<float> dists({4L, q_count, n_count});
  py::array_t<float> logits({q_count, n_count});
  const long pairs = q_count * n_count;
  const long tt = static_cast<long>(t) * t;
  if (isa < -1 || isa > 2) throw std::invalid_argument("isa must be -1 (the best here), 0, 1 or 2");
  const int level = isa < 0 ? best_isa() : isa;
  // Threads only when there is enough work to be worth waking them: the dot products (pairs
  // T^2 D multiply-adds) or the soft-min DPs (4 pairs T^2 cells, each three exp and a log) of a
  // 5-way episode at T = 8 already are (measured on 2 cores: 264 -> 180 us at D=1024).
  const bool busy = static_cast<double>(pairs) * tt * d > 1.0e6 || 4.0 * pairs * tt >= 4096.0;
  const int team = threads > 0 ? threads : (busy ? max_threads() : 1);
  // Blocks of ~32 query frames x ~48 prototype frames: the packed query block (32 KB) stays in
  // L2, each prototype frame is read once per query block.
  const long qb = std::max(1, 32 / t), nb = std::max(1, 48 / t);
  const long q_blocks = (q_count + qb - 1) / qb, n_blocks = (n_count + nb - 1) / nb;
  float* out = dists.mutable_data();
  float* lg = logits.mutable_data();
  {
    py::gil_scoped_release release;
    // norms in float, like the dot products (the cosine is a float32 quantity here; the DPs are)
    std::vector<float> qn(2 * q_count * t), pn(2 * n_count * t);
    const float epsf = static_cast<float>(eps);
    const long rows = (q_count + n_count) * t;
#pragma omp parallel for schedule(static) num_threads(team) if (team > 1)
    for (long r = 0; r < 2 * rows; ++r) {
      const int v = static_cast<int>(r / rows);
      const long i = r % rows;
      const bool query = i < q_count * t;
      const float* row = query ? zs[v] + i * d : ps[v] + (i - q_count * t) * d;
      const float norm = std::sqrt(dot(row, row, d));
      if (query) qn[v * q_count * t + i] = norm;
      else pn[v * n_count * t + i - q_count * t] = norm;
    }
    // each view's query blocks packed once (panels of query frames, frame-minor), read by every
    // prototype block
    const int pw = panel_width(level);
    const long block_floats = pw ? (qb * t + pw - 1) / pw * pw * static_cast<long>(d) : 0;
    std::unique_ptr<float[]> packed(new float[2 * q_blocks * block_floats]);  // every float written
    if (pw) {
#pragma omp parallel for schedule(static) num_threads(team) if (team > 1)
      for (long e = 0; e < 2 * q_blocks; ++e) {
        const int v = static_cast<int>(e / q_blocks);
        const long q0 = e % q_blocks * qb, mq = std::min(qb, q_count - q0);
        pack_panels(zs[v] + q0 * t * d, mq * t, d, pw, packed.get() + e * block_floats);
      }
    }
    std::vector<float> delta(static_cast<size_t>(pairs) * 2 * tt);
#pragma omp parallel num_threads(team) if (team > 1)
    {
      std::vector<float> block(static_cast<size_t>(qb) * t * nb * t);
#pragma omp for schedule(dynamic, 1)
      for (long item = 0; item < q_blocks * n_blocks; ++item) {
        const long qi = item / n_blocks, q0 = qi * qb, n0 = item % n_blocks * nb;
        const long mq = std::min(qb, q_count - q0), mn = std::min(nb, n_count - n0), ldc = mn * t;
        for (int v = 0; v < 2; ++v) {
          const float* a = pw ? packed.get() + (v * q_blocks + qi) * block_floats : zs[v] + q0 * t * d;
          block_dots(level, a, mq * t, ps[v] + n0 * t * d, mn * t, d, block.data(), ldc);
          for (long q = q0; q < q0 + mq; ++q)
            for (long n = n0; n < n0 + mn; ++n) {
              float* tile = delta.data() + ((q * n_count + n) * 2 + v) * tt;
              const float* nb_ = pn.data() + v * n_count * t + n * t;
              for (int i = 0; i < t; ++i) {
                const float a = qn[v * q_count * t + q * t + i];
                const float* c = block.data() + ((q - q0) * t + i) * ldc + (n - n0) * t;
                float* out_row = tile + i * t;
#pragma omp simd
                for (int j = 0; j < t; ++j) out_row[j] = 1.0f - c[j] / (a * nb_[j] + epsf);
              }
            }
        }
      }
    }
    run_dps(delta, pairs, t, static_cast<float>(lam), team, out, lg);
  }
  return py::make_tuple(dists, logits);
}

// Single-direction OTAM of a batch of cost matrices delta [B, R, M] -> [B] float64.
py::array_t<double> otam(darr delta, double lam) {
  if (delta.ndim() != 3) throw std::invalid_argument("delta must be [B, R, M]");
  if (!(lam > 0)) throw std::invalid_argument("lam must be > 0");
  const long batch = delta.shape(0);
  const int rows = static_cast<int>(delta.shape(1)), m_cols = static_cast<int>(delta.shape(2));
  py::array_t<double> out(batch);
  const double* d = delta.data();
  double* o = out.mutable_data();
  {
    py::gil_scoped_release release;
#pragma omp parallel
    {
      std::vector<double> buf(2 * static_cast<size_t>(m_cols + 2));
#pragma omp for schedule(static)
      for (long b = 0; b < batch; ++b)
        o[b] = otam_dp<double>(d + b * rows * m_cols, rows, m_cols, m_cols, 1, lam, buf.data(), buf.data() + m_cols + 2);
    }
  }
  return out;
}

}  // namespace

PYBIND11_MODULE(_cpu_otam, m) {
  m.doc() = "Fused soft-OTAM distance fusion (CLIP-MDMF), CPU tier";
  m.def("fuse", &fuse, py::arg("z_local"), py::arg("p_local"), py::arg("z_global"), py::arg("p_global"),
        py::arg("lam"), py::arg("eps"), py::arg("threads") = 0, py::arg("isa") = -1,
        "dists [4, Q, N] and logits [Q, N] of both views' outputs; threads: 0 = by the work, else that many; "
        "isa: -1 = the best here, 0 = portable dots, 1 = AVX2 + FMA (NEON), 2 = AVX-512 (an isa this CPU lacks "
        "runs its panels at the same width in portable vectors)");
  m.def("best_isa", &best_isa, "instruction set of the frame dot products here (see fuse)");
  m.def("max_threads", &max_threads, "OpenMP threads the kernel uses for large calls");
  m.def("otam", &otam, py::arg("delta"), py::arg("lam"), "stabilised single-direction OTAM of [B, R, M] -> [B]");
}
