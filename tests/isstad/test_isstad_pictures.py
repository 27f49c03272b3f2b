"""ISSTAD pictures people can read: panels on the threshold's colour scale, binary masks, .npy
maps, ``--save`` choices, and ``Result`` repr / plot / save / to_json."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

import edgesentry
from edgesentry.cli import main
from edgesentry.viz import anomaly_panel, colormap, threshold_scale, verdict


def test_the_heat_map_colour_scale_is_the_thresholds_for_every_image():
    thr = 40.0
    a = np.full((64, 64), thr)
    a[:, 32:] = 2 * thr  # left half at the threshold, right half at twice it
    b = a * 0.25  # a quieter image: the same values mean the same colours
    for amap in (a, b):
        scaled, lo, hi = threshold_scale(amap, thr)
        assert (lo, hi) == (0.0, 2 * thr)
    np.testing.assert_array_equal(threshold_scale(a, thr)[0][0, :2], [0.5, 0.5])
    panel = np.asarray(anomaly_panel(a, pixel_threshold=thr, score=0.9, label=True, tile=128))
    head, pad = 34, 6  # layout of anomaly_panel: title band, then the tiles; no image -> heat map first
    assert tuple(panel[head + 20, pad + 10]) == tuple(colormap(np.array([0.5]))[0])
    assert tuple(panel[head + 20, pad + 120]) == tuple(colormap(np.array([1.0]))[0])
    quiet = np.asarray(anomaly_panel(b, pixel_threshold=thr, score=0.1, label=False, tile=128))
    assert tuple(quiet[head + 20, pad + 10]) == tuple(colormap(np.array([0.125]))[0])
    assert verdict(0.873, True) == ("Anomalous 0.87", (200, 30, 30)) and verdict(0.12, False)[0] == "Good 0.12"
    assert verdict(0.12, None)[0].startswith("score 0.12")


def test_result_repr_plot_save_and_json(tiny_bundle, shared, tmp_path):
    image = shared / "data/hazelnut_toy/test/colour/03.jpg"
    det = edgesentry.load(tiny_bundle, backend="torch", keep_rgb=True)
    det.calibrate([str(p) for p in sorted((shared / "data/hazelnut_toy/train/good").glob("*.jpg"))[:4]])
    res = det.predict(str(image))
    text = repr(res)
    assert text.startswith("Result(isstad, score=") and "map 512x512" in text and "mask " in text
    assert len(text) < 160 and "array(" not in text
    panel = res.plot()
    assert panel.dtype == np.uint8 and panel.ndim == 3 and panel.shape[2] == 3
    assert panel.shape[1] == 6 + 4 * (256 + 6) + 14 + 64  # image | heat map | mask | contours | colour bar
    res.save(tmp_path / "p.png")
    with Image.open(tmp_path / "p.png") as im:
        assert im.size == (panel.shape[1], panel.shape[0])
    np.testing.assert_array_equal(np.load(res.save(tmp_path / "m.npy")), res.anomaly_map)
    assert json.loads(res.save(tmp_path / "r.json").read_text()) == json.loads(res.to_json())
    assert json.loads(res.to_json())["score"] == pytest.approx(res.score)
    bare = edgesentry.load(tiny_bundle, backend="torch").predict(str(image))
    assert bare.image is None and bare.plot().shape[1] == 6 + 3 * (256 + 6) + 14 + 64  # no image: 3 tiles


@pytest.mark.parametrize("save", ["none", "maps", "panels", "all"])
def test_detect_save_choices(tiny_bundle, shared, tmp_path, save, capsys):
    from edgesentry.cli.families.isstad import DEFAULT_SAVE

    images = shared / "data/hazelnut_toy/test/colour"
    out = tmp_path / "out"
    argv = ["detect", "isstad", str(tiny_bundle), str(images / "0[0-1].jpg"), "--out", str(out), "--backend", "torch",
            "--pixel-threshold", "30"]
    assert main(argv + ([] if save == DEFAULT_SAVE else ["--save", save])) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith("image 1/2 ") and ": 512x512 score " in lines[0] and " ms" in lines[0]
    assert any(line.startswith("Speed: ") and "ms pre" in line and "ms post per image" in line for line in lines)
    det = edgesentry.load(tiny_bundle, backend="torch", pixel_threshold=30)
    names = sorted(p.name for p in out.iterdir())
    for stem in ("00", "01"):
        res = det.predict(str(images / f"{stem}.jpg"))
        assert (f"{stem}_map.npy" in names) == (save in ("maps", "all"))
        assert (f"{stem}_mask.png" in names) == (save in ("maps", "all"))
        assert (f"{stem}_panel.png" in names) == (save in ("panels", "all"))
        if save in ("maps", "all"):
            np.testing.assert_allclose(np.load(out / f"{stem}_map.npy"), res.anomaly_map, rtol=1e-6, atol=1e-6)
            with Image.open(out / f"{stem}_mask.png") as mask:  # a binary mask, not a picture
                assert mask.mode == "L" and set(np.unique(np.asarray(mask))) <= {0, 255}
                np.testing.assert_array_equal(np.asarray(mask) == 255, res.mask)
    assert {"results.jsonl", "summary.json", "summary.csv"} <= set(names)
