"""Assertion helpers that explain failures (in the spirit of Liger's assert_verbose_allclose),
and the loading of a family's reference oracle."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest


def assert_verbose_allclose(actual, expected, *, atol: float, rtol: float, max_print: int = 5) -> None:
    """Like ``np.testing.assert_allclose`` but NaN/Inf disagreement is a mismatch and the
    message gives the count and the first mismatching indices with their values."""
    a = np.asarray(_to_numpy(actual), dtype=np.float64)
    e = np.asarray(_to_numpy(expected), dtype=np.float64)
    if a.shape != e.shape:
        raise AssertionError(f"shape mismatch: actual {a.shape} vs expected {e.shape}")
    both_nan = np.isnan(a) & np.isnan(e)
    close = np.isclose(a, e, atol=atol, rtol=rtol, equal_nan=False) | both_nan
    finite_mismatch = np.isfinite(a) != np.isfinite(e)
    bad = ~close | finite_mismatch
    if bad.any():
        idx = np.argwhere(bad)[:max_print]
        lines = [f"{tuple(i)}: actual {a[tuple(i)]!r} expected {e[tuple(i)]!r}" for i in idx]
        diff = np.abs(a - e)[np.isfinite(a) & np.isfinite(e)]
        raise AssertionError(
            f"{int(bad.sum())} of {a.size} elements mismatch (atol={atol}, rtol={rtol}); "
            f"max abs diff {diff.max() if diff.size else float('nan'):.3e}\n" + "\n".join(lines)
        )


def _to_numpy(x):
    if hasattr(x, "detach"):
        return x.detach().cpu().numpy()
    return x


def poison(array: np.ndarray) -> np.ndarray:
    """Fill an output buffer with NaN so an element a kernel never writes cannot pass."""
    array[...] = np.nan
    return array


def reference_dir(shared: Path, family: str) -> Path:
    """``shared/reference/<family>``; the test skips when that family's ``oracle.npz`` is absent."""
    path = shared / "reference" / family
    if not (path / "oracle.npz").is_file():
        pytest.skip(f"{family.upper()} oracle not found under {path}")
    return path


def load_oracle(ref: Path) -> dict[str, np.ndarray]:
    """Every array of ``ref/oracle.npz``, read into memory (no pickles)."""
    with np.load(ref / "oracle.npz", allow_pickle=False) as archive:
        return {k: archive[k] for k in archive.files}


def start_triton_server(repository: Path, startup_timeout: float):
    """pytriton's ``tritonserver`` on loopback serving ``repository``, started (or the test skipped
    with the reason). Start it before ``tritonclient.http`` is imported: gevent must not be forked."""
    from edgesentry.errors import BackendUnavailableError
    from edgesentry.serving.local import LocalTritonServer

    server = LocalTritonServer(repository, startup_timeout=startup_timeout)
    try:
        return server.start()
    except BackendUnavailableError as exc:
        server.close()
        pytest.skip(f"pytriton's tritonserver cannot start here: {exc}")


def one_error_line(err: str) -> bool:
    """A CLI user error as the tests expect it on stderr: one ``edgesentry VERB: error: ...`` line,
    then the verb's ``failed | edgesentry VERB | N s`` status line, nothing else."""
    lines = err.strip().splitlines()
    return (len(lines) == 2 and lines[0].startswith("edgesentry ") and ": error: " in lines[0]
            and lines[1].startswith("failed | edgesentry "))
