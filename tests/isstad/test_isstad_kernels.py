"""The ISSTAD fusion kernel: reference vs the oracle, every tier vs the reference."""

from __future__ import annotations

import numpy as np
import pytest

from edgesentry.errors import ConfigError, InputError, KernelUnavailableError
from edgesentry.kernels import _cuda
from edgesentry.kernels.isstad import SCORINGS, cuda as isstad_cuda, isstad_fusion, reference
from tests.isstad.conftest import ATOL_MAP, ATOL_O_MAP, FORMULAS, MODES, RTOL_SCORE
from tests.utils import assert_verbose_allclose

HOST_TIERS = ["reference", "cpu"]


def _check(out: dict, want_map: np.ndarray, want_score: np.ndarray, scoring: str) -> None:
    atol = ATOL_O_MAP if scoring == "original" else ATOL_MAP
    assert_verbose_allclose(out["pixel_map"], want_map, atol=atol, rtol=0)
    assert_verbose_allclose(out["score"], want_score, atol=0, rtol=RTOL_SCORE)


@pytest.mark.parametrize("tier", HOST_TIERS)
@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("scoring", list(FORMULAS))
def test_every_formula_matches_oracle(oracle, tier, mode, scoring):
    out, used = isstad_fusion(oracle[f"{mode}/P"], oracle[f"{mode}/recon"], oracle["preprocessed"],
                              scoring=scoring, tier=tier)
    assert used == tier
    assert_verbose_allclose(out["probability"], oracle[f"{mode}/P"], atol=0, rtol=0)
    assert_verbose_allclose(out["recon_error"], oracle[f"{mode}/R"], atol=ATOL_MAP, rtol=0)
    pixel_key, score_key = FORMULAS[scoring]
    _check(out, oracle[f"{mode}/{pixel_key}"], oracle[f"{mode}/{score_key}"], scoring)


@pytest.mark.parametrize("tier", HOST_TIERS)
@pytest.mark.parametrize("mode", MODES)
def test_weighted_score_matches_oracle(oracle, tier, mode):
    """E's W score for the six per-class (p, w_m, w_r) settings of the oracle."""
    for j, (p, w_m, w_r) in enumerate(oracle["W_params"]):
        out, _ = isstad_fusion(oracle[f"{mode}/P"], oracle[f"{mode}/recon"], oracle["preprocessed"],
                               scoring="weighted", top_p=p, w_m=w_m, w_r=w_r, tier=tier)
        assert_verbose_allclose(out["score"], oracle[f"{mode}/E_image_W"][:, j], atol=0, rtol=RTOL_SCORE)
        assert_verbose_allclose(out["pixel_map"], oracle[f"{mode}/E_pixel_ham"], atol=ATOL_MAP, rtol=0)


@pytest.mark.parametrize("tier", HOST_TIERS)
@pytest.mark.parametrize("mode", MODES)
def test_probability_from_head_logits(oracle, tier, mode):
    """The fused softmax-mean over the 12 heads reproduces the oracle's P (image 0)."""
    logits = oracle[f"{mode}/head_logits_img0"]
    out, _ = isstad_fusion(logits, oracle[f"{mode}/recon"][:1], oracle["preprocessed"][:1], tier=tier)
    assert_verbose_allclose(out["probability"], oracle[f"{mode}/P"][:1], atol=1e-6, rtol=0)
    _check(out, oracle[f"{mode}/O_pixel_map"][:1], oracle[f"{mode}/O_image_score"][:1], "original")


def _inputs(rng, b, k, h, w, logits=True):
    heads = (rng.normal(size=(b, k, 2, h, w)) * 3).astype(np.float32) if logits else \
        rng.random((b, h, w)).astype(np.float32)
    recon = rng.normal(size=(b, 3, h, w)).astype(np.float32)
    image = rng.uniform(-1, 1, size=(b, 3, h, w)).astype(np.float32)
    return heads, recon, image


def _compare(got: dict, want: dict, scoring: str) -> None:
    for key in ("probability", "recon_error"):
        assert_verbose_allclose(got[key], want[key], atol=1e-6, rtol=1e-6)
    # float32 accumulation vs scipy's float64: ~1e-7 relative of the map's scale.
    scale = float(np.abs(want["pixel_map"]).max())
    assert_verbose_allclose(got["pixel_map"], want["pixel_map"], atol=2e-6 * max(scale, 1.0), rtol=1e-5)
    assert_verbose_allclose(got["score"], want["score"], atol=1e-9, rtol=1e-5)


CPU_SHAPES = [
    (1, 12, 224, 224),  # the model's size
    (2, 3, 20, 24),  # batch, small image: reflections reach far
    (1, 2, 7, 9),  # smaller than the 16-pixel radius: repeated reflection (period 2n)
    (3, 1, 1, 5),  # single row / single head
    (1, 1, 33, 1),  # single column
]


@pytest.mark.parametrize("shape", CPU_SHAPES)
@pytest.mark.parametrize("scoring", list(SCORINGS))
def test_cpu_tier_matches_reference(rng, shape, scoring):
    from edgesentry.kernels.isstad import cpu

    for logits in (True, False):
        heads, recon, image = _inputs(rng, *shape, logits=logits)
        got = cpu.isstad_fusion(heads, recon, image, scoring=scoring, poison=True)
        _compare(got, reference.isstad_fusion(heads, recon, image, scoring=scoring), scoring)


