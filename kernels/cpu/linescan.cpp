// Line-scan (push-broom) RX on the CPU: one call per line, BLAS-3 shaped, float64 statistics.
//
// Specification: edgesentry/kernels/linescan/reference.py. A line of W pixels x B bands is scored
// against the model of the lines before it (Mahalanobis distance to their mean, covariance
// C = M / (N - 1) plus the relative ridge), then joins the model:
//   exponentially weighted (forgetting factor lambda; lambda = 1 keeps every line) or
//   a sliding block of the last `window` lines.
//
// Per line (W x B^2 / 2 multiply-adds twice, B^3 / 6 once):
//   Z  = x - m_prev (kept pixels; dropped ones are zero rows)                 W x B
//   G  = Z^T Z                         syrk (lower)                          W B^2 / 2
//   y  = L_prev^-1 z, score = |y|^2    trsm with the previous factor         W B^2 / 2
//   M' = lambda M + G - (n^2 / N') d d^T, m' = m + (n / N') d (d = mean of the kept z)
//   L' = potrf(M' / (N' - 1) + ridge tr / B)                                  B^3 / 6
// The syrk + statistics + factorisation of line t and the scoring of line t (which needs only
// L_{t-1}) are independent, so two threads run them side by side, each with single-threaded
// BLAS: the factor is double-buffered and no BLAS call ever waits for another.
//
// When the line is narrow (few pixels k against B), the factor is instead carried forward by
// k rank-1 updates and one rank-1 downdate (k B^2 instead of B^3 / 6; exponential statistics
// without ridge only: a ridge scaled by tr(C) or a window's departing line are not low rank),
// and a whitened probe residual |L^-1 C L^-T u - u| checks it against the statistics after
// every such line; above the tolerance (or every `refresh_every` lines) it is refactorised.
//
// T (float or double) is the dtype of the scoring product only: the Gram, the statistics and the
// factorisation are float64 whatever T is (real hyperspectral covariances have condition numbers
// of 1e8..1e10; a float32 Gram would bury their weakest directions in rounding).
//
// BLAS and LAPACK are scipy's (function pointers from scipy.linalg.cython_blas/cython_lapack
// capsules, bound once by the Python tier), so nothing links against a BLAS here.
// Storage: every symmetric matrix and factor is column-major lower (element (i, j), i >= j, at
// [j * B + i]), the layout BLAS wants and the one in which a factor column is contiguous.
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>

#include "threads.h"

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <memory>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

#ifdef _OPENMP
#include <omp.h>
#endif

namespace py = pybind11;

