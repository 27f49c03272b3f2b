"""``backend="auto"``: the measured choice between ONNX Runtime and torch per shape bucket.

Timings are injected (a fake timer returns the seconds each backend "took"), so every
assertion is about the choice logic; none depends on this machine's speed.
"""

from __future__ import annotations

import numpy as np
import pytest

from edgesentry import _machine
from edgesentry.backends import InputSpec, MeasuredRunner, Runner, resolve_backend
from edgesentry.backends.measured import Choice


class Echo(Runner):
    """A graph stand-in: returns its input scaled by a per-backend factor, counts calls."""

    def __init__(self, name: str, factor: float):
        super().__init__({"x": InputSpec("float32", (None, 4))}, ["y"])
        self.name, self.factor, self.calls, self.activations = name, factor, 0, 0

    def activate_impl(self) -> None:
        self.activations += 1

    def infer_impl(self, feed):
        self.calls += 1
        return {"y": feed["x"] * self.factor}


def fake_timer(per_batch: dict[str, dict[int, float]]):
    """Seconds per call by backend and batch size; the first call of each backend is 'slow'
    (session creation) and must not count."""
    seen: set[str] = set()

    def timer(name, call):
        out = call()
        batch = len(next(iter(out.values())))
        first = name not in seen
        seen.add(name)
        return (100.0 if first else per_batch[name][batch]), out

    return timer


@pytest.fixture(autouse=True)
def _cache(tmp_path, monkeypatch):
    monkeypatch.setenv(_machine.ENV_CACHE, str(tmp_path))
    _machine.forget()
    yield
    _machine.forget()


def _runner(timer, graph_id=None):
    candidates = {"onnxruntime": Echo("onnxruntime", 1.0), "torch": Echo("torch", 2.0)}
    return MeasuredRunner(candidates, graph_id=graph_id, timer=timer), candidates


def _x(batch):
    return np.ones((batch, 4), np.float32)


def test_picks_the_faster_per_shape_bucket_and_says_why():
    timer = fake_timer({"onnxruntime": {1: 0.010, 8: 0.200}, "torch": {1: 0.050, 8: 0.064}})
    runner, cand = _runner(timer)
    assert np.all(runner.infer({"x": _x(1)})["y"] == 1.0)  # onnxruntime's output
    assert np.all(runner.infer({"x": _x(8)})["y"] == 2.0)  # torch's output
    choices = runner.describe()["choices"]
    assert choices["x-1x4"]["backend"] == "onnxruntime"
    assert choices["x-8x4"]["backend"] == "torch"
    assert "torch 64 ms" in choices["x-8x4"]["why"] and "onnxruntime 200 ms" in choices["x-8x4"]["why"]
    calls = (cand["onnxruntime"].calls, cand["torch"].calls)
    runner.infer({"x": _x(6)})  # 6 -> bucket 8: decided, no measuring
    assert (cand["onnxruntime"].calls, cand["torch"].calls) == (calls[0], calls[1] + 1)


def test_warm_up_call_never_decides():
    """The first call of each backend (100 s in the fake) is not in the medians."""
    timer = fake_timer({"onnxruntime": {2: 0.02}, "torch": {2: 0.03}})
    runner, _ = _runner(timer)
    runner.infer({"x": _x(2)})
    assert runner.choices["x-2x4"].backend == "onnxruntime"
    assert runner.choices["x-2x4"].seconds == {"onnxruntime": 0.02, "torch": 0.03}


def test_median_resists_one_outlier():
    samples = {"onnxruntime": iter([9.0, 0.010, 5.0, 0.011]), "torch": iter([9.0, 0.020, 0.020, 0.021])}

    def timer(name, call):
        return next(samples[name]), call()

    runner, _ = _runner(timer)
    runner.infer({"x": _x(1)})
    assert runner.choices["x-1x4"].backend == "onnxruntime"


