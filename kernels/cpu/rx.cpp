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

// acc += sign * (moments of pixel row `r` for every column), over `cols` columns.
void add_row(const double* x, int r, int width, int bands, double sign, std::vector<double>& col_m,
             std::vector<double>& col_s) {
  const size_t pk = packed_size(bands);
  for (int c = 0; c < width; ++c) {
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

// Column sums over rows [r0, r1) recomputed or slid from the previous [p0, p1).
void move_rows(const double* x, int width, int bands, int p0, int p1, int r0, int r1, bool fresh,
               std::vector<double>& col_m, std::vector<double>& col_s) {
  if (fresh) {
    std::fill(col_m.begin(), col_m.end(), 0.0);
    std::fill(col_s.begin(), col_s.end(), 0.0);
    for (int r = r0; r < r1; ++r) add_row(x, r, width, bands, 1.0, col_m, col_s);
    return;
  }
  for (int r = p0; r < std::min(p1, r0); ++r) add_row(x, r, width, bands, -1.0, col_m, col_s);
  for (int r = std::max(p0, r1); r < p1; ++r) add_row(x, r, width, bands, -1.0, col_m, col_s);
  for (int r = r0; r < std::min(r1, p0); ++r) add_row(x, r, width, bands, 1.0, col_m, col_s);
  for (int r = std::max(r0, p1); r < r1; ++r) add_row(x, r, width, bands, 1.0, col_m, col_s);
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

// Dot products of four packed rows with two columns over [0, len): eight independent
// accumulators, six loads per eight FMAs. One long dependency chain per dot would leave the
// FMA units idle, and reusing each loaded row for two columns halves the L2 traffic.
__attribute__((always_inline)) inline void dot4x2(const double* r0, const double* r1, const double* r2,
                                                  const double* r3, const double* c0, const double* c1, int len,
                                                  double d[8]) {
  double s0 = 0.0, s1 = 0.0, s2 = 0.0, s3 = 0.0, t0 = 0.0, t1 = 0.0, t2 = 0.0, t3 = 0.0;
#pragma omp simd reduction(+ : s0, s1, s2, s3, t0, t1, t2, t3)
  for (int k = 0; k < len; ++k) {
    const double a = c0[k], b = c1[k];
    s0 += r0[k] * a; t0 += r0[k] * b;
    s1 += r1[k] * a; t1 += r1[k] * b;
    s2 += r2[k] * a; t2 += r2[k] * b;
    s3 += r3[k] * a; t3 += r3[k] * b;
  }
  d[0] = s0; d[1] = s1; d[2] = s2; d[3] = s3; d[4] = t0; d[5] = t1; d[6] = t2; d[7] = t3;
}

__attribute__((always_inline)) inline double dot1(const double* a, const double* b, int len) {
  double s = 0.0;
#pragma omp simd reduction(+ : s)
  for (int k = 0; k < len; ++k) s += a[k] * b[k];
  return s;
}

inline double* packed_row(double* a, int i) { return a + static_cast<size_t>(i) * (i + 1) / 2; }

// Finish L[i][j] and L[i][j+1] of one row from its dots with columns j and j+1.
__attribute__((always_inline)) inline void finish_pair(double* r, int j, double dj, double dj1, const double* aj1,
                                                       double inv_j, double inv_j1) {
  r[j] = (r[j] - dj) * inv_j;
  r[j + 1] = (r[j + 1] - dj1 - r[j] * aj1[j]) * inv_j1;
}

// In-place left-looking Cholesky of the packed lower triangle `a` (row-major, row i at
// i(i+1)/2), two columns per step and four rows per inner block, then |L^-1 z|^2. Returns
// false when a pivot falls below `tol` x the largest diagonal entry (caller uses pinv).
#if defined(EDGESENTRY_X86) && defined(__GNUC__) && !defined(__clang__)
__attribute__((target_clones("arch=x86-64-v3", "default")))
#endif
bool cholesky_mahalanobis(double* a, const double* z, double* u, int bands, double tol, double& score) {
  double max_diag = 0.0;
  for (int i = 0; i < bands; ++i) max_diag = std::max(max_diag, packed_row(a, i)[i]);
  if (!(max_diag > 0.0)) return false;
  const double floor = tol * max_diag;
  int j = 0;
  for (; j + 1 < bands; j += 2) {
    double* aj = packed_row(a, j);
    double* aj1 = packed_row(a, j + 1);
    const double pj = aj[j] - dot1(aj, aj, j);
    if (!(pj > floor)) return false;
    aj[j] = std::sqrt(pj);
    const double inv_j = 1.0 / aj[j];
    aj1[j] = (aj1[j] - dot1(aj1, aj, j)) * inv_j;
    const double pj1 = aj1[j + 1] - dot1(aj1, aj1, j + 1);
    if (!(pj1 > floor)) return false;
    aj1[j + 1] = std::sqrt(pj1);
    const double inv_j1 = 1.0 / aj1[j + 1];
    int i = j + 2;
    double d[8];
    for (; i + 3 < bands; i += 4) {
      double* r0 = packed_row(a, i);
      double* r1 = packed_row(a, i + 1);
      double* r2 = packed_row(a, i + 2);
      double* r3 = packed_row(a, i + 3);
      dot4x2(r0, r1, r2, r3, aj, aj1, j, d);
      finish_pair(r0, j, d[0], d[4], aj1, inv_j, inv_j1);
      finish_pair(r1, j, d[1], d[5], aj1, inv_j, inv_j1);
      finish_pair(r2, j, d[2], d[6], aj1, inv_j, inv_j1);
      finish_pair(r3, j, d[3], d[7], aj1, inv_j, inv_j1);
    }
    for (; i < bands; ++i) {
      double* r = packed_row(a, i);
      finish_pair(r, j, dot1(r, aj, j), dot1(r, aj1, j), aj1, inv_j, inv_j1);
    }
  }
  if (j < bands) {  // odd band count: the last column is only a pivot
    double* aj = packed_row(a, j);
    const double pj = aj[j] - dot1(aj, aj, j);
    if (!(pj > floor)) return false;
    aj[j] = std::sqrt(pj);
  }
  double acc = 0.0;
  for (int i = 0; i < bands; ++i) {
    const double* ai = packed_row(a, i);
    u[i] = (z[i] - dot1(ai, u, i)) / ai[i];
    acc += u[i] * u[i];
  }
  score = acc;
  return true;
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
#pragma omp parallel
    {
      std::vector<double> out_cm(pk * width), out_cs(static_cast<size_t>(bands) * width);
      std::vector<double> in_cm(pk * width), in_cs(static_cast<size_t>(bands) * width);
      std::vector<double> ring_m(pk), ring_s(bands);
      std::vector<double> cov(pk), mean(bands), z(bands), u(bands);
      int pro0 = 0, pro1 = 0, pri0 = 0, pri1 = 0;
      bool fresh_rows = true;
      int last_row = -2;
#pragma omp for schedule(static)
      for (int i = 0; i < height; ++i) {
        int ro0, ro1, ri0, ri1;
        window_bounds(i, outer, height, ro0, ro1);
        window_bounds(i, inner, height, ri0, ri1);
        fresh_rows = (i != last_row + 1);  // each thread's static chunk starts fresh
        move_rows(x, width, bands, pro0, pro1, ro0, ro1, fresh_rows, out_cm, out_cs);
        move_rows(x, width, bands, pri0, pri1, ri0, ri1, fresh_rows, in_cm, in_cs);
        pro0 = ro0; pro1 = ro1; pri0 = ri0; pri1 = ri1;
        last_row = i;
        int pco0 = 0, pco1 = 0, pci0 = 0, pci1 = 0;
        for (int j = 0; j < width; ++j) {
          int co0, co1, ci0, ci1;
          window_bounds(j, outer, width, co0, co1);
          window_bounds(j, inner, width, ci0, ci1);
          if (j == 0) {
            std::fill(ring_m.begin(), ring_m.end(), 0.0);
            std::fill(ring_s.begin(), ring_s.end(), 0.0);
          }
          move_window(out_cm, out_cs, bands, pco0, pco1, co0, co1, j == 0, 1.0, ring_m, ring_s);
          move_window(in_cm, in_cs, bands, pci0, pci1, ci0, ci1, j == 0, -1.0, ring_m, ring_s);
          pco0 = co0; pco1 = co1; pci0 = ci0; pci1 = ci1;

          for (int b = 0; b < bands; ++b) mean[b] = ring_s[b] / n;
          double trace = 0.0;
          const double inv_dof = 1.0 / (n - 1.0);  // multiply, not divide, in the inner loop
          for (int r = 0; r < bands; ++r) {
            const size_t row = static_cast<size_t>(r) * (r + 1) / 2;
            const double mr = n * mean[r];
#pragma omp simd
            for (int c = 0; c <= r; ++c)
              cov[row + c] = (ring_m[row + c] - mr * mean[c]) * inv_dof;
            trace += cov[row + r];
          }
          if (ridge > 0.0) {
            const double load = ridge * trace / bands;
            for (int r = 0; r < bands; ++r) cov[static_cast<size_t>(r) * (r + 1) / 2 + r] += load;
          }
          const double* v = x + (static_cast<size_t>(i) * width + j) * bands;
          for (int b = 0; b < bands; ++b) z[b] = v[b] - mean[b];
          double score = 0.0;
          const bool ok = cholesky_mahalanobis(cov.data(), z.data(), u.data(), bands, pivot_tol, score);
          out[static_cast<size_t>(i) * width + j] = ok ? score : std::nan("");
          bad[static_cast<size_t>(i) * width + j] = ok ? 0 : 1;
        }
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