namespace {

// ------------------------------------------------------------------------------ BLAS table
using dsyrk_t = void (*)(char*, char*, int*, int*, double*, double*, int*, double*, double*, int*);
using dtrsm_t = void (*)(char*, char*, char*, char*, int*, int*, double*, double*, int*, double*, int*);
using strsm_t = void (*)(char*, char*, char*, char*, int*, int*, float*, float*, int*, float*, int*);
using dpotrf_t = void (*)(char*, int*, double*, int*, int*);
using dpocon_t = void (*)(char*, int*, double*, int*, double*, double*, double*, int*, int*);

struct BlasTable {
  dsyrk_t dsyrk = nullptr;
  dtrsm_t dtrsm = nullptr;
  strsm_t strsm = nullptr;
  dpotrf_t dpotrf = nullptr;
  dpocon_t dpocon = nullptr;
};
BlasTable g_blas;

void* capsule_pointer(const py::dict& capsules, const char* name) {
  if (!capsules.contains(name)) throw std::invalid_argument(std::string("BLAS capsule missing: ") + name);
  PyObject* cap = py::object(capsules[name]).ptr();
  if (!PyCapsule_CheckExact(cap)) throw std::invalid_argument(std::string("not a capsule: ") + name);
  void* ptr = PyCapsule_GetPointer(cap, PyCapsule_GetName(cap));
  if (ptr == nullptr) throw py::error_already_set();
  return ptr;
}

void bind_blas(const py::dict& capsules) {
  g_blas.dsyrk = reinterpret_cast<dsyrk_t>(capsule_pointer(capsules, "dsyrk"));
  g_blas.dtrsm = reinterpret_cast<dtrsm_t>(capsule_pointer(capsules, "dtrsm"));
  g_blas.strsm = reinterpret_cast<strsm_t>(capsule_pointer(capsules, "strsm"));
  g_blas.dpotrf = reinterpret_cast<dpotrf_t>(capsule_pointer(capsules, "dpotrf"));
  g_blas.dpocon = reinterpret_cast<dpocon_t>(capsule_pointer(capsules, "dpocon"));
}

// G = Z^T Z, lower, for Z (w, b) row-major = Z^T (b, w) column-major.
void syrk(double* z, int w, int b, double* g) {
  char uplo = 'L', trans = 'N';
  double one = 1.0, zero = 0.0;
  int ld = b;
  g_blas.dsyrk(&uplo, &trans, &b, &w, &one, z, &ld, &zero, g, &b);
}
// Y := L^-1 Y for the columns of Y (b, w) column-major (one pixel per column).
void trsm(double* l, int b, double* y, int w) {
  char side = 'L', uplo = 'L', trans = 'N', diag = 'N';
  double one = 1.0;
  g_blas.dtrsm(&side, &uplo, &trans, &diag, &b, &w, &one, l, &b, y, &b);
}
void trsm(float* l, int b, float* y, int w) {
  char side = 'L', uplo = 'L', trans = 'N', diag = 'N';
  float one = 1.0f;
  g_blas.strsm(&side, &uplo, &trans, &diag, &b, &w, &one, l, &b, y, &b);
}

constexpr double kNaN = std::numeric_limits<double>::quiet_NaN();

// Fixed probe of the drift guard: entries in [0.5, 1.5) from a small LCG (any vector with no
// special relation to the data works; a fixed one keeps runs reproducible).
std::vector<double> probe_vector(long b) {
  std::vector<double> u(b);
  uint32_t s = 2463534242u;
  for (long i = 0; i < b; ++i) {
    s ^= s << 13;
    s ^= s >> 17;
    s ^= s << 5;
    u[i] = 0.5 + (s & 0xffffff) / double(1 << 24);
  }
  return u;
}

// One stored line of the sliding window: its kept-pixel count, mean and scatter about that mean.
struct RingEntry {
  double n = 0.0;
  std::vector<double> mean, scatter;  // (B,), (B, B) column-major lower
};

// A validated line: float64 or float32 (C order), its width and its update mask.
struct LineInput {
  py::array_t<double, py::array::c_style | py::array::forcecast> x64;
  py::array_t<float, py::array::c_style | py::array::forcecast> x32;
  bool f64 = true;
  long w = 0;
  std::vector<uint8_t> keep;
};

std::string shape_str(const py::array& a) {
  std::string s = "(";
  for (long d = 0; d < a.ndim(); ++d) s += (d ? ", " : "") + std::to_string(a.shape(d));
  return s + ")";
}

LineInput parse_line(const py::array& line, const py::object& valid_obj, long bands) {
  if (g_blas.dsyrk == nullptr) throw std::runtime_error("BLAS not bound: call bind_blas first");
  if (line.ndim() != 2 || line.shape(1) != bands)
    throw std::invalid_argument("line must be (W, " + std::to_string(bands) + "); got " + shape_str(line));
  LineInput in;
  in.w = line.shape(0);
  if (in.w < 1) throw std::invalid_argument("line must hold at least one pixel");
  in.f64 = py::isinstance<py::array_t<double>>(line);
  if (!in.f64 && !py::isinstance<py::array_t<float>>(line)) throw std::invalid_argument("line must be float32 or float64");
  if (in.f64) in.x64 = py::array_t<double, py::array::c_style | py::array::forcecast>::ensure(line);
  else in.x32 = py::array_t<float, py::array::c_style | py::array::forcecast>::ensure(line);
  in.keep.assign(in.w, 1);
  if (!valid_obj.is_none()) {
    auto valid = py::array_t<uint8_t, py::array::c_style | py::array::forcecast>::ensure(valid_obj);
    if (!valid || valid.ndim() != 1 || valid.shape(0) != in.w)
      throw std::invalid_argument("valid must be a (W,) boolean mask");
    for (long r = 0; r < in.w; ++r) in.keep[r] = valid.data()[r] != 0;
  }
  return in;
}

// One thread or two for the next line, from measured step times. Two threads only pay when the
// second core is free (on a shared VM with the other core busy they took turns and ran 1.6x
// slower than one), and one slow line says little (a page fault, a preemption): so each mode
// keeps a moving average of its seconds per pixel, the faster one runs, and every kProbeEvery
// lines a short burst of the other mode refreshes that mode's average.
class ThreadChoice {
 public:
  static constexpr long kProbeEvery = 128, kProbeLines = 2;

  bool pick() {
    const bool best = faster_is_threaded();
    if (probe_left_ > 0) {
      --probe_left_;
      return !best;
    }
    if (++since_probe_ >= kProbeEvery) {
      since_probe_ = 0;
      probe_left_ = kProbeLines - 1;
      return !best;
    }
    return best;
  }
  void record(bool threaded, double seconds, long pixels) {
    double& avg = per_pixel_[threaded];
    const double v = seconds / double(std::max(1L, pixels));
    avg = avg > 0 ? 0.7 * avg + 0.3 * std::min(v, 2.0 * avg) : v;  // clipped: one outlier moves it <= 30%
    ++lines_[threaded];
  }
  long lines(bool threaded) const { return lines_[threaded]; }
  double per_pixel(bool threaded) const { return per_pixel_[threaded]; }