def test_choice_is_remembered_per_cpu_model_across_runners(monkeypatch):
    timer = fake_timer({"onnxruntime": {4: 0.2}, "torch": {4: 0.1}})
    runner, _ = _runner(timer, graph_id="abc123")
    runner.infer({"x": _x(4)})
    _machine.forget()

    def never(name, call):
        raise AssertionError("a remembered choice must not be measured again")

    again, cand = _runner(never, graph_id="abc123")
    assert np.all(again.infer({"x": _x(3)})["y"] == 2.0)  # bucket 4 -> torch, from the cache
    assert again.choices["x-4x4"].cached and "measured earlier" in again.choices["x-4x4"].reason()
    assert cand["onnxruntime"].activations == 0  # the slower backend's session is never opened
    monkeypatch.setattr(_machine, "cpu_key", lambda: "Another-CPU-0123456789")
    other, _ = _runner(fake_timer({"onnxruntime": {4: 0.1}, "torch": {4: 0.2}}), graph_id="abc123")
    other.infer({"x": _x(4)})
    assert other.choices["x-4x4"].backend == "onnxruntime" and not other.choices["x-4x4"].cached


def test_slow_graphs_are_timed_once_each():
    calls = {"onnxruntime": 0, "torch": 0}

    def timer(name, call):
        calls[name] += 1
        return 2.0, call()  # above the 0.5 s budget

    runner, _ = _runner(timer)
    runner.infer({"x": _x(1)})
    assert calls == {"onnxruntime": 2, "torch": 2}  # warm-up + one timed call


def test_choice_reason_lists_fastest_first():
    assert Choice("torch", {"onnxruntime": 0.204, "torch": 0.064}).reason().startswith(
        "torch is the faster here (torch 64 ms, onnxruntime 204 ms")


def test_resolve_backend_measured_only_when_both_can_run():
    assert resolve_backend("auto", has_onnx=True, has_weights=True, measured=True) == "auto"
    assert resolve_backend("auto", has_onnx=True, has_weights=False, measured=True) == "onnxruntime"
    assert resolve_backend("auto", has_onnx=False, has_weights=True, measured=True) == "torch"
    assert resolve_backend("auto", has_onnx=True, has_weights=True) == "onnxruntime"
    assert resolve_backend("torch", has_onnx=True, has_weights=True, measured=True) == "torch"


def test_needs_two_candidates():
    with pytest.raises(ValueError):
        MeasuredRunner({"torch": Echo("torch", 1.0)})



def test_onnxruntime_session_leaves_the_callers_float_state_alone(tmp_path):
    """ONNX Runtime's ``session.set_denormal_as_zero`` sets flush-to-zero on the thread that
    creates the process's first session, i.e. the caller's, for the rest of the process (every
    later numpy and torch result on it flushes subnormals; a whole test session then failed
    with torch.load and hypothesis errors): the runners' default options must not ask for it.
    Checked in fresh processes, whose float state each owns; the opt-in one shows that the
    check can fail."""
    import subprocess
    import sys
    import textwrap

    pytest.importorskip("onnxruntime")
    onnx = pytest.importorskip("onnx")
    from onnx import TensorProto, helper

    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [None, 4])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [None, 4])
    graph = helper.make_graph([helper.make_node("Relu", ["x"], ["y"])], "g", [x], [y])
    path = tmp_path / "relu.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), path)

    def run(options: str) -> str:
        script = textwrap.dedent(f"""
            import numpy as np
            from edgesentry.backends import InputSpec, OrtOptions, OrtRunner

            def survive():
                return bool(np.array([1e-40], np.float32)[0] * np.float32(1.0) > 0
                            and np.array([5e-324])[0] * 1.0 > 0)

            assert survive()
            for options in {options}:
                with OrtRunner({str(path)!r}, {{"x": InputSpec("float32", (None, 4))}}, ["y"], options=options) as r:
                    r.infer({{"x": np.ones((2, 4), np.float32)}})
            print("subnormals survive:", survive())
        """)
        proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
        assert proc.returncode == 0, proc.stderr[-3000:]
        return proc.stdout

    assert "subnormals survive: True" in run("(None, OrtOptions(), OrtOptions(spinning=False))")
    assert "subnormals survive: False" in run("(OrtOptions(denormal_as_zero=True),)")
