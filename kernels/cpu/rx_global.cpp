// Global RX on the CPU: two passes over the pixels, float64, no BLAS.
//
// Specification: edgesentry/kernels/rx/reference.py::global_rx (np.cov + pinv + einsum).
// The Python wrapper (kernels/rx/cpu.py) factors the B x B covariance in between and falls
// back to the eigendecomposition path when it is not safely positive definite.
//
// moments(x): the band means and the lower triangle of Z^T Z (Z = x - mean) in one pass,
//   without ever materialising Z: each thread packs a chunk of KC pixels, centred (about a
//   provisional centre, corrected at the end) and transposed to
//   band-major rows (Zt[b][k]), and accumulates 4 x 4 tiles of band dot products over the
//   chunk into its own partial sum; partials are added at the end. Only the lower triangle
//   is computed (half the work of a GEMM), at GEMM-like register blocking: a 4 x 4 tile is
//   16 vector accumulators fed by 8 loads per 16 FMAs.
// mahalanobis(x, mean, W): W = L^-1 (lower triangular, L L^T = C), so the squared
//   Mahalanobis distance is |W z|^2. The same packed chunks; y = W Zt is computed 4 output
//   bands x 16 pixels at a time, summing only over c <= r (the triangle: half the work of
//   the dense projection), and |y|^2 is accumulated per pixel in the epilogue.
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>

#include "band_gram.h"
#include "simd.h"
#include "threads.h"

#include <algorithm>
#include <cstring>
#include <stdexcept>
#include <string>
#include <vector>

#ifdef _OPENMP
#include <omp.h>
#endif

namespace py = pybind11;
using darr = py::array_t<double, py::array::c_style | py::array::forcecast>;

