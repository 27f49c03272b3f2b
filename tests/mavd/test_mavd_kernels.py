"""MAVD kernels: every tier against the numpy reference on fresh random inputs, outputs
poisoned with NaN first; CUDA sources compiled for every target arch."""

from __future__ import annotations

import numpy as np
import pytest

from edgesentry.errors import InputError, KernelUnavailableError
from edgesentry.kernels import mavd as K
from edgesentry.kernels.mavd import reference as R
from tests.utils import assert_verbose_allclose, poison

SHAPES = {"va": (32, 32), "vf": (64, 64), "e1": (112, 224), "e2": (64, 112)}


def random_params(rng: np.random.Generator) -> dict[str, np.ndarray]:
    p = {}
    for key in R.ALIGN_FUSE_PARAMS:
        layer, kind = key.split(".")
        out, inp = SHAPES[layer[:2]]
        shape = (out, inp) if kind == "w" else (out,)
        p[key] = (rng.standard_normal(shape) / np.sqrt(inp)).astype(np.float32)
    return p


def _tier_or_skip(op, tier):
    try:
        op.load(tier)
    except KernelUnavailableError as exc:
        pytest.skip(str(exc))


# Triton runs on the CPU interpreter here: keep its shapes tiny.
AF_CASES = {
    "cpu": [(1, 1), (5, 5), (37, 37), (70, 7), (300, 60)],
    "triton": [(1, 1), (37, 37), (35, 7)],
    "cuda": [(1, 1), (37, 37), (70, 7), (1000, 200)],
}


@pytest.mark.parametrize("tier", ["cpu", "triton", "cuda"])
def test_align_fuse_matches_reference(tier, rng):
    _tier_or_skip(K.ALIGN_FUSE, tier)
    params = random_params(rng)
    for n, m in AF_CASES[tier]:
        v = np.maximum(rng.standard_normal((n, 128)), 0).astype(np.float32)
        a = rng.standard_normal((m, 32)).astype(np.float32)
        f = np.maximum(rng.standard_normal((n, 64)), 0).astype(np.float32)
        want = R.align_fuse(v, a, f, params)
        out = poison(np.empty((n, 64), np.float32))
        got, used = K.align_fuse(v, a, f, params, out=out, tier=tier)
        assert used == tier and got is out
        assert_verbose_allclose(out, want, atol=2e-5, rtol=2e-5)


POS_CASES = {
    "cpu": [(1, 1, 1), (3, 2, 5), (2, 9, 64), (1, 1000, 16)],
    "triton": [(1, 1, 1), (2, 9, 70), (2, 150, 33)],  # T=150: three scan tiles, the last ragged
    "cuda": [(1, 1, 1), (2, 9, 70), (20, 1000, 64)],
}


@pytest.mark.parametrize("tier", ["cpu", "triton", "cuda"])
def test_positional_matches_matrix_form(tier, rng):
    _tier_or_skip(K.POSITIONAL, tier)
    for b, t, c in POS_CASES[tier]:
        x = rng.standard_normal((b, t, c)).astype(np.float32)
        out = poison(np.empty_like(x))
        got, used = K.positional(x, out=out, tier=tier)
        assert used == tier and got is out
        assert_verbose_allclose(out, R.positional(x), atol=2e-6, rtol=2e-6)


def test_positional_reference_is_the_official_matrix(oracle):
    a2 = oracle["case_B5_T7/pos_A2"]
    assert_verbose_allclose(R.positional_matrix(7), a2, atol=5e-8, rtol=0)
    np.testing.assert_allclose(R.positional_matrix(7).sum(0), 1.0, atol=1e-12)  # columns, not rows
    s = np.exp(-np.abs(np.subtract.outer(np.arange(50), np.arange(50))) / np.e).sum(1)
    np.testing.assert_allclose(R.positional_row_sums(50), s, rtol=1e-13)


def test_fusion_head_matches_torch_module(model, rng):
    import torch

    from edgesentry.detectors.mavd import head_params

    params = head_params({k: v.numpy() for k, v in model.state_dict().items()})
    emb = np.maximum(rng.standard_normal((3, 20, 64)), 0).astype(np.float32)
    with torch.inference_mode():
        vaf = model.vaf_model
        want = vaf.mil(vaf.tcn(torch.from_numpy(emb)))[..., 0].numpy()
    assert_verbose_allclose(K.fusion_head(emb, params), want, atol=1e-5, rtol=1e-5)


def _random_head_params(rng: np.random.Generator) -> dict[str, np.ndarray]:
    shapes = {f"tcn{i}.conv{c}.w": (64, 64, 2) for i in range(3) for c in (1, 2)}
    shapes |= {f"tcn{i}.conv{c}.b": (64,) for i in range(3) for c in (1, 2)}
    shapes |= {"mil0.w": (128, 64), "mil0.b": (128,), "mil1.w": (32, 128), "mil1.b": (32,),
               "mil2.w": (1, 32), "mil2.b": (1,)}  # fmt: skip
    return {k: (rng.standard_normal(s) / np.sqrt(s[-1] if len(s) < 3 else 128)).astype(np.float32)
            for k, s in shapes.items()}