 private:
  double per_pixel_[2] = {0.0, 0.0};  // [one thread, two threads]
  long lines_[2] = {0, 0};
  long since_probe_ = 0, probe_left_ = 0;
  bool faster_is_threaded() const {
    return per_pixel_[0] == 0.0 || per_pixel_[1] == 0.0 || per_pixel_[1] <= per_pixel_[0];
  }
};

template <class T>
class LineModel {
 public:
  LineModel(long bands, double forgetting, long window, double ridge, double max_cond, double pinv_rcond,
            long refresh_every, double guard_tol, double rank_update_ratio)
      : b_(bands), lambda_(forgetting), window_(window), ridge_(ridge), max_cond_(max_cond),
        pinv_rcond_(pinv_rcond), refresh_every_(refresh_every), guard_tol_(guard_tol),
        rank_update_ratio_(rank_update_ratio), mean_(bands, 0.0), scatter_(bands * bands, 0.0),
        factor_(bands * bands, 0.0), next_(bands * bands, 0.0), factor_t_(bands * bands, T(0)),
        gram_(bands * bands, 0.0), probe_(probe_vector(bands)) {
    if (bands < 1) throw std::invalid_argument("bands must be >= 1");
    if (!(forgetting > 0.0 && forgetting <= 1.0)) throw std::invalid_argument("forgetting must lie in (0, 1]");
    if (window < 0) throw std::invalid_argument("window must be >= 0 (0: exponential statistics)");
    if (window > 0 && forgetting != 1.0) throw std::invalid_argument("a window needs forgetting = 1");
    if (window > 0) ring_.resize(window);
  }

  // Score the line against the current model, then add its kept pixels to the model. With
  // want_scores false the scores are only computed when the update threshold needs them.
  py::array_t<double> step(const py::array& line, const py::object& valid_obj, const py::object& scores_obj,
                           double update_threshold, bool want_scores) {
    LineInput in = parse_line(line, valid_obj, b_);
    const bool given = !scores_obj.is_none();
    py::array_t<double, py::array::c_style | py::array::forcecast> given_scores;
    if (given) {
      given_scores = py::array_t<double, py::array::c_style | py::array::forcecast>::ensure(scores_obj);
      if (!given_scores || given_scores.ndim() != 1 || given_scores.shape(0) != in.w)
        throw std::invalid_argument("scores must be (W,) float64");
    }
    py::array_t<double> out(in.w);
    double* scores = out.mutable_data();
    std::fill(scores, scores + in.w, kNaN);  // poisoned: a row the kernel misses reads "not scored"
    {
      py::gil_scoped_release release;
      if (given) std::copy(given_scores.data(), given_scores.data() + in.w, scores);
      const bool scoring = !given && factor_ok_ && (want_scores || std::isfinite(update_threshold));
      if (in.f64) run(in.x64.data(), in.w, in.keep.data(), given, scoring, scores, update_threshold);
      else run(in.x32.data(), in.w, in.keep.data(), given, scoring, scores, update_threshold);
    }
    return out;
  }

  // Score the line against the current model without changing it (look-ahead scoring).
  py::array_t<double> score(const py::array& line, const py::object& valid_obj) {
    LineInput in = parse_line(line, valid_obj, b_);
    py::array_t<double> out(in.w);
    double* scores = out.mutable_data();
    std::fill(scores, scores + in.w, kNaN);
    {
      py::gil_scoped_release release;
      if (in.f64) score_only(in.x64.data(), in.w, in.keep.data(), scores);
      else score_only(in.x32.data(), in.w, in.keep.data(), scores);
    }
    return out;
  }

  // ---- state, for the Python tier (copies)
  double count() const { return count_; }
  long pixels() const { return pixels_; }
  long lines() const { return lines_; }
  bool factor_ok() const { return factor_ok_; }
  py::array_t<double> mean() const {
    py::array_t<double> out(b_);
    std::copy(mean_.begin(), mean_.end(), out.mutable_data());
    return out;
  }
  py::array_t<double> scatter() const { return symmetric(scatter_); }
  // L (row-major lower) with C_reg = L L^T, the factor the next line is scored with.
  py::array_t<double> factor() const {
    py::array_t<double> out({b_, b_});
    double* o = out.mutable_data();
    for (long i = 0; i < b_; ++i)
      for (long j = 0; j < b_; ++j) o[i * b_ + j] = j <= i ? factor_[j * b_ + i] : 0.0;
    return out;
  }
  // Replace the factor (tests force drift with it); the next line is scored with it.
  void set_factor(const py::array_t<double, py::array::c_style | py::array::forcecast>& l) {
    if (l.ndim() != 2 || l.shape(0) != b_ || l.shape(1) != b_) throw std::invalid_argument("factor must be (B, B)");
    for (long i = 0; i < b_; ++i)
      for (long j = 0; j <= i; ++j) factor_[j * b_ + i] = l.data()[i * b_ + j];
    factor_ok_ = true;
    cast_factor();
  }
  py::dict counters() const {
    py::dict d;
    d["refactorisations"] = refactors_;
    d["rank_updates"] = rank_updates_;
    d["guard_trips"] = guard_trips_;
    d["not_positive_definite"] = not_pd_;
    d["window_recombinations"] = recombinations_;
    d["last_guard_residual"] = last_residual_;
    d["last_condition_estimate"] = last_condition_;
    d["seconds_update_side"] = t_update_;
    d["seconds_score_side"] = t_score_;
    d["seconds_factor"] = t_factor_;
    d["seconds_step"] = t_step_;
    d["split_gram_rows_a"] = last_s_;
    d["split_score_rows_a"] = last_q_;
    d["openmp_threads"] = edgesentry_threads::max_threads();
    d["threaded_lines"] = choice_.lines(true);
    d["serial_lines"] = choice_.lines(false);
    d["us_per_pixel_threaded"] = choice_.per_pixel(true) * 1e6;
    d["us_per_pixel_serial"] = choice_.per_pixel(false) * 1e6;
    return d;
  }
  // "refactor" or "update": what the cost model picks for a line of `kept` pixels.
  std::string plan(long kept) const { return use_rank_update(kept) ? "update" : "refactor"; }