namespace {

// One native register of doubles: 4 on x86-64 (one AVX2 register, also one of the 32 AVX-512VL
// registers in the v4 clone, which is what keeps the 16-accumulator tiles in registers; two SSE2
// registers in the baseline), 2 on NEON (the whitening tile is then 8 pixels wide, so that its 16
// accumulators stay in the 32 q registers).
typedef double vd __attribute__((vector_size(edgesentry_simd::kVectorBytes)));

constexpr long KC = 256;  // pixels per packed chunk (measured: 128 and 512 were ~1.3x slower)
// A tile's 4 band rows (8 KB) stay in L1 while the other rows stream from L2, and the whole
// chunk (~0.4 MB at B = 205) stays in L2 for every tile.
// Row stride of the packed chunk. Not KC: rows a power of two apart map to the same L1 sets,
// and both the packing (one store per band row) and the whitening (16 pixels of every band
// row) then thrash a single set.
constexpr long LDZ = KC + 8;
constexpr int TB = 4;     // bands per tile side

inline long round_up(long n, long m) { return (n + m - 1) / m * m; }

using edgesentry_threads::max_threads;

// Zt[b][k] = x[r0 + k][b] - mean[b] for k < rows, 0 for rows <= k < KC and for the padded bands
// (the shared band-major packing over the chunk's row pointers).
void pack_centred(const double* x, long r0, long rows, long bands, long bands_pad, const double* mean, double* zt) {
  const double* px[KC];
  for (long k = 0; k < rows; ++k) px[k] = x + (r0 + k) * bands;
  edgesentry_tiles::pack_band_major(px, rows, bands, bands_pad, KC, mean, zt, LDZ);
}

// The same packing from band-major pixels xt (B, N) (a Fortran-ordered cube, as MATLAB files
// store them): every band row is a contiguous copy.
void pack_centred_band_major(const double* xt, long n, long r0, long rows, long bands, long bands_pad,
                             const double* mean, double* zt) {
  for (long b = bands; b < bands_pad; ++b) std::fill(zt + b * LDZ, zt + b * LDZ + KC, 0.0);
  for (long b = 0; b < bands; ++b) {
    const double* src = xt + b * n + r0;
    double* dst = zt + b * LDZ;
    const double m = mean[b];
#pragma omp simd
    for (long k = 0; k < rows; ++k) dst[k] = src[k] - m;
    std::fill(dst + rows, dst + KC, 0.0);
  }
}

// Pixels as (N, B) pixel-major or (B, N) band-major.
struct Pixels {
  const double* data;
  long n, bands;
  bool band_major;
  double at(long r, long b) const { return band_major ? data[b * n + r] : data[r * bands + b]; }
  void pack(long r0, long rows, long bands_pad, const double* mean, double* zt) const {
    if (band_major) pack_centred_band_major(data, n, r0, rows, bands, bands_pad, mean, zt);
    else pack_centred(data, r0, rows, bands, bands_pad, mean, zt);
  }
};

// d[k] = sum_r (sum_{c <= r} w[r][c] zt[c][k])^2 over the chunk's KC pixels (w: bands_pad^2,
// lower triangular, zero-padded), with vectors of type V along the pixels.
template <typename V>
__attribute__((always_inline)) inline void whiten_norms_t(const double* zt, const double* w, long bands_pad,
                                                          double* d) {
  constexpr int L = sizeof(V) / sizeof(double);
  constexpr int KV = 4, KB = KV * L;  // pixels per tile: 4 vectors (16 with AVX2, 32 with AVX-512, 8 on NEON)
  // pixel blocks outer: a block's band rows (bands_pad x KB doubles) stay in L1 for every output
  // band tile, and W streams row by row
  for (long k0 = 0; k0 < KC; k0 += KB) {
    V norms[KV] = {};
    for (long r0 = 0; r0 < bands_pad; r0 += TB) {
      const long depth = r0 + TB;  // w[r][c] = 0 for c > r
      V acc[TB][KV] = {};
      for (long c = 0; c < depth; ++c) {
        const double* z = zt + c * LDZ + k0;
        V zc[KV];
        for (int q = 0; q < KV; ++q) zc[q] = edgesentry_tiles::load_vec<V>(z + L * q);
        for (int i = 0; i < TB; ++i) {
          V wi;
          for (int l = 0; l < L; ++l) wi[l] = w[(r0 + i) * bands_pad + c];  // a broadcast
          for (int q = 0; q < KV; ++q) acc[i][q] += wi * zc[q];
        }
      }
      for (int q = 0; q < KV; ++q)
        for (int i = 0; i < TB; ++i) norms[q] += acc[i][q] * acc[i][q];
    }
    std::memcpy(d + k0, norms, sizeof norms);
  }
}

#if defined(EDGESENTRY_X86) && defined(__GNUC__) && !defined(__clang__)
__attribute__((target_clones("arch=x86-64-v4", "arch=x86-64-v3", "default")))
#endif
void whiten_norms(const double* zt, const double* w, long bands_pad, double* d) {
  whiten_norms_t<vd>(zt, w, bands_pad, d);
}

// Both passes with 8-double vectors (v8d): on AVX-512 CPUs the width their float64 peak needs
// (the v4 clones above still use 4-double vectors, half of it, while OpenBLAS's GEMMs, and with
// them spectral.rx, use 8). Without AVX-512 the same code runs split into narrower registers:
// tests use it to check the 8-wide arithmetic on any machine.
using edgesentry_tiles::v8d;
#if defined(EDGESENTRY_X86)
#define ES_AVX512 __attribute__((target("avx512f,avx512vl,avx2,fma")))
ES_AVX512 void whiten_norms_avx512(const double* zt, const double* w, long bands_pad, double* d) {
  whiten_norms_t<v8d>(zt, w, bands_pad, d);
}
ES_AVX512 void lower_gram_avx512(const double* zt, long ldz, long len, long n, double* f, long ldf, bool acc) {
  edgesentry_tiles::lower_gram_t<v8d>(zt, ldz, len, n, f, ldf, acc);
}
#endif
void whiten_norms_v8(const double* zt, const double* w, long bands_pad, double* d) {
  whiten_norms_t<v8d>(zt, w, bands_pad, d);
}
void lower_gram_v8(const double* zt, long ldz, long len, long n, double* f, long ldf, bool acc) {
  edgesentry_tiles::lower_gram_t<v8d>(zt, ldz, len, n, f, ldf, acc);
}

bool has_avx512() {
#if defined(EDGESENTRY_X86)
  static const bool yes = __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512vl");
  return yes;
#else
  return false;
#endif
}

// Vector width of the passes: `width` 0 = the native register (4 doubles on x86-64, 2 on NEON),
// 8 = v8d (AVX-512 code where the CPU has it), -1 = 8 on AVX-512 CPUs, else native.
int pass_width(int width) {
  if (width == -1) return has_avx512() ? 8 : 0;
  if (width != 0 && width != 8) throw std::invalid_argument("width must be -1 (auto), 0 (native) or 8");
  return width;
}

void gram_pass(int width, const double* zt, long ldz, long len, long n, double* f, long ldf, bool acc) {
#if defined(EDGESENTRY_X86)
  if (width == 8 && has_avx512()) return lower_gram_avx512(zt, ldz, len, n, f, ldf, acc);
#endif
  if (width == 8) return lower_gram_v8(zt, ldz, len, n, f, ldf, acc);
  edgesentry_tiles::lower_gram(zt, ldz, len, n, f, ldf, acc);
}

void whiten_pass(int width, const double* zt, const double* w, long bands_pad, double* d) {
#if defined(EDGESENTRY_X86)
  if (width == 8 && has_avx512()) return whiten_norms_avx512(zt, w, bands_pad, d);
#endif
  if (width == 8) return whiten_norms_v8(zt, w, bands_pad, d);
  whiten_norms(zt, w, bands_pad, d);
}

Pixels checked_pixels(const darr& x, bool band_major) {
  if (x.ndim() != 2) throw std::invalid_argument("pixels must be 2-D: (N, B), or (B, N) band-major");
  const long n = band_major ? x.shape(1) : x.shape(0), bands = band_major ? x.shape(0) : x.shape(1);
  if (n < 2 || bands < 1) throw std::invalid_argument("pixels need N >= 2 and B >= 1");
  return Pixels{x.data(), n, bands, band_major};
}

// (mean (B,), cov (B, B) with the N - 1 divisor) of float64 pixels (N, B).
py::tuple moments(const darr& x, bool band_major, int width) {
  const Pixels px = checked_pixels(x, band_major);
  const int vw = pass_width(width);
  const long n = px.n, bands = px.bands, bands_pad = round_up(bands, TB);
  py::array_t<double> mean_out(bands), cov_out({bands, bands});
  double* mean = mean_out.mutable_data();
  double* cov = cov_out.mutable_data();
  const int threads = max_threads();
  std::vector<double> sums(static_cast<size_t>(threads) * bands, 0.0);
  std::vector<double> partial(static_cast<size_t>(threads) * bands_pad * bands_pad, 0.0);
  const long chunks = (n + KC - 1) / KC;
  {
    py::gil_scoped_release release;
    // One pass: the products are taken about a provisional centre (the mean of the first
    // chunk) and corrected by the exact mean afterwards, C = (S^T S - n d d^T) / (n - 1) with
    // d = mean - centre. The centre is within a fraction of a standard deviation of the mean,
    // so the correction is small and cancels nothing that exact centring would keep (a
    // separate mean pass re-read the whole cube: ~10% of the run).
    std::vector<double> centre(bands, 0.0);
    const long first = std::min(n, KC);
    for (long r = 0; r < first; ++r)
      for (long b = 0; b < bands; ++b) centre[b] += px.at(r, b);
    for (long b = 0; b < bands; ++b) centre[b] /= static_cast<double>(first);
#pragma omp parallel num_threads(threads)
    {
#ifdef _OPENMP
      const int me = omp_get_thread_num();
#else
      const int me = 0;
#endif
      double* s = sums.data() + static_cast<size_t>(me) * bands;
      std::vector<double> zt(static_cast<size_t>(bands_pad) * LDZ);
      double* c = partial.data() + static_cast<size_t>(me) * bands_pad * bands_pad;
#pragma omp for schedule(static)
      for (long chunk = 0; chunk < chunks; ++chunk) {
        const long r0 = chunk * KC;
        px.pack(r0, std::min(KC, n - r0), bands_pad, centre.data(), zt.data());
        for (long b = 0; b < bands; ++b) {  // padded pixels are zero
          const double* row = zt.data() + b * LDZ;
          double acc = 0.0;
#pragma omp simd reduction(+ : acc)
          for (long k = 0; k < KC; ++k) acc += row[k];
          s[b] += acc;
        }
        gram_pass(vw, zt.data(), LDZ, KC, bands_pad, c, bands_pad, true);
      }
    }
    std::vector<double> d(bands);
    for (long b = 0; b < bands; ++b) {
      double total = 0.0;
      for (int t = 0; t < threads; ++t) total += sums[static_cast<size_t>(t) * bands + b];
      d[b] = total / static_cast<double>(n);
      mean[b] = centre[b] + d[b];
    }
    const double scale = 1.0 / static_cast<double>(n - 1), nd = static_cast<double>(n);
    for (long i = 0; i < bands; ++i)
      for (long j = 0; j <= i; ++j) {
        double total = 0.0;
        for (int t = 0; t < threads; ++t) total += partial[(static_cast<size_t>(t) * bands_pad + i) * bands_pad + j];
        cov[i * bands + j] = cov[j * bands + i] = (total - nd * d[i] * d[j]) * scale;
      }
  }
  return py::make_tuple(mean_out, cov_out);
}

// Squared Mahalanobis distances |W (x - mean)|^2 for a lower-triangular W (B, B).
py::array_t<double> mahalanobis(const darr& x, const darr& mean, const darr& w, bool band_major, int width) {
  const Pixels px = checked_pixels(x, band_major);
  const int vw = pass_width(width);
  const long n = px.n, bands = px.bands, bands_pad = round_up(bands, TB);
  if (mean.ndim() != 1 || mean.shape(0) != bands) throw std::invalid_argument("mean must be (B,)");
  if (w.ndim() != 2 || w.shape(0) != bands || w.shape(1) != bands) throw std::invalid_argument("W must be (B, B)");
  std::vector<double> wp(static_cast<size_t>(bands_pad) * bands_pad, 0.0);  // lower triangle, zero-padded
  for (long r = 0; r < bands; ++r)
    for (long c = 0; c <= r; ++c) wp[r * bands_pad + c] = w.data()[r * bands + c];
  py::array_t<double> out(n);
  double* d = out.mutable_data();
  const double* pm = mean.data();
  const long chunks = (n + KC - 1) / KC;
  {
    py::gil_scoped_release release;
#pragma omp parallel num_threads(max_threads())
    {
      std::vector<double> zt(static_cast<size_t>(bands_pad) * LDZ), dk(KC);
#pragma omp for schedule(static)
      for (long chunk = 0; chunk < chunks; ++chunk) {
        const long r0 = chunk * KC, rows = std::min(KC, n - r0);
        px.pack(r0, rows, bands_pad, pm, zt.data());
        whiten_pass(vw, zt.data(), wp.data(), bands_pad, dk.data());
        std::copy(dk.begin(), dk.begin() + rows, d + r0);
      }
    }
  }
  return out;
}

}  // namespace

PYBIND11_MODULE(_cpu_rx_global, m) {
  m.doc() = "Compiled CPU tier of global RX: centred moments and triangular whitening (no BLAS)";
  m.def("moments", &moments, py::arg("pixels"), py::arg("band_major") = false, py::arg("width") = -1,
        "(N, B) float64 (or (B, N) with band_major) -> (mean (B,), covariance (B, B), N - 1 divisor); "
        "width: -1 = 8-double vectors on AVX-512 CPUs, else native; 0 = native; 8 = 8-double vectors");
  m.def("mahalanobis", &mahalanobis, py::arg("pixels"), py::arg("mean"), py::arg("w"), py::arg("band_major") = false,
        py::arg("width") = -1, "|W (x - mean)|^2 per pixel for a lower-triangular W = L^-1 -> (N,) float64");
  m.def("has_avx512", &has_avx512, "whether width -1 runs the AVX-512 code here");
}
