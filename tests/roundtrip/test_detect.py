"""``edgesentry detect FAMILY`` over folders and globs for every family: one line per input, a bad
file becomes a failed record and the run goes on, the summary counts processed / failed, the
records equal ``Detector.predict``; and ``predict`` / ``calibrate`` take folders, globs and lists."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

import edgesentry
from edgesentry.cli import main
from edgesentry.errors import InputError
from tests.roundtrip.conftest import FAMILIES, ready

pytestmark = pytest.mark.shared


def _records(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()]


def _files_for(name, shared, folder: Path) -> tuple[list[str], list[str], int]:
    """(detect arguments after the bundle, the good inputs in sorted order, how many are bad)."""
    folder.mkdir()
    if name in ("rx", "fers"):
        for i, cube in enumerate(FAMILIES[name].inputs(shared, folder)):
            np.save(folder / f"scene{i}.npy", cube)
        (folder / "scene9.npy").write_bytes(b"\x93NUMPY broken")
        return [str(folder)], [str(folder / f"scene{i}.npy") for i in range(2)], 1
    if name == "isstad":
        for i, image in enumerate(FAMILIES[name].inputs(shared, folder)):
            shutil.copy(image, folder / f"part{i}.jpg")
        (folder / "part9.png").write_bytes(b"not a png")
        return [str(folder / "part*")], [str(folder / "part0.jpg"), str(folder / "part1.jpg")], 1
    if name == "mavd":
        rgb, flow, audio = folder / "rgb", folder / "flow", folder / "audio"
        for d in (rgb, flow, audio):
            d.mkdir()
        good = []
        for i, x in enumerate(FAMILIES[name].inputs(shared, folder)):
            vid = f"v=clip{i}__#1_label_A"
            for c in range(2):
                np.save(rgb / f"{vid}__{c}.npy", x["rgb"][c])
                np.save(flow / f"{vid}__{c}.npy", x["flow"][c])
            np.save(audio / f"{vid}__vggish.npy", x["audio"])
            good.append(vid)
        np.save(rgb / "v=noflow__#1_label_A__0.npy", x["rgb"][0])  # a video without flow / audio
        return ["--rgb", str(rgb), "--flow", str(flow), "--audio", str(audio)], good, 1
    for i, q in enumerate(FAMILIES[name].inputs(shared, folder)):
        np.save(folder / f"q{i}.npy", q)
    np.save(folder / "q9.npy", np.zeros((3, 5), np.float32))  # the wrong shape
    return [str(folder)], [str(folder / "q0.npy"), str(folder / "q1.npy")], 1


@pytest.mark.parametrize("name", list(FAMILIES))
def test_detect_over_a_folder_with_a_bad_file(name, bundle_of, shared, tmp_path, capsys):
    path = bundle_of(name, "converted")
    args, good, bad = _files_for(name, shared, tmp_path / "in")
    out = tmp_path / "out"
    det = ready(edgesentry.load(path), tmp_path)
    if name == "rx":
        argv = ["detect", "rx", *args, "--out", str(out)]
    elif name == "mdmf":
        det.default_gallery.save(tmp_path / "g.npz")
        argv = ["detect", "mdmf", str(path), str(tmp_path / "g.npz"), *args, "--out", str(out)]
    else:
        argv = ["detect", name, str(path), *args, "--out", str(out)]
    assert main(argv) == 3  # some inputs failed, the others were processed
    text = capsys.readouterr()
    assert f"{len(good)} processed, {bad} failed" in text.out and "Speed: " in text.out
    assert "ms graph" in text.out and text.err.strip().splitlines()[-1].startswith("failed | edgesentry detect")
    records = _records(out)
    assert len(records) == len(good) + bad
    assert sum(r["status"] == "failed" and bool(r["error"]) for r in records) == bad
    summary = json.loads((out / "summary.json").read_text())
    assert (summary["processed"], summary["failed"]) == (len(good), bad)
    processed = [r for r in records if r["status"] == "processed"]
    if name == "mavd":
        want = [det.predict({"rgb": sorted(str(p) for p in (tmp_path / "in/rgb").glob(f"{v}__*.npy")),
                             "flow": sorted(str(p) for p in (tmp_path / "in/flow").glob(f"{v}__*.npy")),
                             "audio": str(tmp_path / f"in/audio/{v}__vggish.npy")}) for v in good]
    else:
        want = [det.predict(g) for g in good]
    for record, w in zip(processed, want):
        assert record["raw_score"] == pytest.approx(w.raw_score, rel=1e-6, abs=1e-9)


def test_predict_and_calibrate_take_folders_globs_and_lists(shared, bundle_of, tmp_path):
    det = edgesentry.load(bundle_of("isstad"))
    folder = shared / "data/hazelnut_toy/test/good"
    results = det.predict(str(folder))
    assert isinstance(results, list) and len(results) == 6
    files = sorted(str(p) for p in folder.glob("*.jpg"))
    assert [r.info["path"] for r in results] == files
    assert [r.raw_score for r in det.predict(files[:2])] == [r.raw_score for r in results[:2]]
    assert len(det.predict(str(folder / "0*.jpg"))) == len([f for f in files if Path(f).name.startswith("0")])
    calib = det.calibrate(str(shared / "data/hazelnut_toy/train/good"))
    assert calib.n_samples == 20
    with pytest.raises(InputError, match="holds no isstad input files"):
        det.predict(str(tmp_path))
    with pytest.raises(InputError, match="matches no isstad input files"):
        det.predict(str(tmp_path / "*.png"))
    mavd = edgesentry.load(bundle_of("mavd"))
    with pytest.raises(InputError, match="mavd takes one video's features: a dict"):
        mavd.predict(str(tmp_path))


@pytest.mark.parametrize("name", list(FAMILIES))
def test_every_family_result_has_a_short_repr_a_picture_and_json(name, bundle_of, shared, tmp_path):
    det = ready(edgesentry.load(bundle_of(name)), tmp_path)
    res = det.predict(FAMILIES[name].inputs(shared, tmp_path)[0])
    text = repr(res)
    assert text.startswith(f"Result({name}, score=") and len(text) < 160 and "array(" not in text
    picture = res.plot()
    assert picture.dtype == np.uint8 and picture.ndim == 3 and picture.shape[2] == 3 and picture.shape[0] > 50
    assert json.loads(res.to_json())["raw_score"] == pytest.approx(res.raw_score)
