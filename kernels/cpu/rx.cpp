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

// Window sums over columns [c0, c1) recomputed or slid from [p0, p1).
void move_cols(const std::vector<double>& col_m, const std::vector<double>& col_s, int bands, int p0,
               int p1, int c0, int c1, bool fresh, std::vector<double>& win_m, std::vector<double>& win_s) {
  const size_t pk = packed_size(bands);
  auto add = [&](int c, double sign) {
    const double* m = col_m.data() + c * pk;
    const double* s = col_s.data() + static_cast<size_t>(c) * bands;
#pragma omp simd
    for (size_t k = 0; k < pk; ++k) win_m[k] += sign * m[k];
    for (int k = 0; k < bands; ++k) win_s[k] += sign * s[k];
  };
  if (fresh) {
    std::fill(win_m.begin(), win_m.end(), 0.0);
    std::fill(win_s.begin(), win_s.end(), 0.0);
    for (int c = c0; c < c1; ++c) add(c, 1.0);
    return;
  }
  for (int c = p0; c < std::min(p1, c0); ++c) add(c, -1.0);
  for (int c = std::max(p0, c1); c < p1; ++c) add(c, -1.0);
  for (int c = c0; c < std::min(c1, p0); ++c) add(c, 1.0);
  for (int c = std::max(c0, p1); c < c1; ++c) add(c, 1.0);
}

// In-place Cholesky of the packed lower triangle `a` (row-major, row i at i(i+1)/2), then
// |L^-1 z|^2. Returns false when a pivot falls below `tol` x the largest diagonal entry.
#if defined(EDGESENTRY_X86) && defined(__GNUC__) && !defined(__clang__)
__attribute__((target_clones("avx2", "default")))
#endif
bool cholesky_mahalanobis(double* a, const double* z, double* u, int bands, double tol, double& score) {
  double max_diag = 0.0;
  for (int i = 0; i < bands; ++i) max_diag = std::max(max_diag, a[static_cast<size_t>(i) * (i + 1) / 2 + i]);
  const double floor = tol * max_diag;
  if (!(max_diag > 0.0)) return false;
  for (int i = 0; i < bands; ++i) {
    double* ai = a + static_cast<size_t>(i) * (i + 1) / 2;
    for (int j = 0; j < i; ++j) {
      const double* aj = a + static_cast<size_t>(j) * (j + 1) / 2;
      double dot = 0.0;
#pragma omp simd reduction(+ : dot)
      for (int k = 0; k < j; ++k) dot += ai[k] * aj[k];
      ai[j] = (ai[j] - dot) / aj[j];
    }
    double dot = 0.0;
#pragma omp simd reduction(+ : dot)
    for (int k = 0; k < i; ++k) dot += ai[k] * ai[k];
    const double pivot = ai[i] - dot;
    if (!(pivot > floor)) return false;
    ai[i] = std::sqrt(pivot);
  }
  double acc = 0.0;
  for (int i = 0; i < bands; ++i) {
    const double* ai = a + static_cast<size_t>(i) * (i + 1) / 2;
    double dot = 0.0;
#pragma omp simd reduction(+ : dot)
    for (int k = 0; k < i; ++k) dot += ai[k] * u[k];
    u[i] = (z[i] - dot) / ai[i];
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
      std::vector<double> wo_m(pk), wo_s(bands), wi_m(pk), wi_s(bands);
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
          move_cols(out_cm, out_cs, bands, pco0, pco1, co0, co1, j == 0, wo_m, wo_s);
          move_cols(in_cm, in_cs, bands, pci0, pci1, ci0, ci1, j == 0, wi_m, wi_s);
          pco0 = co0; pco1 = co1; pci0 = ci0; pci1 = ci1;

          for (int b = 0; b < bands; ++b) mean[b] = (wo_s[b] - wi_s[b]) / n;
          double trace = 0.0;
          for (int r = 0; r < bands; ++r) {
            const size_t row = static_cast<size_t>(r) * (r + 1) / 2;
            const double mr = n * mean[r];
#pragma omp simd
            for (int c = 0; c <= r; ++c)
              cov[row + c] = (wo_m[row + c] - wi_m[row + c] - mr * mean[c]) / (n - 1.0);
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