 private:
  long b_;
  double lambda_;
  long window_;
  double ridge_, max_cond_, pinv_rcond_;
  long refresh_every_;
  double guard_tol_, rank_update_ratio_;
  double count_ = 0.0;
  long lines_ = 0;
  long pixels_ = 0;  // distinct pixels in the model (every one ever added, for exponential statistics)
  std::vector<double> mean_, scatter_, factor_, next_;
  std::vector<T> factor_t_;
  std::vector<double> gram_;
  std::vector<double> probe_;
  bool factor_ok_ = false;
  long since_refactor_ = 0;
  std::vector<RingEntry> ring_;
  long ring_head_ = 0, ring_size_ = 0;
  // counters
  long refactors_ = 0, rank_updates_ = 0, guard_trips_ = 0, not_pd_ = 0, recombinations_ = 0;
  double last_residual_ = 0.0, last_condition_ = 0.0;
  // seconds spent per phase (summed over lines; the two sides overlap when threaded)
  double t_update_ = 0.0, t_score_ = 0.0, t_factor_ = 0.0, t_step_ = 0.0;
  // workspace
  std::vector<double> z_, other_gram_;  // the Gram side is always float64 (see the header)
  std::vector<T> y_;
  std::vector<double> sums_, other_sums_, centre_;
  // measured costs (seconds, moving averages) that split a line between two threads
  double cost_syrk_row_ = 0.0, cost_trsm_row_ = 0.0, cost_factor_ = 0.0;
  long last_s_ = 0, last_q_ = 0;
  ThreadChoice choice_;

  py::array_t<double> symmetric(const std::vector<double>& lower) const {
    py::array_t<double> out({b_, b_});
    double* o = out.mutable_data();
    for (long j = 0; j < b_; ++j)
      for (long i = j; i < b_; ++i) o[i * b_ + j] = o[j * b_ + i] = lower[j * b_ + i];
    return out;
  }

  void cast_factor() {
    for (long k = 0; k < b_ * b_; ++k) factor_t_[k] = static_cast<T>(factor_[k]);
  }

  bool use_rank_update(long kept) const {
    // k rank-1 updates (+1 downdate) cost ~(k + 1) B^2 multiply-adds at ~1/ratio the speed of
    // potrf's B^3 / 6; exponential statistics without ridge only (see the header).
    if (window_ > 0 || ridge_ > 0.0 || !factor_ok_ || since_refactor_ + 1 >= refresh_every_) return false;
    return double(kept + 1) * b_ * b_ * rank_update_ratio_ < double(b_) * b_ * b_ / 6.0;
  }

  // Rows [r0, r1) of the line: z = x - centre, computed in double and stored as T, zero rows
  // for dropped pixels; `sums` (if given) accumulates the kept z in double.
  template <class S, class U>
  void pack(const S* x, long r0, long r1, const uint8_t* keep, U* z, double* sums) const {
    const double* centre = centre_.data();
    for (long r = r0; r < r1; ++r) {
      U* zr = z + r * b_;
      if (!keep[r]) {
        std::fill(zr, zr + b_, U(0));
        continue;
      }
      const S* xr = x + r * b_;
      if (sums != nullptr) {
#pragma omp simd
        for (long c = 0; c < b_; ++c) {
          const double v = double(xr[c]) - centre[c];
          zr[c] = static_cast<U>(v);
          sums[c] += v;
        }
      } else {
#pragma omp simd
        for (long c = 0; c < b_; ++c) zr[c] = static_cast<U>(double(xr[c]) - centre[c]);
      }
    }
  }

  // Gram share of rows [r0, r1) into g (lower; zero when the share is empty).
  template <class S>
  void gram_rows(const S* x, long r0, long r1, const uint8_t* keep, double* g, double* sums) {
    pack(x, r0, r1, keep, z_.data(), sums);
    if (r1 > r0) syrk(z_.data() + r0 * b_, int(r1 - r0), int(b_), g);
    else std::fill(g, g + b_ * b_, 0.0);
  }

  // scores[r] = |L^-1 (x_r - m)|^2 for rows [r0, r1) with the current factor (one trsm).
  template <class S>
  void score_rows(const S* x, long r0, long r1, const uint8_t* keep, double* scores) {
    if (r1 <= r0) return;
    pack(x, r0, r1, keep, y_.data(), nullptr);
    trsm(factor_t_.data(), int(b_), y_.data() + r0 * b_, int(r1 - r0));
    for (long r = r0; r < r1; ++r) {
      const T* yr = y_.data() + r * b_;
      double acc = 0.0;
#pragma omp simd reduction(+ : acc)
      for (long c = 0; c < b_; ++c) acc += double(yr[c]) * double(yr[c]);
      scores[r] = acc;
    }
  }

