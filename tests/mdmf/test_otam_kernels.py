"""Soft-OTAM fusion kernels: every tier against the stabilised float64 reference.

The official float32 formulation is checked against the stabilised one where it is finite;
past its underflow point (~52) the stabilised form is checked against the official recurrence
run in float64 (which only underflows past ~372), an independent formulation.
"""

from __future__ import annotations

import numpy as np
import pytest

from edgesentry.errors import ConfigError, InputError, KernelUnavailableError
from edgesentry.kernels import _cuda, otam
from edgesentry.kernels.otam import reference as ref
from tests.utils import assert_verbose_allclose, poison

SHAPES = [(2, 3, 8, 16), (1, 1, 8, 5), (3, 2, 3, 7), (2, 2, 1, 4)]  # Q, N, T, D


def _inputs(rng: np.random.Generator, q: int, n: int, t: int, d: int) -> list[np.ndarray]:
    return [rng.standard_normal((b, t, d)).astype(np.float32) for b in (q, n, q, n)]


def _far(rng: np.random.Generator, q: int, n: int, t: int, d: int = 16) -> list[np.ndarray]:
    """Queries anti-aligned with the prototypes: every frame distance ~2, OTAM ~1.6 T."""
    v = rng.standard_normal(d) * 3
    out = []
    for b, sign in ((q, 1), (n, -1), (q, 1), (n, -1)):
        out.append((sign * v + 0.3 * rng.standard_normal((b, t, d))).astype(np.float32))
    return out


# ------------------------------------------------------------------------ reference
def test_official_equals_stable_where_finite(rng):
    for q, n, t, d in SHAPES:
        args = _inputs(rng, q, n, t, d)
        off_d, off_l = ref.fuse_official(*args)
        st_d, st_l = ref.fuse_reference(*args)
        assert np.isfinite(off_l).all()
        assert_verbose_allclose(off_d, st_d, atol=2e-5, rtol=1e-5)
        assert_verbose_allclose(off_l, st_l, atol=5e-5, rtol=1e-5)


def test_stable_past_float32_underflow(rng):
    args = _far(rng, 2, 2, 40)
    off_d, _ = ref.fuse_official(*args)
    st_d, st_l = ref.fuse_reference(*args)
    assert np.isinf(off_d).all(), "the seed's float32 soft-min should overflow to inf here"
    assert (st_d > 52).all() and np.isfinite(st_l).all()
    delta = ref.cosine_distance(args[0], args[1])
    f64 = ref.otam_official(delta, dtype=np.float64)  # no max-subtraction, but float64 range
    assert_verbose_allclose(ref.otam_stable(delta), f64, atol=1e-9, rtol=1e-12)


def test_official_float16_overflows_but_stable_does_not(rng):
    args = _far(rng, 2, 2, 8)
    delta = ref.cosine_distance(args[0], args[1])
    assert np.isinf(ref.otam_official(delta, dtype=np.float16)).all()
    assert np.isfinite(ref.otam_stable(delta.astype(np.float16))).all()


def test_single_direction_cpu_matches_reference(rng):
    pytest.importorskip("edgesentry.kernels._cpu_otam")
    from edgesentry.kernels.otam import cpu

    for r, m in ((8, 8), (5, 9), (1, 4), (30, 30)):
        delta = rng.uniform(0, 2.5 if r < 30 else 4.0, size=(3, r, m))
        assert_verbose_allclose(cpu.otam(delta), ref.otam_stable(delta), atol=1e-10, rtol=1e-12)


# ----------------------------------------------------------------------------- tiers
@pytest.mark.parametrize("shape", SHAPES)
def test_cpu_tier(rng, shape):
    pytest.importorskip("edgesentry.kernels._cpu_otam")
    args = _inputs(rng, *shape)
    dists, logits, tier = otam.fuse(*args, tier="cpu")
    want_d, want_l = ref.fuse_reference(*args)
    assert tier == "cpu" and dists.dtype == np.float32 and logits.shape == shape[:2]
    assert_verbose_allclose(dists, want_d, atol=2e-5, rtol=1e-5)
    assert_verbose_allclose(logits, want_l, atol=5e-5, rtol=1e-5)


def test_cpu_tier_past_underflow(rng):
    pytest.importorskip("edgesentry.kernels._cpu_otam")
    args = _far(rng, 2, 3, 40)
    dists, logits, _ = otam.fuse(*args, tier="cpu")
    want_d, want_l = ref.fuse_reference(*args)
    assert (want_d > 52).all()
    assert_verbose_allclose(dists, want_d, atol=1e-4, rtol=1e-5)
    assert_verbose_allclose(logits, want_l, atol=4e-4, rtol=1e-5)


