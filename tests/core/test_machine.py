"""Measurements cached per CPU model (``edgesentry._machine``): corrupt files, concurrent
writers, the memo, the off switch. Measurements are injected functions that count their calls;
nothing here depends on how fast this machine is."""

from __future__ import annotations

import json
import multiprocessing
import os

import pytest

from edgesentry import _machine


@pytest.fixture(autouse=True)
def _isolated_cache(tmp_path, monkeypatch):
    monkeypatch.setenv(_machine.ENV_CACHE, str(tmp_path / "cache"))
    monkeypatch.delenv(_machine.ENV_MEASURE, raising=False)
    _machine.forget()
    yield
    _machine.forget()


class Counter:
    def __init__(self, values):
        self.values, self.calls = values, 0

    def __call__(self):
        self.calls += 1
        return dict(self.values)


def _file(name="t.costs", version=1):
    return _machine._path(name, version)


def test_cpu_info_and_key_describe_this_machine():
    info = _machine.cpu_info()
    assert info["model"] and info["cores"] >= 1
    assert set(info["flags"]) <= set(_machine.ISA_FLAGS)
    key = _machine.cpu_key()
    assert key == _machine.cpu_key() and "/" not in key and " " not in key


def test_measures_once_then_reads_the_cache_in_a_new_process_memo():
    fn = Counter({"a": 1.5, "b": 2})
    assert _machine.measured("t.costs", 1, fn) == {"a": 1.5, "b": 2.0}
    assert _machine.measured("t.costs", 1, fn) == {"a": 1.5, "b": 2.0}
    assert fn.calls == 1
    _machine.forget()  # as a new process would: the file answers
    assert _machine.measured("t.costs", 1, Counter({"a": 9})) == {"a": 1.5, "b": 2.0}
    doc = json.loads(_file().read_text())
    assert doc["cpu"] == _machine.cpu_key() and doc["schema"] == _machine.SCHEMA


@pytest.mark.parametrize("content", [
    b"",  # empty (a writer killed before our atomic rename existed, or a truncated disk)
    b"{not json",
    b"\xff\xfe\x00garbage",
    b'{"schema": "edgesentry-machine/1", "name": "t.costs", "version": 1, "values": {"a": 1}}',  # no cpu key
    b"[1, 2, 3]",
])
def test_corrupt_or_foreign_file_is_measured_again_and_replaced(content):
    path = _file()
    path.parent.mkdir(parents=True)
    path.write_bytes(content)
    fn = Counter({"a": 3.0})
    assert _machine.measured("t.costs", 1, fn) == {"a": 3.0}
    assert fn.calls == 1
    assert _machine.read_cached("t.costs", 1) == {"a": 3.0}


@pytest.mark.parametrize("values", [{"a": float("nan")}, {"a": "3"}, {"a": True}, {}, {"a": float("inf")}])
def test_non_numeric_cached_values_are_not_trusted(values):
    _machine.write_cached("t.costs", 1, {"a": 1.0})
    doc = json.loads(_file().read_text())
    doc["values"] = values
    _file().write_text(json.dumps(doc))
    assert _machine.read_cached("t.costs", 1) is None


def test_other_version_and_other_cpu_are_separate_entries(monkeypatch):
    _machine.measured("t.costs", 1, Counter({"a": 1.0}))
    fn = Counter({"a": 2.0})
    assert _machine.measured("t.costs", 2, fn) == {"a": 2.0} and fn.calls == 1
    monkeypatch.setattr(_machine, "cpu_key", lambda: "Other-CPU-0000000000")
    _machine.forget()
    fn = Counter({"a": 3.0})
    assert _machine.measured("t.costs", 1, fn) == {"a": 3.0} and fn.calls == 1


def test_values_keep_refuses_serve_this_process_only_and_are_measured_again():
    def keep(values):
        return values["speedup"] >= 1.2

    busy = Counter({"speedup": 1.0})  # what a machine busy during the measurement shows
    assert _machine.measured("t.costs", 1, busy, keep=keep) == {"speedup": 1.0}
    assert _machine.measured("t.costs", 1, busy, keep=keep) == {"speedup": 1.0} and busy.calls == 1
    assert not _file().exists()  # not written: the next process measures again
    _machine.forget()
    quiet = Counter({"speedup": 1.8})
    assert _machine.measured("t.costs", 1, quiet, keep=keep) == {"speedup": 1.8} and quiet.calls == 1
    assert _machine.read_cached("t.costs", 1) == {"speedup": 1.8}


def test_a_cached_entry_keep_refuses_is_measured_again():
    _machine.write_cached("t.costs", 1, {"speedup": 0.99})  # cached by an older version
    fn = Counter({"speedup": 1.7})
    assert _machine.measured("t.costs", 1, fn, keep=lambda v: v["speedup"] >= 1.2) == {"speedup": 1.7}
    assert fn.calls == 1 and _machine.read_cached("t.costs", 1) == {"speedup": 1.7}


def test_bad_measurements_raise_and_are_not_cached():
    with pytest.raises(ValueError, match="non-finite"):
        _machine.measured("t.costs", 1, Counter({"a": float("nan")}))
    assert not _file().exists()


def test_measuring_off_returns_the_default_without_measuring(monkeypatch):
    monkeypatch.setenv(_machine.ENV_MEASURE, "off")
    fn = Counter({"a": 1.0})
    assert _machine.measured("t.costs", 1, fn, default={"a": 7.0}) == {"a": 7.0}
    assert fn.calls == 0 and not _file().exists()


def test_unwritable_cache_still_returns_the_measurement(tmp_path, monkeypatch):
    blocker = tmp_path / "file-not-dir"
    blocker.write_text("x")
    monkeypatch.setenv(_machine.ENV_CACHE, str(blocker))
    assert _machine.measured("t.costs", 1, Counter({"a": 1.0})) == {"a": 1.0}


def test_names_cannot_leave_the_cache_folder():
    with pytest.raises(ValueError):
        _machine.measured("../escape", 1, Counter({"a": 1.0}))


def _writer(cache: str, value: float, rounds: int) -> None:
    os.environ[_machine.ENV_CACHE] = cache
    for _ in range(rounds):
        _machine.write_cached("t.costs", 1, {"a": value, "b": value})


def test_concurrent_writers_never_leave_a_partial_file(tmp_path):
    """Four processes rewrite the same entry while this one reads it: every read is a complete
    file from one writer (both values equal), never a mix or a truncated document."""
    cache = os.environ[_machine.ENV_CACHE]
    _machine.write_cached("t.costs", 1, {"a": 0.0, "b": 0.0})
    ctx = multiprocessing.get_context("spawn")
    procs = [ctx.Process(target=_writer, args=(cache, float(i + 1), 200)) for i in range(4)]
    for p in procs:
        p.start()
    seen = set()
    while any(p.is_alive() for p in procs):
        values = _machine.read_cached("t.costs", 1)
        assert values is not None and values["a"] == values["b"]
        seen.add(values["a"])
    for p in procs:
        p.join()
        assert p.exitcode == 0
    final = _machine.read_cached("t.costs", 1)
    assert final is not None and final["a"] in {1.0, 2.0, 3.0, 4.0}
    assert not [f for f in _file().parent.iterdir() if f.name.endswith(".tmp")]  # no temporary file left
