"""The benchmark entry points run: gpu_check as a CPU smoke test, latency.py --quick for RX."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def _run(args: list[str], tmp_path: Path, timeout: int) -> subprocess.CompletedProcess:
    env = {**os.environ, "TRITON_INTERPRET": "1"}
    return subprocess.run([sys.executable, *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout)


@pytest.mark.slow
def test_gpu_check_smoke_compiles_and_checks_every_kernel(tmp_path):
    """Without a GPU: every Triton kernel on the interpreter at tiny sizes, every CUDA kernel compiled."""
    out = tmp_path / "gpu.json"
    proc = _run(["benchmarks/gpu_check.py", "--smoke", "--json", str(out)], tmp_path, timeout=600)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]
    data = json.loads(out.read_text())
    results = data["results"]
    assert data["complete"] and data["header"]["nvrtc"] and data["preflight"]
    tiers = {(r["kernel"], r["tier"]) for r in results}
    assert ("global_rx", "triton") in tiers and ("global_rx", "cuda") in tiers
    for r in results:
        if r["tier"] == "cuda":
            assert r["status"].startswith("COMPILED") and "sm_87" in r["status"] and "sm_90" in r["status"], r
        else:
            assert r["status"] == "PASS", r
    assert "| family | kernel | tier | mode | size | status |" in proc.stdout


@pytest.mark.slow
def test_latency_quick_rx_writes_rows(tmp_path):
    out = tmp_path / "latency.json"
    proc = _run(["benchmarks/latency.py", "--quick", "--only", "rx", "--rss", "--json", str(out)], tmp_path,
                timeout=600)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]
    rows = json.loads(out.read_text())["rows"]
    impls = {(r["case"], r["impl"]) for r in rows}
    assert {("global", "cpu"), ("global", "reference"), ("local", "cpu"), ("local", "reference")} <= impls
    for r in rows:
        if "rel_err_vs_ref" in r["extra"] and r["impl"] == "cpu":
            assert r["extra"]["rel_err_vs_ref"] < 1e-6
    assert "| rx | global | cpu |" in proc.stdout
    fresh = [r for r in rows if r["case"].endswith("(fresh process)")]  # --rss: one child per row
    assert {r["impl"] for r in fresh} >= {"detector.predict"}
    assert {r["case"] for r in fresh} == {"global (fresh process)", "local (fresh process)"}
    for r in fresh:  # the child holds at least its cube
        assert r["peak_rss_mb"] > 4 and r["extra"]["x_cube"] > 1
