"""Triton Inference Server: repository configs parse; a real tritonserver serves the ensemble.

Every config.pbtxt is parsed with Triton's model-config protobuf (``tritonclient.grpc``'s
``model_config_pb2``). The server test starts the ``tritonserver`` binary of the
nvidia-pytriton wheel on 127.0.0.1 (python backend only, so the graph model is the variant
with ONNX Runtime inside a python model), sends requests over HTTP and gRPC and compares every
response with ``Detector.predict`` on the same bundle (ONNX Runtime backend).
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("onnxruntime")
model_config_pb2 = pytest.importorskip("tritonclient.grpc.model_config_pb2")
from google.protobuf import text_format  # noqa: E402

from edgesentry.serving import write_model_repository  # noqa: E402
from tests.export.families import CASES  # noqa: E402

SERVED = ("mavd", "isstad")  # families whose detector input is array(s) and whose predict is the pipeline


def _parse(path: Path):
    return text_format.Parse(path.read_text(), model_config_pb2.ModelConfig())


def _example(name, bundle):
    x = CASES[name].sample(np.random.default_rng(0), bundle)
    return x["x"] if list(x) == ["x"] else x


def _gallery(name, bundle, tmp_path):
    """mdmf repositories serve against a gallery: two classes of random features."""
    if name != "mdmf":
        return None
    import edgesentry
    from tests.roundtrip.conftest import make_gallery

    return make_gallery(edgesentry.load(bundle, backend="onnxruntime"), tmp_path / "gallery.npz")


@pytest.mark.parametrize("variant", ["onnxruntime", "python"])
def test_every_config_parses(family_bundles, variant, tmp_path):
    for name, (bundle, _) in family_bundles.items():
        repo = write_model_repository(bundle, tmp_path / name, variant=variant, example=_example(name, bundle),
                                      gallery=_gallery(name, bundle, tmp_path))
        configs = {p.parent.name: _parse(p) for p in repo.glob("*/config.pbtxt")}
        graphs = bundle.meta["graphs"]
        assert set(configs) == {name, f"{name}_pre", f"{name}_post", *(f"{name}_{g}" for g in graphs)}
        ens = configs[name]
        assert ens.platform == "ensemble"
        steps = [s.model_name for s in ens.ensemble_scheduling.step]
        assert steps[0] == f"{name}_pre" and steps[-1] == f"{name}_post"
        assert [o.name for o in ens.output] == ["SCORE", "RAW_SCORE", "LABEL", "ANOMALY_MAP", "MASK", "EXTRAS", "INFO"]
        assert ens.parameters["edgesentry_family"].string_value == name
        # the ensemble takes the detector's raw input (an image's pixels, a cube, feature streams), not graph tensors
        from edgesentry.detectors import family_module

        declared = family_module(name).SERVING_INPUTS
        assert {i.name: list(i.dims) for i in ens.input} == {k: list(d) for k, (_, d) in declared.items()}
        for g, gmeta in graphs.items():
            cfg = configs[f"{name}_{g}"]
            if variant == "onnxruntime":
                assert cfg.platform == "onnxruntime_onnx" and (repo / f"{name}_{g}/1/model.onnx").is_file()
            else:
                assert cfg.backend == "python" and (repo / f"{name}_{g}/1/model.py").is_file()
            assert [i.name for i in cfg.input] == list(gmeta["inputs"]) or set(i.name for i in cfg.input) == set(
                gmeta["inputs"]
            )
            batched = all(v.get("0") == "batch" for v in gmeta["dynamic_axes"].values())
            assert (cfg.max_batch_size > 0) == batched and cfg.HasField("dynamic_batching") == batched
        assert (repo / f"{name}_post/bundle/meta.json").is_file()


def test_tensorrt_variant_needs_a_plan(family_bundles, tmp_path):
    from edgesentry.errors import ConfigError

    bundle, _ = family_bundles[next(iter(family_bundles))]
    with pytest.raises(ConfigError, match="edgesentry build"):
        write_model_repository(bundle, tmp_path / "trt", variant="tensorrt", example=_example(bundle.family, bundle))


def test_export_verb_writes_triton_repo(family_bundles, tmp_path, capsys):
    from edgesentry.cli import main

    if "mavd" not in family_bundles:
        pytest.skip("mavd reference not available")
    bundle, _ = family_bundles["mavd"]
    assert main(["export", str(bundle.path), "--format", "triton-repo", str(tmp_path / "repo")]) == 0
    assert main(["export", str(bundle.path), "--format", "triton-repo"]) == 1  # OUT is required
    assert "mavd_features" in capsys.readouterr().out
    for p in (tmp_path / "repo").glob("*/config.pbtxt"):
        _parse(p)


@pytest.mark.triton_server
def test_tritonserver_serves_results_equal_to_predict(family_bundles, tmp_path):
    import edgesentry
    from tests.utils import start_triton_server

    served = [n for n in SERVED if n in family_bundles]
    if not served:
        pytest.skip("no servable family reference available")
    repo = tmp_path / "repo"
    for name in served:
        bundle, _ = family_bundles[name]
        write_model_repository(bundle, repo, variant="python", example=_example(name, bundle))
    server = start_triton_server(repo, startup_timeout=45)
    try:
        from edgesentry.serving import Client

        timings = {}
        for name in served:
            bundle, _ = family_bundles[name]
            det = edgesentry.load(bundle, backend="onnxruntime")
            http, grpc = Client(server.http_url, model=name), Client(server.grpc_url, model=name, protocol="grpc")
            rng = np.random.default_rng(11)
            lat = []
            for _ in range(3):
                x = CASES[name].sample(rng, bundle)
                x = x["x"] if list(x) == ["x"] else x
                want = det.predict(x)
                for client in (http, grpc):
                    t0 = time.perf_counter()
                    got = client.predict(x)
                    lat.append(time.perf_counter() - t0)
                    assert got.raw_score == pytest.approx(want.raw_score, rel=1e-5, abs=1e-6)
                    assert got.label == want.label
                    if want.anomaly_map is None:
                        assert got.anomaly_map is None
                    else:
                        np.testing.assert_allclose(got.anomaly_map, want.anomaly_map, rtol=1e-5, atol=1e-6)
                    assert set(got.extras) == set(want.extras)
                    for k, v in want.extras.items():
                        np.testing.assert_allclose(np.asarray(got.extras[k]), np.asarray(v), rtol=1e-5, atol=1e-6)
                    assert got.info["served_by"] == "triton" and got.info["family"] == name
            timings[name] = float(np.median(lat))
            http.close()
            grpc.close()
        print(f"tritonserver median request latency (s): {timings}")
    finally:
        server.close()
