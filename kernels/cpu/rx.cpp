// Dual-window local RX on the CPU: one Cholesky per pixel, or one per shared outer window.
//
// Specification: edgesentry/kernels/rx/reference.py::local_rx (per-pixel np.cov + pinv).
//
// Direct path. Instead of gathering every background window, the kernel keeps per-column
// sums of x and of the packed lower triangle of x x^T over the current window rows, and
// slides them: moving one row (or column) costs O(B^2) whatever the window size. The
// covariance of the outer-minus-inner ring then costs O(B^2) per pixel and is factored by a
// Cholesky (four pixels in lockstep, one SIMD lane each). The score z^T C^-1 z is |L^-1 z|^2,
// so only a forward solve is needed.
//
// Shared-window path. With the shift rule, every pixel within outer/2 of a border shares its
// outer window with its neighbours along that border (on a 24 x 24 crop with outer = 21, 16
// windows serve all 576 pixels). For such a group, one Cholesky of the outer window plus a
// rank-n_i Woodbury correction per pixel (n_i = inner^2) replaces a B^3/6 factorisation per
// pixel; see score_group. A cost model picks the path group by group.
//
// Pixels whose covariance is not safely positive definite are flagged and recomputed by the
// caller with the reference pseudo-inverse.
//
// Input must be centred by the scene mean (float64): it removes the cancellation that
// raw radiances (~1e3..1e4) would cause in M - s s^T / n.
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include "band_gram.h"
#include "simd.h"
#include "threads.h"
#include "transpose4.h"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <stdexcept>
#include <string>
#include <tuple>
#include <vector>

#ifdef _OPENMP
#include <omp.h>
#endif

namespace py = pybind11;

