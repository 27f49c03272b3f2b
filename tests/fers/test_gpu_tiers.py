"""FERS GPU tiers beyond the shared tier tests: the pseudo-inverse keeps the sign of kept eigenvalues."""

from __future__ import annotations

import numpy as np
import pytest

from tests.fers.conftest import random_features
from tests.utils import assert_verbose_allclose

torch = pytest.importorskip("torch")
pytest.importorskip("triton")


def _normalised(x, spe, spa):
    """(B, N) float64 of the min-max normalised fused cube, in the tiers' float32 order."""
    f = (spa + spe) + x
    lo, hi = f.min(), f.max()
    return ((f - lo) / (hi - lo)).astype(np.float32).reshape(f.shape[-3], -1).astype(np.float64)


def test_triton_keeps_the_sign_of_a_kept_negative_eigenvalue(monkeypatch, rng):
    """A symmetric covariance with a kept negative eigenvalue (rounding can produce one above the
    1e-15 cutoff): the pinv form is sum_k (v_k . z)^2 / w_k with the sign of w_k, as numpy's
    ``pinv(hermitian=True)`` and the cpu / cuda tiers (``rx.cpu.whitening``) compute it."""
    from edgesentry.kernels.fers import triton as T

    x, spe, spa = random_features(rng, 5, 6, 7)
    real = T._statistics
    seen = {}

    def indefinite(*args):
        mean, cov = real(*args)
        w, v = torch.linalg.eigh(cov)
        w[-2] = -w[-2]  # the second largest eigenvalue, negated: kept by the cutoff, negative
        seen.update(mean=mean.cpu().numpy(), cov=((v * w) @ v.T).cpu().numpy())
        return mean, (v * w) @ v.T

    monkeypatch.setattr(T, "_statistics", indefinite)
    got = np.asarray(T.fers_rx(x, spe, spa)).reshape(-1)
    z = _normalised(x, spe, spa) - seen["mean"][:, None]
    want = np.einsum("bn,bc,cn->n", z, np.linalg.pinv(seen["cov"], rcond=1e-15, hermitian=True), z)
    unsigned = np.einsum("bn,bc,cn->n", z, np.linalg.pinv(_absolute(seen["cov"]), rcond=1e-15), z)
    assert np.abs(want - unsigned).max() > 1e-3 * np.abs(want).max()  # the sign matters on this input
    # float64 throughout; eigh vs numpy's eigh / SVD order: ~1e-12 relative of the largest score
    assert_verbose_allclose(got, want, atol=1e-9 * np.abs(want).max(), rtol=1e-7)


def _absolute(cov):
    w, v = np.linalg.eigh(cov)
    return (v * np.abs(w)) @ v.T
