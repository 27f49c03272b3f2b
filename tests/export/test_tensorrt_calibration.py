"""INT8 calibration per graph (TensorRT 10): a bundle with two graphs of different inputs (as FERS
and MDMF have), built through a fake TensorRT whose builder calls ``get_batch`` with each network's
input names and reads the batches back from a stub device (``StubCudart``), as TensorRT does."""

from __future__ import annotations

import types

import numpy as np
import pytest

from edgesentry.errors import ConfigError
from edgesentry.export.tensorrt import build_bundle_engines
from tests.export.test_tensorrt_cache import CC, StubCudart, fake_trt

FAMILY = "tinytwo"


def _graph_specs(bundle):
    import torch
    from torch import nn

    from edgesentry.export.graph import GraphSpec

    class Image(nn.Module):
        def forward(self, image):
            return (image * image).mean(1)

    class Tokens(nn.Module):
        def forward(self, tokens):
            return tokens.sum(-1, keepdim=True) * torch.ones(1, 4)

    rng = np.random.default_rng(0)
    return [
        GraphSpec("vision", Image, {"image": rng.standard_normal((2, 3, 8, 8)).astype(np.float32)}, ["amap"],
                  dynamic_axes={"image": {0: "batch"}, "amap": {0: "batch"}}),
        GraphSpec("text", Tokens, {"tokens": rng.standard_normal((2, 6)).astype(np.float32)}, ["embedding"],
                  dynamic_axes={"tokens": {0: "batch"}, "embedding": {0: "batch"}}),
    ]


@pytest.fixture
def two_graph_bundle(tmp_path):
    pytest.importorskip("torch")
    from edgesentry.bundle import write_bundle
    from edgesentry.export.onnx import EXPORTERS, export_bundle

    module = types.ModuleType(f"edgesentry.export.{FAMILY}")
    module.graph_specs = _graph_specs
    EXPORTERS[FAMILY] = module
    try:
        bundle = write_bundle(tmp_path / "bundle", FAMILY, config={}, tensors={"unused": np.zeros(1, np.float32)},
                              overwrite=True)
        export_bundle(bundle, simplify=False)
        yield bundle
    finally:
        EXPORTERS.pop(FAMILY, None)


def _samples(rng, n=3):
    # the calibration profile's opt shapes: batch opt is 1 (DEFAULT_AXIS_RANGE)
    return [{"image": rng.standard_normal((1, 3, 8, 8)).astype(np.float32),
             "tokens": rng.standard_normal((1, 6)).astype(np.float32)} for _ in range(n)]


def _check_batches(trt, samples):
    seen = {tuple(names): batches for names, batches in trt.log["calibration"]}
    assert set(seen) == {("image",), ("tokens",)}  # each network asked for its own inputs only
    for (name,), batches in seen.items():
        assert len(batches) == len(samples)
        for got, feed in zip(batches, samples):
            assert np.array_equal(np.frombuffer(got[name], np.float32).reshape(feed[name].shape), feed[name])


@pytest.mark.parametrize("form", ["feeds", "per_graph"])
def test_each_graph_is_calibrated_with_its_own_inputs(two_graph_bundle, rng, tmp_path, form):
    samples = _samples(rng)
    if form == "feeds":
        calibration = samples
    else:  # what `edgesentry build --calib A.npz B.npz ...` passes (test_cli_hands_each_graph_its_own_samples)
        calibration = {"vision": [{"image": s["image"]} for s in samples],
                       "text": [{"tokens": s["tokens"]} for s in samples]}
    trt, cudart = fake_trt("10.3.0"), StubCudart()
    results = build_bundle_engines(two_graph_bundle, precision="int8", calibration=calibration, trt=trt,
                                   capability=CC, cudart=cudart)
    assert sorted(r.graph for r in results) == ["text", "vision"] and all(r.built for r in results)
    _check_batches(trt, samples)
    assert cudart.memory == {} and cudart.frees == 2  # one buffer per graph input, all freed
    assert two_graph_bundle.has("engines/vision.int8-calibration.cache")
    assert two_graph_bundle.has("engines/text.int8-calibration.cache")


