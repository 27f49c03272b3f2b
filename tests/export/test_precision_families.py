"""Reduced precision on the official weights and the shipped data: what a deployment keeps.

- FERS, official weights (ABU AVIRIS 200-band weights for the six scenes with >= 200 bands,
  HAD100 100-band weights for the five with fewer), INT8 graphs: the target was the AUROC of every
  one of the 11 ABU scenes within 0.002 of FP32. INT8 cannot meet it (up to 0.04 lower), so what
  is tested is the gate: ``tune`` measures the drop per scene, rejects INT8 and keeps FP32.
- MAVD, official weights, on the oracle's test run (the features shipped in ../shared): INT8 and
  BF16 AP within 0.5 points of FP32 and snippet-score correlation >= 0.999. BF16 runs through
  OpenVINO where the CPU has BF16; elsewhere the graph is run in torch's bfloat16 (the same
  rounding of weights and activations), and the test says which.

The tolerances are the targets themselves: they are far above INT8 kernel differences between
CPUs (VNNI vs AVX2 vs NEON change the last bits of a few activations, not a ranking).
"""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("onnxruntime")
pytest.importorskip("openvino")
pytest.importorskip("torch")

AUC_TOL = 0.002
AP_TOL = 0.005
CORR_MIN = 0.999


@pytest.fixture(scope="module")
def fers_bundles(shared, tmp_path_factory):
    """bands -> (exported bundle, the ABU scenes it scores): ABU AVIRIS 200-band weights for the
    six scenes with >= 200 bands, HAD100 100-band weights for the five with fewer."""
    import edgesentry
    from edgesentry.export.onnx import export_bundle
    from edgesentry.io.hsi import read_cube

    ref = shared / "reference" / "fers" / "weights"
    scenes = sorted((shared / "data" / "abu").glob("*.mat"))
    weights = {200: ref / "FERS_ABU/saved_models/aviris/200bands", 100: ref / "saved_models/100bands"}
    if len(scenes) != 11 or not all(w.exists() for w in weights.values()):
        pytest.skip("FERS weights or the 11 ABU scenes not found")
    by_bands = {b: [p for p in scenes if (read_cube(p).shape[-1] >= 200) == (b == 200)] for b in weights}
    root = tmp_path_factory.mktemp("fers_q")
    out = {}
    for bands, path in weights.items():
        bundle = edgesentry.convert("fers", path, output=root / f"b{bands}")
        export_bundle(bundle)
        out[bands] = (bundle, by_bands[bands])
    return out


def _fers_aucs(bundle, scenes, backend, precision):
    import edgesentry
    from edgesentry.io.hsi import read_cube, read_ground_truth
    from edgesentry.metrics import roc_auc

    det = edgesentry.load(bundle.path, backend=backend, precision=precision)
    return np.array([roc_auc(read_ground_truth(p).ravel(), det.predict(read_cube(p)).extras["scores"].ravel())
                     for p in scenes])


@pytest.mark.parametrize("bands", [200, 100])
def test_tune_rejects_fers_int8_on_the_abu_auroc_gate(fers_bundles, bands):
    """INT8 cannot keep FERS's ABU AUROC within 0.002 (measured: up to 0.04 lower; every single
    quantised conv of the spectral branch but two moves some scene by more than 0.002 on its own,
    and a fake-quantised run (no INT8 kernels) loses the same: the loss is INT8's rounding, which
    the RX whitening amplifies). So ``tune`` with ``--max-drop 0.002`` and the ABU scenes as
    labelled samples must reject both INT8 rows on the AUROC gate, with the per-scene drop it
    reports equal to the one measured here through ``edgesentry.load``, and keep FP32."""
    from edgesentry.export.tune import REFERENCE, Gates, tune_bundle

    bundle, scenes = fers_bundles[bands]
    int8 = (("onnxruntime", "int8"), ("openvino", "int8"))
    report = tune_bundle(bundle, scenes[:2], eval_samples=scenes, gates=Gates(max_drop=AUC_TOL), rounds=1, block=1,
                         candidates=(REFERENCE, *int8))
    print(f"\n{report.table()}")
    assert report.metric_name == "AUROC"
    assert report.decision["precision"] == "fp32", report.reason
    rows = {(r.backend, r.precision): r for r in report.rows}
    for key in int8:
        row = rows[key]
        assert row.metric_drop > AUC_TOL
        assert row.gates["drop"] is False and row.verdict.startswith("fail") and "drop" in row.verdict
        assert f"{row.name} failed" in report.reason and f"> {AUC_TOL:g}" in report.reason
    if bands != 200:
        return
    # the per-scene drops measured independently (the 200-band weights; the 100-band run is the same code)
    ref = _fers_aucs(bundle, scenes, *REFERENCE)
    print(f"FERS ({bands} bands) AUROC per ABU scene: " + ", ".join(f"{p.stem} {a:.5f}" for p, a in zip(scenes, ref)))
    for key in int8:
        drops = ref - _fers_aucs(bundle, scenes, *key)
        print(f"  {'/'.join(key)} drop per scene: {np.round(drops, 4).tolist()}")
        # the same graphs on the same machine and inputs: the drop tune gated on is this one
        assert rows[key].metric_drop == pytest.approx(drops.max(), abs=1e-6)


