"""TensorRT engine building and caching against fake TensorRT modules (no TensorRT import).

The fakes implement the documented Python API surface ``build_plan`` uses; the 11.x fake
has no precision flags or calibrator (as in TensorRT 11), so any use of them fails here.
"""

from __future__ import annotations

import hashlib
import json
import logging
import types

import numpy as np
import pytest

from edgesentry.errors import BackendUnavailableError, ConfigError
from edgesentry.export.tensorrt import (
    EngineCache,
    EngineKey,
    ShapeProfile,
    build_bundle_engines,
    find_engine,
    profile_from_graph,
)


def fake_trt(version: str):
    """A module-like fake of ``tensorrt`` recording what the builder was asked to do."""
    major = int(version.split(".")[0])
    log: dict = {"flags": [], "parsed": [], "profiles": [], "network_flags": [], "builds": 0, "timing_blobs": []}

    class Enum:
        def __init__(self, **members):
            self.__dict__.update(members)

    flags = {"VERSION_COMPATIBLE": "VERSION_COMPATIBLE"}
    if major < 11:
        flags.update(FP16="FP16", INT8="INT8")

    class TimingCache:
        def __init__(self, blob):
            self.blob = blob

        def serialize(self):
            return b"TIMING" + bytes(self.blob)

    class Config:
        def __init__(self):
            self.cache = None
            self.int8_calibrator = None

        def set_memory_pool_limit(self, pool, n):
            log["workspace"] = n

        def add_optimization_profile(self, p):
            log["profiles"].append(p.shapes)

        def set_flag(self, f):
            log["flags"].append(f)

        def set_calibration_profile(self, p):
            log["calibration_profile"] = p.shapes

        def create_timing_cache(self, blob):
            log["timing_blobs"].append(bytes(blob))
            return TimingCache(blob)

        def set_timing_cache(self, cache, ignore_mismatch):
            self.cache = cache

        def get_timing_cache(self):
            return self.cache

    if major >= 11:
        # TensorRT 11 Python has no int8_calibrator: assigning it must fail loudly here.
        def _setattr(self, name, value):
            if name == "int8_calibrator" and value is not None:
                raise AttributeError("IBuilderConfig has no attribute int8_calibrator in TensorRT 11")
            object.__setattr__(self, name, value)

        Config.__setattr__ = _setattr

    class Profile:
        def __init__(self):
            self.shapes = {}

        def set_shape(self, name, lo, opt, hi):
            self.shapes[name] = (tuple(lo), tuple(opt), tuple(hi))

    class Builder:
        def __init__(self, logger):
            pass

        def create_network(self, flags=0):
            log["network_flags"].append(flags)
            return types.SimpleNamespace(inputs=[])

        def create_builder_config(self):
            return Config()

        def create_optimization_profile(self):
            return Profile()

        def build_serialized_network(self, network, config):
            log["builds"] += 1
            if config.__dict__.get("int8_calibrator") is not None:
                batches = _drain(config.int8_calibrator, network.inputs)
                log["calibrated_batches"] = len(batches)
                log.setdefault("calibration", []).append((network.inputs, batches))
            return b"PLAN" + hashlib.sha256(log["parsed"][-1]).digest()

    class OnnxParser:
        num_errors = 0

        def __init__(self, network, logger):
            self.network = network

        def parse(self, blob):
            log["parsed"].append(bytes(blob))
            self.network.inputs = _graph_inputs(bytes(blob))
            return True

    class Calibrator:  # stands in for IInt8EntropyCalibrator2
        def __init__(self):
            pass

    class Logger:
        WARNING = 2

        def __init__(self, level):
            pass

    mod = types.SimpleNamespace(
        __version__=version,
        Logger=Logger,
        Builder=Builder,
        OnnxParser=OnnxParser,
        BuilderFlag=Enum(**flags),
        MemoryPoolType=Enum(WORKSPACE="WORKSPACE"),
        NetworkDefinitionCreationFlag=Enum(STRONGLY_TYPED=5),
        log=log,
    )
    if major < 11:
        mod.IInt8EntropyCalibrator2 = Calibrator
    return mod


def _graph_inputs(blob: bytes) -> list[str]:
    """The network inputs TensorRT would see: the ONNX graph inputs that are not initializers."""
    try:
        import onnx

        model = onnx.load_from_string(blob)
    except Exception:  # not ONNX (tests that pass placeholder bytes)
        return []
    inits = {i.name for i in model.graph.initializer}
    return [i.name for i in model.graph.input if i.name not in inits]


def _drain(calibrator, names):
    """What TensorRT does with a calibrator: ``get_batch(input names)`` until it returns None, reading
    each batch back from the (stub) device through the pointers it got."""
    batches = []
    while True:
        ptrs = calibrator.get_batch(names)
        if ptrs is None:
            break
        batches.append({n: StubCudart.read_any(p) for n, p in zip(names, ptrs)})
    calibrator.write_calibration_cache(b"CALIBRATION")
    return batches


