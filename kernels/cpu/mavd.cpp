// MAVD kernels on the CPU: fused align-and-fuse MLP and the O(T) positional attention.
//
// Specification: edgesentry/kernels/mavd/reference.py (align_fuse, positional).
//
// align_fuse: every snippet row runs va (3 x Linear+ReLU on 32-d audio), vf (the same on
// 64-d flow), the split-K fusion layer We1 [v | va | vf] (224 -> 112, ReLU) and We2 (112 -> 64,
// ReLU). Rows are processed in tiles of TILE rows whose activations live in a small stack
// buffer, so nothing but the 64-d output is written to memory. Weights are transposed once
// per call to (in, out) so that the inner loop runs over contiguous outputs (vectorised,
// FMA in the x86-64-v3 clone) and every weight row serves RB rows per pass. OpenMP splits
// tiles over threads from a few hundred rows.
//
// positional: A2 t = K (t / s) with K[i, j] = r^|i-j|. K u is a forward scan
// (y_i = u_i + r y_{i-1}) plus a backward scan minus u (the diagonal is counted twice);
// accumulation in double, so the result matches the T x T product to float32 rounding.
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>

#include "simd.h"
#include "threads.h"

#include <algorithm>
#include <cmath>
#include <stdexcept>
#include <string>
#include <vector>

namespace py = pybind11;
using farr = py::array_t<float, py::array::c_style | py::array::forcecast>;

