"""Bundles: checksums, schema versions, pickles refused, corrupt metadata."""

from __future__ import annotations

import json
import pickle

import numpy as np
import pytest

from edgesentry import BundleError, ChecksumError
from edgesentry.bundle import SCHEMA_VERSION, Bundle, write_bundle


@pytest.fixture
def bundle(tmp_path):
    tensors = {"w": np.arange(6, dtype=np.float32).reshape(2, 3), "b": np.ones(3, np.float64)}
    return write_bundle(tmp_path / "b", "rx", config={"mode": "global"}, tensors=tensors, extra={"note": "x"})


def test_roundtrip(bundle):
    opened = Bundle.open(bundle.path)
    assert opened.family == "rx" and opened.config == {"mode": "global"}
    assert opened.meta["schema_version"] == SCHEMA_VERSION
    tensors = opened.load_tensors()
    np.testing.assert_array_equal(tensors["w"], np.arange(6, dtype=np.float32).reshape(2, 3))
    assert tensors["b"].dtype == np.float64


def test_tampered_file_fails_the_checksum(bundle):
    path = bundle.path / "weights.safetensors"
    data = bytearray(path.read_bytes())
    data[-1] ^= 0xFF
    path.write_bytes(bytes(data))
    with pytest.raises(ChecksumError, match="weights.safetensors.*modified or truncated"):
        Bundle.open(bundle.path)


def test_truncated_file_fails_the_checksum(bundle):
    path = bundle.path / "weights.safetensors"
    path.write_bytes(path.read_bytes()[:20])
    with pytest.raises(ChecksumError):
        Bundle.open(bundle.path)


def test_missing_listed_file(bundle):
    (bundle.path / "weights.safetensors").unlink()
    with pytest.raises(BundleError, match="missing"):
        Bundle.open(bundle.path)


@pytest.mark.parametrize("version", [0, 2, "1", None])
def test_unknown_schema_version(bundle, version):
    meta = json.loads((bundle.path / "meta.json").read_text())
    meta["schema_version"] = version
    (bundle.path / "meta.json").write_text(json.dumps(meta))
    with pytest.raises(BundleError, match=f"schema_version {version!r} is not supported"):
        Bundle.open(bundle.path)


def test_corrupt_meta(bundle):
    (bundle.path / "meta.json").write_text('{"schema_version": 1, "family": ')
    with pytest.raises(BundleError, match="not valid JSON"):
        Bundle.open(bundle.path)
    (bundle.path / "meta.json").write_text("[1, 2]")
    with pytest.raises(BundleError, match="JSON object"):
        Bundle.open(bundle.path)


def test_pickle_in_place_of_safetensors_is_refused(bundle):
    path = bundle.path / "weights.safetensors"
    path.write_bytes(pickle.dumps({"w": [1, 2, 3]}, protocol=4))
    bundle.add_file("weights.safetensors")  # even with a matching checksum
    with pytest.raises(BundleError, match="pickle"):
        Bundle.open(bundle.path).load_tensors()


def test_not_a_bundle(tmp_path):
    with pytest.raises(BundleError, match="bundle directory"):
        Bundle.open(tmp_path / "nothing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(BundleError, match="meta.json is missing"):
        Bundle.open(tmp_path / "empty")


def test_refuses_to_overwrite(bundle):
    with pytest.raises(BundleError, match="already exists"):
        write_bundle(bundle.path, "rx", config={})
    again = write_bundle(bundle.path, "rx", config={"mode": "local"}, overwrite=True)
    assert Bundle.open(again.path).config == {"mode": "local"} and not again.has("weights.safetensors")


def test_scalar_and_transposed_tensors_keep_their_shape(tmp_path):
    tensors = {"num_batches_tracked": np.array(7, dtype=np.int64), "t": np.arange(6.0).reshape(2, 3).T}
    loaded = write_bundle(tmp_path / "s", "rx", config={}, tensors=tensors).load_tensors()
    assert loaded["num_batches_tracked"].shape == () and int(loaded["num_batches_tracked"]) == 7
    np.testing.assert_array_equal(loaded["t"], tensors["t"])