def test_constant_error_map_gives_zero_normalised_error(rng):
    """max R == min R: the seed divides by zero; every tier defines Rn = 0."""
    from edgesentry.kernels.isstad import cpu

    recon = np.ones((1, 3, 12, 12), np.float32)
    prob = rng.random((1, 12, 12)).astype(np.float32)
    for fn in (reference.isstad_fusion, cpu.isstad_fusion):
        out = fn(prob, recon, recon * 0.5, scoring="ham")
        assert np.all(out["pixel_map"] == 0) and np.isfinite(out["score"]).all()


# ------------------------------------------------------------------------------ triton
TRITON_CASES = [  # interpreter: few programs (B * H) per launch
    ((1, 2, 7, 9), True, "original"),
    ((1, 2, 7, 9), True, "weighted"),
    ((2, 1, 5, 6), False, "alpha"),
    ((2, 1, 5, 6), False, "max"),
    ((1, 1, 3, 20), False, "ham"),
]


@pytest.mark.parametrize(("shape", "logits", "scoring"), TRITON_CASES)
def test_triton_tier_matches_reference(rng, shape, logits, scoring):
    pytest.importorskip("triton")
    from edgesentry.kernels.isstad import triton as isstad_triton

    if isstad_triton.unavailable_reason():
        pytest.skip(isstad_triton.unavailable_reason())
    heads, recon, image = _inputs(rng, *shape, logits=logits)
    got = isstad_triton.isstad_fusion(heads, recon, image, scoring=scoring)  # outputs allocated NaN-filled
    _compare(got, reference.isstad_fusion(heads, recon, image, scoring=scoring), scoring)


# -------------------------------------------------------------------------------- cuda
@pytest.mark.parametrize("arch", _cuda.TARGET_ARCHS)
def test_cuda_sources_compile(arch):
    if _cuda.nvrtc_unavailable_reason():
        pytest.skip(_cuda.nvrtc_unavailable_reason())
    cubins = isstad_cuda.compile_all(arch)
    for name, kernels in isstad_cuda.KERNELS.items():
        assert len(cubins[name]) > 1000
        for kernel in kernels:
            assert kernel.encode() in cubins[name]


@pytest.fixture
def emulated_cuda(monkeypatch):
    """The cuda tier's kernels and launcher on the CPU emulator of tests/rx (32-thread blocks,
    so strided loops wrap and block reductions combine several warps)."""
    from tests.rx import _cuda_emulator as emu

    if emu.available():
        pytest.skip(f"CPU emulator: {emu.available()}")
    source = "#define THREADS 32\n" + isstad_cuda.FUSION_SOURCE
    monkeypatch.setattr(isstad_cuda, "FUSION_SOURCE", source)
    monkeypatch.setattr(isstad_cuda, "SOURCES", {"isstad_fusion": source})
    emu.patch(monkeypatch, isstad_cuda)
    return isstad_cuda


@pytest.mark.parametrize(("shape", "logits"), [((2, 3, 20, 40), True), ((1, 2, 7, 9), False)])
def test_cuda_tier_on_emulator_matches_reference(emulated_cuda, rng, shape, logits):
    heads, recon, image = _inputs(rng, *shape, logits=logits)
    for scoring in SCORINGS:
        got = emulated_cuda.isstad_fusion(heads, recon, image, scoring=scoring)  # buffers NaN-poisoned
        _compare(got, reference.isstad_fusion(heads, recon, image, scoring=scoring), scoring)


def test_cuda_tier_on_gpu_matches_reference(rng):
    if isstad_cuda.unavailable_reason():
        pytest.skip(f"no GPU run: {isstad_cuda.unavailable_reason()}")
    heads, recon, image = _inputs(rng, 2, 12, 224, 224)
    for scoring in SCORINGS:
        got = isstad_cuda.isstad_fusion(heads, recon, image, scoring=scoring)
        _compare(got, reference.isstad_fusion(heads, recon, image, scoring=scoring), scoring)


# -------------------------------------------------------------------------- bad inputs
def test_bad_inputs_raise_typed_errors(rng):
    heads, recon, image = _inputs(rng, 1, 2, 8, 8)
    with pytest.raises(ConfigError, match="unknown scoring 'mean'"):
        isstad_fusion(heads, recon, image, scoring="mean")
    with pytest.raises(ConfigError, match="top_p"):
        isstad_fusion(heads, recon, image, top_p=0.0)
    with pytest.raises(InputError, match=r"equal \(B, C, H, W\) shapes; got \(1, 3, 8, 8\) and \(1, 3, 8, 7\)"):
        isstad_fusion(heads, recon, image[..., :7])
    with pytest.raises(InputError, match=r"heads must be \(B, K, 2, H, W\) logits or \(B, H, W\)"):
        isstad_fusion(heads[:, :, :1], recon, image)
    with pytest.raises(InputError, match="must be an array"):
        isstad_fusion([1, 2], recon, image)
    with pytest.raises(ConfigError, match="unknown kernel tier"):
        isstad_fusion(heads, recon, image, tier="fast")


def test_explicit_unavailable_tier_raises(rng, monkeypatch):
    if not isstad_cuda.unavailable_reason():
        pytest.skip("a GPU is present")
    heads, recon, image = _inputs(rng, 1, 2, 8, 8)
    with pytest.raises(KernelUnavailableError, match="cuda"):
        isstad_fusion(heads, recon, image, tier="cuda")
    monkeypatch.setenv("EDGESENTRY_KERNELS", "reference")
    assert isstad_fusion(heads, recon, image)[1] == "reference"
