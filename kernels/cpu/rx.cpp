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
__attribute__((target_clones("arch=x86-64-v3", "default")))
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
  int j = 0;
  for (; j + 1 < bands; j += 2) {
    double* aj = lane_row(a, j);
    double* aj1 = lane_row(a, j + 1);
    const v4d inv_j = lane_pivot(aj, j, floor, ok);
    v4d s = {0.0, 0.0, 0.0, 0.0};
    for (int k = 0; k < j; ++k) s += load4(aj1 + k * kLanes) * load4(aj + k * kLanes);
    store4(aj1 + j * kLanes, (load4(aj1 + j * kLanes) - s) * inv_j);
    const v4d inv_j1 = lane_pivot(aj1, j + 1, floor, ok);
    const v4d l_j1_j = load4(aj1 + j * kLanes);
    int i = j + 2;
    for (; i + 3 < bands; i += 4) {  // four rows x two columns per pass over k
      double* r0 = lane_row(a, i);
      double* r1 = lane_row(a, i + 1);
      double* r2 = lane_row(a, i + 2);
      double* r3 = lane_row(a, i + 3);
      v4d s0 = {0, 0, 0, 0}, s1 = s0, s2 = s0, s3 = s0, t0 = s0, t1 = s0, t2 = s0, t3 = s0;
      for (int k = 0; k < j; ++k) {
        const size_t o = static_cast<size_t>(k) * kLanes;
        const v4d c0 = load4(aj + o), c1 = load4(aj1 + o);
        const v4d x0 = load4(r0 + o), x1 = load4(r1 + o), x2 = load4(r2 + o), x3 = load4(r3 + o);
        s0 += x0 * c0; t0 += x0 * c1;
        s1 += x1 * c0; t1 += x1 * c1;
        s2 += x2 * c0; t2 += x2 * c1;
        s3 += x3 * c0; t3 += x3 * c1;
      }
      double* rows[4] = {r0, r1, r2, r3};
      const v4d ss[4] = {s0, s1, s2, s3}, ts[4] = {t0, t1, t2, t3};
      for (int m = 0; m < 4; ++m) {
        double* r = rows[m];
        const v4d lj = (load4(r + j * kLanes) - ss[m]) * inv_j;
        store4(r + j * kLanes, lj);
        store4(r + (j + 1) * kLanes, (load4(r + (j + 1) * kLanes) - ts[m] - lj * l_j1_j) * inv_j1);
      }
    }
    for (; i < bands; ++i) {
      double* r = lane_row(a, i);
      v4d s0 = {0, 0, 0, 0}, t0 = s0;
      for (int k = 0; k < j; ++k) {
        const v4d x0 = load4(r + k * kLanes);
        s0 += x0 * load4(aj + k * kLanes);
        t0 += x0 * load4(aj1 + k * kLanes);
      }
      const v4d lj = (load4(r + j * kLanes) - s0) * inv_j;
      store4(r + j * kLanes, lj);
      store4(r + (j + 1) * kLanes, (load4(r + (j + 1) * kLanes) - t0 - lj * l_j1_j) * inv_j1);
    }
  }
  if (j < bands) lane_pivot(lane_row(a, j), j, floor, ok);  // odd band count: last pivot
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
void fill_identity_lane(double* cov4, double* z4, int bands, int lane) {
  for (int r = 0; r < bands; ++r) {
    double* dst = cov4 + static_cast<size_t>(r) * (r + 1) / 2 * kLanes + lane;
    for (int c = 0; c <= r; ++c) dst[c * kLanes] = (c == r) ? 1.0 : 0.0;
    z4[r * kLanes + lane] = 0.0;
  }
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
      std::vector<double> cov4(pk * kLanes), mean(bands), z4(static_cast<size_t>(bands) * kLanes),
          u4(static_cast<size_t>(bands) * kLanes);
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
          const int lane = j % kLanes;
          double trace = 0.0;
          const double inv_dof = 1.0 / (n - 1.0);  // multiply, not divide, in the inner loop
          for (int r = 0; r < bands; ++r) {
            const size_t row = static_cast<size_t>(r) * (r + 1) / 2;
            const double mr = n * mean[r];
            double* dst = cov4.data() + row * kLanes + lane;
            for (int c = 0; c <= r; ++c) dst[c * kLanes] = (ring_m[row + c] - mr * mean[c]) * inv_dof;
            trace += dst[r * kLanes];
          }
          if (ridge > 0.0) {
            const double load = ridge * trace / bands;
            for (int r = 0; r < bands; ++r) cov4[(static_cast<size_t>(r) * (r + 1) / 2 + r) * kLanes + lane] += load;
          }
          const double* v = x + (static_cast<size_t>(i) * width + j) * bands;
          for (int b = 0; b < bands; ++b) z4[b * kLanes + lane] = v[b] - mean[b];
          if (lane == kLanes - 1 || j == width - 1) {
            for (int q = lane + 1; q < kLanes; ++q) fill_identity_lane(cov4.data(), z4.data(), bands, q);
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
