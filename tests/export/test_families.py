"""Every family bundle available: export parity, TensorRT lint, validate, torch-free runtime.

The bundles come from ../shared/reference through each family's public ``convert`` and are
exported once per session (``family_bundles``).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from tests.export.families import CASES

ROOT = Path(__file__).resolve().parents[2]


def test_export_parity_and_lint_every_graph(family_bundles):
    from edgesentry.export.lint import lint_model

    for name, (bundle, reports) in family_bundles.items():
        for graph, report in reports.items():
            assert report, f"{name}/{graph}:\n{report.table()}"
            lint = lint_model(bundle.path / bundle.meta["graphs"][graph]["file"], name=f"{name}/{graph}")
            assert lint.passed, lint.table()


def test_validate_every_family(family_bundles, tmp_path, capsys):
    from edgesentry.cli import main

    for name, (bundle, _) in family_bundles.items():
        out = tmp_path / f"{name}.json"
        code = main(
            ["validate", str(bundle.path), "--backends", "torch,onnxruntime", "--n-synthetic", "1", "--json", str(out)]
        )
        text = capsys.readouterr().out
        assert code == 0, text
        report = json.loads(out.read_text())
        assert report["passed"] and report["family"] == name
        assert len(report["results"]) == len(bundle.meta["graphs"])


CHILD = textwrap.dedent(
    """
    import platform
    import sys
    sys.modules["torch"] = None  # any `import torch` now raises ImportError
    try:
        import torch  # noqa: F401
    except ImportError:
        pass
    else:
        raise SystemExit("torch was importable in the torch-free child")
    import json
    import numpy as np
    import edgesentry
    jobs = json.loads(sys.argv[1])
    out = {}
    for name, job in jobs.items():
        try:
            det = edgesentry.load(job["bundle"], backend=job["backend"])
        except ImportError as exc:
            out[name] = {"import_error": str(exc)}
            continue
        with np.load(job["inputs"], allow_pickle=False) as z:
            x = {k: z[k] for k in z.files}
        res = eval(job["call"], {"det": det, "x": x})
        out[name] = {"score": res.score, "raw_score": res.raw_score,
                     "logits": None if "logits" not in res.extras else np.asarray(res.extras["logits"]).tolist(),
                     "map_max": None if res.anomaly_map is None else float(res.anomaly_map.max())}
    assert not any(m == "torch" or m.startswith("torch.") for m in sys.modules if sys.modules[m] is not None)
    out["machine"] = platform.machine()
    print("RESULT " + json.dumps(out))
    """
)


# Families whose ONNX Runtime path still imports torch (reported to their owners). The test
# fails if one of them starts working, so this list cannot go stale.
KNOWN_TORCH_BOUND: dict[str, str] = {}


def _aarch64_python() -> list[str]:
    """The aarch64 interpreter (Debian's arm64 Python under qemu-aarch64, with the cross-built
    wheel, numpy and onnxruntime on its path) that scripts/test_aarch64.sh sets up and names."""
    path = os.environ.get("EDGESENTRY_AARCH64_PYTHON")
    if not path:
        pytest.skip("no aarch64 interpreter: scripts/test_aarch64.sh runs this under qemu-aarch64")
    return [path]


@pytest.mark.parametrize("interpreter,backend", [("native", "onnxruntime"), ("aarch64", "onnxruntime"),
                                                 ("native", "openvino")])
def test_torch_free_runtime_runs_every_family(family_bundles, tmp_path, interpreter, backend):
    """Bundles exported here (torch, x86-64 on CI) run without torch, through onnxruntime, in
    a child interpreter: this one, or an aarch64 one (the Jetson CPU path) under emulation.
    The same tolerances either way: ONNX Runtime's float32 kernels against torch's."""
    import edgesentry

    if backend == "openvino":
        pytest.importorskip("openvino")
    python = [sys.executable] if interpreter == "native" else _aarch64_python()
    jobs, expected = {}, {}
    for name, (bundle, _) in family_bundles.items():
        case = CASES[name]
        x = case.sample(np.random.default_rng(7), bundle)
        np.savez(tmp_path / f"{name}.npz", **x)
        jobs[name] = {"bundle": str(bundle.path), "inputs": str(tmp_path / f"{name}.npz"), "call": case.call,
                      "backend": backend}
        det = edgesentry.load(bundle, backend="torch")
        expected[name] = eval(case.call, {"det": det, "x": x})
    proc = subprocess.run(
        [*python, "-c", CHILD, json.dumps(jobs)], capture_output=True, text=True, timeout=1200, cwd=ROOT
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    line = next(ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT "))
    got = json.loads(line[len("RESULT ") :])
    machine = got.pop("machine")
    if interpreter == "aarch64":
        assert machine == "aarch64", machine
    assert set(got) == set(family_bundles)
    for name in list(expected):
        if name in KNOWN_TORCH_BOUND:
            assert "import_error" in got[name] and "torch" in got[name]["import_error"], (
                f"{name} now runs without torch: remove it from KNOWN_TORCH_BOUND"
            )
            expected.pop(name)
        else:
            assert "import_error" not in got[name], f"{name} needs torch on the ONNX Runtime path: {got[name]}"
    assert expected, "no family ran torch-free"
    for name, res in expected.items():
        assert got[name]["raw_score"] == pytest.approx(res.raw_score, rel=1e-4, abs=1e-5), name
        if res.anomaly_map is not None:
            assert got[name]["map_max"] == pytest.approx(float(res.anomaly_map.max()), rel=1e-4, abs=1e-5), name
        if got[name]["logits"] is not None:
            np.testing.assert_allclose(got[name]["logits"], res.extras["logits"], rtol=1e-4, atol=1e-4)


def test_info_runs_without_torch():
    code = (
        "import sys; sys.modules['torch'] = None\nfrom edgesentry.cli import main\nsys.exit(main(['info', '--json']))"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr[-2000:]
    facts = json.loads(proc.stdout)
    assert facts["backends"]["torch"] is not None  # reported missing, not crashed
    assert facts["backends"]["onnxruntime"] is None and "CPUExecutionProvider" in facts["onnxruntime"]["providers"]
    assert set(facts["families"]) >= {"rx", "fers", "isstad", "mavd", "mdmf"}
    assert facts["families"]["fers"]["missing"] == {"convert": ["torch"]}
    assert set(facts["kernel_tiers"]) == {"reference", "cpu", "triton", "cuda"}
    assert facts["torch_imported"] is False


@pytest.mark.parametrize("version", ["10.3.0", "11.4.0"])
def test_engine_build_plan_for_every_family_with_fake_tensorrt(family_bundles, version, tmp_path):
    """What `edgesentry build --precision fp16` does for each family on TensorRT 10 and 11:
    profiles resolve from the graphs' dynamic axes, and on 11 the FP16-converted ONNX still
    runs in ONNX Runtime with inputs/outputs in FP32."""
    import shutil

    import onnx
    import onnxruntime as ort

    from edgesentry.bundle import Bundle
    from edgesentry.export.tensorrt import build_bundle_engines
    from tests.export.test_tensorrt_cache import fake_trt

    for name, (bundle, _) in family_bundles.items():
        copy = Bundle.open(shutil.copytree(bundle.path, tmp_path / name))
        trt = fake_trt(version)
        results = build_bundle_engines(copy, precision="fp16", trt=trt, capability=(8, 7))
        assert [r.graph for r in results] == list(copy.meta["graphs"]) and all(r.built for r in results)
        for r, profile in zip(results, trt.log["profiles"]):
            assert set(profile) == set(copy.meta["graphs"][r.graph]["inputs"])
        if version.startswith("11"):
            for parsed in trt.log["parsed"]:
                model = onnx.load_from_string(parsed)
                assert onnx.TensorProto.FLOAT16 in {i.data_type for i in model.graph.initializer}
                # Session creation type-checks the whole graph (running a ViT in FP16 on the CPU
                # EP is emulated and far too slow for a test; the tiny graph's FP16 run is in
                # test_validate).
                sess = ort.InferenceSession(parsed, providers=["CPUExecutionProvider"])
                assert {i.type for i in sess.get_inputs()} | {o.type for o in sess.get_outputs()} == {"tensor(float)"}