def _triton_run(args, **kw):
    torch = pytest.importorskip("torch")
    pytest.importorskip("triton")
    from edgesentry.kernels import _triton
    from edgesentry.kernels.otam import triton as tr

    reason = _triton.unavailable_reason()
    if reason:
        pytest.skip(reason)
    q, n = args[0].shape[0], args[1].shape[0]
    dev = _triton.device()
    out = (poison(torch.empty((4, q, n), dtype=torch.float32, device=dev)),
           poison(torch.empty((q, n), dtype=torch.float32, device=dev)))
    tensors = [torch.from_numpy(a).to(dev) for a in args]
    dists, logits = tr.fuse(*tensors, out=out, **kw)
    return dists.cpu().numpy(), logits.cpu().numpy()


@pytest.mark.parametrize("shape", [(2, 2, 8, 16), (1, 2, 3, 5), (1, 2, 20, 40)])  # T=20: the tl.dot path, 2 D chunks
def test_triton_tier(rng, shape):
    args = _inputs(rng, *shape)
    dists, logits = _triton_run(args)
    want_d, want_l = ref.fuse_reference(*args)
    assert_verbose_allclose(dists, want_d, atol=2e-5, rtol=1e-5)
    assert_verbose_allclose(logits, want_l, atol=5e-5, rtol=1e-5)


def test_triton_tier_past_underflow_and_fp16(rng):
    torch = pytest.importorskip("torch")
    args = _far(rng, 1, 1, 40)
    dists, logits = _triton_run(args)
    want_d, want_l = ref.fuse_reference(*args)
    assert (want_d > 52).all()
    assert_verbose_allclose(dists, want_d, atol=1e-4, rtol=1e-5)
    # float16 inputs: the seed's fp16 soft-min is inf here; the kernel computes in float32
    half = _far(rng, 1, 2, 8)
    half16 = [a.astype(np.float16) for a in half]
    assert np.isinf(ref.otam_official(ref.cosine_distance(half16[0], half16[1], dtype=np.float16),
                                      dtype=np.float16)).all()
    d16, _ = _triton_run([torch.from_numpy(a).numpy() for a in half16])
    want16, _ = ref.fuse_reference(*[a.astype(np.float64) for a in half16])
    assert np.isfinite(d16).all()
    assert_verbose_allclose(d16, want16, atol=1e-4, rtol=1e-5)


@pytest.mark.parametrize("arch", _cuda.TARGET_ARCHS)
def test_cuda_compiles(arch):
    from edgesentry.kernels.otam import cuda

    if _cuda.nvrtc_unavailable_reason():
        pytest.skip(_cuda.nvrtc_unavailable_reason())
    cubins = cuda.compile_all(arch)
    assert set(cubins) == set(cuda.SOURCES) and all(len(b) > 1000 for b in cubins.values())


@pytest.mark.parametrize("shape", [(2, 3, 8, 16), (3, 5, 8, 300), (1, 2, 40, 16)])
def test_cuda_tier_runs(rng, shape):
    from edgesentry.kernels.otam import cuda

    reason = _cuda.unavailable_reason()
    if reason:
        pytest.skip(f"cuda tier needs a GPU: {reason}")
    args = _far(rng, *shape[:3]) if shape[2] == 40 else _inputs(rng, *shape)
    dists, logits = cuda.fuse(*args)  # device outputs are NaN-poisoned before the launch
    want_d, want_l = ref.fuse_reference(*args)
    assert_verbose_allclose(dists, want_d, atol=1e-4, rtol=1e-5)
    assert_verbose_allclose(logits, want_l, atol=4e-4, rtol=1e-5)


# -------------------------------------------------------------------------- dispatch
def test_auto_tier_and_bad_inputs(rng):
    args = _inputs(rng, 2, 2, 8, 4)
    _, _, tier = otam.fuse(*args)
    assert tier in ("cpu", "reference")
    with pytest.raises(InputError, match="z_global must have shape"):
        otam.fuse(args[0], args[1], args[0][:, :4], args[3])
    with pytest.raises(InputError, match="3-d array"):
        otam.fuse(args[0][0], *args[1:])
    with pytest.raises(ConfigError, match="lam"):
        otam.fuse(*args, lam=0.0)
    with pytest.raises(ConfigError, match="unknown kernel tier"):
        otam.fuse(*args, tier="gpu")


def test_cuda_tier_rejects_long_clips(rng):
    from edgesentry.kernels.otam import cuda

    args = _inputs(rng, 1, 1, cuda.MAX_T + 1, 4)
    with pytest.raises((InputError, KernelUnavailableError)):
        otam.fuse(*args, tier="cuda")