namespace {

inline void window_bounds(int index, int size, int length, int& start, int& stop) {
  start = index - size / 2;
  if (start < 0) start = 0;
  else if (start + size > length) start = length - size;
  stop = start + size;
}

inline size_t packed_size(int b) { return static_cast<size_t>(b) * (b + 1) / 2; }

// acc += sign * (moments of pixel row `r`), for the columns [c0, c1) of a `width`-wide image.
void add_row(const double* x, int r, int width, int c0, int c1, int bands, double sign, std::vector<double>& col_m,
             std::vector<double>& col_s) {
  const size_t pk = packed_size(bands);
  for (int c = c0; c < c1; ++c) {
    const double* v = x + (static_cast<size_t>(r) * width + c) * bands;
    double* m = col_m.data() + c * pk;
    double* s = col_s.data() + static_cast<size_t>(c) * bands;
    for (int i = 0; i < bands; ++i) {
      const double vi = sign * v[i];
      s[i] += vi;
      double* mi = m + static_cast<size_t>(i) * (i + 1) / 2;
#pragma omp simd
      for (int j = 0; j <= i; ++j) mi[j] += vi * v[j];
    }
  }
}

// Column sums over rows [r0, r1) recomputed or slid from the previous [p0, p1), for the
// columns [c0, c1) (each thread updates its own share of the shared column moments).
void move_rows(const double* x, int width, int c0, int c1, int bands, int p0, int p1, int r0, int r1, bool fresh,
               std::vector<double>& col_m, std::vector<double>& col_s) {
  const size_t pk = packed_size(bands);
  if (fresh) {
    std::fill(col_m.begin() + c0 * pk, col_m.begin() + c1 * pk, 0.0);
    std::fill(col_s.begin() + static_cast<size_t>(c0) * bands, col_s.begin() + static_cast<size_t>(c1) * bands, 0.0);
    for (int r = r0; r < r1; ++r) add_row(x, r, width, c0, c1, bands, 1.0, col_m, col_s);
    return;
  }
  for (int r = p0; r < std::min(p1, r0); ++r) add_row(x, r, width, c0, c1, bands, -1.0, col_m, col_s);
  for (int r = std::max(p0, r1); r < p1; ++r) add_row(x, r, width, c0, c1, bands, -1.0, col_m, col_s);
  for (int r = r0; r < std::min(r1, p0); ++r) add_row(x, r, width, c0, c1, bands, 1.0, col_m, col_s);
  for (int r = std::max(r0, p1); r < r1; ++r) add_row(x, r, width, c0, c1, bands, 1.0, col_m, col_s);
}

// Ring (outer minus inner) sums over the columns of the current window, recomputed or slid
// by one column: ring += sign * column sums, for outer columns entering/leaving with +/-,
// inner columns with -/+.
void slide_ring(const std::vector<double>& col_m, const std::vector<double>& col_s, int bands, int c, double sign,
                std::vector<double>& ring_m, std::vector<double>& ring_s) {
  const size_t pk = packed_size(bands);
  const double* m = col_m.data() + c * pk;
  const double* s = col_s.data() + static_cast<size_t>(c) * bands;
  double* rm = ring_m.data();
#pragma omp simd
  for (size_t k = 0; k < pk; ++k) rm[k] += sign * m[k];
  for (int k = 0; k < bands; ++k) ring_s[k] += sign * s[k];
}

void move_window(const std::vector<double>& col_m, const std::vector<double>& col_s, int bands, int p0, int p1,
                 int c0, int c1, bool fresh, double sign, std::vector<double>& ring_m, std::vector<double>& ring_s) {
  if (fresh) {
    for (int c = c0; c < c1; ++c) slide_ring(col_m, col_s, bands, c, sign, ring_m, ring_s);
    return;
  }
  for (int c = p0; c < std::min(p1, c0); ++c) slide_ring(col_m, col_s, bands, c, -sign, ring_m, ring_s);
  for (int c = std::max(p0, c1); c < p1; ++c) slide_ring(col_m, col_s, bands, c, -sign, ring_m, ring_s);
  for (int c = c0; c < std::min(c1, p0); ++c) slide_ring(col_m, col_s, bands, c, sign, ring_m, ring_s);
  for (int c = std::max(c0, p1); c < c1; ++c) slide_ring(col_m, col_s, bands, c, sign, ring_m, ring_s);
}

// ---- Four pixels at once -------------------------------------------------------------
// The covariances of kLanes consecutive pixels are interleaved element by element, so every
// scalar step of the Cholesky becomes one SIMD operation across pixels: no horizontal sums,
// full vector width even in the short dot products of the first columns. GCC/Clang vector
// extensions map v4d to one AVX2 register (two SSE2 registers in the baseline clone; on
// aarch64 it is a Wide of two NEON registers, see simd.h).
constexpr int kLanes = 4;
using edgesentry_simd::load4;
using edgesentry_simd::store4;
using edgesentry_simd::v4d;
// Rows of the Cholesky's register tile (see cholesky_mahalanobis_lanes).
#ifdef EDGESENTRY_NEON
constexpr int kPanelRows = 2;
#else
constexpr int kPanelRows = 4;
#endif

inline double* lane_row(double* a, int i) { return a + static_cast<size_t>(i) * (i + 1) / 2 * kLanes; }

// Pivot of column j for every lane: a_jj - sum_k<j a_jk^2; a lane whose pivot is not above
// its floor is marked failed and continues on a unit pivot (its result is discarded).
__attribute__((always_inline)) inline v4d lane_pivot(double* aj, int j, const double* floor, unsigned char* ok) {
  v4d s = {0.0, 0.0, 0.0, 0.0};
  for (int k = 0; k < j; ++k) {
    const v4d v = load4(aj + k * kLanes);
    s += v * v;
  }
  v4d piv = load4(aj + j * kLanes) - s;
  v4d inv;
  for (int q = 0; q < kLanes; ++q) {
    double d = piv[q];
    if (!(d > floor[q])) {
      ok[q] = 0;
      d = 1.0;
    }
    piv[q] = std::sqrt(d);
    inv[q] = 1.0 / piv[q];
  }
  store4(aj + j * kLanes, piv);
  return inv;
}

#if defined(EDGESENTRY_X86) && defined(__GNUC__) && !defined(__clang__)
__attribute__((target_clones("arch=x86-64-v4", "arch=x86-64-v3", "default")))
#endif
void cholesky_mahalanobis_lanes(double* a, const double* z, double* u, int bands, double tol, double* score,
                                unsigned char* ok, bool twice) {
  double floor[kLanes];
  for (int q = 0; q < kLanes; ++q) {
    double max_diag = 0.0;
    for (int i = 0; i < bands; ++i) max_diag = std::max(max_diag, lane_row(a, i)[i * kLanes + q]);
    ok[q] = max_diag > 0.0;
    floor[q] = tol * max_diag;
  }
  // Left-looking Cholesky in panels of four columns. The rows below a panel are the data
  // that stream from L2 (the interleaved factor of four pixels is ~0.7 MB at B = 205); a
  // 4-row x 4-column register tile reads each of them once per panel and feeds 16 FMAs per 8
  // loads, where the former 4 x 2 tile read them once per column pair for 8 FMAs per 6 loads.
  // On NEON a v4d is two of its 32 registers, so the tile is 2 rows x 4 columns (16 registers
  // of accumulators, 8 FMAs per 6 loads; 4 rows spilled 51 registers per iteration).
  int j = 0;
  for (; j + 3 < bands; j += 4) {
    double* col[4] = {lane_row(a, j), lane_row(a, j + 1), lane_row(a, j + 2), lane_row(a, j + 3)};
    v4d inv[4];
    // the 4 x 4 diagonal block, column by column (full-length dots: it is small)
    for (int c = 0; c < 4; ++c) {
      inv[c] = lane_pivot(col[c], j + c, floor, ok);
      for (int r = c + 1; r < 4; ++r) {
        v4d s0 = {0, 0, 0, 0};
        for (int k = 0; k < j + c; ++k) s0 += load4(col[r] + k * kLanes) * load4(col[c] + k * kLanes);
        store4(col[r] + (j + c) * kLanes, (load4(col[r] + (j + c) * kLanes) - s0) * inv[c]);
      }
    }
    const v4d l10 = load4(col[1] + j * kLanes), l20 = load4(col[2] + j * kLanes),
              l21 = load4(col[2] + (j + 1) * kLanes), l30 = load4(col[3] + j * kLanes),
              l31 = load4(col[3] + (j + 1) * kLanes), l32 = load4(col[3] + (j + 2) * kLanes);
    // rows below: s[m][q] = row_m[0:j] . col_q[0:j], then the panel's small triangular solve
    const auto finish = [&](double* r, const v4d* sq) {
      double* e = r + j * kLanes;
      const v4d x0 = (load4(e) - sq[0]) * inv[0];
      const v4d x1 = (load4(e + kLanes) - sq[1] - x0 * l10) * inv[1];
      const v4d x2 = (load4(e + 2 * kLanes) - sq[2] - x0 * l20 - x1 * l21) * inv[2];
      const v4d x3 = (load4(e + 3 * kLanes) - sq[3] - x0 * l30 - x1 * l31 - x2 * l32) * inv[3];
      store4(e, x0);
      store4(e + kLanes, x1);
      store4(e + 2 * kLanes, x2);
      store4(e + 3 * kLanes, x3);
    };
    int i = j + 4;
    for (; i + kPanelRows - 1 < bands; i += kPanelRows) {
#ifdef EDGESENTRY_NEON
      double* rows[kPanelRows] = {lane_row(a, i), lane_row(a, i + 1)};
#else
      double* rows[kPanelRows] = {lane_row(a, i), lane_row(a, i + 1), lane_row(a, i + 2), lane_row(a, i + 3)};
#endif
      v4d acc[kPanelRows][4] = {};
      for (int k = 0; k < j; ++k) {
        const size_t o = static_cast<size_t>(k) * kLanes;
        const v4d c0 = load4(col[0] + o), c1 = load4(col[1] + o), c2 = load4(col[2] + o), c3 = load4(col[3] + o);
        for (int m = 0; m < kPanelRows; ++m) {
          const v4d xm = load4(rows[m] + o);
          acc[m][0] += xm * c0;
          acc[m][1] += xm * c1;
          acc[m][2] += xm * c2;
          acc[m][3] += xm * c3;
        }
      }
      for (int m = 0; m < kPanelRows; ++m) finish(rows[m], acc[m]);
    }
    for (; i < bands; ++i) {
      double* r = lane_row(a, i);
      v4d acc[4] = {};
      for (int k = 0; k < j; ++k) {
        const v4d xm = load4(r + k * kLanes);
        for (int q = 0; q < 4; ++q) acc[q] += xm * load4(col[q] + k * kLanes);
      }
      finish(r, acc);
    }
  }
  for (; j < bands; ++j) {  // the last bands % 4 columns, one at a time
    double* aj = lane_row(a, j);
    const v4d inv_j = lane_pivot(aj, j, floor, ok);
    for (int i = j + 1; i < bands; ++i) {
      double* r = lane_row(a, i);
      v4d s0 = {0, 0, 0, 0};
      for (int k = 0; k < j; ++k) s0 += load4(r + k * kLanes) * load4(aj + k * kLanes);
      store4(r + j * kLanes, (load4(r + j * kLanes) - s0) * inv_j);
    }
  }
  v4d acc = {0, 0, 0, 0};
  for (int i = 0; i < bands; ++i) {
    const double* ai = lane_row(a, i);
    v4d s0 = {0, 0, 0, 0};
    for (int k = 0; k < i; ++k) s0 += load4(ai + k * kLanes) * load4(u + k * kLanes);
    const v4d ui = (load4(z + i * kLanes) - s0) / load4(ai + i * kLanes);
    store4(u + i * kLanes, ui);
    acc += ui * ui;
  }
  if (twice) {  // |A^-1 z|^2 = |L^-T (L^-1 z)|^2: the backward solve, row by row of the packed L
    acc = v4d{0.0, 0.0, 0.0, 0.0};
    for (int i = bands - 1; i >= 0; --i) {
      const double* ai = lane_row(a, i);
      const v4d vi = load4(u + i * kLanes) / load4(ai + i * kLanes);
      acc += vi * vi;
      for (int k = 0; k < i; ++k) store4(u + k * kLanes, load4(u + k * kLanes) - load4(ai + k * kLanes) * vi);
    }
  }
  for (int q = 0; q < kLanes; ++q) score[q] = acc[q];
}

// An unused lane (row shorter than a multiple of kLanes) holds the identity and z = 0.
void fill_identity_lane(double* lane_cov, double* z4, int bands, int lane) {
  std::fill(lane_cov, lane_cov + packed_size(bands), 0.0);
  for (int r = 0; r < bands; ++r) {
    lane_cov[static_cast<size_t>(r) * (r + 1) / 2 + r] = 1.0;
    z4[r * kLanes + lane] = 0.0;
  }
}

// cov4[k][q] = lanes[q][k]: the four pixels' packed covariances (built contiguously, with
// vector arithmetic) interleaved for the lockstep Cholesky by 4 x 4 register transposes
// (building them in place meant one strided scalar store per element: ~1/6 of the run).
#if defined(EDGESENTRY_X86) && defined(__GNUC__) && !defined(__clang__)
__attribute__((target_clones("arch=x86-64-v3", "default")))
#endif
void interleave_lanes(const double* lanes, size_t stride, size_t pk, double* cov4) {
  const double *l0 = lanes, *l1 = lanes + stride, *l2 = lanes + 2 * stride, *l3 = lanes + 3 * stride;
  size_t k = 0;
  for (; k + 4 <= pk; k += 4) {
    v4d col[4];
    edgesentry_simd::transpose4(load4(l0 + k), load4(l1 + k), load4(l2 + k), load4(l3 + k), col);
    for (int i = 0; i < 4; ++i) store4(cov4 + (k + i) * kLanes, col[i]);
  }
  for (; k < pk; ++k)
    for (int q = 0; q < kLanes; ++q) cov4[k * kLanes + q] = lanes[q * stride + k];
}

// ---- Shared outer windows ----------------------------------------------------------------
// For a group of pixels with the same outer window O (|O| = o^2 pixels, mean m_O, scatter
// A_O = sum_O (x - m_O)(x - m_O)^T), the background of pixel p is O minus its guard window
// I_p (n_i pixels). With Y the n_i rows x_q - m_O (q in I_p) and n = o^2 - n_i:
//   scatter of O \ I_p about its own mean:  A_p = A_O - Y^T P Y,   P = I + 1 1^T / n
//   z_p = x_p - mean(O \ I_p) = Y^T v,      v = e_p + 1 / n        (p lies in I_p)
// With A_O = L L^T, W = L^-1 Y^T and G = W^T W, Woodbury gives
//   z^T A_p^-1 z = v^T G v + (G v)^T K^-1 (G v),   K = P^-1 - G = I - 1 1^T / (n + n_i) - G
// and the score is (n - 1) times that. The columns of W depend on the guard pixel q only, so
// they are solved once per group for the union U of its guard windows: factoring the
// bordered matrix [[A_O, .], [Y_U, .]] to its first B columns yields L and the rows
// (L^-1 y_q)^T together, and G_U = W_U^T W_U holds every pixel's G as a principal submatrix.
// K is positive definite exactly when A_p is; a K pivot below kGuardPivotFloor (an
// inner pixel that carries a direction of the outer window almost alone) sends the pixel to
// the direct path instead, where the whole ring is factored afresh.
constexpr double kGuardPivotFloor = 1e-4;

using edgesentry_tiles::lower_gram;
using edgesentry_tiles::pack_band_major;
using edgesentry_tiles::round_up4;
using edgesentry_tiles::tile_dots;

// In place, left-looking in panels of four columns: the Cholesky factor of the leading n x n
// block of f (n % 4 == 0) and, for the rows n..rows-1 below it, their first n columns
// times L^-T. False when a pivot is not above `floor`.
#if defined(EDGESENTRY_X86) && defined(__GNUC__) && !defined(__clang__)
__attribute__((target_clones("arch=x86-64-v4", "arch=x86-64-v3", "default")))
#endif
bool factor_bordered(double* f, long ld, long n, long rows, double floor) {
  double s[4][4];
  for (long j0 = 0; j0 < n; j0 += 4) {
    tile_dots(f, ld, j0, j0, j0, s);
    double* d[4] = {f + j0 * ld + j0, f + (j0 + 1) * ld + j0, f + (j0 + 2) * ld + j0, f + (j0 + 3) * ld + j0};
    double inv[4];
    for (int c = 0; c < 4; ++c) {  // the 4 x 4 diagonal block
      double pivot = d[c][c] - s[c][c];
      for (int k = 0; k < c; ++k) pivot -= d[c][k] * d[c][k];
      if (!(pivot > floor)) return false;
      d[c][c] = std::sqrt(pivot);
      inv[c] = 1.0 / d[c][c];
      for (int r = c + 1; r < 4; ++r) {
        double v = d[r][c] - s[r][c];
        for (int k = 0; k < c; ++k) v -= d[r][k] * d[c][k];
        d[r][c] = v * inv[c];
      }
    }
    for (long i0 = j0 + 4; i0 < rows; i0 += 4) {  // the rows below: dots, then the panel's solve
      tile_dots(f, ld, i0, j0, j0, s);
      for (int m = 0; m < 4; ++m) {
        double* e = f + (i0 + m) * ld + j0;
        const double x0 = (e[0] - s[m][0]) * inv[0];
        const double x1 = (e[1] - s[m][1] - x0 * d[1][0]) * inv[1];
        const double x2 = (e[2] - s[m][2] - x0 * d[2][0] - x1 * d[2][1]) * inv[2];
        const double x3 = (e[3] - s[m][3] - x0 * d[3][0] - x1 * d[3][1] - x2 * d[3][2]) * inv[3];
        e[0] = x0;
        e[1] = x1;
        e[2] = x2;
        e[3] = x3;
      }
    }
  }
  return true;
}

// score = (n - 1) (v^T G v + g^T K^-1 g), g = G v, from the group's G_U (lower, ldg) and the
// union indices idx (ascending) of the pixel's guard window; own = the pixel's place in it.
// False when K has a pivot below kGuardPivotFloor.
bool guard_correction(const double* gu, long ldg, const int* idx, int ni, int own, double n, double* k,
                      double* g, double& score) {
  const double vn = 1.0 / n, shift = 1.0 / (n + ni);
  std::fill(g, g + ni, 0.0);
  for (int a = 0; a < ni; ++a) {
    const double* row = gu + idx[a] * ldg;
    double* ka = k + static_cast<size_t>(a) * ni;
    for (int c = 0; c < a; ++c) {
      const double gac = row[idx[c]];
      ka[c] = -shift - gac;
      g[a] += gac * vn;
      g[c] += gac * vn;
    }
    const double gaa = row[idx[a]];
    ka[a] = 1.0 - shift - gaa;
    g[a] += gaa * vn;
  }
  for (int a = 0; a < ni; ++a) {  // + G e_own
    const int lo = std::min(a, own), hi = std::max(a, own);
    g[a] += gu[idx[hi] * ldg + idx[lo]];
  }
  double t = 0.0;
  for (int a = 0; a < ni; ++a) t += g[a] * vn;
  t += g[own];
  double w2 = 0.0;  // |L_K^-1 g|^2, L_K computed row by row in place
  for (int a = 0; a < ni; ++a) {
    double* ka = k + static_cast<size_t>(a) * ni;
    for (int c = 0; c < a; ++c) {
      const double* kc = k + static_cast<size_t>(c) * ni;
      double v = ka[c];
      for (int j = 0; j < c; ++j) v -= ka[j] * kc[j];
      ka[c] = v / kc[c];
    }
    double pivot = ka[a], ga = g[a];
    for (int j = 0; j < a; ++j) {
      pivot -= ka[j] * ka[j];
      ga -= ka[j] * g[j];
    }
    if (!(pivot > kGuardPivotFloor)) return false;
    ka[a] = std::sqrt(pivot);
    g[a] = ga / ka[a];  // g now holds L_K^-1 g up to row a
    w2 += g[a] * g[a];
  }
  score = (n - 1.0) * (t + w2);
  return true;
}

// Consecutive pixels along one axis whose `size` window starts at the same place.
struct Run {
  int first, last, start;
  int count() const { return last - first + 1; }
};

std::vector<Run> window_runs(int length, int size) {
  std::vector<Run> runs;
  for (int i = 0; i < length; ++i) {
    int start, stop;
    window_bounds(i, size, length, start, stop);
    if (!runs.empty() && runs.back().start == start) runs.back().last = i;
    else runs.push_back({i, i, start});
  }
  return runs;
}

// Cost of one unit of work of each kind the paths spend their time on, in any common unit (the
// Python wrapper passes nanoseconds measured on the running machine by measure_costs, cached per
// CPU model): a multiply-add of the direct path's lockstep Cholesky (and of its ring), one of the
// shared path's register-tiled Gram and bordered factorisation (and its guard corrections), and
// one add of the memory-bound column-moment slide. The defaults are the fixed ratios the model
// had before it was measured (one add ~ ten multiply-adds).
struct Costs {
  double direct_mac = 1.0, tile_mac = 1.0, moment_add = 10.0;
};

// The pixels of one outer-window group and the union of their guard windows.
struct Group {
  Run rows, cols;
  int u_row0, u_rows, u_col0, u_cols;  // union of the guard windows
  double cost;                         // estimated cost on the shared-window path
  int union_size() const { return u_rows * u_cols; }
};

Group make_group(const Run& rows, const Run& cols, int height, int width, int inner, int outer, int bands,
                 const Costs& costs) {
  int r0, r1, c0, c1, stop;
  window_bounds(rows.first, inner, height, r0, stop);
  window_bounds(rows.last, inner, height, r1, stop);
  window_bounds(cols.first, inner, width, c0, stop);
  window_bounds(cols.last, inner, width, c1, stop);
  Group g{rows, cols, r0, r1 + inner - r0, c0, c1 + inner - c0, 0.0};
  const double b = bands, u = g.union_size(), ni = static_cast<double>(inner) * inner;
  const double pixels = static_cast<double>(rows.count()) * cols.count();
  g.cost = costs.tile_mac * (static_cast<double>(outer) * outer * b * b / 2 + b * b * b / 6 + u * b * b / 2 +
                             u * u * b / 2 + pixels * ni * ni * (ni / 6 + 2));
  return g;
}

// The direct path's cost for one pixel: its B^3/6 Cholesky, the ring and covariance.
inline double direct_cost(int bands, const Costs& costs) {
  return costs.direct_mac * static_cast<double>(bands) * bands * (bands / 6.0 + 3.0);
}

// The direct path's cost for the rows it scores, beyond its per-pixel work: each row moves the
// outer and inner column moments by one row in and one out (2 x 2 x W packed triangles), and
// the first row of a run of rows fills them afresh ((outer + inner) x W triangles). Sliding
// the moments is a memory-bound stream of packed B x B triangles, one add per element read and
// written: its unit cost against the factorisations' FMAs depends on the machine's memory.
double direct_row_overhead(int width, int bands, int inner, int outer, bool fresh, const Costs& costs) {
  const double triangles = fresh ? static_cast<double>(outer + inner) * width : 4.0 * width;
  return costs.moment_add * triangles * packed_size(bands);
}

struct GroupScratch {
  std::vector<const double*> px;
  std::vector<double> mean, zt, f, gu, k, g;
  std::vector<int> idx;
};

// Scores the pixels of one group; the ones it cannot score keep need = 1 (direct path).
void score_group(const double* x, int height, int width, int bands, int inner, int outer, const Group& grp, double tol,
                 GroupScratch& s, double* out, uint8_t* need) {
  const long bp = round_up4(bands), count = static_cast<long>(outer) * outer, len = round_up4(count);
  const long ldz = len + 4;  // rows a multiple of 4 KB apart would share L1 sets
  const long nu = grp.union_size(), nu4 = round_up4(nu), rows = bp + nu4;
  const int ro = grp.rows.start, co = grp.cols.start;
  s.px.resize(count);
  for (int r = 0; r < outer; ++r)
    for (int c = 0; c < outer; ++c) s.px[r * outer + c] = x + (static_cast<size_t>(ro + r) * width + co + c) * bands;
  s.mean.assign(bp, 0.0);
  for (long q = 0; q < count; ++q)
    for (int b = 0; b < bands; ++b) s.mean[b] += s.px[q][b];
  for (int b = 0; b < bands; ++b) s.mean[b] /= static_cast<double>(count);

  s.zt.resize(bp * ldz);
  pack_band_major(s.px.data(), count, bands, bp, len, s.mean.data(), s.zt.data(), ldz);
  s.f.assign(rows * bp, 0.0);
  double* f = s.f.data();
  lower_gram(s.zt.data(), ldz, len, bp, f, bp, false);
  double max_diag = 0.0;
  for (int b = 0; b < bands; ++b) max_diag = std::max(max_diag, f[b * bp + b]);
  for (long b = bands; b < bp; ++b) f[b * bp + b] = 1.0;  // padded bands: identity, uncoupled
  for (int r = 0; r < grp.u_rows; ++r)
    for (int c = 0; c < grp.u_cols; ++c) {
      const double* v = x + (static_cast<size_t>(grp.u_row0 + r) * width + grp.u_col0 + c) * bands;
      double* row = f + (bp + r * grp.u_cols + c) * bp;
      for (int b = 0; b < bands; ++b) row[b] = v[b] - s.mean[b];
    }
  if (!(max_diag > 0.0) || !factor_bordered(f, bp, bp, rows, tol * max_diag)) return;

  s.gu.resize(nu4 * nu4);
  lower_gram(f + bp * bp, bp, bp, nu4, s.gu.data(), nu4, false);  // G_U from the rows (L^-1 y_q)^T

  const int ni = inner * inner;
  const double n = static_cast<double>(count - ni);
  s.idx.resize(ni);
  s.k.resize(static_cast<size_t>(ni) * ni);
  s.g.resize(ni);
  for (int i = grp.rows.first; i <= grp.rows.last; ++i) {
    int ir0, ir1;
    window_bounds(i, inner, height, ir0, ir1);
    for (int j = grp.cols.first; j <= grp.cols.last; ++j) {
      int ic0, ic1;
      window_bounds(j, inner, width, ic0, ic1);
      for (int r = 0; r < inner; ++r)
        for (int c = 0; c < inner; ++c)
          s.idx[r * inner + c] = (ir0 + r - grp.u_row0) * grp.u_cols + (ic0 + c - grp.u_col0);
      const int own = (i - ir0) * inner + (j - ic0);
      const size_t p = static_cast<size_t>(i) * width + j;
      if (need[p] != 1) continue;  // routed to the sample-space path
      double score;
      if (guard_correction(s.gu.data(), nu4, s.idx.data(), ni, own, n, s.k.data(), s.g.data(), score)) {
        out[p] = score;
        need[p] = 0;
      }
    }
  }
}

// The direct path's inputs: pixels with need = 1 are scored (or flagged in `bad`).
struct DirectPass {
  const double* x;
  int height, width, bands, inner, outer;
  double ridge, pivot_tol;
  const uint8_t* need;
  double* out;
  uint8_t* bad;
};

// Per-column sums of x and of the packed x x^T over the current window rows, for all columns.
struct ColumnMoments {
  std::vector<double> m, s;
  ColumnMoments(int width, int bands) : m(packed_size(bands) * width), s(static_cast<size_t>(bands) * width) {}
};

// Called by every thread of a parallel region: slides the shared column moments down the rows
// that have pixels to score and scores each row's pixels, four per lockstep Cholesky.
void score_rings(const DirectPass& d, ColumnMoments& outer_cols, ColumnMoments& inner_cols) {
#ifdef _OPENMP
  const int nt = omp_get_num_threads(), me = omp_get_thread_num();
#else
  const int nt = 1, me = 0;
#endif
  const double* x = d.x;
  const int height = d.height, width = d.width, bands = d.bands, inner = d.inner, outer = d.outer;
  const double n = static_cast<double>(outer) * outer - static_cast<double>(inner) * inner;
  const size_t pk = packed_size(bands);
  const int mom0 = width * me / nt, mom1 = width * (me + 1) / nt;
  std::vector<double> ring_m(pk), ring_s(bands);
  std::vector<double> cov4(pk * kLanes), lanes(pk * kLanes), mean(bands), z4(static_cast<size_t>(bands) * kLanes),
      u4(static_cast<size_t>(bands) * kLanes);
  std::vector<int> todo;
  int pro0 = 0, pro1 = 0, pri0 = 0, pri1 = 0;
  bool first_row = true;
  for (int i = 0; i < height; ++i) {
    todo.clear();
    for (int j = 0; j < width; ++j)
      if (d.need[static_cast<size_t>(i) * width + j]) todo.push_back(j);
    if (todo.empty()) continue;  // every thread sees the same rows
    int ro0, ro1, ri0, ri1;
    window_bounds(i, outer, height, ro0, ro1);
    window_bounds(i, inner, height, ri0, ri1);
    move_rows(x, width, mom0, mom1, bands, pro0, pro1, ro0, ro1, first_row, outer_cols.m, outer_cols.s);
    move_rows(x, width, mom0, mom1, bands, pri0, pri1, ri0, ri1, first_row, inner_cols.m, inner_cols.s);
    pro0 = ro0; pro1 = ro1; pri0 = ri0; pri1 = ri1;
    first_row = false;
#pragma omp barrier
    const int lane_groups = (static_cast<int>(todo.size()) + kLanes - 1) / kLanes;
    const int t0 = std::min<int>(todo.size(), lane_groups * me / nt * kLanes);
    const int t1 = std::min<int>(todo.size(), lane_groups * (me + 1) / nt * kLanes);
    int pco0 = 0, pco1 = 0, pci0 = 0, pci1 = 0;
    for (int t = t0; t < t1; ++t) {
      const int j = todo[t];
      int co0, co1, ci0, ci1;
      window_bounds(j, outer, width, co0, co1);
      window_bounds(j, inner, width, ci0, ci1);
      if (t == t0) {
        std::fill(ring_m.begin(), ring_m.end(), 0.0);
        std::fill(ring_s.begin(), ring_s.end(), 0.0);
      }
      move_window(outer_cols.m, outer_cols.s, bands, pco0, pco1, co0, co1, t == t0, 1.0, ring_m, ring_s);
      move_window(inner_cols.m, inner_cols.s, bands, pci0, pci1, ci0, ci1, t == t0, -1.0, ring_m, ring_s);
      pco0 = co0; pco1 = co1; pci0 = ci0; pci1 = ci1;
      for (int b = 0; b < bands; ++b) mean[b] = ring_s[b] / n;
      const int lane = (t - t0) % kLanes;
      double trace = 0.0;
      const double inv_dof = 1.0 / (n - 1.0);  // multiply, not divide, in the inner loop
      double* lc = lanes.data() + lane * pk;
      for (int r = 0; r < bands; ++r) {
        const size_t row = static_cast<size_t>(r) * (r + 1) / 2;
        const double mr = n * mean[r];
        const double* rm = ring_m.data() + row;
        double* dst = lc + row;
#pragma omp simd
        for (int c = 0; c <= r; ++c) dst[c] = (rm[c] - mr * mean[c]) * inv_dof;
        trace += dst[r];
      }
      if (d.ridge > 0.0) {
        const double load = d.ridge * trace / bands;
        for (int r = 0; r < bands; ++r) lc[static_cast<size_t>(r) * (r + 1) / 2 + r] += load;
      }
      const double* v = x + (static_cast<size_t>(i) * width + j) * bands;
      for (int b = 0; b < bands; ++b) z4[b * kLanes + lane] = v[b] - mean[b];
      if (lane == kLanes - 1 || t == t1 - 1) {
        for (int q = lane + 1; q < kLanes; ++q) fill_identity_lane(lanes.data() + q * pk, z4.data(), bands, q);
        interleave_lanes(lanes.data(), pk, pk, cov4.data());
        double score[kLanes];
        unsigned char ok[kLanes];
        cholesky_mahalanobis_lanes(cov4.data(), z4.data(), u4.data(), bands, d.pivot_tol, score, ok, false);
        for (int q = 0; q <= lane; ++q) {
          const size_t idx = static_cast<size_t>(i) * width + todo[t - lane + q];
          d.out[idx] = ok[q] ? score[q] : std::nan("");
          d.bad[idx] = ok[q] ? 0 : 1;
        }
      }
    }
#pragma omp barrier  // nobody reads the moments while the next row's slide writes them
  }
}

// ---- Sample space: rings with no more distinct spectra than bands -------------------------
// A ring of n background pixels holding k distinct spectra u_a (multiplicity c_a, k <= B) has
// the singular covariance C = Y^T Y / (n - 1), Y the k x B rows sqrt(c_a) (u_a - m). Its
// pseudo-inverse is taken in the k-dimensional sample space:
//   z^T C^+ z = (n - 1) |G^+ Y z|^2,   G = Y Y^T (k x k),
// since (Y^T Y)^+ = Y^T (Y Y^T)^+2 Y. G has one structural null vector s = sqrt(c) (the rows are
// centred: Y^T s = 0) and Y z is orthogonal to it, so with G' = G + alpha s s^T / n,
// G'^-1 Y z = G^+ Y z exactly. G' is positive definite when the k spectra are affinely
// independent; then every nonzero eigenvalue of C is one of G / (n - 1) and, with no pivot
// under pivot_tol, far above the reference's cutoff, which keeps them all: the pinv equals the
// inverse on that range. One k x k Cholesky (the direct path's four-pixel lockstep code) and a
// forward and a backward solve per pixel, instead of B^3 / 6 and an SVD. Exact duplicates (ABU
// scenes repeat 5-18% of their pixels) merge into one row weighted by their count, so they do
// not make G' singular; any other dependency leaves a pivot under the floor and the pixel to
// the decomposition path (an SVD of the ring).
//
// G's entries are u_a . u_b - m . u_a - m . u_b + m . m with m . u_a = sum_b c_b u_a . u_b / n:
// dot products of pixel pairs of one outer window, read from a table of every pixel's dots with
// the pixels at offsets (dr, dc), 0 <= dr < outer, |dc| < outer (dr = 0: dc >= 0). The table
// holds `outer` image rows at a time (a ring filled row by row as the windows slide down),
// computed in 4 x 4 register tiles: 2 outer^2 B multiply-adds per pixel.

// Canonical index (the first pixel in raster order) of every pixel's spectrum; `any` says
// whether two pixels share one. Bitwise equality, found through a hash of the spectra.
std::vector<int> duplicate_ids(const double* x, long pixels, int bands, bool& any) {
  std::vector<uint64_t> hash(pixels);
  for (long p = 0; p < pixels; ++p) {
    uint64_t h = 1469598103934665603ULL;
    const double* v = x + p * bands;
    for (int b = 0; b < bands; ++b) {
      uint64_t bits;
      std::memcpy(&bits, v + b, sizeof bits);
      h = (h ^ bits) * 1099511628211ULL;
      h ^= h >> 29;
    }
    hash[p] = h;
  }
  std::vector<int> order(pixels), id(pixels);
  for (long p = 0; p < pixels; ++p) order[p] = static_cast<int>(p);
  std::sort(order.begin(), order.end(), [&](int a, int b) { return hash[a] != hash[b] ? hash[a] < hash[b] : a < b; });
  any = false;
  for (long s = 0; s < pixels;) {
    long e = s + 1;
    while (e < pixels && hash[order[e]] == hash[order[s]]) ++e;
    for (long i = s; i < e; ++i) {  // within a run of equal hashes: the first equal spectrum
      id[order[i]] = order[i];
      for (long j = s; j < i; ++j)
        if (id[order[j]] == order[j] &&
            std::memcmp(x + static_cast<long>(order[i]) * bands, x + static_cast<long>(order[j]) * bands,
                        sizeof(double) * bands) == 0) {
          id[order[i]] = order[j];
          any = true;
          break;
        }
    }
    s = e;
  }
  return id;
}

// Distinct spectra in each pixel's ring (with `id` from duplicate_ids).
std::vector<int> distinct_counts(const std::vector<int>& id, int height, int width, int inner, int outer) {
  std::vector<int> count(static_cast<size_t>(height) * width);
#pragma omp parallel
  {
    std::vector<int> seen(static_cast<size_t>(height) * width, -1);
#pragma omp for schedule(static)
    for (int p = 0; p < height * width; ++p) {
      const int i = p / width, j = p % width;
      int ro, ri, co, ci, stop, k = 0;
      window_bounds(i, outer, height, ro, stop);
      window_bounds(i, inner, height, ri, stop);
      window_bounds(j, outer, width, co, stop);
      window_bounds(j, inner, width, ci, stop);
      for (int r = ro; r < ro + outer; ++r)
        for (int c = co; c < co + outer; ++c) {
          if (r >= ri && r < ri + inner && c >= ci && c < ci + inner) continue;
          const int u = id[static_cast<size_t>(r) * width + c];
          if (seen[u] != p) {
            seen[u] = p;
            ++k;
          }
        }
      count[p] = k;
    }
  }
  return count;
}

// out[m][q] = ra[m] . rb[q] over `len` doubles (len % 4 == 0): the Gram tile of band_gram.h with
// its rows given by pointers.
__attribute__((always_inline)) inline void pair_tile(const double* const* ra, const double* const* rb, long len,
                                                     double out[4][4]) {
  using edgesentry_tiles::kGramLanes;
  using edgesentry_tiles::load_gram;
  using edgesentry_tiles::vgram;
  vgram acc[4][4] = {};
  for (long k = 0; k < len; k += kGramLanes) {
    vgram a[4], b[4];
    for (int m = 0; m < 4; ++m) {
      a[m] = load_gram(ra[m] + k);
      b[m] = load_gram(rb[m] + k);
    }
    for (int m = 0; m < 4; ++m)
      for (int q = 0; q < 4; ++q) acc[m][q] += a[m] * b[q];
  }
  for (int m = 0; m < 4; ++m)
    for (int q = 0; q < 4; ++q) out[m][q] = edgesentry_tiles::hsum(acc[m][q]);
}

// Dot products of every pixel with the pixels less than `outer` apart along both axes, for
// `outer` image rows. Both orders are stored (each pair twice): a pixel's row of the table then
// holds all of its dots, so the Gram of a window is read and written row by row.
struct PairDots {
  int height, width, outer, span;  // span = 2 outer - 1 offsets along each axis
  long bp;                         // bands padded to a multiple of 4 with zeros
  std::vector<double> xp;          // [H * W][bp]
  std::vector<double> ring;        // [outer slots][W][span row offsets][span column offsets]
  std::vector<int> held;           // image row in each slot (-1: none)

