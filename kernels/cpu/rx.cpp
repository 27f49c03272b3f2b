// Dual-window local RX on the CPU: sliding window moments + one Cholesky per pixel.
//
// Specification: edgesentry/kernels/rx/reference.py::local_rx (per-pixel np.cov + pinv).
// Instead of gathering every background window, the kernel keeps per-column sums of x and
// of the packed lower triangle of x x^T over the current window rows, and slides them:
// moving one row (or column) costs O(B^2) whatever the window size. The covariance of the
// outer-minus-inner ring then costs O(B^2) per pixel and is factored by a Cholesky whose
// row dot products vectorise (omp simd). The score z^T C^-1 z is |L^-1 z|^2, so only a
// forward solve is needed. Pixels whose covariance is not safely positive definite are
// flagged and recomputed by the caller with the reference pseudo-inverse.
//
// Input must be centred by the scene mean (float64): it removes the cancellation that
// raw radiances (~1e3..1e4) would cause in M - s s^T / n.
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>

#include "transpose4.h"

#include <algorithm>
#include <cmath>
#include <stdexcept>
#include <string>
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
// extensions map v4d to one AVX2 register (two SSE2/NEON registers elsewhere).
constexpr int kLanes = 4;
typedef double v4d __attribute__((vector_size(32), aligned(8)));