  // Split of the next line between two threads: thread A takes the Gram of rows [0, s) and the
  // scores of rows [0, q), and (after thread B's Gram rows [s, W)) absorbs the line and
  // factorises; thread B takes the Gram of rows [s, W) and the scores of rows [q, W). Chosen
  // from the measured per-row costs so that both threads finish together, whatever the
  // relative speed of syrk, trsm and potrf on this machine and dtype.
  void shares(long w, bool scoring, bool fuse, long& s, long& q) const {
    if (cost_syrk_row_ <= 0) {  // first line: half and half
      s = (w + 1) / 2;
      q = w / 2;
      return;
    }
    const double ps = cost_syrk_row_, pt = scoring ? cost_trsm_row_ : 0.0, f = fuse ? cost_factor_ : 0.0;
    const double half = (double(w) * (ps + pt) + f) / 2.0;
    if (double(w) * ps + f <= half && pt > 0) {
      s = w;
      q = long((half - double(w) * ps - f) / pt);
    } else {
      q = 0;
      s = long((half - f) / ps);
    }
    s = std::min(w, std::max((w + 1) / 2, s));
    q = std::min(w, std::max(0L, q));
  }

  static void ema(double& acc, double value) { acc = acc > 0 ? 0.8 * acc + 0.2 * value : value; }

  template <class S>
  void run(const S* x, long w, const uint8_t* keep_in, bool given, bool scoring, double* scores, double threshold) {
    const double t0 = now();
    if (long(z_.size()) < w * b_) {
      z_.assign(w * b_, 0.0);
      y_.assign(w * b_, T(0));
    }
    sums_.assign(b_, 0.0);
    other_sums_.assign(b_, 0.0);
    other_gram_.resize(b_ * b_);
    std::vector<uint8_t> keep(keep_in, keep_in + w);
    long kept = 0;
    for (long r = 0; r < w; ++r) kept += keep[r] != 0;
    if (count_ == 0.0 && kept > 0) centre_on(x, w, keep.data(), kept);
    centre_ = mean_;  // every share centres on the model the line is scored against
    // The factor of line t is computed while line t is scored, unless a score can still take
    // a pixel out of line t's update.
    const bool fuse = !(std::isfinite(threshold) && (scoring || given));
    const bool splittable = edgesentry_threads::max_threads() >= 2 && double(w) * b_ * b_ > 2e6;
    const bool threaded = splittable && choice_.pick();
    long s = w, q = w;
    if (threaded) shares(w, scoring, fuse, s, q);
    if (!scoring) q = w;
    last_s_ = s;
    last_q_ = q;
    std::atomic<bool> other_gram_done{false};
    double t_gram_a = 0, t_gram_b = 0, t_score_a = 0, t_score_b = 0, t_factor = 0;
    auto part_b = [&] {  // Gram rows [s, w), then scores of rows [q, w)
      double t = now();
      gram_rows(x, s, w, keep.data(), other_gram_.data(), other_sums_.data());
      other_gram_done.store(true, std::memory_order_release);
      t_gram_b = now() - t;
      t = now();
      if (scoring) score_rows(x, q, w, keep.data(), scores);
      t_score_b = now() - t;
    };
    auto part_a = [&] {  // Gram rows [0, s), absorb + factor, then scores of rows [0, q)
      double t = now();
      gram_rows(x, 0, s, keep.data(), gram_.data(), sums_.data());
      t_gram_a = now() - t;
      while (!other_gram_done.load(std::memory_order_acquire)) std::this_thread::yield();
      t = now();
      merge_other();
      if (fuse) absorb(w, keep.data(), kept);
      t_factor = now() - t;
      t = now();
      if (scoring) score_rows(x, 0, q, keep.data(), scores);
      t_score_a = now() - t;
    };
    if (threaded) {
#pragma omp parallel num_threads(2)
      {
        if (omp_thread() == 1) part_b();
        if (omp_thread() == 0) {
          if (omp_team() == 1) part_b();
          part_a();
        }
      }
      ema(cost_syrk_row_, (t_gram_a + t_gram_b) / double(w));
      if (scoring) ema(cost_trsm_row_, (t_score_a + t_score_b) / double(w));
      if (fuse) ema(cost_factor_, t_factor);
    } else {
      part_b();
      part_a();
    }
    t_update_ += t_gram_a + t_gram_b + t_factor;
    t_score_ += t_score_a + t_score_b;
    for (long r = 0; r < w; ++r)
      if (!keep_in[r]) scores[r] = kNaN;
    if (!fuse) {
      const double t = now();
      kept = drop_above(w, keep.data(), scores, threshold, kept);
      absorb(w, keep.data(), kept);
      t_update_ += now() - t;
    }
    std::swap(factor_, next_);
    cast_factor();
    ++lines_;
    const double seconds = now() - t0;
    if (splittable) choice_.record(threaded, seconds, w);
    t_step_ += seconds;
  }

  template <class S>
  void score_only(const S* x, long w, const uint8_t* keep, double* scores) {
    if (!factor_ok_) return;  // scores stay NaN
    centre_ = mean_;
    if (long(y_.size()) < w * b_) y_.assign(w * b_, T(0));
    const long half = w / 2;
    if (edgesentry_threads::max_threads() >= 2 && double(w) * b_ * b_ > 2e6) {
#pragma omp parallel num_threads(2)
      {
        if (omp_team() == 1) score_rows(x, 0, w, keep, scores);
        else if (omp_thread() == 0) score_rows(x, 0, half, keep, scores);
        else score_rows(x, half, w, keep, scores);
      }
    } else {
      score_rows(x, 0, w, keep, scores);
    }
    for (long r = 0; r < w; ++r)
      if (!keep[r]) scores[r] = kNaN;
  }

