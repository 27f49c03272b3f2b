"""ONNX export of the MAVD feature graph: dynamic crops and T, parity with torch."""

from __future__ import annotations

import numpy as np
import pytest

from tests.utils import assert_verbose_allclose

from .conftest import case_inputs

pytest.importorskip("onnxruntime")
pytest.importorskip("torch")


def test_graph_has_dynamic_crops_and_time(onnx_bundle):
    import onnx

    graph = onnx.load(str(onnx_bundle.file("features.onnx"))).graph
    dims = {i.name: [d.dim_param or d.dim_value for d in i.type.tensor_type.shape.dim] for i in graph.input}
    assert dims == {"rgb": ["crops", "T", 1024], "flow": ["crops", "T", 1024], "audio": ["audio_crops", "T", 128]}
    ops = {n.op_type for n in graph.node}
    assert "Range" in ops and "Squeeze" not in ops


def test_parity_across_lengths(onnx_bundle):
    from edgesentry.export.mavd import parity_sweep

    # crops=2 keeps the T=1000 case (T^2 attention in torch and ORT) within the test budget
    reports = parity_sweep(
        onnx_bundle.load_tensors(),
        onnx_bundle.file("features.onnx"),
        lengths=(1, 2, 7, 300, 1000),
        crops=2,
        atol=1e-4,
        rtol=1e-4,
    )
    for t, rep in reports.items():
        assert rep, f"T={t}\n{rep.table()}"


def test_onnxruntime_detector_matches_oracle(onnx_bundle, oracle):
    import edgesentry

    det = edgesentry.load(onnx_bundle.path, backend="onnxruntime")  # auto measures both (tests/core)
    assert det.backend == "onnxruntime"
    for case in ("case_B5_T1", "case_B1_T33", "case_B5_T300"):
        res = det.predict(case_inputs(oracle, case))
        assert_verbose_allclose(res.extras["frame_scores"], oracle[f"{case}/final_frame"], atol=1e-5, rtol=0)
        assert np.isfinite(res.score)
