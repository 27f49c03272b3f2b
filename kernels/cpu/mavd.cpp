// MAVD kernels on the CPU: fused align-and-fuse MLP and the O(T) positional attention.
//
// Specification: edgesentry/kernels/mavd/reference.py (align_fuse, positional).
//
// align_fuse: every snippet row runs va (3 x Linear+ReLU on 32-d audio), vf (the same on
// 64-d flow), the split-K fusion layer We1 [v | va | vf] (224 -> 112, ReLU) and We2 (112 -> 64,
// ReLU). Rows are processed in tiles of TILE rows whose activations live in a small stack
// buffer, so nothing but the 64-d output is written to memory; the weight row of each output
// channel is reused across the tile while it sits in L1. OpenMP splits tiles over threads.
//
// positional: A2 t = K (t / s) with K[i, j] = r^|i-j|. K u is a forward scan
// (y_i = u_i + r y_{i-1}) plus a backward scan minus u (the diagonal is counted twice);
// accumulation in double, so the result matches the T x T product to float32 rounding.
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>

#include <algorithm>
#include <cmath>
#include <stdexcept>
#include <string>
#include <vector>

namespace py = pybind11;
using farr = py::array_t<float, py::array::c_style | py::array::forcecast>;

namespace {

constexpr int TILE = 16;

// out[r][o] = relu(b[o] + sum_i x[r][i] W[o][i] (+ the split-K extra terms)), r < rows.
inline void linear_relu(const float* x, int x_stride, int in, const float* w, int w_stride, const float* b,
                        int out, float* y, int y_stride, int rows, bool accumulate, bool relu) {
  for (int o = 0; o < out; ++o) {
    const float* wo = w + static_cast<size_t>(o) * w_stride;
    for (int r = 0; r < rows; ++r) {
      const float* xr = x + static_cast<size_t>(r) * x_stride;
      float acc = 0.f;
#pragma omp simd reduction(+ : acc)
      for (int i = 0; i < in; ++i) acc += xr[i] * wo[i];
      float base = accumulate ? y[r * y_stride + o] : (b ? b[o] : 0.f);
      float v = base + acc;
      y[r * y_stride + o] = (relu && v < 0.f) ? 0.f : v;
    }
  }
}

void check_2d(const farr& a, const char* name, long rows, long cols) {
  if (a.ndim() != 2 || (rows >= 0 && a.shape(0) != rows) || a.shape(1) != cols)
    throw std::invalid_argument(std::string(name) + ": unexpected shape");
}

// Output buffers come from the caller (tests poison them with NaN first).
float* checked_out(py::array_t<float>& out, long rows, long cols, const char* what) {
  if (out.ndim() != 2 || out.shape(0) != rows || out.shape(1) != cols || !(out.flags() & py::array::c_style))
    throw std::invalid_argument(std::string(what) + ": out must be a C-contiguous float32 array of the output shape");
  return out.mutable_data();
}

void align_fuse(const farr& v, const farr& a, const farr& f, const py::list& params, py::array_t<float> out) {
  if (params.size() != 16) throw std::invalid_argument("align_fuse expects 16 parameter arrays");
  std::vector<farr> p;
  for (auto item : params) p.push_back(item.cast<farr>());
  const long n = v.shape(0), m = a.shape(0);
  check_2d(v, "v", -1, 128);
  check_2d(a, "a", -1, 32);
  check_2d(f, "f", n, 64);
  if (m <= 0 && n > 0) throw std::invalid_argument("a has no rows");
  const int dims[16][2] = {{32, 32}, {32, 1}, {32, 32}, {32, 1}, {32, 32}, {32, 1}, {64, 64}, {64, 1},
                           {64, 64}, {64, 1}, {64, 64}, {64, 1}, {112, 224}, {112, 1}, {64, 112}, {64, 1}};
  for (int i = 0; i < 16; ++i) {
    long want = static_cast<long>(dims[i][0]) * dims[i][1];
    if (p[i].size() != want) throw std::invalid_argument("align_fuse parameter " + std::to_string(i) + " has the wrong size");
  }
  const float *pv = v.data(), *pa = a.data(), *pf = f.data();
  std::vector<const float*> w(16);
  for (int i = 0; i < 16; ++i) w[i] = p[i].data();
  float* po = checked_out(out, n, 64, "align_fuse");
  const long tiles = (n + TILE - 1) / TILE;
  {
    py::gil_scoped_release release;
#pragma omp parallel for schedule(static)
    for (long tile = 0; tile < tiles; ++tile) {
      float xa[TILE * 32], ya[TILE * 32], xf[TILE * 64], yf[TILE * 64], h[TILE * 112];
      const long r0 = tile * TILE;
      const int rows = static_cast<int>(std::min<long>(TILE, n - r0));
      for (int r = 0; r < rows; ++r) {
        const float* src = pa + ((r0 + r) % m) * 32;
        std::copy(src, src + 32, xa + r * 32);
      }
      // va: 32 -> 32 -> 32 -> 32, ReLU after each
      linear_relu(xa, 32, 32, w[0], 32, w[1], 32, ya, 32, rows, false, true);
      linear_relu(ya, 32, 32, w[2], 32, w[3], 32, xa, 32, rows, false, true);
      linear_relu(xa, 32, 32, w[4], 32, w[5], 32, ya, 32, rows, false, true);
      // vf: 64 -> 64 -> 64 -> 64 (reads f straight from the input rows)
      linear_relu(pf + r0 * 64, 64, 64, w[6], 64, w[7], 64, yf, 64, rows, false, true);
      linear_relu(yf, 64, 64, w[8], 64, w[9], 64, xf, 64, rows, false, true);
      linear_relu(xf, 64, 64, w[10], 64, w[11], 64, yf, 64, rows, false, true);
      // e1 on the virtual concat [v | va | vf]: three split-K passes, ReLU on the last
      linear_relu(pv + r0 * 128, 128, 128, w[12], 224, w[13], 112, h, 112, rows, false, false);
      linear_relu(ya, 32, 32, w[12] + 128, 224, nullptr, 112, h, 112, rows, true, false);
      linear_relu(yf, 64, 64, w[12] + 160, 224, nullptr, 112, h, 112, rows, true, true);
      // e2: 112 -> 64, ReLU, written to the output
      linear_relu(h, 112, 112, w[14], 112, w[15], 64, po + r0 * 64, 64, rows, false, true);
    }
  }
}

void positional(const farr& t, double decay, py::array_t<float> out) {
  if (t.ndim() != 3) throw std::invalid_argument("positional expects (N, T, C)");
  const long nb = t.shape(0), len = t.shape(1), ch = t.shape(2);
  if (out.ndim() != 3 || out.shape(0) != nb || out.shape(1) != len || out.shape(2) != ch ||
      !(out.flags() & py::array::c_style))
    throw std::invalid_argument("positional: out must be a C-contiguous float32 array of t's shape");
  const float* src = t.data();
  float* dst = out.mutable_data();
  std::vector<double> inv_s(len);
  for (long j = 0; j < len; ++j) {
    double s = ((1 - std::pow(decay, j + 1)) + (1 - std::pow(decay, len - j))) / (1 - decay) - 1;
    inv_s[j] = 1.0 / s;
  }
  {
    py::gil_scoped_release release;
#pragma omp parallel for schedule(static)
    for (long b = 0; b < nb; ++b) {
      const float* x = src + b * len * ch;
      float* y = dst + b * len * ch;
      std::vector<double> acc(ch, 0.0), fwd(static_cast<size_t>(len) * ch);
      for (long i = 0; i < len; ++i) {
        double* fi = fwd.data() + i * ch;
#pragma omp simd
        for (long c = 0; c < ch; ++c) {
          acc[c] = acc[c] * decay + x[i * ch + c] * inv_s[i];
          fi[c] = acc[c];
        }
      }
      std::fill(acc.begin(), acc.end(), 0.0);
      for (long i = len - 1; i >= 0; --i) {
        const double* fi = fwd.data() + i * ch;
#pragma omp simd
        for (long c = 0; c < ch; ++c) {
          const double u = x[i * ch + c] * inv_s[i];
          acc[c] = acc[c] * decay + u;
          y[i * ch + c] = static_cast<float>(fi[c] + acc[c] - u);
        }
      }
    }
  }
}

}  // namespace

PYBIND11_MODULE(_cpu_mavd, m) {
  m.doc() = "Compiled CPU tier of the MAVD kernels (see edgesentry.kernels.mavd)";
  m.def("align_fuse", &align_fuse, py::arg("v"), py::arg("a"), py::arg("f"), py::arg("params"), py::arg("out"),
        "(N,128) v, (M,32) a (row n % M), (N,64) f, 16 float32 params -> writes the (N,64) fusion embedding into out");
  m.def("positional", &positional, py::arg("t"), py::arg("decay"), py::arg("out"),
        "A2 @ t over axis 1 of (N, T, C) float32 by two exponential scans");
}