  void merge_other() {
    for (long j = 0; j < b_; ++j)
      for (long i = j; i < b_; ++i) gram_[j * b_ + i] += other_gram_[j * b_ + i];
    for (long c = 0; c < b_; ++c) sums_[c] += other_sums_[c];
  }

  static int omp_thread() {
#ifdef _OPENMP
    return omp_get_thread_num();
#else
    return 0;
#endif
  }
  static int omp_team() {
#ifdef _OPENMP
    return omp_get_num_threads();
#else
    return 1;
#endif
  }

  static double now() {
    return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count();
  }

  // First line of an empty model: centre on its own mean so that the Gram (in T) does not
  // carry the radiance offset (cancellation in G - n d d^T).
  template <class S>
  void centre_on(const S* x, long w, const uint8_t* keep, long kept) {
    std::fill(mean_.begin(), mean_.end(), 0.0);
    for (long r = 0; r < w; ++r)
      if (keep[r])
        for (long c = 0; c < b_; ++c) mean_[c] += double(x[r * b_ + c]);
    for (long c = 0; c < b_; ++c) mean_[c] /= double(kept);
  }

  // Take pixels scored above the threshold out of the update: subtract their rows from the
  // Gram and the sums (re-forming the Gram when they are many).
  long drop_above(long w, uint8_t* keep, const double* scores, double threshold, long kept) {
    std::vector<long> rows;
    for (long r = 0; r < w; ++r)
      if (keep[r] && scores[r] > threshold) rows.push_back(r);
    if (rows.empty()) return kept;
    for (long r : rows) {
      keep[r] = 0;
      const double* zr = z_.data() + r * b_;
      for (long c = 0; c < b_; ++c) sums_[c] -= zr[c];
    }
    if (long(rows.size()) * 4 > w) {
      for (long r : rows) std::fill(z_.begin() + r * b_, z_.begin() + (r + 1) * b_, 0.0);
      syrk(z_.data(), int(w), int(b_), gram_.data());
    } else {
      std::vector<double> e(rows.size() * b_), ge(b_ * b_);
      for (size_t k = 0; k < rows.size(); ++k)
        std::copy(z_.begin() + rows[k] * b_, z_.begin() + (rows[k] + 1) * b_, e.begin() + k * b_);
      syrk(e.data(), int(rows.size()), int(b_), ge.data());
      for (long j = 0; j < b_; ++j)
        for (long i = j; i < b_; ++i) gram_[j * b_ + i] -= ge[j * b_ + i];
    }
    for (long r : rows) std::fill(z_.begin() + r * b_, z_.begin() + (r + 1) * b_, 0.0);
    return kept - long(rows.size());
  }

  // Fold the line (Gram about the previous mean, sums of the kept z) into the statistics and
  // compute the factor the next line will be scored with (into next_).
  void absorb(long w, const uint8_t* keep, long kept) {
    const double n = double(kept);
    const double prev_count = count_;
    pixels_ += kept;
    const bool rank_update = use_rank_update(kept);
    const double t_start = now();
    struct Timer {
      double& acc;
      double start;
      ~Timer() { acc += now() - start; }
    } timer{t_factor_, t_start};
    std::vector<double> d(b_, 0.0);
    if (kept > 0)
      for (long c = 0; c < b_; ++c) d[c] = sums_[c] / n;
    const double lam = lambda_;
    const double total = lam * count_ + n;
    const double coef = total > 0 ? n * n / total : 0.0;
    for (long j = 0; j < b_; ++j)
      for (long i = j; i < b_; ++i)
        scatter_[j * b_ + i] = lam * scatter_[j * b_ + i] + gram_[j * b_ + i] - coef * d[i] * d[j];
    std::vector<double> line_mean(b_);
    for (long c = 0; c < b_; ++c) {
      line_mean[c] = mean_[c] + d[c];
      if (total > 0) mean_[c] += n / total * d[c];
    }
    count_ = total;
    if (window_ > 0) slide(n, d, line_mean);
    if (rank_update && window_ == 0) {
      if (carry_factor(w, keep, n, prev_count, d)) return;
    }
    refactor();
  }

  // Sliding window: remember the line, drop the one that leaves; recombine from the ring once
  // per turn so that add/subtract rounding cannot accumulate.
  void slide(double n, const std::vector<double>& d, const std::vector<double>& line_mean) {
    RingEntry& slot = ring_[ring_head_];
    if (ring_size_ == window_) remove(slot);
    slot.n = n;
    slot.mean = line_mean;
    slot.scatter.assign(b_ * b_, 0.0);
    for (long j = 0; j < b_; ++j)
      for (long i = j; i < b_; ++i) slot.scatter[j * b_ + i] = gram_[j * b_ + i] - n * d[i] * d[j];
    ring_head_ = (ring_head_ + 1) % window_;
    ring_size_ = std::min(ring_size_ + 1, window_);
    if (ring_head_ == 0) recombine();
  }

