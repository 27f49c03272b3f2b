"""Session-built bundles of every family present here, and a per-test ``env`` to break them.

Bundles are built once from the cheapest real weights in ../shared (FERS 50-band spectral,
MAVD ap86.07, MDMF heads D=256, ISSTAD tiny); a test that tampers with one gets a fresh copy.
A family whose module, weights or torch is missing makes its cases skip with the reason.
"""

from __future__ import annotations

import importlib.util
import shutil
from pathlib import Path
from typing import Any

import pytest

import edgesentry

_BUNDLES: dict[str, Path | str] = {}
_DETECTORS: dict[str, Any] = {}


def family_available(family: str) -> bool:
    return importlib.util.find_spec(f"edgesentry.detectors.{family}") is not None


def _build_bundle(family: str, shared: Path, root: Path) -> Path:
    ref = shared / "reference" / family
    out = root / family
    if family == "rx":
        return edgesentry.convert("rx", output=out).path
    pytest.importorskip("torch")
    if family == "fers":
        src = ref / "weights" / "saved_models" / "50bands"
        return edgesentry.convert("fers", src, output=out).path if src.is_dir() else _missing(src)
    if family == "mavd":
        src = ref / "weights" / "saved_models" / "ap86.07"
        return edgesentry.convert("mavd", src, output=out).path if src.is_dir() else _missing(src)
    if family == "mdmf":
        src = ref / "heads_seed0_D256.npz"
        return edgesentry.convert("mdmf", src, output=out).path if src.is_file() else _missing(src)
    if family == "isstad":
        from .isstad_bundle import convert_tiny

        return convert_tiny(shared, out)
    raise AssertionError(family)


def _missing(path: Path) -> Path:
    pytest.skip(f"weights not found: {path}")


class Env:
    """What a corpus case may use: detectors (cached), bundle copies to damage, a tmp dir."""

    def __init__(self, shared: Path | None, root: Path, tmp: Path):
        self.shared, self.root, self.tmp = shared, root, tmp

    def bundle(self, family: str) -> Path:
        if not family_available(family):
            pytest.skip(f"family {family!r} is not in this checkout yet")
        if family not in _BUNDLES:
            if self.shared is None and family != "rx":
                pytest.skip("../shared not found (set EDGESENTRY_SHARED)")
            _BUNDLES[family] = _build_bundle(family, self.shared or Path("."), self.root)
        return Path(_BUNDLES[family])

    def copy(self, family: str) -> Path:
        """A private copy of the family's bundle, to truncate, tamper with or re-version."""
        dst = self.tmp / f"{family}_copy"
        shutil.copytree(self.bundle(family), dst)
        return dst

    def det(self, family: str, **options: Any) -> Any:
        key = f"{family}{sorted(options.items())}"
        if key not in _DETECTORS:
            _DETECTORS[key] = edgesentry.load(self.bundle(family), **options)
        return _DETECTORS[key]


@pytest.fixture(scope="session")
def _bundle_root(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("reliability_bundles")


@pytest.fixture
def env(_bundle_root: Path, tmp_path: Path) -> Env:
    from tests.conftest import SHARED

    return Env(SHARED if SHARED.is_dir() else None, _bundle_root, tmp_path)


@pytest.fixture(scope="session")
def session_env(_bundle_root: Path, tmp_path_factory) -> Env:
    """``env`` for session-long use (hypothesis tests, thread tests): detectors only."""
    from tests.conftest import SHARED

    return Env(SHARED if SHARED.is_dir() else None, _bundle_root, tmp_path_factory.mktemp("session_env"))
