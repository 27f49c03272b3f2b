"""Triton repositories made from the command line alone, served by a real ``tritonserver``.

For every family with a graph: ``edgesentry convert`` -> (mdmf: ``edgesentry enroll`` with
``.npy`` features) -> ``edgesentry export BUNDLE --format triton-repo REPO --triton-variant
python`` (the ``tritonserver`` of the nvidia-pytriton wheel has only the python backend), all
into one repository; the server starts on 127.0.0.1 and ``edgesentry.serving.Client`` sends the
raw inputs ``Detector.predict`` takes -- an image *file* of 512 x 512 pixels, a cube file, ``.npy``
feature files -- over HTTP (and gRPC for isstad). Every response is compared with
``Detector.predict`` on the same bundle (ONNX Runtime): score, raw score, label, anomaly map,
mask and extras to rtol 1e-5 / atol 1e-6 (the same ONNX Runtime and kernels run on both sides,
so the measured difference is 0; the tolerance only allows another thread count's summation order).
"""

from __future__ import annotations

import importlib.util
import shutil

import numpy as np
import pytest

pytest.importorskip("onnxruntime")
if importlib.util.find_spec("tritonclient") is None:  # not imported here: gevent must not be forked
    pytest.skip("tritonclient is not installed", allow_module_level=True)

from tests.utils import start_triton_server  # noqa: E402

pytestmark = [pytest.mark.shared, pytest.mark.triton_server]

RTOL, ATOL = 1e-5, 1e-6


def _cli(*argv: str) -> None:
    from edgesentry.cli import main

    assert main(list(argv)) == 0, argv


@pytest.fixture(scope="module")
def served(shared, tmp_path_factory):
    """(server, {family: (bundle dir, inputs, gallery)}) with every repository written by the CLI."""
    pytest.importorskip("torch")
    root = tmp_path_factory.mktemp("served")
    ref, data = shared / "reference", shared / "data"
    repo = root / "repo"
    rng = np.random.default_rng(3)
    cases = {}

    _cli("convert", "isstad", str(ref / "isstad/tiny_stage2_seed0.pt"), "--config",
         str(ref / "isstad/tiny_stage2_config.json"), "-o", str(root / "isstad"))
    _cli("calibrate", str(root / "isstad"), str(data / "hazelnut_toy/train/good"))
    images = [str(data / "hazelnut_toy/test/colour/03.jpg"), str(data / "hazelnut_toy/test/good/05.jpg")]
    cases["isstad"] = (root / "isstad", images, None)

    _cli("convert", "fers", "--spectral", str(ref / "fers/weights/saved_models/50bands"), "-o", str(root / "fers"))
    np.save(root / "cube.npy", rng.normal(size=(20, 18, 55)) * 50 + 300)
    cases["fers"] = (root / "fers", [str(root / "cube.npy"), str(data / "abu/abu-urban-3.mat")], None)

    _cli("convert", "mavd", str(ref / "mavd/weights/saved_models/ap86.07"), "-o", str(root / "mavd"))
    feats = root / "xd"
    feats.mkdir()
    vid = "v=served__#1_label_A"
    for crop in range(2):
        np.save(feats / f"{vid}__{crop}.npy", np.maximum(rng.standard_normal((7, 1024)), 0).astype(np.float32))
    flows = [feats / f"{vid}__{c}_flow.npy" for c in range(2)]
    for path in flows:
        np.save(path, np.maximum(rng.standard_normal((7, 1024)), 0).astype(np.float32))
    np.save(feats / f"{vid}__vggish.npy", (0.5 * rng.standard_normal((7, 128))).astype(np.float32))
    mavd_input = {"rgb": [str(feats / f"{vid}__{c}.npy") for c in range(2)], "flow": [str(p) for p in flows],
                  "audio": str(feats / f"{vid}__vggish.npy")}
    cases["mavd"] = (root / "mavd", [mavd_input], None)

    _cli("convert", "mdmf", str(ref / "mdmf/heads_seed0_D256.npz"), "-o", str(root / "mdmf"))
    gallery = root / "gallery.npz"
    for label in ("drink", "wave"):
        np.save(root / f"{label}_shots.npy", rng.standard_normal((2, 8, 256)).astype(np.float32))
        np.save(root / f"{label}_text.npy", rng.standard_normal(256).astype(np.float32))
        _cli("enroll", str(root / "mdmf"), str(gallery), label, str(root / f"{label}_shots.npy"), "--embedding",
             str(root / f"{label}_text.npy"))
    np.save(root / "query.npy", rng.standard_normal((8, 256)).astype(np.float32))
    cases["mdmf"] = (root / "mdmf", [str(root / "query.npy")], gallery)

    for bundle, _, gal in cases.values():
        extra = ["--gallery", str(gal)] if gal else []
        _cli("export", str(bundle), "--format", "triton-repo", str(repo), "--triton-variant", "python", *extra)
    server = start_triton_server(repo, startup_timeout=120)
    yield server, cases
    server.close()