@pytest.mark.parametrize("q, n, t, d", [(9, 41, 8, 256), (7, 13, 5, 77), (3, 5, 16, 1000)])
def test_cpu_tier_blocked_gallery_every_isa_and_thread_count(rng, q, n, t, d):
    """Gallery-sized calls: the blocked frame dot products (query and prototype blocks that do
    not divide Q, N; T and D with edge rows and a scalar tail) with every instruction set's
    panels (0 = portable dots, 1 = AVX2 + FMA / NEON, 2 = AVX-512; one this CPU lacks runs its
    panels at the same width in portable vectors, so every width is checked on any CPU) and with
    one and two threads, against the float64 reference; past the float32 underflow point too.
    Tolerances: float32 dot products over D <= 1000 against float64 (~1e-6 relative on the
    cosines), through the DP's soft-min sums."""
    kernel = pytest.importorskip("edgesentry.kernels._cpu_otam")
    args = _inputs(rng, q, n, t, d)
    want_d, want_l = ref.fuse_reference(*args)
    far = _far(rng, 4, 6, 40, 64)
    far_d, _ = ref.fuse_reference(*far)
    assert (far_d > 52).all()
    for isa in (0, 1, 2):
        for threads in (1, 2):
            dists, logits = kernel.fuse(*args, 0.5, 0.01, threads, isa)
            assert_verbose_allclose(dists, want_d, atol=2e-5, rtol=1e-5)
            assert_verbose_allclose(logits, want_l, atol=5e-5, rtol=1e-5)
            dists, _ = kernel.fuse(*far, 0.5, 0.01, threads, isa)
            assert_verbose_allclose(dists, far_d, atol=1e-4, rtol=1e-5)
    with pytest.raises(ValueError, match="isa"):
        kernel.fuse(*args, 0.5, 0.01, 1, 3)


@pytest.mark.parametrize("model, shape, team, want", [
    # waking the threads costs 20 us, two threads run 1.8x: a 5-way episode at D = 1024 (~1.7 ms) goes parallel
    ({"dot_ns": 0.03, "cell_ns": 2.0, "fork_ns": 2e4, "speedup": 1.8}, (5, 5, 8, 1024), 2, 2),
    # ... one query against five classes at D = 256 (~20 us of work) stays on one thread
    ({"dot_ns": 0.03, "cell_ns": 2.0, "fork_ns": 2e4, "speedup": 1.8}, (1, 5, 8, 256), 2, 1),
    # a machine where a second thread brings nothing (busy, or one physical core): never
    ({"dot_ns": 0.03, "cell_ns": 2.0, "fork_ns": 2e5, "speedup": 0.99}, (25, 100, 8, 1024), 2, 1),
    # one core: one thread whatever the model says
    ({"dot_ns": 0.03, "cell_ns": 2.0, "fork_ns": 0.0, "speedup": 4.0}, (25, 100, 8, 1024), 1, 1),
    # 16 cores and a big gallery
    ({"dot_ns": 0.03, "cell_ns": 2.0, "fork_ns": 5e4, "speedup": 12.0}, (25, 100, 8, 1024), 16, 16),
])
def test_cpu_thread_choice_follows_the_measured_model(model, shape, team, want):
    """The thread decision from injected model values (no timing in the test)."""
    from edgesentry.kernels.otam import cpu

    assert cpu.threads_for(*shape, model=model, team=team) == want


def test_cpu_thread_model_is_measured_and_cached(tmp_path, monkeypatch):
    pytest.importorskip("edgesentry.kernels._cpu_otam")
    from edgesentry import _machine
    from edgesentry.kernels.otam import cpu

    monkeypatch.setenv(_machine.ENV_CACHE, str(tmp_path))
    _machine.forget("otam.threads")
    model = cpu.thread_model()
    assert set(model) == set(cpu.DEFAULT_THREAD_MODEL) and all(v >= 0 for v in model.values())
    # cached when trusted; a busy machine's "threads bring nothing" serves this process only
    expected_cache = model if cpu._trusted_thread_model(model) else None
    assert _machine.read_cached("otam.threads", cpu.THREAD_MODEL_VERSION) == expected_cache
    _machine.forget("otam.threads")


def test_cpu_thread_model_from_a_busy_moment_is_not_cached(tmp_path, monkeypatch):
    """A speed-up of ~1 on a multi-core CPU is what a busy second core shows while measuring:
    cached, it would keep every later process on this CPU single-threaded."""
    from edgesentry import _machine
    from edgesentry.kernels import _cpu_otam
    from edgesentry.kernels.otam import cpu

    monkeypatch.setenv(_machine.ENV_CACHE, str(tmp_path))
    monkeypatch.setattr(_cpu_otam, "max_threads", lambda: 2)
    busy = {"dot_ns": 0.03, "cell_ns": 2.3, "fork_ns": 2.6e5, "speedup": 0.99}
    quiet = dict(busy, fork_ns=0.0, speedup=1.8)
    for measured, cached in ((busy, None), (quiet, quiet)):
        monkeypatch.setattr(cpu, "_measure_threads", lambda m=measured: m)
        _machine.forget("otam.threads")
        assert cpu.thread_model() == measured
        assert _machine.read_cached("otam.threads", cpu.THREAD_MODEL_VERSION) == cached
    _machine.forget("otam.threads")