class StubCudart:
    """``cuda.bindings.runtime`` for the calibrator: fake device memory that records what lives."""

    class cudaMemcpyKind:  # noqa: N801 - the binding's name
        cudaMemcpyHostToDevice = 1

    instances: list[StubCudart] = []

    def __init__(self):
        self.memory: dict[int, bytes] = {}
        self.next = 0x1000 + 0x10_0000 * len(StubCudart.instances)  # disjoint fake address ranges
        self.frees = 0
        StubCudart.instances.append(self)

    @classmethod
    def read_any(cls, ptr):
        """The bytes at a fake device pointer of any stub (the fake builder does not know which one)."""
        return next(s.memory[ptr] for s in reversed(cls.instances) if ptr in s.memory)

    def cudaMalloc(self, nbytes):  # noqa: N802
        ptr, self.next = self.next, self.next + nbytes + 256
        self.memory[ptr] = bytes(nbytes)
        return 0, ptr

    def cudaMemcpy(self, dst, src, nbytes, kind):  # noqa: N802
        import ctypes

        assert dst in self.memory and len(self.memory[dst]) >= nbytes, "copy outside an allocation"
        self.memory[dst] = ctypes.string_at(src, nbytes) + self.memory[dst][nbytes:]
        return (0,)

    def cudaFree(self, ptr):  # noqa: N802
        del self.memory[ptr]
        self.frees += 1
        return (0,)




CC = (8, 7)


def _fresh(tiny_family, tmp_path):
    from tests.export.conftest import make_tiny_bundle

    bundle, _ = make_tiny_bundle(tmp_path / "bundle")
    return bundle


# ------------------------------------------------------------------------------ keys


def _key(**over):
    base = dict(
        graph="model",
        onnx_sha256="a" * 64,
        precision="fp16",
        compute_capability="8.7",
        trt_version="10.3.0",
        profile=ShapeProfile.from_dict({"x": [[1, 3], [4, 3], [8, 3]]}),
    )
    base.update(over)
    return EngineKey(**base)


@pytest.mark.parametrize(
    "change",
    [
        {"onnx_sha256": "b" * 64},
        {"precision": "fp32"},
        {"compute_capability": "9.0"},
        {"trt_version": "10.3.1"},
        {"profile": ShapeProfile.from_dict({"x": [[1, 3], [4, 3], [16, 3]]})},
        {"version_compatible": True},
    ],
)
def test_every_key_field_changes_the_digest(change):
    assert _key().digest() != _key(**change).digest()
    assert _key().filename() != _key(**change).filename()


def test_key_filename_is_readable_and_key_validates():
    name = _key().filename()
    assert name.startswith("model.fp16.sm87.trt10.3.0.") and name.endswith(".plan")
    with pytest.raises(ConfigError, match="precision"):
        _key(precision="fp8")
    with pytest.raises(ConfigError, match="min <= opt <= max"):
        ShapeProfile.from_dict({"x": [[4], [1], [8]]})


def test_profile_from_graph_uses_hints_and_defaults():
    gmeta = {
        "inputs": {"image": {"dtype": "float32", "shape": ["batch", 3, "H", "W"]}},
        "profile_hints": {"H": [8, 16, 64], "W": [8, 32, 64]},
    }
    p = profile_from_graph(gmeta)
    assert p.to_dict() == {"image": [[1, 3, 8, 8], [1, 3, 16, 32], [8, 3, 64, 64]]}
    assert p.contains("image", (2, 3, 20, 20)) and not p.contains("image", (2, 3, 100, 20))
    p2 = profile_from_graph(gmeta, hints={"batch": (1, 4, 16)})
    assert p2.to_dict()["image"][2][0] == 16
    with pytest.raises(ConfigError, match="no min/opt/max"):
        profile_from_graph({"inputs": {"x": {"dtype": "float32", "shape": ["n_windows", 8]}}})


# ----------------------------------------------------------------------------- cache


def test_cache_hit_mismatch_and_corruption(tmp_path, caplog):
    cache = EngineCache(tmp_path)
    key = _key()
    assert cache.lookup(key).path is None
    path = cache.store(key, b"PLANBYTES")
    assert cache.lookup(key).path == path
    # another TensorRT version: not this plan
    other = _key(trt_version="10.4.0")
    assert cache.lookup(other).path is None and "other plans" in cache.lookup(other).reason
    # sidecar tampered: key differs -> rejected with a message
    side = path.with_suffix(".json")
    record = json.loads(side.read_text())
    record["key"]["trt_version"] = "9.9"
    side.write_text(json.dumps(record))
    with caplog.at_level(logging.WARNING, logger="edgesentry.export.tensorrt"):
        found = cache.lookup(key)
    assert found.path is None and "trt_version" in found.reason and "rebuilt" in caplog.text
    # truncated plan -> rejected
    cache.store(key, b"PLANBYTES")
    path.write_bytes(b"PLAN")
    found = cache.lookup(key)
    assert found.path is None and "corrupt" in found.reason
    # unreadable sidecar -> rejected
    cache.store(key, b"PLANBYTES")
    side.write_text("{not json")
    assert "unreadable" in cache.lookup(key).reason