  void remove(const RingEntry& old) {
    pixels_ -= long(old.n);
    if (old.n <= 0) return;
    const double rest = count_ - old.n;
    if (rest <= 0.5) {  // counts are integers here: nothing is left
      count_ = 0.0;
      std::fill(scatter_.begin(), scatter_.end(), 0.0);
      return;
    }
    std::vector<double> e(b_);
    for (long c = 0; c < b_; ++c) e[c] = mean_[c] - old.mean[c];
    const double coef = old.n * count_ / rest;
    for (long j = 0; j < b_; ++j)
      for (long i = j; i < b_; ++i) scatter_[j * b_ + i] -= old.scatter[j * b_ + i] + coef * e[i] * e[j];
    for (long c = 0; c < b_; ++c) mean_[c] += old.n / rest * e[c];
    count_ = rest;
  }

  void recombine() {
    double n = 0.0;
    std::vector<double> m(b_, 0.0), s(b_ * b_, 0.0);
    for (const RingEntry& r : ring_) {
      if (r.n <= 0) continue;
      const double total = n + r.n, coef = n * r.n / total;
      std::vector<double> e(b_);
      for (long c = 0; c < b_; ++c) e[c] = r.mean[c] - m[c];
      for (long j = 0; j < b_; ++j)
        for (long i = j; i < b_; ++i) s[j * b_ + i] += r.scatter[j * b_ + i] + coef * e[i] * e[j];
      for (long c = 0; c < b_; ++c) m[c] += r.n / total * e[c];
      n = total;
    }
    count_ = n;
    if (n > 0) mean_ = m;
    scatter_ = s;
    ++recombinations_;
  }

  double covariance_scale() const { return count_ > 1.0 ? 1.0 / (count_ - 1.0) : 0.0; }

  // next_ = chol(M / (N - 1) + ridge tr / B); factor_ok_ says whether it is safely positive
  // definite (else the Python tier takes the pseudo-inverse path for the next line). A window
  // that is not recombines its statistics from the ring first: add/subtract rounding leaves
  // ~1e-13 relative noise where a rank-deficient window has exact zeros, which the
  // pseudo-inverse's 1e-15 cutoff would keep (and score).
  void refactor() {
    since_refactor_ = 0;
    ++refactors_;
    if (ridge_ == 0.0 && pixels_ - 1 < b_) {
      // singular by construction (fewer than B + 1 pixels): rounding may leave it numerically
      // positive definite, and Cholesky would then score noise where the pseudo-inverse cuts
      if (window_ > 0) recombine();
      factor_ok_ = false;
      ++not_pd_;
      return;
    }
    factor_ok_ = try_factor();
    if (!factor_ok_ && window_ > 0 && count_ > 1.0) {
      recombine();
      factor_ok_ = try_factor();
    }
    if (!factor_ok_) ++not_pd_;
  }

  bool try_factor() {
    if (count_ <= 1.0) return false;
    const double scale = covariance_scale();
    double trace = 0.0;
    for (long i = 0; i < b_; ++i) trace += scatter_[i * b_ + i] * scale;
    const double load = ridge_ > 0 ? ridge_ * trace / double(b_) : 0.0;
    std::fill(next_.begin(), next_.end(), 0.0);
    for (long j = 0; j < b_; ++j)
      for (long i = j; i < b_; ++i) next_[j * b_ + i] = scatter_[j * b_ + i] * scale + (i == j ? load : 0.0);
    // 1-norm of the symmetric matrix, for the condition estimate
    std::vector<double> colsum(b_, 0.0);
    for (long j = 0; j < b_; ++j)
      for (long i = j; i < b_; ++i) {
        const double v = std::abs(next_[j * b_ + i]);
        colsum[j] += v;
        if (i != j) colsum[i] += v;
      }
    double anorm = *std::max_element(colsum.begin(), colsum.end());
    char uplo = 'L';
    int n = int(b_), info = 0;
    g_blas.dpotrf(&uplo, &n, next_.data(), &n, &info);
    if (info != 0 || !(anorm > 0)) return false;
    double rcond = 0.0;
    std::vector<double> work(3 * b_);
    std::vector<int> iwork(b_);
    g_blas.dpocon(&uplo, &n, next_.data(), &n, &anorm, &rcond, work.data(), iwork.data(), &info);
    last_condition_ = rcond > 0 ? 1.0 / rcond : std::numeric_limits<double>::infinity();
    // Cholesky scores equal the pseudo-inverse's when no eigenvalue is near its cutoff (100x
    // margin for the estimate's looseness); beyond max_cond they would differ by ~cond * eps.
    return info == 0 && rcond > std::max(1.0 / max_cond_, 100.0 * pinv_rcond_);
  }

