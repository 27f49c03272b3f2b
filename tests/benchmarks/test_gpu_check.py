"""``benchmarks/gpu_check.py`` survives its first real run: fake case families that fail in every
way a first GPU run can (long errors, a sticky CUDA fault, a dying process, a hang, a budget too
small) still give a complete table and a JSON with the full error text."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

COMMON = '''
import os
import numpy as np
from gpu_check import GpuCase


def case(kernel, run, estimate_s=1.0):
    return GpuCase(kernel=kernel, tier="triton", size="4", mode="d2d", run=run,
                   reference=lambda: np.arange(4.0), estimate_s=estimate_s)


def good():
    return np.arange(4.0)
'''

FAMILIES = {
    "a_good": "def gpu_cases(ctx):\n    return [case('ok', good)]\n",
    "b_sticky": (
        "def fault():\n"
        "    raise RuntimeError('CUDA error: an illegal memory access was encountered; ' + 'details ' * 80 + 'END')\n"
        "def gpu_cases(ctx):\n"
        "    return [case('first', good), case('faults', fault), case('after_fault', good)]\n"),
    "c_crash": (
        "def die():\n"
        "    os._exit(9)\n"
        "def gpu_cases(ctx):\n"
        "    return [case('before', good), case('dies', die), case('never', good)]\n"),
    "d_budget": "def gpu_cases(ctx):\n    return [case('too_big', good, estimate_s=10_000)]\n",
    "e_wrong": "def gpu_cases(ctx):\n    return [case('wrong', lambda: np.zeros(4))]\n",
}


def _run(tmp_path: Path, families: dict[str, str], *args: str, timeout: int = 300,
         overhead_s: float = 20.0) -> tuple[subprocess.CompletedProcess, dict]:
    folder = tmp_path / "cases"
    folder.mkdir(exist_ok=True)
    for name, body in families.items():
        (folder / f"{name}.py").write_text(COMMON + body)
    out = tmp_path / "gpu.json"
    env = {**os.environ, "TRITON_INTERPRET": "1", "EDGESENTRY_GPU_CHECK_CASES": str(folder),
           "EDGESENTRY_GPU_CHECK_OVERHEAD_S": str(overhead_s)}
    proc = subprocess.run([sys.executable, "benchmarks/gpu_check.py", "--json", str(out), *args], cwd=ROOT,
                          env=env, capture_output=True, text=True, timeout=timeout)
    return proc, json.loads(out.read_text())


@pytest.mark.slow
def test_every_failure_mode_still_gives_a_complete_table(tmp_path):
    proc, data = _run(tmp_path, FAMILIES, "--budget-s", "300")
    rows = {r["kernel"]: r for r in data["results"]}
    assert data["complete"] and len(rows) == 9, proc.stdout[-3000:]
    assert rows["ok"]["status"] == "PASS" and rows["first"]["status"] == "PASS"
    # the full error text, not 120 characters of it, with its traceback
    fault = rows["faults"]
    assert fault["status"].startswith("ERROR RuntimeError: CUDA error: an illegal memory access")
    assert fault["error"].rstrip().endswith("END") and "Traceback" in fault["error"]
    # a sticky fault restarts the family in a fresh process after the failing case
    assert rows["after_fault"]["status"] == "PASS"
    assert "sticky CUDA fault; restarting" in proc.stdout
    # a process that dies takes only its own family's remaining cases with it
    assert rows["before"]["status"] == "PASS"
    assert rows["dies"]["status"].startswith("ERROR child exited rc=9")
    assert rows["never"]["status"].startswith("ERROR child exited rc=9")
    assert rows["too_big"]["status"].startswith("SKIP budget")
    assert rows["wrong"]["status"] == "FAIL" and rows["wrong"]["max_abs"] == 3.0
    assert proc.returncode == 1  # errors and failures make the run fail
    assert "| family | kernel | tier | mode | size | status |" in proc.stdout
    assert "--- b_sticky|faults|triton|d2d|4" in proc.stdout  # full errors printed after the table


@pytest.mark.slow
def test_a_hanging_case_is_killed_at_the_deadline(tmp_path):
    # The budget clock includes the start-up probe (seconds on a loaded 2-core machine), so the
    # budget leaves ~20 s for it; the hang's family deadline is ~19 s after its start (overhead 1 +
    # 3 x its estimates) or the budget's end, and 'ok' (estimate 25 s) never fits after that.
    hang = ("import time\ndef gpu_cases(ctx):\n"
            "    return [case('hangs', lambda: time.sleep(600), estimate_s=5.0), case('later', good)]\n")
    late = "def gpu_cases(ctx):\n    return [case('ok', good, estimate_s=25.0)]\n"
    proc, data = _run(tmp_path, {"a_hang": hang, "b_good": late}, "--budget-s", "30", timeout=180,
                      overhead_s=1.0)
    rows = {r["kernel"]: r for r in data["results"]}
    assert rows["hangs"]["status"].startswith("TIMEOUT") and rows["later"]["status"].startswith("TIMEOUT")
    assert rows["ok"]["status"].startswith("SKIP budget")  # the budget is spent: skipped, still listed


def test_dry_run_prints_header_preflight_and_plan(tmp_path):
    proc, data = _run(tmp_path, FAMILIES, "--dry-run", "--budget-s", "100", timeout=120)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    out = proc.stdout
    assert "device:" in out and "NVRTC" in out and "torch" in out and "onnxruntime" in out
    assert "pre-flight:" in out and "C compiler (Triton launchers)" in out and "NVIDIA driver (libcuda)" in out
    assert "| family | kernel | tier | mode | size | est. s | cumulative s | fits |" in out
    assert "| d_budget | too_big | triton | d2d | 4 | 10000 |" in out and "no (skipped)" in out
    assert data["results"] == [] and len(data["plan"]) == 9 and data["header"]["nvrtc"]


def test_timings_of_an_earlier_run_replace_the_estimates(tmp_path):
    earlier = tmp_path / "earlier.json"
    earlier.write_text(json.dumps({"results": [{"family": "a_good", "kernel": "ok", "tier": "triton", "mode": "d2d",
                                                "size": "4", "status": "PASS", "duration_s": 77.0}]}))
    proc, data = _run(tmp_path, {"a_good": FAMILIES["a_good"]}, "--dry-run", "--timings", str(earlier), timeout=120)
    assert data["plan"][0]["estimate_s"] == 77.0