  PairDots(const double* x, int h, int w, int bands, int o)
      : height(h), width(w), outer(o), span(2 * o - 1), bp(round_up4(bands)),
        xp(static_cast<size_t>(h) * w * round_up4(bands), 0.0),
        ring(static_cast<size_t>(o) * w * (2 * o - 1) * (2 * o - 1)), held(o, -1) {
    for (long p = 0; p < static_cast<long>(h) * w; ++p) std::copy(x + p * bands, x + (p + 1) * bands, xp.data() + p * bp);
  }

  // Index of pixel (r, c)'s row, shifted so that adding r' span + c' gives its dot with (r', c').
  long base(int r, int c) const {
    return (static_cast<long>(r % outer) * width + c) * span * span + (outer - 1) * (span + 1) -
           (static_cast<long>(r) * span + c);
  }
};

// Columns [c0, c1) of image row r of the table (c0 % 4 == 0), in 4 x 4 pixel tiles.
#if defined(EDGESENTRY_X86) && defined(__GNUC__) && !defined(__clang__)
__attribute__((target_clones("arch=x86-64-v4", "arch=x86-64-v3", "default")))
#endif
void fill_pair_row(PairDots& t, int r, int c0, int c1) {
  const int w = t.width, reach = t.outer - 1, span = t.span;
  double* row = t.ring.data() + static_cast<size_t>(r % t.outer) * w * span * span;
  double out[4][4];
  const double* ra[4];
  const double* rb[4];
  for (int dr = -reach; dr <= reach; ++dr) {
    const int rr = r + dr;
    if (rr < 0 || rr >= t.height) continue;
    for (int a0 = c0; a0 < c1; a0 += 4) {
      for (int m = 0; m < 4; ++m) ra[m] = t.xp.data() + (static_cast<size_t>(r) * w + std::min(a0 + m, w - 1)) * t.bp;
      const int b_lo = std::max(0, a0 - reach), b_hi = std::min(w - 1, a0 + 3 + reach);
      for (int b0 = b_lo; b0 <= b_hi; b0 += 4) {
        for (int q = 0; q < 4; ++q)
          rb[q] = t.xp.data() + (static_cast<size_t>(rr) * w + std::min(b0 + q, w - 1)) * t.bp;
        pair_tile(ra, rb, t.bp, out);
        for (int m = 0; m < 4 && a0 + m < c1; ++m)
          for (int q = 0; q < 4 && b0 + q < w; ++q) {
            const int dc = b0 + q - (a0 + m);
            if (dc >= -reach && dc <= reach)
              row[(static_cast<size_t>(a0 + m) * span + dr + reach) * span + dc + reach] = out[m][q];
          }
      }
    }
  }
}

// The sample-space pass: pixels with need == 2 are scored (need = 0) or left to the
// decomposition path (need = 3).
struct SamplePass {
  int height, width, bands, inner, outer;
  double pivot_tol;
  const int* id;  // duplicate_ids, or nullptr when every spectrum is distinct
  uint8_t* need;
  double* out;
};

// One pixel's lane: G' (packed lower, k rows) and w = Y z; returns k (0: more than `bands`).
#if defined(EDGESENTRY_X86) && defined(__GNUC__) && !defined(__clang__)
__attribute__((target_clones("arch=x86-64-v3", "default")))
#endif
int build_sample_lane(const SamplePass& s, const PairDots& t, int i, int j, std::vector<int>& seen,
                      std::vector<int>& rows, std::vector<int>& cols, std::vector<long>& offset,
                      std::vector<double>& cnt, std::vector<double>& mu, std::vector<double>& pd, double* lane,
                      double* w) {
  const int width = s.width, inner = s.inner, outer = s.outer;
  int ro, ri, co, ci, stop, k = 0;
  window_bounds(i, outer, s.height, ro, stop);
  window_bounds(i, inner, s.height, ri, stop);
  window_bounds(j, outer, width, co, stop);
  window_bounds(j, inner, width, ci, stop);
  bool too_many = false;  // more distinct spectra than bands: G is singular
  for (int r = ro; r < ro + outer && !too_many; ++r)
    for (int c = co; c < co + outer; ++c) {
      if (r >= ri && r < ri + inner && c >= ci && c < ci + inner) continue;
      if (s.id) {
        const int u = s.id[static_cast<size_t>(r) * width + c];
        if (seen[u] >= 0) {
          cnt[seen[u]] += 1.0;
          continue;
        }
        seen[u] = k;
      }
      if (k == s.bands) {
        too_many = true;
        break;
      }
      rows[k] = r;
      cols[k] = c;
      cnt[k++] = 1.0;
    }
  if (s.id)  // clear the marks (of every window pixel: the scan may have stopped early)
    for (int r = ro; r < ro + outer; ++r)
      for (int c = co; c < co + outer; ++c) seen[s.id[static_cast<size_t>(r) * width + c]] = -1;
  if (too_many || k == 0) return 0;
  const double n = static_cast<double>(outer) * outer - static_cast<double>(inner) * inner;
  // raw dots u_a . u_b (b <= a) and m . u_a, row by row of the packed lower triangle (u_a's
  // table row holds them all)
  std::fill(mu.begin(), mu.begin() + k, 0.0);
  for (int a = 0; a < k; ++a) offset[a] = static_cast<long>(rows[a]) * t.span + cols[a];
  const double* ring = t.ring.data();
  for (int a = 0; a < k; ++a) {
    const double* ta = ring + t.base(rows[a], cols[a]);
    double* la = lane + static_cast<size_t>(a) * (a + 1) / 2;
    const double ca = cnt[a];
    double acc = 0.0;
    for (int b = 0; b < a; ++b) {
      const double v = ta[offset[b]];
      la[b] = v;
      acc += cnt[b] * v;
      mu[b] += ca * v;
    }
    la[a] = ta[offset[a]];
    mu[a] += acc + ca * la[a];
  }
  double mm = 0.0, mp = 0.0, trace = 0.0;
  for (int a = 0; a < k; ++a) {
    mu[a] /= n;
    mm += cnt[a] * mu[a];
    pd[a] = ring[t.base(i, j) + offset[a]];
    mp += cnt[a] * pd[a];
  }
  mm /= n;
  mp /= n;
  for (int a = 0; a < k; ++a) trace += cnt[a] * (lane[static_cast<size_t>(a) * (a + 3) / 2] - 2.0 * mu[a] + mm);
  const double shift = mm + trace / k / n;  // alpha = trace / k: the mean eigenvalue
  for (int a = 0; a < k; ++a) cnt[a] = std::sqrt(cnt[a]);
  for (int a = 0; a < k; ++a) {
    double* la = lane + static_cast<size_t>(a) * (a + 1) / 2;
    const double sa = cnt[a], ma = mu[a] - shift;
#pragma omp simd
    for (int b = 0; b <= a; ++b) la[b] = sa * cnt[b] * (la[b] - ma - mu[b]);
    w[a] = sa * (pd[a] - mu[a] - mp + mm);
  }
  return k;
}

// Called by every thread of a parallel region, like score_rings: rows in order, the table rows
// of each row's windows filled by all threads (columns split), then the row's pixels scored four
// at a time.
void score_samples(const SamplePass& s, PairDots& t) {
#ifdef _OPENMP
  const int nt = omp_get_num_threads(), me = omp_get_thread_num();
#else
  const int nt = 1, me = 0;
#endif
  const int height = s.height, width = s.width, bands = s.bands, outer = s.outer;
  const double n = static_cast<double>(outer) * outer - static_cast<double>(s.inner) * s.inner;
  const size_t stride = packed_size(bands);
  std::vector<int> seen(s.id ? static_cast<size_t>(height) * width : 0, -1), rows(bands), cols(bands), todo;
  std::vector<long> offset(bands);
  std::vector<double> cnt(bands), mu(bands), pd(bands), lanes(stride * kLanes), cov4(stride * kLanes),
      w4(static_cast<size_t>(bands) * kLanes), u4(static_cast<size_t>(bands) * kLanes), w(bands);
  int ks[kLanes], js[kLanes];
  // this thread's share of a table row: columns [c0, c1), a multiple of 4 wide
  const int quads = (width + 3) / 4, c0 = std::min(width, quads * me / nt * 4),
            c1 = std::min(width, quads * (me + 1) / nt * 4);
  for (int i = 0; i < height; ++i) {
    todo.clear();
    for (int j = 0; j < width; ++j)
      if (s.need[static_cast<size_t>(i) * width + j] == 2) todo.push_back(j);
    if (todo.empty()) continue;  // every thread sees the same rows
    int ro, stop;
    window_bounds(i, outer, height, ro, stop);
    for (int r = ro; r < stop; ++r)
      if (t.held[r % outer] != r && c0 < c1) fill_pair_row(t, r, c0, c1);
#pragma omp barrier
#pragma omp single
    for (int r = ro; r < stop; ++r) t.held[r % outer] = r;  // (implicit barrier)
    const int lane_groups = (static_cast<int>(todo.size()) + kLanes - 1) / kLanes;
    const int t0 = std::min<int>(todo.size(), lane_groups * me / nt * kLanes);
    const int t1 = std::min<int>(todo.size(), lane_groups * (me + 1) / nt * kLanes);
    for (int g = t0; g < t1; g += kLanes) {
      int kmax = 0;
      for (int q = 0; q < kLanes; ++q) {
        js[q] = g + q < t1 ? todo[g + q] : -1;
        ks[q] = js[q] < 0 ? 0
                          : build_sample_lane(s, t, i, js[q], seen, rows, cols, offset, cnt, mu, pd,
                                              lanes.data() + q * stride, w.data());
        for (int a = 0; a < ks[q]; ++a) w4[a * kLanes + q] = w[a];
        kmax = std::max(kmax, ks[q]);
      }
      if (kmax == 0) {
        for (int q = 0; q < kLanes; ++q)
          if (js[q] >= 0) s.need[static_cast<size_t>(i) * width + js[q]] = 3;
        continue;
      }
      for (int q = 0; q < kLanes; ++q) {  // pad every lane to kmax rows: identity at its own scale, w = 0
        double* lane = lanes.data() + q * stride;
        double scale = 0.0;
        for (int a = 0; a < ks[q]; ++a) scale = std::max(scale, lane[static_cast<size_t>(a) * (a + 3) / 2]);
        if (!(scale > 0.0)) scale = 1.0;
        for (int a = ks[q]; a < kmax; ++a) {
          double* la = lane + static_cast<size_t>(a) * (a + 1) / 2;
          std::fill(la, la + a, 0.0);
          la[a] = scale;
          w4[a * kLanes + q] = 0.0;
        }
      }
      interleave_lanes(lanes.data(), stride, packed_size(kmax), cov4.data());
      double score[kLanes];
      unsigned char ok[kLanes];
      cholesky_mahalanobis_lanes(cov4.data(), w4.data(), u4.data(), kmax, s.pivot_tol, score, ok, true);
      for (int q = 0; q < kLanes; ++q) {
        if (js[q] < 0) continue;
        const size_t p = static_cast<size_t>(i) * width + js[q];
        if (ks[q] > 0 && ok[q]) {
          s.out[p] = (n - 1.0) * score[q];
          s.need[p] = 0;
        } else {
          s.need[p] = 3;
        }
      }
    }
#pragma omp barrier  // the next row's fill overwrites table slots
  }
}

// Which pixels share their outer window with enough neighbours for the shared-window path to
// cost less than the direct path (mode 0: none, 1: by the cost model, 2: all). A group is
// shared when that is cheaper than its pixels' own factorisations; then every run of rows
// left to the direct path is checked as a whole, with the cost of filling and sliding its
// column moments: a few leftover pixels (on a small image: the ones whose outer window is
// shared with nobody) are cheaper on the shared-window path too.
std::vector<Group> shared_window_groups(int height, int width, int bands, int inner, int outer, int mode,
                                        const Costs& costs) {
  std::vector<Group> chosen, direct;
  if (mode == 0) return chosen;
  const std::vector<Run> row_runs = window_runs(height, outer), col_runs = window_runs(width, outer);
  for (const Run& rows : row_runs)
    for (const Run& cols : col_runs) {
      const Group g = make_group(rows, cols, height, width, inner, outer, bands, costs);
      const bool shared =
          mode == 2 || g.cost < static_cast<double>(rows.count()) * cols.count() * direct_cost(bands, costs);
      (shared ? chosen : direct).push_back(g);
    }
  // direct groups come in row order; take one stretch of consecutive direct rows at a time
  for (size_t a = 0; a < direct.size();) {
    double direct_total = 0.0, shared_total = 0.0;
    int run_first = -1, last_row = direct[a].rows.first - 1;
    size_t b = a;
    for (; b < direct.size(); ++b) {
      const Group& g = direct[b];
      if (g.rows.first != run_first) {  // the next row run: it must follow the stretch's last row
        if (g.rows.first != last_row + 1) break;
        direct_total += direct_row_overhead(width, bands, inner, outer, b == a, costs) +
                        (g.rows.count() - 1) * direct_row_overhead(width, bands, inner, outer, false, costs);
        run_first = g.rows.first;
        last_row = g.rows.last;
      }
      direct_total += static_cast<double>(g.rows.count()) * g.cols.count() * direct_cost(bands, costs);
      shared_total += g.cost;
    }
    if (shared_total < direct_total) chosen.insert(chosen.end(), direct.begin() + a, direct.begin() + b);
    a = b;
  }
  // largest first: the dynamic schedule then ends on small groups
  std::sort(chosen.begin(), chosen.end(), [](const Group& a, const Group& b) { return a.cost > b.cost; });
  return chosen;
}

void check_local_args(const py::array& cube, int inner, int outer, const char* what) {
  const std::string name(what);
  if (cube.ndim() != 3) throw std::invalid_argument(name + ": cube must be (H, W, B); got ndim " + std::to_string(cube.ndim()));
  const long height = cube.shape(0), width = cube.shape(1);
  if (cube.shape(2) < 1) throw std::invalid_argument(name + ": cube has no bands");
  if (inner < 1 || outer <= inner)
    throw std::invalid_argument(name + ": need 1 <= inner < outer; got inner=" + std::to_string(inner) +
                                ", outer=" + std::to_string(outer));
  if (outer > height || outer > width)
    throw std::invalid_argument(name + ": outer window " + std::to_string(outer) + " exceeds the image " +
                                std::to_string(height) + "x" + std::to_string(width));
  if (static_cast<double>(outer) * outer - static_cast<double>(inner) * inner < 2)
    throw std::invalid_argument(name + ": fewer than 2 background pixels");
}

// Path of every pixel (need): 1 = its ring's covariance (shared window or direct path), 2 = the
// sample space (rings with no more distinct spectra than bands: their covariance is singular),
// 3 = a decomposition of the ring (the caller's local_rx_decomposed).
Costs checked_costs(const std::tuple<double, double, double>& c) {
  const Costs costs{std::get<0>(c), std::get<1>(c), std::get<2>(c)};
  if (!(costs.direct_mac > 0 && costs.tile_mac > 0 && costs.moment_add > 0) || !std::isfinite(costs.direct_mac) ||
      !std::isfinite(costs.tile_mac) || !std::isfinite(costs.moment_add))
    throw std::invalid_argument("costs must be three finite numbers > 0 (direct_mac, tile_mac, moment_add)");
  return costs;
}

py::tuple local_rx(py::array_t<double, py::array::c_style | py::array::forcecast> cube, int inner, int outer,
                   double ridge, double pivot_tol, int shared_windows, bool sample_space,
                   const std::tuple<double, double, double>& unit_costs, int row0, int row1) {
  check_local_args(cube, inner, outer, "local_rx");
  if (shared_windows < 0 || shared_windows > 2) throw std::invalid_argument("local_rx: shared_windows must be 0, 1 or 2");
  if (row1 < 0) row1 = static_cast<int>(cube.shape(0));
  if (row0 < 0 || row0 >= row1 || row1 > cube.shape(0))
    throw std::invalid_argument("local_rx: need 0 <= row0 < row1 <= H for the rows to score");
  const int height = static_cast<int>(cube.shape(0));
  const int width = static_cast<int>(cube.shape(1));
  const int bands = static_cast<int>(cube.shape(2));
  const double n = static_cast<double>(outer) * outer - static_cast<double>(inner) * inner;
  const size_t pixels = static_cast<size_t>(height) * width;

  py::array_t<double> scores({height, width});
  py::array_t<uint8_t> failed({height, width});
  const double* x = cube.data();
  double* out = scores.mutable_data();
  uint8_t* left = failed.mutable_data();
  // Without a ridge a singular ring covariance needs the pseudo-inverse; with one it is never
  // singular (and the sample space has no exact form).
  const bool exact = ridge <= 0.0;
  // The diagonal loading depends on each ring's trace, which breaks the low-rank relation
  // between a ring and its outer window: with a ridge every pixel takes the direct path; so does
  // every pixel when no ring has more pixels than bands (the window scatter is singular).
  const bool full_rings = n > bands;
  std::vector<Group> groups = shared_window_groups(height, width, bands, inner, outer,
                                                   ridge > 0.0 || !full_rings ? 0 : shared_windows,
                                                   checked_costs(unit_costs));
  // only the groups with rows to score (the rest of the cube is the halo of those rows' windows)
  groups.erase(std::remove_if(groups.begin(), groups.end(),
                              [&](const Group& g) { return g.rows.last < row0 || g.rows.first >= row1; }),
               groups.end());
  {
    py::gil_scoped_release release;
    std::vector<int> id, distinct;
    bool duplicates = false;
    if (exact) id = duplicate_ids(x, static_cast<long>(pixels), bands, duplicates);
    if (duplicates && full_rings) distinct = distinct_counts(id, height, width, inner, outer);
    // k distinct spectra span at most k - 1 directions: k <= B leaves the ring covariance singular
    const auto singular = [&](size_t p) { return exact && (!full_rings || (duplicates && distinct[p] <= bands)); };
    std::vector<uint8_t> need(pixels);
    const size_t first = static_cast<size_t>(row0) * width, last = static_cast<size_t>(row1) * width;
    for (size_t p = 0; p < pixels; ++p) need[p] = p < first || p >= last ? 0 : singular(p) ? (sample_space ? 2 : 3) : 1;
    std::fill(left, left + pixels, 0);
    std::fill(out, out + first, std::nan(""));  // rows outside [row0, row1) are not scored
    std::fill(out + last, out + pixels, std::nan(""));
#pragma omp parallel
    {
      GroupScratch scratch;
#pragma omp for schedule(dynamic, 1)
      for (size_t gi = 0; gi < groups.size(); ++gi)
        score_group(x, height, width, bands, inner, outer, groups[gi], pivot_tol, scratch, out, need.data());
    }
    if (std::find(need.begin(), need.end(), 1) != need.end()) {
      std::vector<uint8_t> bad(pixels, 0);
      const DirectPass pass{x, height, width, bands, inner, outer, ridge, pivot_tol, need.data(), out, bad.data()};
      // The column moments are shared: every thread slides its share of the columns to the
      // new window rows, then scores its share of the row's pixels (whole groups of kLanes
      // pixels, each thread starting its ring afresh). Splitting rows over threads instead
      // gave each thread its own copy of the moments (2 x W x B^2 / 2 doubles, several MB),
      // and those memory-bound passes did not scale.
      ColumnMoments outer_cols(width, bands), inner_cols(width, bands);
#pragma omp parallel
      score_rings(pass, outer_cols, inner_cols);
      // a failed pivot: singular or too ill-conditioned for the Cholesky's accuracy
      for (size_t p = 0; p < pixels; ++p)
        if (need[p] == 1) need[p] = bad[p] ? 3 : 0;
    }
    if (std::find(need.begin(), need.end(), 2) != need.end()) {
      const SamplePass pass{height, width, bands, inner, outer, pivot_tol, duplicates ? id.data() : nullptr,
                            need.data(), out};
      PairDots dots(x, height, width, bands, outer);
#pragma omp parallel
      score_samples(pass, dots);
    }
    for (size_t p = 0; p < pixels; ++p)
      if (need[p] == 3) {
        left[p] = 1;
        out[p] = std::nan("");
      }
  }
  return py::make_tuple(scores, failed);
}

// ---- Decompositions: the reference's pseudo-inverse itself --------------------------------
// For the rings the other paths leave (a pivot under the floor: dependent spectra other than
// exact duplicates, or a covariance too ill-conditioned for the Cholesky), the pseudo-inverse
// comes from LAPACK (scipy's, passed as capsules of scipy.linalg.cython_lapack) with the
// reference's cutoff. Without a ridge: the SVD of the centred ring Xc = U S V^T (dgesdd), whose
// right singular vectors and s^2 / (n - 1) are C's eigenpairs; it keeps s_k^2 > rcond s_max^2
// exactly as pinv(C) keeps its singular values, and never squares the condition number the way
// forming C (or the Gram Xc Xc^T) does. With a ridge: C + ridge trace / B I by dsyevd, keeping
// |w| > rcond max |w| (a symmetric matrix's singular values are |w|).
typedef void (*dgesdd_fn)(char*, int*, int*, double*, int*, double*, double*, int*, double*, int*, double*, int*,
                          int*, int*);
typedef void (*dsyevd_fn)(char*, char*, int*, double*, int*, double*, double*, int*, int*, int*, int*);

struct Lapack {
  dgesdd_fn dgesdd;
  dsyevd_fn dsyevd;
};

struct DecompScratch {
  std::vector<double> xc, a, s, u, vt, z, work;
  std::vector<int> iwork;
};

// Thin SVD of the row-major n x B matrix s.xc (LAPACK sees its transpose, B x n): singular values
// in s.s (descending), left singular vectors of the transpose (band space) as contiguous columns
// of s.u. False on a LAPACK error.
bool band_space_svd(dgesdd_fn dgesdd, int n, int bands, DecompScratch& s) {
  char jobz = 'S';
  int m = bands, cols = n, lda = bands, mn = std::min(bands, n), ldu = bands, ldvt = mn, lwork = -1, info = 0;
  s.s.resize(mn);
  s.u.resize(static_cast<size_t>(bands) * mn);
  s.vt.resize(static_cast<size_t>(mn) * n);
  s.iwork.resize(8 * static_cast<size_t>(mn));
  double query;
  dgesdd(&jobz, &m, &cols, s.xc.data(), &lda, s.s.data(), s.u.data(), &ldu, s.vt.data(), &ldvt, &query, &lwork,
         s.iwork.data(), &info);
  if (info != 0) return false;
  lwork = static_cast<int>(query);
  s.work.resize(std::max(lwork, 1));
  dgesdd(&jobz, &m, &cols, s.xc.data(), &lda, s.s.data(), s.u.data(), &ldu, s.vt.data(), &ldvt, s.work.data(),
         &lwork, s.iwork.data(), &info);
  return info == 0;
}

// Eigenvalues (ascending, s.s) and eigenvectors (contiguous columns of s.a) of the symmetric m x m s.a.
bool symmetric_eigen(dsyevd_fn dsyevd, int m, DecompScratch& s) {
  char jobz = 'V', uplo = 'L';
  int lwork = -1, liwork = -1, info = 0, lda = m, order = m, iquery = 0;
  double query;
  s.s.resize(m);
  dsyevd(&jobz, &uplo, &order, s.a.data(), &lda, s.s.data(), &query, &lwork, &iquery, &liwork, &info);
  if (info != 0) return false;
  lwork = static_cast<int>(query);
  liwork = iquery;
  s.work.resize(std::max(lwork, 1));
  s.iwork.resize(std::max(liwork, 1));
  dsyevd(&jobz, &uplo, &order, s.a.data(), &lda, s.s.data(), s.work.data(), &lwork, s.iwork.data(), &liwork, &info);
  return info == 0;
}

double decomposition_score(const double* x, int height, int width, int bands, int inner, int outer, double ridge,
                           double rcond, int i, int j, const Lapack& lapack, DecompScratch& s) {
  int ro, ri, co, ci, stop;
  window_bounds(i, outer, height, ro, stop);
  window_bounds(i, inner, height, ri, stop);
  window_bounds(j, outer, width, co, stop);
  window_bounds(j, inner, width, ci, stop);
  const int n = outer * outer - inner * inner;
  s.xc.resize(static_cast<size_t>(n) * bands);
  s.z.assign(bands, 0.0);
  int k = 0;
  for (int r = ro; r < ro + outer; ++r)
    for (int c = co; c < co + outer; ++c) {
      if (r >= ri && r < ri + inner && c >= ci && c < ci + inner) continue;
      const double* v = x + (static_cast<size_t>(r) * width + c) * bands;
      std::copy(v, v + bands, s.xc.data() + static_cast<size_t>(k++) * bands);
      for (int b = 0; b < bands; ++b) s.z[b] += v[b];
    }
  for (int b = 0; b < bands; ++b) s.z[b] /= n;  // the mean; then the rows are centred and z = x - mean
  for (int a = 0; a < n; ++a)
    for (int b = 0; b < bands; ++b) s.xc[static_cast<size_t>(a) * bands + b] -= s.z[b];
  const double* v = x + (static_cast<size_t>(i) * width + j) * bands;
  for (int b = 0; b < bands; ++b) s.z[b] = v[b] - s.z[b];
  const auto project = [&](const double* vec) {
    double d = 0.0;
    for (int b = 0; b < bands; ++b) d += vec[b] * s.z[b];
    return d;
  };
  double score = 0.0;
  if (ridge <= 0.0) {
    if (!band_space_svd(lapack.dgesdd, n, bands, s)) return std::nan("");
    const int mn = std::min(n, bands);
    const double cut = rcond * s.s[0] * s.s[0];
    for (int e = 0; e < mn; ++e) {
      const double sq = s.s[e] * s.s[e];
      if (!(sq > cut)) break;  // descending
      const double d = project(s.u.data() + static_cast<size_t>(e) * bands);
      score += d * d / sq;
    }
    return (n - 1.0) * score;
  }
  s.a.assign(static_cast<size_t>(bands) * bands, 0.0);  // C + ridge trace / B I (lower triangle)
  for (int a = 0; a < n; ++a) {
    const double* xa = s.xc.data() + static_cast<size_t>(a) * bands;
    for (int p = 0; p < bands; ++p) {
      double* row = s.a.data() + static_cast<size_t>(p) * bands;
      for (int q = 0; q <= p; ++q) row[q] += xa[p] * xa[q];
    }
  }
  double trace = 0.0;
  for (int p = 0; p < bands; ++p)
    for (int q = 0; q <= p; ++q) {
      const double c = s.a[static_cast<size_t>(p) * bands + q] / (n - 1);
      s.a[static_cast<size_t>(p) * bands + q] = s.a[static_cast<size_t>(q) * bands + p] = c;
      if (p == q) trace += c;
    }
  for (int p = 0; p < bands; ++p) s.a[static_cast<size_t>(p) * bands + p] += ridge * trace / bands;
  if (!symmetric_eigen(lapack.dsyevd, bands, s)) return std::nan("");
  double largest = 0.0;
  for (int e = 0; e < bands; ++e) largest = std::max(largest, std::fabs(s.s[e]));
  for (int e = 0; e < bands; ++e) {
    if (!(std::fabs(s.s[e]) > rcond * largest)) continue;
    const double d = project(s.a.data() + static_cast<size_t>(e) * bands);
    score += d * d / s.s[e];
  }
  return score;
}

template <typename F>
F lapack_function(const py::capsule& capsule) {
  void* ptr = PyCapsule_GetPointer(capsule.ptr(), PyCapsule_GetName(capsule.ptr()));
  if (ptr == nullptr) throw py::error_already_set();
  return reinterpret_cast<F>(ptr);
}

// Scores of the given pixels ([m, 2] rows, columns) by the decomposition path.
py::array_t<double> local_rx_decomposed(py::array_t<double, py::array::c_style | py::array::forcecast> cube,
                                        int inner, int outer, double ridge, double rcond,
                                        py::array_t<int64_t, py::array::c_style | py::array::forcecast> pixels,
                                        py::capsule dgesdd, py::capsule dsyevd) {
  check_local_args(cube, inner, outer, "local_rx_decomposed");
  if (pixels.ndim() != 2 || pixels.shape(1) != 2)
    throw std::invalid_argument("local_rx_decomposed: pixels must be [m, 2]");
  const int height = static_cast<int>(cube.shape(0)), width = static_cast<int>(cube.shape(1));
  const int bands = static_cast<int>(cube.shape(2));
  const long count = pixels.shape(0);
  const int64_t* ij = pixels.data();
  for (long e = 0; e < 2 * count; e += 2)
    if (ij[e] < 0 || ij[e] >= height || ij[e + 1] < 0 || ij[e + 1] >= width)
      throw std::invalid_argument("local_rx_decomposed: pixel index outside the image");
  const Lapack lapack{lapack_function<dgesdd_fn>(dgesdd), lapack_function<dsyevd_fn>(dsyevd)};
  py::array_t<double> scores(count);
  double* out = scores.mutable_data();
  const double* x = cube.data();
  {
    py::gil_scoped_release release;
#pragma omp parallel
    {
      DecompScratch scratch;
#pragma omp for schedule(dynamic, 1)
      for (long e = 0; e < count; ++e)
        out[e] = decomposition_score(x, height, width, bands, inner, outer, ridge, rcond, static_cast<int>(ij[2 * e]),
                                     static_cast<int>(ij[2 * e + 1]), lapack, scratch);
    }
  }
  return scores;
}

// (H, W) uint8: 1 for the pixels the cost model gives to the shared-window path.
py::array_t<uint8_t> shared_window_plan(int height, int width, int bands, int inner, int outer, int shared_windows,
                                        const std::tuple<double, double, double>& unit_costs) {
  if (inner < 1 || outer <= inner || outer > height || outer > width || bands < 1)
    throw std::invalid_argument("shared_window_plan: need 1 <= inner < outer <= min(H, W) and B >= 1");
  py::array_t<uint8_t> plan({height, width});
  uint8_t* p = plan.mutable_data();
  std::fill(p, p + static_cast<size_t>(height) * width, 0);
  for (const Group& g : shared_window_groups(height, width, bands, inner, outer, shared_windows, checked_costs(unit_costs)))
    for (int i = g.rows.first; i <= g.rows.last; ++i)
      for (int j = g.cols.first; j <= g.cols.last; ++j) p[static_cast<size_t>(i) * width + j] = 1;
  return plan;
}

volatile double measure_sink = 0.0;

// Nanoseconds per unit of each kind of Costs, on this machine, one thread, B = `bands`: the best
// of `repeats` runs of (1) the lockstep Cholesky of four B x B matrices, (2) the Gram tiles and
// bordered factorisation of a 64-pixel window with 32 guard rows, (3) one row of column-moment
// slides over 128 columns. ~50 ms in all at B = 200.
py::dict measure_costs(int bands, int repeats) {
  if (bands < 4 || bands > 4096 || repeats < 1) throw std::invalid_argument("measure_costs: need 4 <= bands <= 4096, repeats >= 1");
  using clock = std::chrono::steady_clock;
  const auto best = [&](const auto& run) {
    double t = 1e300;
    for (int r = 0; r < repeats; ++r) {
      const auto t0 = clock::now();
      run();
      t = std::min(t, std::chrono::duration<double, std::nano>(clock::now() - t0).count());
    }
    return t;
  };
  const size_t pk = packed_size(bands);
  double sink = 0.0, out_direct = 0.0, out_tile = 0.0, out_moment = 0.0;
  py::dict out;
  {
    py::gil_scoped_release release;
    // (1) four diagonally dominant SPD matrices, interleaved as the direct path does
    std::vector<double> lanes(pk * kLanes), cov4(pk * kLanes), work(pk * kLanes), z4(static_cast<size_t>(bands) * kLanes),
        u4(static_cast<size_t>(bands) * kLanes);
    for (int q = 0; q < kLanes; ++q)
      for (int i = 0; i < bands; ++i)
        for (int j = 0; j <= i; ++j)
          lanes[q * pk + static_cast<size_t>(i) * (i + 1) / 2 + j] = i == j ? bands + 1.0 + q : 1.0 / (1 + i + j + q);
    for (size_t k = 0; k < z4.size(); ++k) z4[k] = 1.0 / (1.0 + k);
    interleave_lanes(lanes.data(), pk, pk, cov4.data());
    const double t_chol = best([&] {
      std::copy(cov4.begin(), cov4.end(), work.begin());
      double score[kLanes];
      unsigned char ok[kLanes];
      cholesky_mahalanobis_lanes(work.data(), z4.data(), u4.data(), bands, 1e-12, score, ok, false);
      sink += score[0];
    });
    const double b = bands;
    // (2) a window of 64 pixels and 32 guard rows: Gram, bordered factor, guard Gram
    const long bp = round_up4(bands), len = 64, ldz = len + 4, rows = bp + 32;
    std::vector<double> zt(bp * ldz), f(rows * bp), gu(32 * 32);
    for (size_t k = 0; k < zt.size(); ++k) zt[k] = std::sin(0.37 * k);
    const double t_tile = best([&] {
      std::fill(f.begin(), f.end(), 0.0);
      lower_gram(zt.data(), ldz, len, bp, f.data(), bp, false);
      for (long i = 0; i < bp; ++i) f[i * bp + i] += 64.0;  // well conditioned
      for (long r = bp; r < rows; ++r)
        for (long c = 0; c < bp; ++c) f[r * bp + c] = std::cos(0.11 * (r + c));
      factor_bordered(f.data(), bp, bp, rows, 1e-12);
      lower_gram(f.data() + bp * bp, bp, bp, 32, gu.data(), 32, false);
      sink += gu[0];
    });
    const double tile_macs = len * b * b / 2 + b * b * b / 6 + 32 * b * b / 2 + 32.0 * 32 * b / 2;
    // (3) column moments: one image row of 128 pixels added and removed (at B >= 100 their
    // moments outgrow the caches, as they do on the scenes the choice matters for)
    const int width = 128;
    std::vector<double> x(static_cast<size_t>(width) * bands), col_m(pk * width, 0.0), col_s(static_cast<size_t>(bands) * width, 0.0);
    for (size_t k = 0; k < x.size(); ++k) x[k] = std::sin(0.05 * k);
    const double t_moment = best([&] {
      add_row(x.data(), 0, width, 0, width, bands, 1.0, col_m, col_s);
      add_row(x.data(), 0, width, 0, width, bands, -1.0, col_m, col_s);
      sink += col_m[1];
    });
    out_direct = t_chol / (kLanes * b * b * b / 6);
    out_tile = t_tile / tile_macs;
    out_moment = t_moment / (2.0 * width * pk);
  }
  out["direct_mac"] = out_direct;
  out["tile_mac"] = out_tile;
  out["moment_add"] = out_moment;
  measure_sink = sink;  // keeps the timed work from being optimised away
  return out;
}

int num_threads() { return edgesentry_threads::max_threads(); }

}  // namespace

