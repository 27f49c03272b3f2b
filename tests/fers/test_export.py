"""ONNX export of both FERS networks: ONNX Runtime vs torch at the example and other H x W."""

from __future__ import annotations

import numpy as np
import pytest

import edgesentry

pytest.importorskip("onnxruntime", reason="ONNX Runtime is needed for the export parity tests")


@pytest.fixture(scope="module")
def exported(fers_ref, tmp_path_factory):
    """200-band bundle with the int8-grid spatial branch, both graphs exported (parity-checked)."""
    from edgesentry.export.onnx import export_bundle

    bundle = edgesentry.convert("fers", fers_ref / "weights/saved_models/200bands",
                                fers_ref / "spa_fen_random_seed0_int8.npz", output=tmp_path_factory.mktemp("x") / "b")
    reports = export_bundle(bundle)
    return bundle, reports


def test_export_records_graphs_and_passes_parity(exported):
    bundle, reports = exported
    assert set(reports) == {"spectral", "spatial"}
    for name, report in reports.items():
        assert report, report.table()
        assert bundle.has(f"{name}.onnx")
    graphs = edgesentry.bundle.Bundle.open(bundle.path).meta["graphs"]
    assert graphs["spatial"]["dynamic_axes"]["x"] == {"2": "H", "3": "W"}


@pytest.mark.parametrize("hw", [(37, 53), (100, 100)], ids=["non_square", "scene"])
def test_dynamic_hw_parity(exported, hw):
    from edgesentry.export.fers import example_input, graph_specs
    from edgesentry.export.graph import parity_torch_vs_ort

    bundle, _ = exported
    for spec in graph_specs(bundle):
        report = parity_torch_vs_ort(spec, bundle.path / spec.file, inputs={"x": example_input(200, hw, seed=7)})
        assert report, report.table()
        assert report.outputs[0].shape == (1, 200, *hw)


def test_onnxruntime_detector_matches_torch(shared, exported):
    bundle, _ = exported
    cube = np.asarray(edgesentry.io.hsi.read_cube(shared / "data/abu/abu-airport-2.mat"))[:40, :48]
    ort = edgesentry.load(bundle.path, backend="onnxruntime", return_features=True).predict(cube)
    torch_ = edgesentry.load(bundle.path, backend="torch", return_features=True).predict(cube)
    assert ort.info["backend"] == "onnxruntime"
    np.testing.assert_allclose(ort.extras["spe_f"], torch_.extras["spe_f"], atol=1e-3, rtol=1e-4)
    np.testing.assert_allclose(ort.extras["spa_f"], torch_.extras["spa_f"], atol=1e-4, rtol=1e-4)
    assert np.corrcoef(ort.extras["scores"].ravel(), torch_.extras["scores"].ravel())[0, 1] > 0.999