namespace {

constexpr int TILE = 16;  // rows per OpenMP work item
// Rows sharing one pass over a layer's weights. A vec16 is four of NEON's 32 registers, so 8
// rows of accumulators would take them all (the loop spilled ~45 registers per input column).
#ifdef EDGESENTRY_NEON
constexpr int RB = 4;
#else
constexpr int RB = 8;
#endif

// y[r][:] = act(b + sum_i x[r][i] Wt[i][:]) for all TILE rows (inputs are zero-padded to a
// full tile). Wt is the transposed (in, out) weight; the register block is RB rows x OB
// outputs (8 AVX2 accumulators), so each weight vector load feeds RB FMAs.
// `accumulate` adds to y instead of the bias (split-K over the virtual concatenation).
constexpr int OB = 16;
// 16 floats: one AVX-512 register, two AVX2 registers, four SSE registers; GCC lowers the
// arithmetic to whatever the function clone targets. aligned(4): loads may be unaligned. On
// aarch64 a Wide of four NEON registers (see simd.h).
#ifdef EDGESENTRY_NEON
typedef edgesentry_simd::v16f vec16;

__attribute__((always_inline)) inline vec16 load16(const float* p) { return edgesentry_simd::load_wide<vec16>(p); }
__attribute__((always_inline)) inline void store16(float* p, const vec16& v) { edgesentry_simd::store_wide(p, v); }
__attribute__((always_inline)) inline vec16 relu16(const vec16& v) { return edgesentry_simd::relu_wide(v); }
#else
typedef float vec16 __attribute__((vector_size(64), aligned(4)));

__attribute__((always_inline)) inline vec16 load16(const float* p) { return *reinterpret_cast<const vec16*>(p); }
__attribute__((always_inline)) inline void store16(float* p, vec16 v) { *reinterpret_cast<vec16*>(p) = v; }
__attribute__((always_inline)) inline vec16 relu16(vec16 v) {
  const vec16 zero = {};
  return v > zero ? v : zero;
}
#endif

template <int IN, int OUT>
__attribute__((always_inline)) inline void layer(const float* __restrict__ x, int x_stride,
                                                 const float* __restrict__ wt, const float* __restrict__ b,
                                                 float* __restrict__ y, bool accumulate, bool relu) {
  static_assert(OUT % OB == 0, "output width must be a multiple of OB");
  for (int r0 = 0; r0 < TILE; r0 += RB) {
    for (int o0 = 0; o0 < OUT; o0 += OB) {
      vec16 acc[RB];
#pragma GCC unroll 8
      for (int r = 0; r < RB; ++r)
        acc[r] = accumulate ? load16(y + (r0 + r) * OUT + o0) : load16(b + o0);
      for (int i = 0; i < IN; ++i) {
        const vec16 w = load16(wt + i * OUT + o0);
#pragma GCC unroll 8
        for (int r = 0; r < RB; ++r) acc[r] += x[(r0 + r) * x_stride + i] * w;
      }
#pragma GCC unroll 8
      for (int r = 0; r < RB; ++r) store16(y + (r0 + r) * OUT + o0, relu ? relu16(acc[r]) : acc[r]);
    }
  }
}

struct Weights {  // transposed copies: (in, out) row-major
  std::vector<float> va[3], vf[3], e1v, e1a, e1f, e2;
  const float *bva[3], *bvf[3], *be1, *be2;
};

std::vector<float> transpose(const float* w, int out, int in, int col0 = 0, int cols = -1, int stride = -1) {
  if (cols < 0) cols = in;
  if (stride < 0) stride = in;
  std::vector<float> t(static_cast<size_t>(cols) * out);
  for (int o = 0; o < out; ++o)
    for (int i = 0; i < cols; ++i) t[static_cast<size_t>(i) * out + o] = w[static_cast<size_t>(o) * stride + col0 + i];
  return t;
}

#if defined(EDGESENTRY_X86) && defined(__GNUC__) && !defined(__clang__)
__attribute__((target_clones("arch=x86-64-v4", "arch=x86-64-v3", "default")))
#endif
void fuse_tile(const float* pv, const float* pa, const float* pf, long m, long r0, int rows, const Weights& w,
               float* po) {
  alignas(64) float xv[TILE * 128], xa[TILE * 32], ya[TILE * 32], xf[TILE * 64], yf[TILE * 64], h[TILE * 112],
      e[TILE * 64];
  // stage the tile (zero rows past the end keep the register blocks branch-free)
  std::fill(xv, xv + TILE * 128, 0.f);
  std::fill(xf, xf + TILE * 64, 0.f);
  std::fill(xa, xa + TILE * 32, 0.f);
  std::copy(pv + r0 * 128, pv + (r0 + rows) * 128, xv);
  std::copy(pf + r0 * 64, pf + (r0 + rows) * 64, xf);
  for (int r = 0; r < rows; ++r) {
    const float* src = pa + ((r0 + r) % m) * 32;
    std::copy(src, src + 32, xa + r * 32);
  }
  layer<32, 32>(xa, 32, w.va[0].data(), w.bva[0], ya, false, true);
  layer<32, 32>(ya, 32, w.va[1].data(), w.bva[1], xa, false, true);
  layer<32, 32>(xa, 32, w.va[2].data(), w.bva[2], ya, false, true);
  layer<64, 64>(xf, 64, w.vf[0].data(), w.bvf[0], yf, false, true);
  layer<64, 64>(yf, 64, w.vf[1].data(), w.bvf[1], xf, false, true);
  layer<64, 64>(xf, 64, w.vf[2].data(), w.bvf[2], yf, false, true);
  // fusion layer on the virtual concat [v | va | vf]: three split-K passes, ReLU after the last
  layer<128, 112>(xv, 128, w.e1v.data(), w.be1, h, false, false);
  layer<32, 112>(ya, 32, w.e1a.data(), nullptr, h, true, false);
  layer<64, 112>(yf, 64, w.e1f.data(), nullptr, h, true, true);
  layer<112, 64>(h, 112, w.e2.data(), w.be2, e, false, true);
  std::copy(e, e + rows * 64, po + r0 * 64);
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
  Weights wt;
  for (int l = 0; l < 3; ++l) {
    wt.va[l] = transpose(w[2 * l], 32, 32);
    wt.bva[l] = w[2 * l + 1];
    wt.vf[l] = transpose(w[6 + 2 * l], 64, 64);
    wt.bvf[l] = w[6 + 2 * l + 1];
  }
  wt.e1v = transpose(w[12], 112, 224, 0, 128, 224);
  wt.e1a = transpose(w[12], 112, 224, 128, 32, 224);
  wt.e1f = transpose(w[12], 112, 224, 160, 64, 224);
  wt.be1 = w[13];
  wt.e2 = transpose(w[14], 64, 112);
  wt.be2 = w[15];
  const long tiles = (n + TILE - 1) / TILE;
  {
    py::gil_scoped_release release;
    // Threads pay off from a few hundred rows (one video at T = 182: 910 rows, 0.85 -> 0.5 ms).
    // Next to ONNX Runtime this needs its session to stop spinning after run() (the runner
    // sets session.force_spinning_stop), or its idle workers hold the second core.
#pragma omp parallel for schedule(static) if (n >= 512)
    for (long tile = 0; tile < tiles; ++tile) {
      const long r0 = tile * TILE;
      fuse_tile(pv, pa, pf, m, r0, static_cast<int>(std::min<long>(TILE, n - r0)), wt, po);
    }
  }
}

// ------------------------------------------------------------------ fusion head (TCN + MIL)
// The causal TCN (3 residual blocks, kernel 2, dilations 1/2/4, weight norm folded) and the
// MIL head on one crop's (T, 64) embedding, float32, with the same register-blocked `layer`
// as align_fuse. A kernel-2 causal conv is one 128 -> 64 layer on the stacked row
// [x[t-d] | x[t]]. Each level runs over the whole sequence (conv1 into h, conv2 into y, then
// x' = ReLU(y + x) into a second buffer) because row t reads row t - d of the level's input.
struct HeadWeights {  // transposed (in, out) copies
  std::vector<float> conv[3][2], mil0, mil1;
  const float *bconv[3][2], *bmil0, *bmil1, *wmil2, *bmil2;
};

std::vector<float> stack_taps(const float* w) {  // (64 out, 64 in, 2 taps) -> (128, 64): rows [tap0 | tap1]
  std::vector<float> t(128 * 64);
  for (int o = 0; o < 64; ++o)
    for (int i = 0; i < 64; ++i) {
      t[static_cast<size_t>(i) * 64 + o] = w[(o * 64 + i) * 2];
      t[static_cast<size_t>(64 + i) * 64 + o] = w[(o * 64 + i) * 2 + 1];
    }
  return t;
}

#if defined(EDGESENTRY_X86) && defined(__GNUC__) && !defined(__clang__)
__attribute__((target_clones("arch=x86-64-v4", "arch=x86-64-v3", "default")))
#endif
void causal_conv(const float* x, long len, int d, const float* wt, const float* b, float* y) {
  alignas(64) float stacked[TILE * 128], out[TILE * 64];
  for (long r0 = 0; r0 < len; r0 += TILE) {
    const long rows = std::min<long>(TILE, len - r0);
    std::fill(stacked, stacked + TILE * 128, 0.f);
    for (long r = 0; r < rows; ++r) {
      const long t = r0 + r;
      if (t >= d) std::copy(x + (t - d) * 64, x + (t - d + 1) * 64, stacked + r * 128);
      std::copy(x + t * 64, x + (t + 1) * 64, stacked + r * 128 + 64);
    }
    layer<128, 64>(stacked, 128, wt, b, out, false, true);
    std::copy(out, out + rows * 64, y + r0 * 64);
  }
}

#if defined(EDGESENTRY_X86) && defined(__GNUC__) && !defined(__clang__)
__attribute__((target_clones("arch=x86-64-v4", "arch=x86-64-v3", "default")))
#endif
void mil_rows(const float* x, long len, const HeadWeights& w, float* logits) {
  alignas(64) float xin[TILE * 64], h[TILE * 128], g[TILE * 32];
  for (long r0 = 0; r0 < len; r0 += TILE) {
    const long rows = std::min<long>(TILE, len - r0);
    std::fill(xin, xin + TILE * 64, 0.f);
    std::copy(x + r0 * 64, x + (r0 + rows) * 64, xin);
    layer<64, 128>(xin, 64, w.mil0.data(), w.bmil0, h, false, true);
    layer<128, 32>(h, 128, w.mil1.data(), w.bmil1, g, false, false);
    for (long r = 0; r < rows; ++r) {
      float acc = w.bmil2[0];
      for (int i = 0; i < 32; ++i) acc += g[r * 32 + i] * w.wmil2[i];
      logits[r0 + r] = acc;
    }
  }
}

void head_crop(const float* emb, long len, const HeadWeights& w, float* logits) {
  std::vector<float> x(emb, emb + len * 64), h(len * 64), y(len * 64), next(len * 64);
  for (int level = 0; level < 3; ++level) {
    const int d = 1 << level;
    causal_conv(x.data(), len, d, w.conv[level][0].data(), w.bconv[level][0], h.data());
    causal_conv(h.data(), len, d, w.conv[level][1].data(), w.bconv[level][1], y.data());
    for (long i = 0; i < len * 64; ++i) next[i] = std::max(0.f, y[i] + x[i]);
    x.swap(next);
  }
  mil_rows(x.data(), len, w, logits);
}

// Output row t of the TCN reads input rows t - kHeadReach .. t (two kernel-2 convs per level,
// dilations 1, 2, 4), so a chunk of rows [t0, t1) is exact when computed from row
// t0 - kHeadReach on (the sequence start is zero-padded either way).
constexpr long kHeadReach = 2 * (1 + 2 + 4);

// Chunks per crop that spread nb crops evenly over the threads (5 crops on 2 threads: 10
// chunks, not a 3 : 2 split), none shorter than 4 x the reach they recompute.
long head_chunks(long nb, long len, int threads) {
  long chunks = 1;
  while ((nb * chunks) % threads != 0 && len / (chunks + 1) >= 4 * kHeadReach) ++chunks;
  return chunks;
}

// Logits for rows [t0, t1) of one crop.
void head_chunk(const float* emb, long t0, long t1, const HeadWeights& w, float* logits) {
  const long start = std::max(0L, t0 - kHeadReach);
  std::vector<float> out(t1 - start);
  head_crop(emb + start * 64, t1 - start, w, out.data());
  std::copy(out.begin() + (t0 - start), out.end(), logits + t0);
}

// emb (B, T, 64); params: tcn{0,1,2}.conv{1,2}.{w,b} (12 arrays, in that order), then
// mil{0,1,2}.{w,b} (6) -> logits (B, T).
py::array_t<float> fusion_head(const farr& emb, const py::list& params, long chunks) {
  if (emb.ndim() != 3 || emb.shape(2) != 64) throw std::invalid_argument("fusion_head expects emb (B, T, 64)");
  if (params.size() != 18) throw std::invalid_argument("fusion_head expects 18 parameter arrays");
  std::vector<farr> p;
  for (auto item : params) p.push_back(item.cast<farr>());
  const long sizes[18] = {8192, 64, 8192, 64, 8192, 64, 8192, 64, 8192, 64, 8192, 64, 8192, 128, 4096, 32, 32, 1};
  for (int i = 0; i < 18; ++i)
    if (p[i].size() != sizes[i])
      throw std::invalid_argument("fusion_head parameter " + std::to_string(i) + " has the wrong size");
  HeadWeights w;
  for (int level = 0; level < 3; ++level)
    for (int c = 0; c < 2; ++c) {
      w.conv[level][c] = stack_taps(p[level * 4 + c * 2].data());
      w.bconv[level][c] = p[level * 4 + c * 2 + 1].data();
    }
  w.mil0 = transpose(p[12].data(), 128, 64);
  w.bmil0 = p[13].data();
  w.mil1 = transpose(p[14].data(), 32, 128);
  w.bmil1 = p[15].data();
  w.wmil2 = p[16].data();
  w.bmil2 = p[17].data();
  const long nb = emb.shape(0), len = emb.shape(1);
  py::array_t<float> logits({nb, len});
  const float* src = emb.data();
  float* dst = logits.mutable_data();
  {
    py::gil_scoped_release release;
    const bool threaded = nb * len >= 512;  // as align_fuse: threads pay from a few hundred rows
    if (chunks <= 0) chunks = threaded ? head_chunks(nb, len, edgesentry_threads::max_threads()) : 1;
    chunks = std::min(chunks, len);
#pragma omp parallel for schedule(static) if (threaded)
    for (long task = 0; task < nb * chunks; ++task) {
      const long b = task / chunks, c = task % chunks;
      head_chunk(src + b * len * 64, len * c / chunks, len * (c + 1) / chunks, w, dst + b * len);
    }
  }
  return logits;
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
#pragma omp parallel for schedule(static) if (nb * len * ch >= (1L << 20))
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
  m.def("fusion_head", &fusion_head, py::arg("emb"), py::arg("params"), py::arg("chunks") = 0,
        "(B, T, 64) fusion embedding + 18 float32 TCN/MIL params -> (B, T) logits (float32); "
        "chunks: time chunks per crop (0 = spread the crops over the threads)");
  m.def("positional", &positional, py::arg("t"), py::arg("decay"), py::arg("out"),
        "A2 @ t over axis 1 of (N, T, C) float32 by two exponential scans");
}