PYBIND11_MODULE(_cpu_rx, m) {
  m.doc() = "Compiled CPU tier of the RX kernels (see edgesentry.kernels.rx)";
  m.def("local_rx", &local_rx, py::arg("cube"), py::arg("inner"), py::arg("outer"), py::arg("ridge") = 0.0,
        py::arg("pivot_tol") = 1e-12, py::arg("shared_windows") = 1, py::arg("sample_space") = true,
        py::arg("costs") = std::make_tuple(1.0, 1.0, 10.0), py::arg("row0") = 0, py::arg("row1") = -1,
        "Dual-window RX of a mean-centred float64 (H, W, B) cube -> (scores, left) (H, W) arrays; "
        "only the rows [row0, row1) are scored (NaN elsewhere; row1 = -1: to the last row), the others are "
        "their windows' halo (a block of a larger cube: windows shift at this cube's borders); "
        "left marks the pixels left to local_rx_decomposed (scores NaN there). shared_windows: 0 = one "
        "Cholesky per pixel, 1 = shared outer windows where the cost model says so, 2 = wherever "
        "possible; sample_space: False sends rings with no more distinct spectra than bands to "
        "local_rx_decomposed");
  m.def("local_rx_decomposed", &local_rx_decomposed, py::arg("cube"), py::arg("inner"), py::arg("outer"),
        py::arg("ridge"), py::arg("rcond"), py::arg("pixels"), py::arg("dgesdd"), py::arg("dsyevd"),
        "Scores of the [m, 2] pixels from an SVD of their centred ring (with a ridge: an eigendecomposition of "
        "the loaded covariance), the reference's pinv cutoff; dgesdd / dsyevd: capsules of "
        "scipy.linalg.cython_lapack.__pyx_capi__");
  m.def("shared_window_plan", &shared_window_plan, py::arg("height"), py::arg("width"), py::arg("bands"),
        py::arg("inner"), py::arg("outer"), py::arg("shared_windows") = 1,
        py::arg("costs") = std::make_tuple(1.0, 1.0, 10.0),
        "(H, W) uint8 mask of the pixels local_rx scores on the shared-window path");
  m.def("measure_costs", &measure_costs, py::arg("bands"), py::arg("repeats") = 5,
        "ns per unit of the cost model's work kinds on this machine (one thread): direct_mac, tile_mac, "
        "moment_add (the costs argument of local_rx and shared_window_plan, in that order)");
  m.def("num_threads", &num_threads, "OpenMP threads the kernels use");
}
