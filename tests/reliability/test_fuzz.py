"""Fuzzing the three parsers that read what an attacker writes: ``meta.json``, ENVI headers and
image headers (issue 21). Hypothesis generates structured and raw inputs; the only acceptable
outcomes are a value or the documented typed error:

| target | entry point | documented errors |
|---|---|---|
| meta.json | ``Bundle.open`` | ``BundleError`` (and its ``ChecksumError``) |
| meta.json of a weight-free family | ``edgesentry.load`` | ``EdgesentryError`` (Bundle, Config ...) |
| ENVI header + data | ``read_cube`` | ``InputError`` |
| image header / bytes | ``read_image`` | ``InputError`` |

Each target runs a bounded number of examples (``EXAMPLES``: a few seconds each on a 2-core CI
machine); ``pytest --hypothesis-show-statistics`` prints the count and time per target. Run
longer locally with ``EDGESENTRY_FUZZ_EXAMPLES=3000``.
"""

from __future__ import annotations

import io
import json
import os
import shutil
import tempfile
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

import edgesentry
from edgesentry.bundle import Bundle
from edgesentry.errors import BundleError, EdgesentryError, InputError
from edgesentry.io.hsi import read_cube
from edgesentry.io.image import read_image
from tests.hostile import png_bytes, png_chunk

#: examples per target; ``meta_structure`` also loads each bundle, so it gets fewer
EXAMPLES = {"meta_structure": 150, "meta_bytes": 300, "envi": 300, "image": 300}
_SCALE = int(os.environ.get("EDGESENTRY_FUZZ_EXAMPLES", "0"))
IMAGE_PIXEL_LIMIT = 1 << 16
pytestmark = pytest.mark.filterwarnings("ignore::UserWarning", "ignore::DeprecationWarning")


def fuzz(target: str):
    """Hypothesis settings of one target: bounded examples, no deadline, no example database."""
    return settings(max_examples=_SCALE or EXAMPLES[target], deadline=None, database=None,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])


@pytest.fixture(scope="module")
def scratch():
    """One scratch folder for the module (hypothesis calls the test body many times), and a small
    image pixel limit so that every fuzzed decode is fast."""
    folder = Path(tempfile.mkdtemp(prefix="edgesentry-fuzz-"))
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("EDGESENTRY_MAX_IMAGE_PIXELS", str(IMAGE_PIXEL_LIMIT))
        yield folder
    shutil.rmtree(folder, ignore_errors=True)


def _fresh(scratch: Path, name: str) -> Path:
    path = scratch / name
    shutil.rmtree(path, ignore_errors=True)
    path.mkdir()
    return path


# ---------------------------------------------------------------------------------- meta.json
JSON_LEAF = st.one_of(st.none(), st.booleans(), st.integers(-(2**70), 2**70), st.floats(allow_nan=False),
                      st.text(max_size=20))
JSON = st.recursive(JSON_LEAF, lambda inner: st.one_of(st.lists(inner, max_size=4),
                                                       st.dictionaries(st.text(max_size=10), inner, max_size=4)),
                    max_leaves=12)
NAMES = st.one_of(st.sampled_from(["weights.safetensors", "../x", "/etc/passwd", "a/../../b", "", ".", "a//b",
                                   "c:\\w", "engines/m.plan", "x\x00y", "meta.json", "sub/../meta.json"]),
                  st.text(max_size=30))
DIGESTS = st.one_of(st.just("0" * 64), st.text(alphabet="0123456789abcdef", min_size=60, max_size=68), JSON_LEAF)
META_KEYS = ["schema_version", "family", "files", "config", "preprocessing", "calibration", "io", "graphs", "extra"]


@st.composite
def metas(draw) -> dict:
    """A plausible rx meta.json with some keys replaced by hostile values."""
    meta = {"schema_version": 1, "family": "rx", "files": {}, "config": {"mode": "global"}, "preprocessing": {},
            "calibration": None, "io": {}}
    for key in draw(st.lists(st.sampled_from(META_KEYS), max_size=4, unique=True)):
        if key == "files":
            meta[key] = draw(st.one_of(st.dictionaries(NAMES, DIGESTS, max_size=3), JSON))
        elif key == "graphs":
            graph = st.fixed_dictionaries({"file": st.one_of(NAMES, JSON_LEAF)})
            meta[key] = draw(st.one_of(st.dictionaries(st.text(max_size=12), st.one_of(graph, JSON), max_size=2),
                                       JSON))
        elif key == "config":
            meta[key] = draw(st.one_of(st.fixed_dictionaries(
                {}, optional={"mode": st.sampled_from(["global", "local", "x"]), "window": JSON,
                              "ridge": JSON_LEAF, "bands": JSON, "nan_policy": JSON_LEAF, "rcond": JSON_LEAF}), JSON))
        elif key == "calibration":
            fields = ["threshold", "pixel_threshold", "score_min", "score_max", "quantile", "pixel_quantile",
                      "margin", "n_samples"]
            meta[key] = draw(st.one_of(st.fixed_dictionaries({f: JSON_LEAF for f in fields}), JSON))
        elif key == "schema_version":
            meta[key] = draw(st.one_of(st.sampled_from([1, True, 1.0, "1", 2, None]), JSON_LEAF))
        else:
            meta[key] = draw(JSON)
    return meta


@fuzz("meta_structure")
@given(meta=metas())
def test_fuzz_meta_json_structure(scratch: Path, meta: dict) -> None:
    root = _fresh(scratch, "meta_structure")
    (root / "meta.json").write_text(json.dumps(meta))
    try:
        Bundle.open(root)
    except BundleError:
        pass
    try:
        edgesentry.load(root)
    except EdgesentryError:
        pass


