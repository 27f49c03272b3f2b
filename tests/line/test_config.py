"""Line files: the published schema, key lines in TOML and YAML, and bad files -> one line naming
the key and its line, exit code 1 (``edgesentry line check``)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from edgesentry.cli import main
from edgesentry.line import SCHEMA_PATH, SOURCE_KINDS, LineFileError, load_line_file, schema
from edgesentry.line._locate import toml_lines
from edgesentry.line.config import toml_module

pytest.importorskip("jsonschema")

GOOD = """\
[line]
name = "l1"

[detectors.isstad]
bundle = "bundle"

[[cameras]]
id = "cam1"
detector = "isstad"
source = { kind = "video", path = "a.avi" }

[[cameras]]
id = "cam2"
detector = "isstad"
source = { kind = "folder", path = "in" }

[[stations]]
id = "st1"
cameras = ["cam1", "cam2"]

[[triggers]]
station = "st1"
kind = "http"

[outputs]
audit = "audit.jsonl"
"""


@pytest.fixture
def bundle_dir(tmp_path: Path) -> Path:
    import numpy as np

    from edgesentry.bundle import write_bundle

    write_bundle(tmp_path / "bundle", "isstad", config={}, tensors={"w": np.zeros(2, np.float32)})
    return tmp_path / "bundle"


def _check(tmp_path: Path, text: str, capsys, name: str = "line.toml") -> tuple[int, str]:
    path = tmp_path / name
    path.write_text(text)
    code = main(["line", "check", str(path)])
    lines = capsys.readouterr().err.strip().splitlines()
    # one line for the problem, then the verb's status line
    assert len(lines) == (2 if code else 1) and lines[-1].startswith(f"{'failed' if code else 'done'} | edgesentry "
                                                                    "line |"), lines
    return code, lines[0] if code else ""



def test_good_file_checks(tmp_path: Path, bundle_dir: Path, capsys) -> None:
    code, _ = _check(tmp_path, GOOD, capsys)
    assert code == 0


# (name, edit of GOOD, the line the error must name, the key it must name, a phrase)
BAD = [
    ("unknown key", ("id = \"cam2\"", "id = \"cam2\"\nfsp = 30"), 14, "cameras[1].fsp", "unknown key 'fsp'"),
    ("missing bundle", ("bundle = \"bundle\"", "bundle = \"no-such-bundle\""), 5, "detectors.isstad.bundle",
     "does not exist"),
    ("duplicate camera id", ("id = \"cam2\"", "id = \"cam1\""), 13, "cameras[1].id",
     "duplicate camera id 'cam1' (first at line 8)"),
    ("station names an unknown camera", ('cameras = ["cam1", "cam2"]', 'cameras = ["cam1", "cam3"]'), 19,
     "stations[0].cameras[1]", "unknown camera 'cam3'"),
    ("trigger with no station", ('station = "st1"\n', ""), 21, "triggers[0]", "missing key 'station'"),
    ("trigger naming an unknown station", ('station = "st1"', 'station = "st9"'), 22, "triggers[0].station",
     "unknown station 'st9'"),
    ("camera in two stations", ('kind = "http"', 'kind = "http"\n\n[[stations]]\nid = "st2"\ncameras = ["cam1"]'),
     27, "stations[1].cameras[0]", "already belongs to station 'st1'"),
    ("station without trigger", ('kind = "http"', 'kind = "http"\n\n[[stations]]\nid = "st2"\ncameras = ["cam3"]'
                                 '\n\n[[cameras]]\nid = "cam3"\ndetector = "isstad"\nsource = { kind = "camera", '
                                 'index = 0 }'), 26, "stations[1].id", "station 'st2' has no trigger"),
    ("a password in the file", ("[outputs]", "[mqtt]\nhost = \"127.0.0.1\"\npassword = \"hunter2\"\n\n[outputs]"),
     27, "mqtt.password", "unknown key 'password'"),
    ("bad enum", ('kind = "http"', 'kind = "plc"'), 23, "triggers[0].kind", "must be one of"),
    ("bad type", ('name = "l1"', "name = 7"), 2, "line.name", "must be a string; got integer 7"),
    ("bad source setting", ('source = { kind = "folder", path = "in" }',
                            'source = { kind = "folder", path = "in", fps = 3 }'), 15, "cameras[1].source.fps",
     "unknown key 'fps'"),
    ("not TOML", ("[line]", "[line"), 1, "", "not valid TOML"),
]


@pytest.mark.parametrize("case", BAD, ids=[c[0] for c in BAD])
def test_bad_line_file_is_one_line_naming_key_and_line(tmp_path: Path, bundle_dir: Path, capsys, case) -> None:
    _, (old, new), line, key, phrase = case
    assert old in GOOD
    code, err = _check(tmp_path, GOOD.replace(old, new, 1), capsys)
    assert code == 1
    assert err.startswith(f"edgesentry line: error: {tmp_path / 'line.toml'}:{line}: "), err
    assert f": {key}: " in err if key else True, err
    assert phrase in err, err


YAML_GOOD = """\
line:
  name: l1