def _reference(bundle, gallery):
    import edgesentry

    det = edgesentry.load(bundle, backend="onnxruntime")
    if gallery is not None:
        det.default_gallery = det.load_gallery(gallery)
    return det


def assert_served_equal(got, want):
    assert got.raw_score == pytest.approx(want.raw_score, rel=RTOL, abs=ATOL)
    assert got.score == pytest.approx(want.score, rel=RTOL, abs=ATOL)
    assert got.label == want.label
    if want.anomaly_map is None:
        assert got.anomaly_map is None
    else:
        assert got.anomaly_map.shape == want.anomaly_map.shape
        np.testing.assert_allclose(got.anomaly_map, want.anomaly_map, rtol=RTOL, atol=ATOL)
        np.testing.assert_array_equal(got.mask, want.mask)
    assert set(got.extras) == set(want.extras)
    for key, value in want.extras.items():
        if isinstance(value, dict):
            for k, v in value.items():
                np.testing.assert_allclose(np.asarray(got.extras[key][k]), np.asarray(v), rtol=RTOL, atol=ATOL)
        else:
            np.testing.assert_allclose(np.asarray(got.extras[key]), np.asarray(value), rtol=RTOL, atol=ATOL)
    assert got.info["served_by"] == "triton" and got.info["family"] == want.info["family"]


@pytest.mark.parametrize("name", ["isstad", "fers", "mavd", "mdmf"])
def test_cli_made_repository_serves_raw_inputs_like_predict(served, name):
    from edgesentry.serving import Client

    server, cases = served
    bundle, inputs, gallery = cases[name]
    det = _reference(bundle, gallery)
    with Client(server.http_url, model=name) as client:
        assert client.family == name
        for x in inputs:
            want, got = det.predict(x), client.predict(x)
            assert_served_equal(got, want)
            if want.anomaly_map is not None:
                diff = float(np.max(np.abs(got.anomaly_map - want.anomaly_map)))
                print(f"{name} {x}: map {want.anomaly_map.shape}, score {got.score:.6f} vs {want.score:.6f}, "
                      f"max |map diff| {diff:.3g}")


def test_served_isstad_takes_what_predict_takes(served):
    """A 512 x 512 image file, the same pixels as a PIL image and as BGR, a folder; HTTP and gRPC."""
    from PIL import Image

    from edgesentry.serving import Client

    server, cases = served
    bundle, images, _ = cases["isstad"]
    det = _reference(bundle, None)
    want = det.predict(images[0])
    assert want.anomaly_map.shape == (512, 512) and want.label is not None
    grpc, http = Client(server.grpc_url, model="isstad", protocol="grpc"), Client(server.http_url, model="isstad")
    with grpc, http:
        assert_served_equal(grpc.predict(images[0]), want)
        with Image.open(images[0]) as pil:
            assert_served_equal(http.predict(pil), want)
            bgr = np.asarray(pil.convert("RGB"))[..., ::-1]
        assert_served_equal(http.predict(bgr, color="bgr"), want)
        folder = bundle.parent / "folder"
        folder.mkdir()
        for image in images:  # a good and a defective part
            shutil.copy(image, folder / f"{len(list(folder.iterdir()))}.jpg")
        got, local = http.predict(str(folder)), det.predict(str(folder))
        assert isinstance(got, list) and len(got) == len(local) == 2
        for g, w in zip(got, local):
            assert_served_equal(g, w)
