"""What the command line and the Python API say: flags on the CLI and arguments in Python, the
bundle of another family, unknown options with the valid ones, the backends this install runs,
kernel tiers refused at ``load``, ``done`` / ``failed`` status lines, ports chosen with 0, and
bundle files as readable as the user's umask allows."""

from __future__ import annotations

import io
import os
import stat
from pathlib import Path

import numpy as np
import pytest

import edgesentry
from edgesentry.cli import build_parser, main
from edgesentry.errors import ConfigError, InputError, KernelUnavailableError


def _nan_cube(path: Path) -> Path:
    cube = np.random.default_rng(0).normal(size=(8, 8, 4))
    cube[2, 3, 1] = np.nan
    np.save(path, cube)
    return path


def test_errors_name_cli_flags_on_the_cli_and_arguments_in_python(tmp_path, capsys):
    cube = _nan_cube(tmp_path / "nan.npy")
    with pytest.raises(InputError, match=r"pass nan_policy='mask' to skip them"):
        edgesentry.load("rx").predict(str(cube))
    assert main(["detect", "rx", str(cube), "--out", str(tmp_path / "o")]) == 3  # a failed record, not a crash
    out = capsys.readouterr()
    assert "pass --mask-nan to skip them" in out.out and "nan_policy" not in out.out
    with pytest.raises(ConfigError, match=r"window is only used by mode 'local'; pass mode='local'"):
        edgesentry.load("rx", window=(3, 9), mode="global")
    with pytest.raises(edgesentry.BundleError, match=r"pass overwrite=True to replace it"):
        edgesentry.convert("rx", output=tmp_path / "o")
    assert main(["convert", "rx", "-o", str(tmp_path / "o")]) == 1
    assert "pass --force to replace it" in capsys.readouterr().err


def test_a_bundle_of_another_family_says_so(tmp_path, capsys):
    edgesentry.convert("rx", output=tmp_path / "rx")
    (tmp_path / "img.png").write_bytes(b"")
    assert main(["detect", "isstad", str(tmp_path / "rx"), str(tmp_path / "img.png"), "--out", str(tmp_path)]) == 1
    err = capsys.readouterr().err
    assert "is a 'rx' bundle; `edgesentry detect isstad` needs a 'isstad' bundle (try `edgesentry detect rx`)" in err
    assert "keyword" not in err and "Traceback" not in err
    with pytest.raises(ConfigError, match=r"family 'rx' has no option 'keep_rgb'; valid options: .*mode"):
        edgesentry.load(tmp_path / "rx", keep_rgb=True)  # the isstad-only option, said plainly


def test_unknown_options_list_the_valid_ones(tmp_path, capsys):
    with pytest.raises(SystemExit) as exc:
        main(["detect", "rx", "x.npy", "--out", str(tmp_path), "--windw", "3,9"])
    err = capsys.readouterr().err
    assert exc.value.code == 2
    assert "--windw (did you mean --window?)" in err and "valid options: " in err and "--mask-nan" in err


def test_backend_choices_are_what_this_install_can_run(monkeypatch, capsys):
    from edgesentry import backends

    parser = build_parser()
    with pytest.raises(SystemExit):
        parser.parse_args(["detect", "isstad", "b", "x.png", "--out", "o", "--backend", "tensorrt"])
    assert "invalid choice: 'tensorrt'" in capsys.readouterr().err
    monkeypatch.setattr(backends, "_importable", lambda module: module == "torch")  # a torch-only install
    assert backends.available_backends() == ["torch"]
    with pytest.raises(SystemExit):
        build_parser().parse_args(["detect", "mavd", "b", "--rgb", "r", "--flow", "f", "--audio", "a",
                                   "--backend", "onnxruntime"])
    assert "choose from auto, torch" in capsys.readouterr().err.replace("'", "")


def test_an_explicit_kernel_tier_that_cannot_run_fails_at_load():
    from edgesentry.kernels import tier_status

    reason = tier_status()["cuda"]
    if reason is None:
        pytest.skip("the cuda tier runs here")
    with pytest.raises(KernelUnavailableError):
        edgesentry.load("rx", kernels="cuda")  # at load, not at the first predict


def test_verbs_end_with_done_or_failed(tmp_path, capsys):
    assert main(["convert", "rx", "-o", str(tmp_path / "b")]) == 0
    assert capsys.readouterr().err.strip().splitlines()[-1].startswith("done | edgesentry convert | ")
    assert main(["info", "--json"]) == 0
    assert capsys.readouterr().err.strip().splitlines()[-1].startswith("done | edgesentry info | ")
    assert main(["calibrate", str(tmp_path / "b"), str(tmp_path / "missing")]) == 1
    err = capsys.readouterr().err
    assert "PASSED" not in err and err.strip().splitlines()[-1].startswith("failed | edgesentry calibrate | ")


def test_a_metrics_port_chosen_with_0_is_printed(tmp_path):
    pytest.importorskip("prometheus_client")
    from PIL import Image

    from edgesentry.stream import stream
    from tests.stream.helpers import MeanDetector

    folder = tmp_path / "in"
    folder.mkdir()
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(folder / "a.png")
    status = io.StringIO()
    summary = stream(MeanDetector(), str(folder), once=True, metrics_port=0, status=status, handle_signals=False)
    assert summary.processed == 1
    line = next(x for x in status.getvalue().splitlines() if x.startswith("metrics: "))
    port = int(line.rsplit(":", 1)[1].split("/")[0])
    assert line == f"metrics: http://127.0.0.1:{port}/metrics" and port > 0


@pytest.mark.parametrize(("umask", "mode"), [(0o022, 0o644), (0o027, 0o640), (0o077, 0o600)])
def test_bundle_files_follow_the_umask(tmp_path, umask, mode):
    from edgesentry.bundle import write_bundle

    old = os.umask(umask)
    try:
        bundle = write_bundle(tmp_path / "b", "rx", config={}, tensors={"w": np.ones(3, np.float32)})
        bundle.add_file("extra.json", b"{}")
        saved = edgesentry.load(tmp_path / "b").save(tmp_path / "copy")
    finally:
        os.umask(old)
    for path in (*Path(bundle.path).iterdir(), *Path(saved.path).iterdir()):
        assert stat.S_IMODE(path.stat().st_mode) == mode, path