def test_samples_must_have_the_calibration_profiles_opt_shape(two_graph_bundle, rng):
    samples = _samples(rng)
    samples[1]["tokens"] = rng.standard_normal((2, 6)).astype(np.float32)  # batch 2; opt batch is 1
    with pytest.raises(ConfigError, match=r"graph 'text': input 'tokens' has shape \(2, 6\).*opt shape \(1, 6\)"):
        build_bundle_engines(two_graph_bundle, precision="int8", calibration=samples, trt=fake_trt("10.3.0"),
                             capability=CC, cudart=StubCudart())
    # moving opt with a hint makes the same samples fit
    trt, cudart = fake_trt("10.3.0"), StubCudart()
    batch2 = [{k: np.repeat(v, 2, axis=0) for k, v in s.items()} for s in _samples(rng)]
    build_bundle_engines(two_graph_bundle, precision="int8", calibration=batch2, trt=trt, capability=CC,
                         cudart=cudart, hints={"batch": (1, 2, 8)})
    _check_batches(trt, batch2)


def test_samples_without_a_graphs_inputs_are_refused(two_graph_bundle, rng):
    only_images = [{"image": s["image"]} for s in _samples(rng)]
    with pytest.raises(ConfigError, match=r"hold \['image'\]; graph 'text' takes \['tokens'\]"):
        build_bundle_engines(two_graph_bundle, precision="int8", calibration=only_images, trt=fake_trt("10.3.0"),
                             capability=CC, cudart=StubCudart())
    with pytest.raises(ConfigError, match="no calibration samples for graph"):
        build_bundle_engines(two_graph_bundle, precision="int8", calibration={"vision": only_images},
                             trt=fake_trt("10.3.0"), capability=CC, cudart=StubCudart())


def test_buffers_are_freed_when_the_build_fails(two_graph_bundle, rng):
    trt, cudart = fake_trt("10.3.0"), StubCudart()
    real_builder = trt.Builder

    class FailingBuilder(real_builder):
        def build_serialized_network(self, network, config):
            config.int8_calibrator.get_batch(network.inputs)  # device buffers allocated, then the build dies
            raise RuntimeError("builder crashed")

    trt.Builder = FailingBuilder
    with pytest.raises(RuntimeError, match="builder crashed"):
        build_bundle_engines(two_graph_bundle, precision="int8", calibration=_samples(rng), trt=trt, capability=CC,
                             cudart=cudart)
    assert cudart.memory == {} and cudart.frees == 1


def test_cli_hands_each_graph_its_own_samples(two_graph_bundle, rng, tmp_path, monkeypatch):
    """``edgesentry build --precision int8 --calib ...`` with the GPU, TensorRT and CUDA runtime stubbed."""
    from cuda.bindings import runtime

    from edgesentry.cli import main
    from edgesentry.export import tensorrt

    trt, cudart = fake_trt("10.3.0"), StubCudart()
    monkeypatch.setattr(tensorrt, "import_tensorrt", lambda **kw: trt)
    monkeypatch.setattr(tensorrt, "cuda_device_capability", lambda device=0: CC)
    for name in ("cudaMalloc", "cudaMemcpy", "cudaFree"):
        monkeypatch.setattr(runtime, name, getattr(cudart, name))
    samples = _samples(rng, 2)
    paths = []
    for i, s in enumerate(samples):
        np.savez(tmp_path / f"s{i}.npz", **s)
        paths.append(str(tmp_path / f"s{i}.npz"))
    assert main(["build", str(two_graph_bundle.path), "--precision", "int8", "--calib", *paths]) == 0
    _check_batches(trt, samples)
    assert cudart.memory == {}
