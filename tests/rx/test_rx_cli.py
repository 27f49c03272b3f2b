"""``edgesentry detect rx`` and ``edgesentry convert rx`` through ``main(argv)`` in-process."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

import edgesentry
from edgesentry.cli import main


def test_detect_rx_writes_scores_heatmap_and_summary(shared, tmp_path, capsys):
    scene = shared / "data/abu/abu-urban-3.mat"
    code = main(["detect", "rx", str(scene), "--gt", str(scene), "--out", str(tmp_path)])
    assert code == 0
    scores = np.load(tmp_path / "abu-urban-3_scores.npy")
    assert scores.shape == (100, 100)
    summary = json.loads((tmp_path / "abu-urban-3_summary.json").read_text())
    assert summary["shape"] == [100, 100, 191]
    assert round(summary["auc"], 4) == 0.9513  # ../shared/data/abu/README.md
    assert summary["seconds"] > 0
    with Image.open(tmp_path / "abu-urban-3_heatmap.png") as img:
        assert img.mode == "RGB" and img.width > 100  # map plus colour bar
    assert "AUC 0.9513" in capsys.readouterr().out


def test_detect_rx_local_with_bands(rng, tmp_path):
    cube = rng.normal(size=(12, 12, 6))
    np.save(tmp_path / "cube.npy", cube)
    code = main(
        ["detect", "rx", str(tmp_path / "cube.npy"), "--window", "1,5", "--bands", "4", "--out", str(tmp_path / "o")]
    )
    assert code == 0
    expected = edgesentry.load("rx", mode="local", window=(1, 5), bands=4).predict(cube).extras["scores"]
    np.testing.assert_allclose(np.load(tmp_path / "o/cube_scores.npy"), expected, rtol=1e-12)


def test_convert_rx_then_load(tmp_path):
    assert main(["convert", "rx", "--window", "3,9", "-o", str(tmp_path / "b")]) == 0
    det = edgesentry.load(tmp_path / "b")
    assert det.cfg.mode == "local" and det.cfg.window == (3, 9)


def test_user_errors_exit_1_with_one_line(tmp_path, capsys):
    code = main(["detect", "rx", str(tmp_path / "missing.mat"), "--out", str(tmp_path)])
    err = capsys.readouterr().err
    assert code == 1 and "does not exist" in err and "Traceback" not in err
    assert main(["detect", "rx", str(tmp_path / "x.npy"), "--window", "3", "--out", str(tmp_path)]) == 1
    assert "'A,B'" in capsys.readouterr().err


def test_console_script_runs(tmp_path):
    proc = subprocess.run(
        [sys.executable, "-m", "edgesentry.cli", "--version"], capture_output=True, text=True, timeout=60
    )
    assert proc.returncode == 0 and edgesentry.__version__ in proc.stdout


@pytest.mark.parametrize("argv", [["convert"], ["detect"]])
def test_missing_family_is_an_argparse_error(argv):
    with pytest.raises(SystemExit) as exc:
        main(argv)
    assert exc.value.code == 2
