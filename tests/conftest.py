"""Shared fixtures: seeds, the ../shared folder, the Triton interpreter on CPU machines."""

from __future__ import annotations

import os
import random
import zlib
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("EDGESENTRY_SHARED", ROOT.parent / "shared"))


def _cuda_available() -> bool:
    try:
        import torch
    except ImportError:
        return False
    return torch.cuda.is_available()


# Machine measurements (edgesentry._machine) go to a cache of the test session's own, not the
# user's: a test run never leaves files in ~/.cache.
if "EDGESENTRY_CACHE_DIR" not in os.environ:
    import tempfile

    os.environ["EDGESENTRY_CACHE_DIR"] = tempfile.mkdtemp(prefix="edgesentry-test-cache-")

# Triton kernels run on the interpreter where there is no GPU; must be set before triton loads.
if not _cuda_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")
# GPU tiers start their outputs as NaN under tests, so an element a kernel never writes fails.
os.environ.setdefault("EDGESENTRY_POISON", "1")


@pytest.fixture(autouse=True)
def _seed() -> None:
    random.seed(0)
    np.random.seed(0)  # noqa: NPY002 - seeds legacy global-state users (e.g. libraries under test)
    try:
        import torch

        torch.manual_seed(0)
    except ImportError:
        pass


@pytest.fixture(scope="session")
def shared() -> Path:
    """The ../shared folder (oracles, weights, data); skips when it is absent."""
    if not SHARED.is_dir():
        pytest.skip(f"../shared not found at {SHARED} (set EDGESENTRY_SHARED); CI provides it")
    return SHARED


@pytest.fixture
def rng() -> np.random.Generator:
    """A fresh generator per test, seeded from the test's name with a stable hash (``hash()`` of
    a str is salted per process, so it would give every run other inputs) so reruns reproduce."""
    return np.random.default_rng(zlib.crc32(os.environ.get("PYTEST_CURRENT_TEST", "").encode()))


@pytest.fixture
def torch_one_thread():
    """torch at 1 intra-op thread for the test (restored after): on a loaded 2-core machine the
    2-thread OpenMP pool spins against other work and makes tiny-model calls 10x slower."""
    torch = pytest.importorskip("torch")
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