detectors:
  isstad:
    bundle: bundle
cameras:
  - id: cam1
    detector: isstad
    source: {kind: video, path: a.avi}
  - id: cam1
    detector: isstad
    source:
      kind: video
      path: b.avi
stations:
  - id: st1
    cameras: [cam1]
triggers:
  - station: st1
    kind: http
"""


def test_yaml_names_lines_too(tmp_path: Path, bundle_dir: Path, capsys) -> None:
    pytest.importorskip("yaml")
    code, err = _check(tmp_path, YAML_GOOD, capsys, name="line.yaml")
    assert code == 1 and err.endswith("line.yaml:10: cameras[1].id: duplicate camera id 'cam1' (first at line 7)")
    code, err = _check(tmp_path, YAML_GOOD.replace("    kind: http\n", "    kind: http\n    kind: mqtt\n"), capsys,
                       name="line.yaml")
    assert code == 1 and "line.yaml:21: duplicate key 'kind' (first at line 20)" in err
    bomb = "a: &a [x, x]\nb: &b [*a, *a]\nc: [*b, *b]\n"
    code, err = _check(tmp_path, bomb, capsys, name="line.yaml")
    assert code == 1 and "line.yaml:2: YAML aliases (*name) are not allowed" in err
    code, err = _check(tmp_path, "- a\n- b\n", capsys, name="line.yaml")
    assert code == 1 and "top level must be a mapping" in err


def test_other_suffix_and_size_refused(tmp_path: Path, capsys) -> None:
    code, err = _check(tmp_path, GOOD, capsys, name="line.json")
    assert code == 1 and "must end in .toml, .yaml or .yml" in err
    code, err = _check(tmp_path, "#" * (2 << 20), capsys)
    assert code == 1 and err.count("\n") == 0


def test_published_schema_is_valid_and_covers_every_source_kind() -> None:
    from jsonschema import Draft202012Validator

    Draft202012Validator.check_schema(schema())
    assert json.loads(SCHEMA_PATH.read_text()) == schema()
    kinds = set(schema()["properties"]["cameras"]["items"]["properties"]["source"]["properties"]["kind"]["enum"])
    assert kinds == set(SOURCE_KINDS)
    assert {f"source_{k}" for k in kinds} == set(schema()["$defs"])
    # no key of the schema holds a secret itself: only *_file / *_env keys name where secrets are
    text = SCHEMA_PATH.read_text()
    for word in ('"password"', '"token"', '"secret"'):
        assert word not in text


def test_toml_key_lines() -> None:
    text = """# comment
[a]
x = 1   # trailing
"q.k" = "v # not a comment"
s = '''multi
line = 3
'''
arr = [
  { id = "p" },
  # between
  { id = "q", nested = { deep = [1, 2] } },
]
[[t]]
b.c = 2
[[t]]
b = { c = 3 }
"""
    lines = toml_lines(text)
    assert lines.line_of(("a", "x")) == 3
    assert lines.line_of(("a", "q.k")) == 4
    assert lines.line_of(("a", "s")) == 5
    assert lines.line_of(("a", "arr", 0, "id")) == 9
    assert lines.line_of(("a", "arr", 1, "nested", "deep", 1)) == 11
    assert lines.line_of(("t", 0, "b", "c")) == 14
    assert lines.line_of(("t", 1, "b", "c")) == 16
    assert lines.line_of(("t", 1, "missing")) == 15  # nearest ancestor
    toml_module().loads(text)  # the scanner is only ever run on valid TOML


def test_require_signature_without_trusted_keys_is_refused(tmp_path: Path, bundle_dir: Path, monkeypatch) -> None:
    """Signed bundles themselves are tested in tests/signing/test_line.py."""
    for name in ("EDGESENTRY_SIGNING_CONFIG", "EDGESENTRY_TRUSTED_KEYS", "EDGESENTRY_REVOKED_KEYS"):
        monkeypatch.delenv(name, raising=False)
    path = tmp_path / "line.toml"
    path.write_text(GOOD.replace('bundle = "bundle"', 'bundle = "bundle"\nrequire_signature = true'))
    with pytest.raises(LineFileError, match=r"line.toml:6: detectors.isstad.require_signature: needs trusted keys"):
        load_line_file(path)