@pytest.fixture(scope="module")
def mavd(shared, tmp_path_factory):
    import edgesentry
    from edgesentry.export.onnx import export_bundle
    from edgesentry.export.quantize import quantize_bundle

    weights = shared / "reference" / "mavd" / "weights" / "saved_models" / "ap86.07"
    oracle_path = shared / "reference" / "mavd" / "oracle.npz"
    if not weights.exists() or not oracle_path.exists():
        pytest.skip("MAVD weights or oracle not found")
    oracle = dict(np.load(oracle_path))
    root = tmp_path_factory.mktemp("mavd_q")
    bundle = edgesentry.convert("mavd", weights, output=root / "mavd")
    export_bundle(bundle)
    calib = []
    for case in ("case_B5_T1", "case_B1_T33"):  # not among the test run's videos
        path = root / f"{case}.npz"
        np.savez(path, **{k: oracle[f"{case}/{k}"] for k in ("rgb", "flow", "audio")})
        calib.append(path)
    quantize_bundle(bundle, "int8", calib)
    return bundle, oracle


def _test_run(det, oracle, features=None):
    from edgesentry.metrics import pr_auc

    snippets, frames = [], []
    for case in oracle["test_run/videos"]:
        x = {k: oracle[f"{case}/{k}"] for k in ("rgb", "flow", "audio")}
        if features is None:
            res = det.predict(x)
            snippets.append(res.extras["snippet_scores"])
            frames.append(res.extras["frame_scores"])
        else:
            scores, _, _ = det.score_features(*features(x))
            snippets.append(scores.mean(axis=0))
            frames.append(np.repeat(snippets[-1], 16))
    s = np.concatenate(snippets)
    return pr_auc(oracle["test_run/gt"], np.concatenate(frames)), s


def _torch_bf16(bundle):
    """The features graph in torch bfloat16 (weights and activations rounded to BF16)."""
    import torch

    from edgesentry.models.mavd import MAVDFeatures, build_from_tensors

    net = MAVDFeatures(build_from_tensors(bundle.load_tensors())).eval().to(torch.bfloat16)

    def run(x):
        with torch.inference_mode():
            out = net(*(torch.from_numpy(np.asarray(x[k], np.float32)).to(torch.bfloat16)
                        for k in ("rgb", "flow", "audio")))
        return [o.float().numpy() for o in out]

    return run


def test_mavd_int8_and_bf16_keep_ap_and_snippet_scores(mavd):
    import edgesentry
    from edgesentry.backends.openvino import native_precisions
    from edgesentry.export.tune import pearson

    bundle, oracle = mavd
    ref_ap, ref_s = _test_run(edgesentry.load(bundle.path, backend="onnxruntime"), oracle)
    assert ref_ap == pytest.approx(float(oracle["test_run/pr_auc"]), abs=1e-5)  # FP32 = the official AP
    results = {}
    for backend in ("onnxruntime", "openvino"):
        results[f"int8 {backend}"] = _test_run(edgesentry.load(bundle.path, backend=backend, precision="int8"), oracle)
    det32 = edgesentry.load(bundle.path, backend="onnxruntime")
    if "bf16" in native_precisions():
        results["bf16 openvino"] = _test_run(edgesentry.load(bundle.path, backend="openvino", precision="bf16"), oracle)
    else:
        results["bf16 torch (no BF16 on this CPU)"] = _test_run(det32, oracle, features=_torch_bf16(bundle))
    print(f"\nMAVD AP on the oracle test run: fp32 {ref_ap:.5f}")
    for name, (ap, s) in results.items():
        r = pearson(s, ref_s)
        print(f"  {name:32s} AP {ap:.5f} (drop {ref_ap - ap:+.5f}), snippet r {r:.6f}")
        assert abs(ap - ref_ap) <= AP_TOL, (name, ap, ref_ap)
        # with full-range (8-bit) weights OpenVINO measured r = 0.99869 on an AVX2-only CPU
        # (VPMADDUBSW saturation); the default reduced range gives 0.9999 on both runtimes
        assert r >= CORR_MIN, (name, r)