# --------------------------------------------------------------------------- building


def test_trt10_fp16_build_then_cache_then_rebuild_on_onnx_change(tiny_family, tmp_path):
    bundle = _fresh(tiny_family, tmp_path)
    trt = fake_trt("10.3.0")
    (r,) = build_bundle_engines(bundle, precision="fp16", trt=trt, capability=CC)
    assert r.built and trt.log["builds"] == 1
    assert trt.log["flags"] == ["FP16"] and trt.log["network_flags"] == [0]
    assert trt.log["profiles"][0]["image"] == ((1, 3, 8, 8), (1, 3, 16, 16), (8, 3, 64, 64))
    assert r.path.is_file() and bundle.has(str(r.path.relative_to(bundle.path)))
    timing = [f for f in bundle.files if f.startswith("engines/timing.")]
    assert timing, bundle.files
    # second build: cache hit, no builder call; the persisted timing cache is fed back
    (r2,) = build_bundle_engines(bundle, precision="fp16", trt=trt, capability=CC)
    assert not r2.built and trt.log["builds"] == 1
    assert find_engine(bundle, "model", precision="fp16", trt=trt, capability=CC) == r.path
    assert find_engine(bundle, "model", precision="fp16", trt=trt, capability=(9, 0)) is None
    # re-exported ONNX (different bytes) -> new key -> rebuilt
    onnx_path = bundle.path / "model.onnx"
    onnx_path.write_bytes(onnx_path.read_bytes() + b"\n")
    bundle.add_file("model.onnx")
    (r3,) = build_bundle_engines(bundle, precision="fp16", trt=trt, capability=CC)
    assert r3.built and trt.log["builds"] == 2
    assert trt.log["timing_blobs"][-1].startswith(b"TIMING")


def test_trt10_int8_uses_calibrator_and_keeps_cache_in_bundle(tiny_family, tmp_path):
    bundle = _fresh(tiny_family, tmp_path)
    trt = fake_trt("10.3.0")
    samples = [{"image": np.zeros((1, 3, 16, 16), np.float32)} for _ in range(3)]
    cudart = StubCudart()
    (r,) = build_bundle_engines(bundle, precision="int8", calibration=samples, trt=trt, capability=CC, cudart=cudart)
    assert set(trt.log["flags"]) == {"FP16", "INT8"} and trt.log["calibrated_batches"] == 3
    assert cudart.memory == {} and cudart.frees == 1  # the batch buffer is freed after the build
    assert "calibration_profile" in trt.log
    assert bundle.has("engines/model.int8-calibration.cache")
    with pytest.raises(ConfigError, match="calibration samples"):
        build_bundle_engines(
            _fresh(tiny_family, tmp_path / "b2"), precision="int8", trt=fake_trt("10.3.0"), capability=CC
        )


def test_trt11_fp16_converts_onnx_and_is_strongly_typed(tiny_family, tmp_path):
    onnx = pytest.importorskip("onnx")
    bundle = _fresh(tiny_family, tmp_path)
    trt = fake_trt("11.4.0")
    (r,) = build_bundle_engines(bundle, precision="fp16", trt=trt, capability=CC, version_compatible=True)
    assert r.built and trt.log["flags"] == ["VERSION_COMPATIBLE"]
    assert trt.log["network_flags"] == [1 << 5]
    parsed = onnx.load_from_string(trt.log["parsed"][-1])
    init_types = {i.data_type for i in parsed.graph.initializer}
    assert onnx.TensorProto.FLOAT16 in init_types
    io_types = {v.type.tensor_type.elem_type for v in (*parsed.graph.input, *parsed.graph.output)}
    assert io_types == {onnx.TensorProto.FLOAT}  # inputs/outputs kept fp32
    assert "-vc." in r.path.name


def test_trt11_int8_without_qdq_graphs_is_refused_with_a_reason(tiny_family, tmp_path):
    bundle = _fresh(tiny_family, tmp_path)
    with pytest.raises(ConfigError, match="explicit Q/DQ.*strongly typed.*edgesentry quantize"):
        build_bundle_engines(
            bundle,
            precision="int8",
            calibration=[{"image": np.zeros((1, 3, 8, 8), np.float32)}],
            trt=fake_trt("11.4.0"),
            capability=CC,
        )


def test_build_without_gpu_fails_cleanly(tiny_bundle, capsys):
    from edgesentry.cli import main

    try:
        from edgesentry.export.tensorrt import cuda_device_capability

        cuda_device_capability()
        pytest.skip("a CUDA device is present; this test covers machines without one")
    except BackendUnavailableError:
        pass
    code = main(["build", str(tiny_bundle.path), "--precision", "fp16"])
    err = capsys.readouterr().err
    assert code == 1
    assert "error:" in err and "GPU" in err and "TensorRT: " in err, err