  // Rank-k path: next_ = sqrt(a) L, then k updates with sqrt(b) z_r and one downdate with
  // sqrt(c) d, where C' = a C + b G - c d d^T. Returns false when it must refactorise instead.
  bool carry_factor(long w, const uint8_t* keep, double n, double prev_count, const std::vector<double>& d) {
    const double denom = count_ - 1.0;
    if (!(prev_count > 1.0) || !(denom > 0)) return false;
    const double a = lambda_ * (prev_count - 1.0) / denom, bcoef = 1.0 / denom;
    const double c = n * n / (count_ * denom);
    const double sa = std::sqrt(a), sb = std::sqrt(bcoef);
    for (long k = 0; k < b_ * b_; ++k) next_[k] = factor_[k] * sa;
    std::vector<double> v(b_);
    for (long r = 0; r < w; ++r) {
      if (!keep[r]) continue;
      const double* zr = z_.data() + r * b_;
      for (long i = 0; i < b_; ++i) v[i] = sb * zr[i];
      rank_one(v.data(), +1.0);
    }
    if (n > 0) {
      const double sc = std::sqrt(c);
      for (long i = 0; i < b_; ++i) v[i] = sc * d[i];
      if (!rank_one(v.data(), -1.0)) return false;
    }
    ++rank_updates_;
    ++since_refactor_;
    last_residual_ = guard_residual();
    if (!(last_residual_ <= guard_tol_)) {
      ++guard_trips_;
      return false;
    }
    factor_ok_ = true;
    return true;
  }

  // next_ L L^T += sign v v^T (v destroyed); false if a downdate loses positive definiteness.
  bool rank_one(double* v, double sign) {
    for (long j = 0; j < b_; ++j) {
      double* col = next_.data() + j * b_;
      const double ljj = col[j], vj = v[j];
      const double r2 = ljj * ljj + sign * vj * vj;
      if (!(r2 > 0) || !(ljj > 0)) return false;
      const double r = std::sqrt(r2), cth = r / ljj, sth = vj / ljj, inv = 1.0 / cth;
      col[j] = r;
#pragma omp simd
      for (long i = j + 1; i < b_; ++i) {
        const double li = (col[i] + sign * sth * v[i]) * inv;
        v[i] = cth * v[i] - sth * li;
        col[i] = li;
      }
    }
    return true;
  }

  // |L^-1 C L^-T u - u| / |u| for the fixed probe u: how far the carried factor has drifted
  // from the statistics, measured where it matters (whitened Mahalanobis space).
  double guard_residual() const {
    const double* l = next_.data();
    std::vector<double> t(probe_), s(b_, 0.0);
    for (long i = b_ - 1; i >= 0; --i) {  // t = L^-T u
      double acc = t[i];
      for (long k = i + 1; k < b_; ++k) acc -= l[i * b_ + k] * t[k];
      t[i] = acc / l[i * b_ + i];
    }
    const double scale = covariance_scale();
    for (long j = 0; j < b_; ++j) {  // s = C t from the lower triangle
      s[j] += scatter_[j * b_ + j] * t[j] * scale;
      for (long i = j + 1; i < b_; ++i) {
        const double cij = scatter_[j * b_ + i] * scale;
        s[i] += cij * t[j];
        s[j] += cij * t[i];
      }
    }
    double num = 0.0, den = 0.0;
    for (long j = 0; j < b_; ++j) {  // s = L^-1 s, column by column
      const double sj = s[j] / l[j * b_ + j];
      s[j] = sj;
      for (long i = j + 1; i < b_; ++i) s[i] -= l[j * b_ + i] * sj;
      num += (sj - probe_[j]) * (sj - probe_[j]);
      den += probe_[j] * probe_[j];
    }
    return std::sqrt(num / den);
  }
};

template <class T>
void bind_model(py::module_& m, const char* name) {
  py::class_<LineModel<T>>(m, name)
      .def(py::init<long, double, long, double, double, double, long, double, double>(), py::arg("bands"),
           py::arg("forgetting"), py::arg("window"), py::arg("ridge"), py::arg("max_cond"), py::arg("pinv_rcond"),
           py::arg("refresh_every"), py::arg("guard_tol"), py::arg("rank_update_ratio"))
      .def("step", &LineModel<T>::step, py::arg("line"), py::arg("valid") = py::none(),
           py::arg("scores") = py::none(), py::arg("update_threshold") = std::numeric_limits<double>::infinity(),
           py::arg("want_scores") = true,
           "score a (W, B) line against the model, then add its kept pixels -> (W,) float64 scores")
      .def("score", &LineModel<T>::score, py::arg("line"), py::arg("valid") = py::none(),
           "score a (W, B) line against the model without changing it -> (W,) float64")
      .def_property_readonly("count", &LineModel<T>::count)
      .def_property_readonly("pixels", &LineModel<T>::pixels)
      .def_property_readonly("lines", &LineModel<T>::lines)
      .def_property_readonly("factor_ok", &LineModel<T>::factor_ok)
      .def("mean", &LineModel<T>::mean)
      .def("scatter", &LineModel<T>::scatter)
      .def("factor", &LineModel<T>::factor)
      .def("set_factor", &LineModel<T>::set_factor)
      .def("counters", &LineModel<T>::counters)
      .def("plan", &LineModel<T>::plan, py::arg("kept"));
}

}  // namespace

PYBIND11_MODULE(_cpu_linescan, m) {
  m.doc() = "Compiled CPU tier of line-scan RX: per-line syrk + trsm + potrf through scipy's BLAS";
  m.def("bind_blas", &bind_blas, py::arg("capsules"),
        "bind dsyrk/dtrsm/strsm/dpotrf/dpocon from scipy.linalg.cython_blas/cython_lapack capsules");
  bind_model<double>(m, "Model64");
  bind_model<float>(m, "Model32");
}
