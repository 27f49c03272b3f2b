// Fused soft-OTAM distance fusion of CLIP-MDMF on the CPU (cosine -> 4 OTAM DPs -> logits).
//
// Specification: edgesentry/kernels/otam/reference.py (fuse_reference / otam_stable).
// The caller supplies the frame dot products (one float32 BLAS sgemm per view) and the frame
// norms; this kernel assembles 1 - a.b / (|a||b| + eps) for every (query, class) pair and runs
// both OTAM directions of both views in one call, parallel over pairs (OpenMP). The DP keeps
// two rows of T + 2 cells in double precision and uses a max-subtracted log-sum-exp softmin,
// so it equals the seed's float32 recurrence where that is finite and stays finite past the
// point (~52) where the seed's exp(-C / 0.5) underflows to log(0) = inf.
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>

#include <algorithm>
#include <cmath>
#include <stdexcept>
#include <vector>

namespace py = pybind11;

namespace {

inline double softmin2(double a, double b, double lam) {
  const double m = std::min(a, b);
  return m - lam * std::log(std::exp((m - a) / lam) + std::exp((m - b) / lam));
}

inline double softmin3(double a, double b, double c, double lam) {
  const double m = std::min(a, std::min(b, c));
  return m - lam * std::log(std::exp((m - a) / lam) + std::exp((m - b) / lam) + std::exp((m - c) / lam));
}

// OTAM of an R x M cost matrix addressed as d(l, j) = base[l * rs + j * cs] (strides let the
// same code read delta and its transpose). prev/cur hold M + 2 cells each.
double otam_dp(const double* base, int rows, int m_cols, long rs, long cs, double lam, double* prev, double* cur) {
  const int last = m_cols + 1;
  prev[0] = 0.0;
  for (int m = 1; m <= m_cols; ++m) prev[m] = prev[m - 1] + base[(m - 1) * cs];
  prev[last] = prev[m_cols];
  for (int l = 1; l < rows; ++l) {
    const double* row = base + l * rs;
    cur[0] = 0.0;
    cur[1] = row[0] + softmin3(prev[0], prev[1], cur[0], lam);
    for (int m = 2; m <= m_cols; ++m) cur[m] = row[(m - 1) * cs] + softmin2(prev[m - 1], cur[m - 1], lam);
    cur[last] = softmin3(prev[m_cols], prev[last], cur[m_cols], lam);
    std::swap(prev, cur);
  }
  return prev[last];
}

using farr = py::array_t<float, py::array::c_style | py::array::forcecast>;
using darr = py::array_t<double, py::array::c_style | py::array::forcecast>;

// dots [V, Q*T, N*T], qnorm [V, Q*T], pnorm [V, N*T]; V = 2 views (local, global).
py::tuple fuse(farr dots, farr qnorm, farr pnorm, int q_count, int n_count, int t, double lam, double eps) {
  if (dots.ndim() != 3 || dots.shape(0) != 2 || dots.shape(1) != static_cast<long>(q_count) * t ||
      dots.shape(2) != static_cast<long>(n_count) * t)
    throw std::invalid_argument("dots must be [2, Q*T, N*T]");
  if (qnorm.ndim() != 2 || qnorm.shape(0) != 2 || qnorm.shape(1) != static_cast<long>(q_count) * t)
    throw std::invalid_argument("qnorm must be [2, Q*T]");
  if (pnorm.ndim() != 2 || pnorm.shape(0) != 2 || pnorm.shape(1) != static_cast<long>(n_count) * t)
    throw std::invalid_argument("pnorm must be [2, N*T]");
  if (!(lam > 0)) throw std::invalid_argument("lam must be > 0");
  py::array_t<float> dists({4L, static_cast<long>(q_count), static_cast<long>(n_count)});
  py::array_t<float> logits({static_cast<long>(q_count), static_cast<long>(n_count)});
  const float* dp = dots.data();
  const float* qn = qnorm.data();
  const float* pn = pnorm.data();
  float* out = dists.mutable_data();
  float* lg = logits.mutable_data();
  const long pairs = static_cast<long>(q_count) * n_count;
  const long qt = static_cast<long>(q_count) * t, nt = static_cast<long>(n_count) * t;
  {
    py::gil_scoped_release release;
#pragma omp parallel
    {
      std::vector<double> delta(static_cast<size_t>(t) * t), rows(2 * static_cast<size_t>(t + 2));
#pragma omp for schedule(static)
      for (long pair = 0; pair < pairs; ++pair) {
        const long q = pair / n_count, n = pair % n_count;
        double total = 0.0;
        for (int v = 0; v < 2; ++v) {
          const float* dv = dp + v * qt * nt;
          for (int i = 0; i < t; ++i) {
            const double a = qn[v * qt + q * t + i];
            const float* drow = dv + (q * t + i) * nt + n * t;
            for (int j = 0; j < t; ++j) {
              const double b = pn[v * nt + n * t + j];
              delta[i * t + j] = 1.0 - static_cast<double>(drow[j]) / (a * b + eps);
            }
          }
          const double qs = otam_dp(delta.data(), t, t, t, 1, lam, rows.data(), rows.data() + t + 2);
          const double sq = otam_dp(delta.data(), t, t, 1, t, lam, rows.data(), rows.data() + t + 2);
          out[(2 * v) * pairs + pair] = static_cast<float>(qs);
          out[(2 * v + 1) * pairs + pair] = static_cast<float>(sq);
          total += qs + sq;
        }
        lg[pair] = static_cast<float>(-total);
      }
    }
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
        o[b] = otam_dp(d + b * rows * m_cols, rows, m_cols, m_cols, 1, lam, buf.data(), buf.data() + m_cols + 2);
    }
  }
  return out;
}

}  // namespace

PYBIND11_MODULE(_cpu_otam, m) {
  m.doc() = "Fused soft-OTAM distance fusion (CLIP-MDMF), CPU tier";
  m.def("fuse", &fuse, py::arg("dots"), py::arg("qnorm"), py::arg("pnorm"), py::arg("q_count"), py::arg("n_count"),
        py::arg("t"), py::arg("lam"), py::arg("eps"),
        "dists [4, Q, N] and logits [Q, N] from frame dot products and norms of both views");
  m.def("otam", &otam, py::arg("delta"), py::arg("lam"), "stabilised single-direction OTAM of [B, R, M] -> [B]");
}
