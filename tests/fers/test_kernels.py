"""FERS RX-on-features kernel: the reference against the oracle, every tier against the reference."""

from __future__ import annotations

import numpy as np
import pytest

from edgesentry.errors import ConfigError, InputError
from edgesentry.kernels import fers as K
from edgesentry.kernels.fers import reference as ref
from edgesentry.metrics import roc_auc
from tests.utils import assert_verbose_allclose

from .conftest import SCENES, random_features


def pearson(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.corrcoef(np.ravel(a), np.ravel(b))[0, 1])


def rx_oracle_atol(expected: np.ndarray) -> float:
    """How far the seed's RX map may move between two CPUs: the float32 accumulation bound.

    The seed's RX (``ref.md_anomaly``) is a float32 pipeline: min-max, the band mean over
    N = H * W pixels and z = X - mu are float32; the covariance, pinv and quadratic forms are
    float64 but fed with those float32 values. numpy and BLAS pick their summation order by
    the CPU's SIMD width (AVX2, AVX-512, NEON) and our code does not fix it, so the float32
    band mean may differ between machines by the pairwise-summation bound
    gamma = ceil(log2 N) * eps32 (N = 10^4: 14 * 1.19e-7 = 1.7e-6) of its value. RX is
    invariant to the scale of the cube, so, to first order, every distance moves by at most
    gamma times the map's scale, its mean: a pinv Mahalanobis map averages rank * (N - 1) / N.
    A real error is far larger: N instead of N - 1 in the covariance moves every distance by
    1e-4 of its value. Measured on AMD Zen 3 against the oracle's machine: at most 1.2e-7 of
    the scale (abu-airport-2, fused cube: covariance condition ~3e10).
    """
    gamma = np.ceil(np.log2(expected.size)) * np.finfo(np.float32).eps
    return float(gamma * np.mean(np.abs(expected)))


# ------------------------------------------------------------------ reference vs oracle
@pytest.mark.parametrize("key", list(SCENES))
def test_reference_rx_is_bit_exact_on_stored_cubes(oracle, manifest, key):
    """md_anomaly on x and on the fused cube rebuilt from stored arrays reproduces the official maps
    (to the float32 accumulation bound, ``rx_oracle_atol``: summation order differs between CPUs)."""
    x, spe = oracle[f"{key}/x"], oracle[f"{key}/spe_f"]
    want = oracle[f"{key}/rx_x"]
    assert_verbose_allclose(ref.md_anomaly(x), want, atol=rx_oracle_atol(want), rtol=0)
    fused = ref.fers_rx(x, spe)
    want = oracle[f"{key}/rx_fused_spe"]
    assert_verbose_allclose(fused, want, atol=rx_oracle_atol(want), rtol=0)
    if key.endswith("B50"):  # official ham path: torch-style RX emulated in numpy float32
        ham = ref.fers_ham(x, spe)
        want = oracle[f"{key}/score_official_spe_only"]
        gt = oracle[f"{key}/gt"]
        assert abs(roc_auc(gt, ham) - manifest["scenes"][key]["auc"]["score_official_spe_only"]) < 1e-4
        assert pearson(ham, want) > 0.9999
        for name, cube in (("rxtorch_x", x), ("rxtorch_fused_spe", spe + x)):
            got = ref.rx_torch(cube)
            assert pearson(got, oracle[f"{key}/{name}"][0, 0]) > 0.9999
    else:
        want = oracle[f"{key}/score_official_spe_only"]
        assert_verbose_allclose(fused, want, atol=rx_oracle_atol(want), rtol=0)


def test_reference_full_path_and_invariant(oracle, manifest):
    key = "abu-airport-2_B200"
    x, spe, spa = oracle[f"{key}/x"], oracle[f"{key}/spe_f"], oracle[f"{key}/spa_f"]
    full = ref.fers_rx(x, spe, spa)
    want = oracle[f"{key}/score_official_full"]
    assert_verbose_allclose(full, want, atol=rx_oracle_atol(want), rtol=0)
    # mean over pixels of a pinv Mahalanobis map = rank * (N - 1) / N
    assert abs(full.mean() - 200 * (full.size - 1) / full.size) < 1e-3


@pytest.mark.parametrize("key", list(SCENES))
def test_cpu_tier_matches_oracle_by_auc_and_correlation(oracle, manifest, key):
    """Sigma of the fused features has condition ~3e10: compare maps by AUC and correlation."""
    x, spe, gt = oracle[f"{key}/x"], oracle[f"{key}/spe_f"], oracle[f"{key}/gt"]
    scores, tier = K.fers_rx(x, spe, tier="cpu")
    want = oracle[f"{key}/rx_fused_spe"]
    assert tier == "cpu"
    assert abs(roc_auc(gt, scores) - manifest["scenes"][key]["auc"]["rx_fused_spe"]) < 1e-4
    assert pearson(scores, want) > 0.9999
    if key.endswith("B50"):
        ham, _ = K.fers_ham(x, spe, tier="cpu")
        assert abs(roc_auc(gt, ham) - manifest["scenes"][key]["auc"]["score_official_spe_only"]) < 1e-4
        assert pearson(ham, oracle[f"{key}/score_official_spe_only"]) > 0.9999