# (crops, T): T = 1 and T below the dilation 4, tile edges (16), several crops
@pytest.mark.parametrize("shape", [(1, 1), (1, 3), (2, 5), (5, 16), (3, 17), (5, 182)])
def test_fusion_head_cpu_matches_reference(shape, rng):
    _tier_or_skip(K.FUSION_HEAD, "cpu")
    params = _random_head_params(rng)
    emb = np.maximum(rng.standard_normal((*shape, 64)), 0).astype(np.float32)
    want = R.fusion_head(emb, params)
    got, tier = K.fast_fusion_head(emb, params)
    assert tier == "cpu" and got.shape == shape and got.dtype == np.float32
    assert_verbose_allclose(got, want, atol=1e-5, rtol=1e-5)
    # the numpy float32 fallback of the fast tiers agrees as well
    assert_verbose_allclose(R.fusion_head(emb, params, dtype=np.float32), want, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("shape, chunks", [((1, 300), 2), ((3, 200), 3), ((2, 130), 7), ((1, 5), 9)])
def test_fusion_head_cpu_time_chunks_are_exact(shape, chunks, rng):
    """Chunks start 14 rows early (the causal TCN's reach): every chunk count gives the
    unchunked logits, including chunks shorter than the reach and more chunks than rows."""
    _tier_or_skip(K.FUSION_HEAD, "cpu")
    from edgesentry.kernels.mavd import cpu

    params = _random_head_params(rng)
    emb = np.maximum(rng.standard_normal((*shape, 64)), 0).astype(np.float32)
    whole = cpu.fusion_head(emb, params, chunks=1)
    np.testing.assert_array_equal(cpu.fusion_head(emb, params, chunks=chunks), whole)
    assert_verbose_allclose(whole, R.fusion_head(emb, params), atol=1e-5, rtol=1e-5)


def test_fusion_head_cpu_rejects_bad_shapes(rng):
    _tier_or_skip(K.FUSION_HEAD, "cpu")
    with pytest.raises(InputError, match="B, T, 64"):
        K.FUSION_HEAD.load("cpu")(np.zeros((2, 5, 32), np.float32), _random_head_params(rng))


def test_align_fuse_bad_shapes(rng):
    p = random_params(rng)
    v, a, f = np.zeros((6, 128), np.float32), np.zeros((4, 32), np.float32), np.zeros((6, 64), np.float32)
    with pytest.raises(InputError, match="dividing"):
        K.align_fuse(v, a, f, p)
    with pytest.raises(InputError, match="128"):
        K.align_fuse(v[:, :100], a[:3], f, p)
    with pytest.raises(InputError, match="lack"):
        K.align_fuse(v, a[:3], f, {})
    with pytest.raises(InputError):
        K.positional(np.zeros((0, 4), np.float32))


@pytest.mark.parametrize("arch", ["sm_87", "sm_90"])
def test_cuda_sources_compile(arch):
    pytest.importorskip("cuda.core")
    from edgesentry.kernels._cuda import compile_cubin
    from edgesentry.kernels.mavd.cuda import SOURCES

    for name, src in SOURCES.items():
        cubin = compile_cubin(src, arch=arch)
        assert len(cubin) > 1000 and name.encode() in cubin


@pytest.mark.parametrize("op", ["align_fuse", "positional"])
def test_cuda_tier_on_cpu_emulator(op, monkeypatch, rng):
    """The CUDA kernels *and* launchers run on the CPU emulator of the RX tests (one OS
    thread per CUDA thread, real barriers), so indexing and synchronisation are checked
    without a GPU. Shapes are small: every CUDA thread is an OS thread."""
    pytest.importorskip("cuda.bindings")
    from edgesentry.kernels.mavd import cuda as mavd_cuda
    from tests.rx import _cuda_emulator as emu

    if emu.available() is not None:
        pytest.skip(f"CPU emulator: {emu.available()}")
    emu.patch(monkeypatch, mavd_cuda)
    if op == "align_fuse":
        params = random_params(rng)
        for n, m in ((1, 1), (37, 37), (35, 7)):  # partial tile, broadcast audio rows
            v = np.maximum(rng.standard_normal((n, 128)), 0).astype(np.float32)
            a = rng.standard_normal((m, 32)).astype(np.float32)
            f = np.maximum(rng.standard_normal((n, 64)), 0).astype(np.float32)
            out = poison(np.empty((n, 64), np.float32))
            mavd_cuda.align_fuse(v, a, f, params, out)
            assert_verbose_allclose(out, R.align_fuse(v, a, f, params), atol=2e-5, rtol=2e-5)
    else:
        for shape in ((1, 1, 1), (3, 9, 70), (2, 200, 5)):
            x = rng.standard_normal(shape).astype(np.float32)
            out = poison(np.empty_like(x))
            mavd_cuda.positional(x, out)
            assert_verbose_allclose(out, R.positional(x), atol=2e-6, rtol=2e-6)
