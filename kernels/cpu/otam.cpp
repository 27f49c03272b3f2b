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
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <stdexcept>
#include <string>
#include <vector>

namespace py = pybind11;

namespace {

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

// d: [rows * m_cols][kLanes] costs; prev/cur: [(m_cols + 2)][kLanes]; out: [kLanes].
#ifdef EDGESENTRY_X86
__attribute__((target_clones("arch=x86-64-v3", "default")))
#endif
void dp_block(const float* d, int rows, int m_cols, float lam, float* prev, float* cur, float* out) {
  const int last = m_cols + 1;
  const float inv = 1.0f / lam;
  vf acc = splat(0.0f);
  store(prev, acc);
  for (int m = 1; m <= m_cols; ++m) {
    acc += load(d + (m - 1) * kLanes);
    store(prev + m * kLanes, acc);
  }
  store(prev + last * kLanes, acc);
  for (int r = 1; r < rows; ++r) {
    const float* row = d + static_cast<long>(r) * m_cols * kLanes;
    {  // cur[0] = 0, so softmin(prev[0], prev[1], 0)
      const vf a = load(prev), b = load(prev + kLanes);
      const vf mn = vmin(vmin(a, b), splat(0.0f));
      const vf s = fast_exp((mn - a) * inv) + fast_exp((mn - b) * inv) + fast_exp(mn * inv);
      store(cur, splat(0.0f));
      store(cur + kLanes, load(row) + (mn - lam * fast_log(s)));
    }
    for (int m = 2; m <= m_cols; ++m) {
      const vf a = load(prev + (m - 1) * kLanes), b = load(cur + (m - 1) * kLanes);
      const vf mn = vmin(a, b);
      store(cur + m * kLanes, load(row + (m - 1) * kLanes) + (mn - lam * fast_log(1.0f + fast_exp(-vabs(a - b) * inv))));
    }
    {
      const vf a = load(prev + m_cols * kLanes), b = load(prev + last * kLanes), c = load(cur + m_cols * kLanes);
      const vf mn = vmin(a, vmin(b, c));
      const vf s = fast_exp((mn - a) * inv) + fast_exp((mn - b) * inv) + fast_exp((mn - c) * inv);
      store(cur + last * kLanes, mn - lam * fast_log(s));
    }
    std::swap(prev, cur);
  }
  store(out, load(prev + last * kLanes));
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

// tile[i * t + j] = z_i . p_j for the T x T frames of one (query, class) pair, in 2 x 4 register
// blocks (6 loads per 8 FMAs, 8 independent accumulators) where the CPU has vector FMA: AVX2 +
// FMA on x86-64 (checked at run time), NEON on aarch64 (always there; 8 accumulators cover the
// FMA latency of two pipes). Elsewhere, and for the edge rows/columns, with ``dot``.
#if defined(EDGESENTRY_X86)
#include <immintrin.h>
#define ES_TILE_TARGET __attribute__((target("avx2,fma")))

struct TileOps {  // 8 floats per AVX2 register
  typedef __m256 V;
  static constexpr int kWidth = 8;
  ES_TILE_TARGET static V zero() { return _mm256_setzero_ps(); }
  ES_TILE_TARGET static V load(const float* p) { return _mm256_loadu_ps(p); }
  ES_TILE_TARGET static V fma(V a, V b, V acc) { return _mm256_fmadd_ps(a, b, acc); }
  ES_TILE_TARGET static float hsum(V v) {
    __m128 lo = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    lo = _mm_add_ps(lo, _mm_movehl_ps(lo, lo));
    lo = _mm_add_ss(lo, _mm_movehdup_ps(lo));
    return _mm_cvtss_f32(lo);
  }
};
#elif defined(EDGESENTRY_NEON)
#include <arm_neon.h>
#define ES_TILE_TARGET

struct TileOps {  // 4 floats per NEON register
  typedef float32x4_t V;
  static constexpr int kWidth = 4;
  static V zero() { return vdupq_n_f32(0.0f); }
  static V load(const float* p) { return vld1q_f32(p); }
  static V fma(V a, V b, V acc) { return vfmaq_f32(acc, a, b); }
  static float hsum(V v) { return vaddvq_f32(v); }
};
#endif

#if defined(EDGESENTRY_X86) || defined(EDGESENTRY_NEON)
ES_TILE_TARGET void tile_blocked(const float* z, const float* p, int t, int d, float* tile) {
  typedef TileOps::V V;
  const int dv = d & ~(TileOps::kWidth - 1);
  int i = 0;
  for (; i + 2 <= t; i += 2) {
    const float* z0 = z + static_cast<long>(i) * d;
    const float* z1 = z0 + d;
    int j = 0;
    for (; j + 4 <= t; j += 4) {
      const float* p0 = p + static_cast<long>(j) * d;
      const float* p1 = p0 + d;
      const float* p2 = p1 + d;
      const float* p3 = p2 + d;
      V a00 = TileOps::zero(), a01 = a00, a02 = a00, a03 = a00, a10 = a00, a11 = a00, a12 = a00, a13 = a00;
      for (int k = 0; k < dv; k += TileOps::kWidth) {
        const V x0 = TileOps::load(z0 + k), x1 = TileOps::load(z1 + k);
        V y = TileOps::load(p0 + k);
        a00 = TileOps::fma(x0, y, a00);
        a10 = TileOps::fma(x1, y, a10);
        y = TileOps::load(p1 + k);
        a01 = TileOps::fma(x0, y, a01);
        a11 = TileOps::fma(x1, y, a11);
        y = TileOps::load(p2 + k);
        a02 = TileOps::fma(x0, y, a02);
        a12 = TileOps::fma(x1, y, a12);
        y = TileOps::load(p3 + k);
        a03 = TileOps::fma(x0, y, a03);
        a13 = TileOps::fma(x1, y, a13);
      }
      float r[8] = {TileOps::hsum(a00), TileOps::hsum(a01), TileOps::hsum(a02), TileOps::hsum(a03),
                    TileOps::hsum(a10), TileOps::hsum(a11), TileOps::hsum(a12), TileOps::hsum(a13)};
      for (int k = dv; k < d; ++k) {
        for (int c = 0; c < 4; ++c) {
          r[c] += z0[k] * p[static_cast<long>(j + c) * d + k];
          r[4 + c] += z1[k] * p[static_cast<long>(j + c) * d + k];
        }
      }
      for (int c = 0; c < 4; ++c) {
        tile[i * t + j + c] = r[c];
        tile[(i + 1) * t + j + c] = r[4 + c];
      }
    }
    for (; j < t; ++j) {
      tile[i * t + j] = dot(z0, p + static_cast<long>(j) * d, d);
      tile[(i + 1) * t + j] = dot(z1, p + static_cast<long>(j) * d, d);
    }
  }
  for (; i < t; ++i)
    for (int j = 0; j < t; ++j) tile[i * t + j] = dot(z + static_cast<long>(i) * d, p + static_cast<long>(j) * d, d);
}
#endif

void dot_tile(const float* z, const float* p, int t, int d, float* tile) {
#if defined(EDGESENTRY_X86)
  static const bool avx2 = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
  if (avx2) {
    tile_blocked(z, p, t, d, tile);
    return;
  }
#elif defined(EDGESENTRY_NEON)
  tile_blocked(z, p, t, d, tile);
  return;
#endif
  for (int i = 0; i < t; ++i)
    for (int j = 0; j < t; ++j) tile[i * t + j] = dot(z + static_cast<long>(i) * d, p + static_cast<long>(j) * d, d);
}

void check_views(const farr& z, const farr& p, const char* what) {
  if (z.ndim() != 3 || p.ndim() != 3 || z.shape(1) != p.shape(1) || z.shape(2) != p.shape(2))
    throw std::invalid_argument(std::string(what) + ": z [Q, T, D] and p [N, T, D] must share T and D");
}

// Runs the 4 * pairs OTAM problems of the tiles delta[pair][view][i * t + j] (8 per SIMD
// block) and writes dists [4, pairs] (problem pair * 4 + view * 2 + direction) and logits.
void run_dps(const std::vector<float>& delta, long pairs, int t, float lam, bool parallel, float* out, float* lg) {
  const long tt = static_cast<long>(t) * t;
  const long problems = pairs * 4, blocks = (problems + kLanes - 1) / kLanes;
  std::vector<float> result(static_cast<size_t>(blocks) * kLanes, 0.0f);
#pragma omp parallel if (parallel && blocks > 1)
  {
    std::vector<float> packed(static_cast<size_t>(tt) * kLanes), rows(2 * static_cast<size_t>(t + 2) * kLanes);
#pragma omp for schedule(static)
    for (long blk = 0; blk < blocks; ++blk) {
      for (int l = 0; l < kLanes; ++l) {
        const long k = blk * kLanes + l;
        if (k >= problems) {
          for (long c = 0; c < tt; ++c) packed[c * kLanes + l] = 0.0f;
          continue;
        }
        const float* tile = delta.data() + (k / 4 * 2 + (k % 4) / 2) * tt;
        if (k % 2 == 0) {
          for (long c = 0; c < tt; ++c) packed[c * kLanes + l] = tile[c];
        } else {  // s -> q direction: the transposed tile
          for (int i = 0; i < t; ++i)
            for (int j = 0; j < t; ++j) packed[(static_cast<long>(i) * t + j) * kLanes + l] = tile[j * t + i];
        }
      }
      dp_block(packed.data(), t, t, lam, rows.data(), rows.data() + (t + 2) * kLanes, result.data() + blk * kLanes);
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
py::tuple fuse(farr zl, farr pl, farr zg, farr pg, double lam, double eps) {
  check_views(zl, pl, "local view");
  check_views(zg, pg, "global view");
  if (zl.shape(0) != zg.shape(0) || pl.shape(0) != pg.shape(0) || zl.shape(1) != zg.shape(1) ||
      zl.shape(2) != zg.shape(2))
    throw std::invalid_argument("local and global views must have the same shapes");
  if (!(lam > 0)) throw std::invalid_argument("lam must be > 0");
  const long q_count = zl.shape(0), n_count = pl.shape(0);
  const int t = static_cast<int>(zl.shape(1)), d = static_cast<int>(zl.shape(2));
  const float* zs[2] = {zl.data(), zg.data()};
  const float* ps[2] = {pl.data(), pg.data()};
  py::array_t<float> dists({4L, q_count, n_count});
  py::array_t<float> logits({q_count, n_count});
  const long pairs = q_count * n_count;
  const long tt = static_cast<long>(t) * t;
  // Parallel only when there is enough work to be worth waking threads: the dot tiles
  // (pairs T^2 D multiply-adds) or the soft-min DPs (4 pairs T^2 cells, each three exp and a
  // log) of a 5-way episode at T = 8 already are (measured on 2 cores: 264 -> 180 us at D=1024).
  const bool parallel = static_cast<double>(pairs) * tt * d > 1.0e6 || 4.0 * pairs * tt >= 4096.0;
  float* out = dists.mutable_data();
  float* lg = logits.mutable_data();
  {
    py::gil_scoped_release release;
    std::vector<double> qn(2 * q_count * t), pn(2 * n_count * t);
    for (int v = 0; v < 2; ++v) {
      for (long i = 0; i < q_count * t; ++i) qn[v * q_count * t + i] = std::sqrt(static_cast<double>(
          dot(zs[v] + i * d, zs[v] + i * d, d)));
      for (long j = 0; j < n_count * t; ++j) pn[v * n_count * t + j] = std::sqrt(static_cast<double>(
          dot(ps[v] + j * d, ps[v] + j * d, d)));
    }
    std::vector<float> delta(static_cast<size_t>(pairs) * 2 * tt);
#pragma omp parallel for schedule(static) if (parallel)
    for (long pair = 0; pair < pairs; ++pair) {
      const long q = pair / n_count, n = pair % n_count;
      for (int v = 0; v < 2; ++v) {
        float* tile = delta.data() + (pair * 2 + v) * tt;
        dot_tile(zs[v] + q * t * d, ps[v] + n * t * d, t, d, tile);
        for (int i = 0; i < t; ++i) {
          const double a = qn[v * q_count * t + q * t + i];
          for (int j = 0; j < t; ++j) {
            const double b = pn[v * n_count * t + n * t + j];
            tile[i * t + j] = static_cast<float>(1.0 - tile[i * t + j] / (a * b + eps));
          }
        }
      }
    }
    run_dps(delta, pairs, t, static_cast<float>(lam), parallel, out, lg);
  }
  return py::make_tuple(dists, logits);
}

// Large galleries: the caller computes the frame dot products with one BLAS sgemm per view
// (dots [2, Q*T, N*T]) and the norms ([2, Q*T], [2, N*T]); this assembles the tiles and runs
// the DPs. (For small episodes ``fuse`` is faster: no BLAS threads to wake.)
py::tuple fuse_dots(farr dots, farr qnorm, farr pnorm, int q_count, int n_count, int t, double lam, double eps) {
  const long qt = static_cast<long>(q_count) * t, nt = static_cast<long>(n_count) * t;
  if (dots.ndim() != 3 || dots.shape(0) != 2 || dots.shape(1) != qt || dots.shape(2) != nt)
    throw std::invalid_argument("dots must be [2, Q*T, N*T]");
  if (qnorm.ndim() != 2 || qnorm.shape(0) != 2 || qnorm.shape(1) != qt)
    throw std::invalid_argument("qnorm must be [2, Q*T]");
  if (pnorm.ndim() != 2 || pnorm.shape(0) != 2 || pnorm.shape(1) != nt)
    throw std::invalid_argument("pnorm must be [2, N*T]");
  if (!(lam > 0)) throw std::invalid_argument("lam must be > 0");
  const long pairs = static_cast<long>(q_count) * n_count, tt = static_cast<long>(t) * t;
  py::array_t<float> dists({4L, static_cast<long>(q_count), static_cast<long>(n_count)});
  py::array_t<float> logits({static_cast<long>(q_count), static_cast<long>(n_count)});
  const float* dp = dots.data();
  const float* qn = qnorm.data();
  const float* pn = pnorm.data();
  float* out = dists.mutable_data();
  float* lg = logits.mutable_data();
  {
    py::gil_scoped_release release;
    std::vector<float> delta(static_cast<size_t>(pairs) * 2 * tt);
    for (long pair = 0; pair < pairs; ++pair) {
      const long q = pair / n_count, n = pair % n_count;
      for (int v = 0; v < 2; ++v) {
        float* tile = delta.data() + (pair * 2 + v) * tt;
        for (int i = 0; i < t; ++i) {
          const double a = qn[v * qt + q * t + i];
          const float* drow = dp + v * qt * nt + (q * t + i) * nt + n * t;
          for (int j = 0; j < t; ++j)
            tile[i * t + j] = static_cast<float>(1.0 - drow[j] / (a * static_cast<double>(pn[v * nt + n * t + j]) + eps));
        }
      }
    }
    run_dps(delta, pairs, t, static_cast<float>(lam), false, out, lg);
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
        py::arg("lam"), py::arg("eps"), "dists [4, Q, N] and logits [Q, N] of both views' outputs");
  m.def("fuse_dots", &fuse_dots, py::arg("dots"), py::arg("qnorm"), py::arg("pnorm"), py::arg("q_count"),
        py::arg("n_count"), py::arg("t"), py::arg("lam"), py::arg("eps"),
        "dists and logits from precomputed frame dot products [2, Q*T, N*T] and norms");
  m.def("otam", &otam, py::arg("delta"), py::arg("lam"), "stabilised single-direction OTAM of [B, R, M] -> [B]");
}
