"""Fixtures of the line tests: mosquitto (from tests/stream), the exported tiny ISSTAD bundle."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.stream.conftest import mosquitto  # noqa: F401 - a fixture, used by name


@pytest.fixture(scope="session")
def isstad_bundle(shared: Path, tmp_path_factory) -> Path:
    """The tiny ISSTAD bundle (reference weights) with its ONNX graph, as ``edgesentry export`` writes it."""
    pytest.importorskip("onnxruntime")
    from tests.export.families import exported_bundle

    bundle, _ = exported_bundle("isstad", shared, tmp_path_factory.mktemp("line-isstad") / "bundle")
    return Path(bundle.path)