__attribute__((always_inline)) inline v4d load4(const double* p) { return *reinterpret_cast<const v4d*>(p); }
__attribute__((always_inline)) inline void store4(double* p, v4d v) { *reinterpret_cast<v4d*>(p) = v; }
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
                                unsigned char* ok) {
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
    for (; i + 3 < bands; i += 4) {
      double* rows[4] = {lane_row(a, i), lane_row(a, i + 1), lane_row(a, i + 2), lane_row(a, i + 3)};
      v4d acc[4][4] = {};
      for (int k = 0; k < j; ++k) {
        const size_t o = static_cast<size_t>(k) * kLanes;
        const v4d c0 = load4(col[0] + o), c1 = load4(col[1] + o), c2 = load4(col[2] + o), c3 = load4(col[3] + o);
        for (int m = 0; m < 4; ++m) {
          const v4d xm = load4(rows[m] + o);
          acc[m][0] += xm * c0;
          acc[m][1] += xm * c1;
          acc[m][2] += xm * c2;
          acc[m][3] += xm * c3;
        }
      }
      for (int m = 0; m < 4; ++m) finish(rows[m], acc[m]);
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
void interleave_lanes(const double* lanes, size_t pk, double* cov4) {
  const double *l0 = lanes, *l1 = lanes + pk, *l2 = lanes + 2 * pk, *l3 = lanes + 3 * pk;
  size_t k = 0;
  for (; k + 4 <= pk; k += 4) {
    v4d col[4];
    edgesentry_simd::transpose4(load4(l0 + k), load4(l1 + k), load4(l2 + k), load4(l3 + k), col);
    for (int i = 0; i < 4; ++i) store4(cov4 + (k + i) * kLanes, col[i]);
  }
  for (; k < pk; ++k)
    for (int q = 0; q < kLanes; ++q) cov4[k * kLanes + q] = lanes[q * pk + k];
}

py::tuple local_rx(py::array_t<double, py::array::c_style | py::array::forcecast> cube, int inner, int outer,
                   double ridge, double pivot_tol) {
  if (cube.ndim() != 3) throw std::invalid_argument("local_rx: cube must be (H, W, B); got ndim " + std::to_string(cube.ndim()));
  const int height = static_cast<int>(cube.shape(0));
  const int width = static_cast<int>(cube.shape(1));
  const int bands = static_cast<int>(cube.shape(2));
  if (bands < 1) throw std::invalid_argument("local_rx: cube has no bands");
  if (inner < 1 || outer <= inner)
    throw std::invalid_argument("local_rx: need 1 <= inner < outer; got inner=" + std::to_string(inner) +
                                ", outer=" + std::to_string(outer));
  if (outer > height || outer > width)
    throw std::invalid_argument("local_rx: outer window " + std::to_string(outer) + " exceeds the image " +
                                std::to_string(height) + "x" + std::to_string(width));
  const double n = static_cast<double>(outer) * outer - static_cast<double>(inner) * inner;
  if (n < 2) throw std::invalid_argument("local_rx: fewer than 2 background pixels");

  py::array_t<double> scores({height, width});
  py::array_t<uint8_t> failed({height, width});
  const double* x = cube.data();
  double* out = scores.mutable_data();
  uint8_t* bad = failed.mutable_data();
  const size_t pk = packed_size(bands);

  {
    py::gil_scoped_release release;
    // The column moments are shared: every thread slides its share of the columns to the new
    // window rows, then scores its own segment of the image row (segments are whole groups of
    // kLanes pixels, each starting its ring afresh). Splitting rows over threads instead gave
    // each thread its own copy of the moments (2 x W x B^2 / 2 doubles, several MB), and those
    // memory-bound passes did not scale.
    std::vector<double> out_cm(pk * width), out_cs(static_cast<size_t>(bands) * width);
    std::vector<double> in_cm(pk * width), in_cs(static_cast<size_t>(bands) * width);
#pragma omp parallel
    {
#ifdef _OPENMP
      const int nt = omp_get_num_threads(), me = omp_get_thread_num();
#else
      const int nt = 1, me = 0;
#endif
      const int groups = (width + kLanes - 1) / kLanes;
      const int seg0 = std::min(width, groups * me / nt * kLanes), seg1 = std::min(width, groups * (me + 1) / nt * kLanes);
      const int mom0 = width * me / nt, mom1 = width * (me + 1) / nt;
      std::vector<double> ring_m(pk), ring_s(bands);
      std::vector<double> cov4(pk * kLanes), lanes(pk * kLanes), mean(bands), z4(static_cast<size_t>(bands) * kLanes),
          u4(static_cast<size_t>(bands) * kLanes);
      int pro0 = 0, pro1 = 0, pri0 = 0, pri1 = 0;
      for (int i = 0; i < height; ++i) {
        int ro0, ro1, ri0, ri1;
        window_bounds(i, outer, height, ro0, ro1);
        window_bounds(i, inner, height, ri0, ri1);
        move_rows(x, width, mom0, mom1, bands, pro0, pro1, ro0, ro1, i == 0, out_cm, out_cs);
        move_rows(x, width, mom0, mom1, bands, pri0, pri1, ri0, ri1, i == 0, in_cm, in_cs);
        pro0 = ro0; pro1 = ro1; pri0 = ri0; pri1 = ri1;
#pragma omp barrier
        int pco0 = 0, pco1 = 0, pci0 = 0, pci1 = 0;
        for (int j = seg0; j < seg1; ++j) {
          int co0, co1, ci0, ci1;
          window_bounds(j, outer, width, co0, co1);
          window_bounds(j, inner, width, ci0, ci1);
          if (j == seg0) {
            std::fill(ring_m.begin(), ring_m.end(), 0.0);
            std::fill(ring_s.begin(), ring_s.end(), 0.0);
          }
          move_window(out_cm, out_cs, bands, pco0, pco1, co0, co1, j == seg0, 1.0, ring_m, ring_s);
          move_window(in_cm, in_cs, bands, pci0, pci1, ci0, ci1, j == seg0, -1.0, ring_m, ring_s);
          pco0 = co0; pco1 = co1; pci0 = ci0; pci1 = ci1;
          for (int b = 0; b < bands; ++b) mean[b] = ring_s[b] / n;
          const int lane = j % kLanes;
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
          if (ridge > 0.0) {
            const double load = ridge * trace / bands;
            for (int r = 0; r < bands; ++r) lc[static_cast<size_t>(r) * (r + 1) / 2 + r] += load;
          }
          const double* v = x + (static_cast<size_t>(i) * width + j) * bands;
          for (int b = 0; b < bands; ++b) z4[b * kLanes + lane] = v[b] - mean[b];
          if (lane == kLanes - 1 || j == width - 1) {
            for (int q = lane + 1; q < kLanes; ++q) fill_identity_lane(lanes.data() + q * pk, z4.data(), bands, q);
            interleave_lanes(lanes.data(), pk, cov4.data());
            double score[kLanes];
            unsigned char ok[kLanes];
            cholesky_mahalanobis_lanes(cov4.data(), z4.data(), u4.data(), bands, pivot_tol, score, ok);
            for (int q = 0; q <= lane; ++q) {
              const size_t idx = static_cast<size_t>(i) * width + (j - lane + q);
              out[idx] = ok[q] ? score[q] : std::nan("");
              bad[idx] = ok[q] ? 0 : 1;
            }
          }
        }
#pragma omp barrier  // nobody reads the moments while the next row's slide writes them
      }
    }
  }
  return py::make_tuple(scores, failed);
}

int num_threads() {
#ifdef _OPENMP
  return omp_get_max_threads();
#else
  return 1;
#endif
}

}  // namespace

PYBIND11_MODULE(_cpu_rx, m) {
  m.doc() = "Compiled CPU tier of the RX kernels (see edgesentry.kernels.rx)";
  m.def("local_rx", &local_rx, py::arg("cube"), py::arg("inner"), py::arg("outer"), py::arg("ridge") = 0.0,
        py::arg("pivot_tol") = 1e-12,
        "Dual-window RX of a mean-centred float64 (H, W, B) cube -> (scores, failed) (H, W) arrays");
  m.def("num_threads", &num_threads, "OpenMP threads the kernels use");
}
