"""Line-scan RX, Triton tier: the per-line Gram and the scores in two fused kernels, the
statistics and the factor on the device in torch.

Specification: ``reference.py``. Per line (all on the device, one host sync for the factor check):

1. ``_line_score_kernel``: ``score_p = |R (x_p - m)|^2`` with ``R = L^-1`` of the model before
   the line; a program owns a block of pixels and walks the lower triangle of R tile by tile
   (tiles above the diagonal are skipped), squaring and reducing the projection in registers.
   Masked pixels are never loaded (they may hold NaN) and score NaN. ``dtype="float32"``
   computes this product in float32, as the cpu tier's ``strsm``.
2. ``_line_gram_kernel``: the Gram ``Z^T Z`` of the kept pixels centred on m, and their sums,
   tile by tile in float64 (a float32 Gram would bury the weak directions of real covariances;
   see ``cpu.py``); pixels scored above the update threshold are dropped from the mask first.
3. torch, float64: the statistics update (``_stats.RunningStatistics``), ``cholesky_ex`` of the
   regularised covariance and ``R = L^-1`` by a triangular solve. A factor whose smallest pivot
   falls below ``1 / MAX_COND`` of the largest diagonal entry (the cpu tier's condition bound)
   sends the next line to the pseudo-inverse path: ``eigh`` with the pinv cutoff and RX's fused
   Mahalanobis kernel (``rx.triton.whitening`` / ``mahalanobis``).

Why no ``tl.dot``: float64 ``tl.dot`` is not lowered on every NVIDIA target by every Triton
release (the RX tier's reason); the products are broadcast-multiply-sum, and a line is small
enough (W x B^2 ~ 3e7 multiply-adds at 640 x 224) that the GPU is latency-bound anyway.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import triton
import triton.language as tl

from edgesentry.kernels import _triton
from edgesentry.kernels._triton import to_like, to_tensor
from edgesentry.kernels.rx import triton as rx_triton

from ._stats import RunningStatistics
from .cpu import MAX_COND
from .reference import DEFAULT_RCOND, check_line, check_options


def unavailable_reason() -> str | None:
    return _triton.unavailable_reason()


# ----------------------------------------------------------------------------- kernels
@triton.jit
def _line_gram_kernel(x_ptr, keep_ptr, centre_ptr, gram_ptr, sums_ptr, w, b,
                      BLOCK_W: tl.constexpr, BLOCK_B: tl.constexpr):
    """gram[i, j] = sum over kept pixels r of z[r, i] z[r, j], z = x - centre (float64);
    programs of the first tile column also write sums[i] = sum of z[r, i]."""
    pid_i = tl.program_id(0)
    pid_j = tl.program_id(1)
    ci = pid_i * BLOCK_B + tl.arange(0, BLOCK_B)
    cj = pid_j * BLOCK_B + tl.arange(0, BLOCK_B)
    mean_i = tl.load(centre_ptr + ci, mask=ci < b, other=0.0)
    mean_j = tl.load(centre_ptr + cj, mask=cj < b, other=0.0)
    acc = tl.zeros((BLOCK_B, BLOCK_B), dtype=tl.float64)
    sums = tl.zeros((BLOCK_B,), dtype=tl.float64)
    for r0 in range(0, w, BLOCK_W):
        rows = r0 + tl.arange(0, BLOCK_W)
        kept = tl.load(keep_ptr + rows, mask=rows < w, other=0) != 0  # masked pixels are never read
        base = rows[:, None].to(tl.int64) * b
        mask_i = kept[:, None] & (ci[None, :] < b)
        mask_j = kept[:, None] & (cj[None, :] < b)
        zi = tl.where(mask_i, tl.load(x_ptr + base + ci[None, :], mask=mask_i, other=0.0).to(tl.float64)
                      - mean_i[None, :], 0.0)
        zj = tl.where(mask_j, tl.load(x_ptr + base + cj[None, :], mask=mask_j, other=0.0).to(tl.float64)
                      - mean_j[None, :], 0.0)
        acc += tl.sum(zi[:, :, None] * zj[:, None, :], axis=0)
        sums += tl.sum(zi, axis=0)
    tl.store(gram_ptr + ci[:, None] * b + cj[None, :], acc, mask=(ci[:, None] < b) & (cj[None, :] < b))
    if pid_j == 0:
        tl.store(sums_ptr + ci, sums, mask=ci < b)


@triton.jit
def _line_score_kernel(x_ptr, keep_ptr, centre_ptr, r_ptr, out_ptr, w, b,
                       BLOCK_W: tl.constexpr, BLOCK_B: tl.constexpr, USE_F64: tl.constexpr):
    """out[p] = |R (x[p] - centre)|^2 for kept pixels, NaN for the others; R (b, b) lower
    triangular in the compute dtype (float64, or float32 when USE_F64 is false)."""
    pid = tl.program_id(0)
    rows = pid * BLOCK_W + tl.arange(0, BLOCK_W)
    kept = tl.load(keep_ptr + rows, mask=rows < w, other=0) != 0
    base = rows[:, None].to(tl.int64) * b
    score = tl.zeros((BLOCK_W,), dtype=tl.float64)
    for k0 in range(0, b, BLOCK_B):
        ks = k0 + tl.arange(0, BLOCK_B)
        if USE_F64:
            proj = tl.zeros((BLOCK_W, BLOCK_B), dtype=tl.float64)
        else:
            proj = tl.zeros((BLOCK_W, BLOCK_B), dtype=tl.float32)
        for c0 in range(0, k0 + BLOCK_B, BLOCK_B):  # R[k, c] = 0 for c > k: the triangle only
            cs = c0 + tl.arange(0, BLOCK_B)
            zmask = kept[:, None] & (cs[None, :] < b)
            mean = tl.load(centre_ptr + cs, mask=cs < b, other=0.0)
            z = tl.where(zmask, tl.load(x_ptr + base + cs[None, :], mask=zmask, other=0.0).to(tl.float64)
                         - mean[None, :], 0.0)
            r = tl.load(r_ptr + ks[:, None] * b + cs[None, :], mask=(ks[:, None] < b) & (cs[None, :] < b), other=0.0)
            if USE_F64:
                proj += tl.sum(z[:, None, :] * r.to(tl.float64)[None, :, :], axis=2)
            else:
                proj += tl.sum(z.to(tl.float32)[:, None, :] * r.to(tl.float32)[None, :, :], axis=2)
        proj64 = proj.to(tl.float64)
        score += tl.sum(proj64 * proj64, axis=1)
    tl.store(out_ptr + rows, tl.where(kept, score, float("nan")), mask=rows < w)


def _aot_configs() -> list[_triton.AotConfig]:
    """Both kernels at the launchers' settings (float32 lines; the score kernel in both compute
    dtypes), for the ahead-of-time spill test (``tests/core/test_no_spills.py``)."""
    cfg = _triton.AotConfig
    gram = {"x_ptr": "*fp32", "keep_ptr": "*i8", "centre_ptr": "*fp64", "gram_ptr": "*fp64", "sums_ptr": "*fp64",
            "w": "i32", "b": "i32"}
    score = {"x_ptr": "*fp32", "keep_ptr": "*i8", "centre_ptr": "*fp64", "out_ptr": "*fp64", "w": "i32", "b": "i32"}
    return [
        cfg("_line_gram_kernel", gram, {"BLOCK_W": 16, "BLOCK_B": 16}),
        *(cfg("_line_score_kernel", {**score, "r_ptr": r_type}, {"BLOCK_W": 32, "BLOCK_B": 16, "USE_F64": f64})
          for r_type, f64 in (("*fp64", True), ("*fp32", False))),
    ]


AOT_CONFIGS = _aot_configs()


# ----------------------------------------------------------------------------- launchers
def line_gram(x: Any, keep: Any, centre: Any) -> tuple[Any, Any]:
    """(W, B) line, (W,) int8 mask, (B,) float64 centre -> ((B, B) Gram, (B,) sums), float64."""
    import torch

    w, b = x.shape
    gram = torch.full((b, b), float("nan"), dtype=torch.float64, device=x.device)
    sums = torch.full((b,), float("nan"), dtype=torch.float64, device=x.device)
    block_b = min(16, _triton.next_power_of_2(b))
    grid = (triton.cdiv(b, block_b), triton.cdiv(b, block_b))
    _line_gram_kernel[grid](x, keep, centre, gram, sums, w, b, BLOCK_W=16, BLOCK_B=block_b)
    return gram, sums


def line_scores(x: Any, keep: Any, centre: Any, inverse_factor: Any) -> Any:
    """(W,) float64 ``|R (x - centre)|^2`` (NaN where ``keep`` is 0)."""
    import torch

    w, b = x.shape
    out = torch.full((w,), float("nan"), dtype=torch.float64, device=x.device)
    block_b = min(16, _triton.next_power_of_2(b))
    use_f64 = inverse_factor.dtype == torch.float64
    _line_score_kernel[(triton.cdiv(w, 32),)](x, keep, centre, inverse_factor, out, w, b, BLOCK_W=32,
                                              BLOCK_B=block_b, USE_F64=use_f64)
    return out


class LineModel:
    """Line-scan RX model on the GPU (Triton); see ``reference.LineModel`` for the semantics.
    numpy lines in -> numpy scores out; CUDA tensors in -> tensors out."""

    def __init__(self, bands: int, *, forgetting: float = 1.0, window: int = 0, ridge: float = 0.0,
                 rcond: float = DEFAULT_RCOND, dtype: str = "float64", max_cond: float = MAX_COND):
        import torch

        check_options(bands, forgetting, window, ridge, rcond, dtype)
        self.bands, self.forgetting, self.window = int(bands), float(forgetting), int(window)
        self.ridge, self.rcond, self.dtype, self.max_cond = float(ridge), float(rcond), dtype, float(max_cond)
        zeros = torch.zeros(bands, dtype=torch.float64, device=_triton.device())
        self._stats = RunningStatistics(zeros, torch.zeros((bands, bands), dtype=torch.float64,
                                                           device=zeros.device), self.forgetting, self.window)
        self._inverse: Any = None  # R = L^-1 in the compute dtype, or None (pinv path / no model)
        self._whitening: Any = None  # (V, 1 / w) of the pinv path
        self.lines = 0

    # ------------------------------------------------------------------------ public
    def step(self, line: Any, valid: Any = None, update_threshold: float = np.inf, want_scores: bool = True) -> Any:
        line, mask = check_line(line, self.bands, valid)
        x, keep = self._stage(line, mask)
        if self._stats.count == 0:
            self._centre_on(x, keep)
        scores = self._score(x, keep) if want_scores or np.isfinite(update_threshold) else self._nan(x)
        if np.isfinite(update_threshold):
            keep = keep * (~(scores > update_threshold)).to(keep.dtype)  # NaN scores stay in
        gram, sums = line_gram(x, keep, self._stats.mean)
        self._stats.add(float(keep.sum()), sums, gram)
        self._refactor()
        self.lines += 1
        return to_like(scores, line)

    def score(self, line: Any, valid: Any = None) -> Any:
        line, mask = check_line(line, self.bands, valid)
        x, keep = self._stage(line, mask)
        return to_like(self._score(x, keep), line)

    def statistics(self) -> tuple[float, np.ndarray, np.ndarray]:
        cov = self._stats.covariance()
        mean = self._stats.mean.cpu().numpy()
        return self._stats.count, mean, (np.full((self.bands,) * 2, np.nan) if cov is None else cov.cpu().numpy())

    def info(self) -> dict[str, Any]:
        return {"tier": "triton", "lines": self.lines, "window_recombinations": self._stats.recombinations}

    # ------------------------------------------------------------------------ steps
    def _stage(self, line: Any, mask: np.ndarray | None) -> tuple[Any, Any]:
        import torch

        x = to_tensor(line)
        if x.dtype not in (torch.float32, torch.float64):
            x = x.to(torch.float64)
        keep = (torch.ones(x.shape[0], dtype=torch.int8, device=x.device) if mask is None
                else to_tensor(np.asarray(mask, dtype=np.int8)))
        return x.contiguous(), keep

    @staticmethod
    def _nan(x: Any) -> Any:
        import torch

        return torch.full((x.shape[0],), float("nan"), dtype=torch.float64, device=x.device)

    def _centre_on(self, x: Any, keep: Any) -> None:
        """First line: centre on its own mean (no radiance offset in the Gram)."""
        kept = keep.bool()
        if bool(kept.any()):
            self._stats.mean = x[kept].to(self._stats.mean.dtype).mean(dim=0)

    def _score(self, x: Any, keep: Any) -> Any:
        if self._inverse is not None:
            return line_scores(x, keep, self._stats.mean, self._inverse)
        if self._whitening is None:
            return self._nan(x)
        # pinv path: RX's fused kernel on the kept pixels (masked ones are replaced by the mean)
        kept = keep.bool()[:, None]
        safe = x.to(self._stats.mean.dtype).where(kept, self._stats.mean[None, :])
        scores = rx_triton.mahalanobis(safe, self._stats.mean, *self._whitening)
        return scores.where(kept[:, 0], float("nan"))

    def _refactor(self) -> None:
        import torch

        self._inverse, self._whitening = None, None
        cov, singular = self._stats.to_factor(self.bands, self.ridge, rx_triton.regularize)
        if cov is None:
            return
        if singular:
            self._whitening = rx_triton.whitening(cov, self.rcond, self._stats.max_rank(self.ridge))
            return
        chol, info = torch.linalg.cholesky_ex(cov)
        pivots = torch.diagonal(chol).square()
        top = torch.diagonal(cov).max()
        ok = bool((info == 0) & (top > 0) & (pivots.min() > top / self.max_cond))  # the one host sync
        if ok:
            eye = torch.eye(self.bands, dtype=cov.dtype, device=cov.device)
            inverse = torch.linalg.solve_triangular(chol, eye, upper=False)
            self._inverse = inverse.to(torch.float32 if self.dtype == "float32" else torch.float64).contiguous()
        else:
            self._whitening = rx_triton.whitening(cov, self.rcond, self._stats.max_rank(self.ridge))