@fuzz("meta_bytes")
@given(data=st.one_of(st.binary(max_size=300),
                      st.builds(lambda d: ("[" * d + "]" * d).encode(), st.integers(1, 100_000)),
                      st.builds(lambda s: json.dumps(s).encode()[:-1], metas())))
def test_fuzz_meta_json_bytes(scratch: Path, data: bytes) -> None:
    root = _fresh(scratch, "meta_bytes")
    (root / "meta.json").write_bytes(data)
    try:
        Bundle.open(root)
    except BundleError:
        pass


# ---------------------------------------------------------------------------------------- ENVI
FIELD_VALUES = st.one_of(st.integers(-10, 40).map(str), st.integers(-(2**66), 2**66).map(str),
                         st.floats(allow_nan=True).map(str), st.text(max_size=12),
                         st.sampled_from(["bsq", "bil", "bip", "BSQ", "{", "{ 1, 2", "}", "1e3", " 4 ", "+3"]))
FIELDS = ["samples", "lines", "bands", "data type", "byte order", "header offset", "interleave"]


@st.composite
def envi_headers(draw) -> str:
    lines = [draw(st.sampled_from(["ENVI", "envi", " ENVI", "ENV", ""]))]
    base = {"samples": "3", "lines": "2", "bands": "2", "data type": "4", "byte order": "0", "interleave": "bsq"}
    for key in draw(st.lists(st.sampled_from(FIELDS), max_size=4)):
        base[key] = draw(FIELD_VALUES)
    for key, value in base.items():
        lines.append(f"{key} = {value}")
    lines.extend(draw(st.lists(st.text(max_size=30), max_size=3)))
    return "\n".join(lines)


@fuzz("envi")
@given(header=st.one_of(envi_headers(), st.text(max_size=200)), data_len=st.integers(0, 200))
def test_fuzz_envi_header(scratch: Path, header: str, data_len: int) -> None:
    root = _fresh(scratch, "envi")
    (root / "scene.hdr").write_text(header, encoding="utf-8")
    (root / "scene.img").write_bytes(bytes(range(256))[:data_len] if data_len <= 256 else bytes(data_len))
    try:
        cube = read_cube(root / "scene.hdr")
    except InputError:
        return
    assert cube.ndim == 3 and cube.size * cube.itemsize <= data_len


# --------------------------------------------------------------------------------------- images
def _seed_images() -> dict[str, bytes]:
    from PIL import Image

    rgb = (np.arange(6 * 5 * 3).reshape(6, 5, 3) * 7 % 256).astype(np.uint8)
    out = {}
    for fmt, mode in (("PNG", "RGB"), ("PNG", "I;16"), ("BMP", "RGB"), ("GIF", "P"), ("TIFF", "RGB"),
                      ("JPEG", "RGB"), ("PPM", "RGB"), ("WEBP", "RGB")):
        buf = io.BytesIO()
        image = Image.fromarray(rgb).convert("L" if mode == "I;16" else mode)
        if mode == "I;16":
            image = Image.fromarray(np.asarray(image).astype(np.uint16) * 257)
        try:
            image.save(buf, format=fmt)
        except (OSError, KeyError):  # a codec missing from this Pillow build
            continue
        out[f"{fmt}-{mode}"] = buf.getvalue()
    return out


SEEDS = _seed_images()


@st.composite
def image_bytes(draw) -> bytes:
    """A valid small image with bytes overwritten, inserted or cut, or a PNG with a hostile IHDR."""
    if draw(st.booleans()):
        width, height = draw(st.integers(0, 2**31 - 1)), draw(st.integers(0, 2**31 - 1))
        head = png_bytes(1, 1)
        ihdr = png_chunk(b"IHDR", width.to_bytes(4, "big") + height.to_bytes(4, "big") +
                         bytes(draw(st.lists(st.integers(0, 255), min_size=5, max_size=5))))
        return head[:8] + ihdr + head[8 + 25:]
    data = bytearray(SEEDS[draw(st.sampled_from(sorted(SEEDS)))])
    for _ in range(draw(st.integers(1, 6))):
        pos = draw(st.integers(0, max(0, len(data) - 1)))
        action = draw(st.sampled_from(["set", "insert", "cut"]))
        chunk = draw(st.binary(min_size=1, max_size=8))
        if action == "set":
            data[pos:pos + len(chunk)] = chunk
        elif action == "insert":
            data[pos:pos] = chunk
        else:
            del data[pos:]
    return bytes(data)


@fuzz("image")
@given(data=image_bytes(), suffix=st.sampled_from([".png", ".jpg", ".tif", ".bmp", ".gif", ".ppm", ".webp"]))
def test_fuzz_image_headers(scratch: Path, data: bytes, suffix: str) -> None:
    path = scratch / f"fuzz{suffix}"
    path.write_bytes(data)
    try:
        rgb = read_image(path)
    except InputError:
        return
    assert rgb.dtype == np.uint8 and rgb.ndim == 3 and rgb.shape[2] == 3
    assert rgb.shape[0] * rgb.shape[1] <= IMAGE_PIXEL_LIMIT


def test_fuzz_targets_have_seeds() -> None:
    """The image fuzzer mutates real files of several formats (PNG 8/16-bit, BMP, GIF, TIFF ...)."""
    assert {"PNG-RGB", "PNG-I;16", "BMP-RGB", "GIF-P", "TIFF-RGB"} <= set(SEEDS)