# ------------------------------------------------------- tiers vs reference (random)
# Random cubes are well conditioned, so tiers agree with the float32-z reference to ~1e-6
# relative; 1e-5 leaves room for BLAS summation order.
SHAPES = [
    (6, 5, 7, True),  # tiny, non-square, with spa
    (11, 9, 4, False),  # odd band count, spectral-only
    (17, 6, 6, True),  # bands not a multiple of any tile
    (9, 12, 11, True),  # N = 132 > the interpreter's 64-pixel chunk: split-K partials, ragged last chunk
]


@pytest.mark.parametrize("bands,h,w,spa", SHAPES)
@pytest.mark.parametrize("tier", ["cpu", "triton"])
def test_tiers_match_reference(rng, tier, bands, h, w, spa):
    x, spe, spa_f = random_features(rng, bands, h, w, spa)
    want = ref.fers_rx(x, spe, spa_f)
    got, used = K.fers_rx(x, spe, spa_f, tier=tier)
    assert used == tier
    got = np.asarray(got)
    assert got.shape == (h, w) and got.dtype == np.float64
    assert_verbose_allclose(got, want, atol=1e-8 * want.max(), rtol=1e-5)


@pytest.mark.parametrize("bands,h,w,spa", SHAPES)
@pytest.mark.parametrize("chunk_rows", [1, 2, 5])
def test_cpu_tier_in_chunks_of_rows_matches_reference(rng, bands, h, w, spa, chunk_rows):
    """The cpu tier never forms the fused cube: the fused, normalised values of each chunk of
    rows are the reference's exactly (element-wise float32), the float64 moments are merged
    over chunks, so every chunk size (ragged last chunks included) keeps the tolerances of
    ``test_tiers_match_reference``."""
    from edgesentry.kernels.fers import cpu

    x, spe, spa_f = random_features(rng, bands, h, w, spa)
    want = ref.fers_rx(x, spe, spa_f)
    got = cpu.fers_rx(x, spe, spa_f, chunk_rows=chunk_rows)
    assert_verbose_allclose(got, want, atol=1e-8 * want.max(), rtol=1e-5)


@pytest.mark.parametrize("chunk_rows", [1, 3])
def test_cpu_ham_in_chunks_equals_one_chunk(rng, chunk_rows):
    """The ham path's two torch-style maps in chunks against one chunk (both float64 statistics:
    only the order of float64 additions differs, 1e-9 relative on well-conditioned features)."""
    from edgesentry.kernels.fers import cpu

    x, spe, spa_f = random_features(rng, 7, 11, 9, True)
    for spa in (spa_f, None):
        whole = cpu.fers_ham(x, spe, spa, chunk_rows=11)
        assert_verbose_allclose(cpu.fers_ham(x, spe, spa, chunk_rows=chunk_rows), whole, atol=1e-9, rtol=1e-9)


def test_triton_handles_singular_covariance(rng):
    """A band that is an exact copy of another makes Sigma singular: the pinv cutoff must hold."""
    x, spe, _ = random_features(rng, 6, 6, 6, spa=False)
    spe[:, 5] = spe[:, 0]
    x[:, 5] = x[:, 0]
    want = ref.fers_rx(x, spe)
    got, _ = K.fers_rx(x, spe, tier="triton")
    assert_verbose_allclose(got, want, atol=1e-6 * want.max(), rtol=1e-4)
    assert abs(want.mean() - 5 * 35 / 36) < 1e-3  # rank 5


def test_cuda_tier_compiles_for_targets():
    from edgesentry.kernels import _cuda
    from edgesentry.kernels.fers import cuda

    if _cuda.nvrtc_unavailable_reason():
        pytest.skip(_cuda.nvrtc_unavailable_reason())
    for arch in _cuda.TARGET_ARCHS:
        cubins = cuda.compile_all(arch)
        assert set(cubins) == set(cuda.SOURCES)
        for name, blob in cubins.items():
            assert blob[:4] == b"\x7fELF"
            for kernel in cuda.KERNELS[name]:
                assert kernel.encode() in blob


def test_cuda_tier_runs_on_gpu(rng):
    from edgesentry.kernels.fers import cuda

    reason = cuda.unavailable_reason()
    if reason:
        pytest.skip(f"cuda tier cannot run here: {reason}")
    for bands, h, w, spa in SHAPES:
        x, spe, spa_f = random_features(rng, bands, h, w, spa)
        want = ref.fers_rx(x, spe, spa_f)
        got, _ = K.fers_rx(x, spe, spa_f, tier="cuda")
        assert_verbose_allclose(got, want, atol=1e-8 * want.max(), rtol=1e-5)


def test_bad_inputs_raise(rng):
    x, spe, spa = random_features(rng, 4, 5, 5)
    with pytest.raises(InputError, match="share"):
        K.fers_rx(x, spe[:, :3])
    with pytest.raises(InputError, match=r"\(B, H, W\) or \(1, B, H, W\)"):
        K.fers_rx(x[0, 0], spe[0, 0])
    with pytest.raises(InputError, match="at least 2 pixels"):
        K.fers_rx(x[..., :1, :1], spe[..., :1, :1])
    with pytest.raises(ConfigError, match="rcond"):
        K.fers_rx(x, spe, rcond=0)
    with pytest.raises(ConfigError, match="kernel tier"):
        K.fers_rx(x, spe, tier="gpu")
