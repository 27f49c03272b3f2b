"""docs/tutorial.md runs as written, and the README's Python snippets run or say they are templates.

The tutorial's fenced ``bash`` and ``python`` blocks become one bash script, in document order
(``python`` blocks as ``python - <<EOF`` heredocs, so a failing line fails the test with
``set -e``), run in a scratch folder laid out like a checkout: ``.venv`` (a link to this
checkout's) and ``../shared`` beside it. Nothing is skipped or rewritten.
"""

from __future__ import annotations

import importlib.util
import os
import re
import subprocess
from pathlib import Path

import pytest

from tests.conftest import ROOT, SHARED

FENCE = re.compile(r"^```(bash|python)\n(.*?)^```", re.MULTILINE | re.DOTALL)
TEMPLATE = "# template"


def blocks(markdown: str) -> list[tuple[str, str]]:
    return [(lang, code) for lang, code in FENCE.findall(markdown)]


def as_script(found: list[tuple[str, str]]) -> str:
    parts = ["set -eo pipefail"]
    for lang, code in found:
        parts.append(code if lang == "bash" else f"python - <<'PYTHON_BLOCK'\n{code}PYTHON_BLOCK")
    return "\n".join(parts) + "\n"


def _checkout_like(tmp_path: Path) -> Path:
    """tmp/work (with .venv -> this checkout's) and tmp/shared -> ../shared."""
    if not SHARED.is_dir():
        pytest.skip(f"../shared not found at {SHARED}")
    venv = ROOT / ".venv"
    if not (venv / "bin" / "activate").is_file():
        pytest.skip(f"no virtual environment at {venv} (run bash setup.sh)")
    work = tmp_path / "work"
    work.mkdir()
    (work / ".venv").symlink_to(venv)
    (tmp_path / "shared").symlink_to(SHARED)
    return work


def _run(script: str, cwd: Path, timeout: int) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k not in ("VIRTUAL_ENV", "PYTHONPATH")}
    return subprocess.run(["bash", "-c", script], cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)


@pytest.mark.shared
@pytest.mark.slow
def test_the_tutorial_runs_as_written(tmp_path):
    for module in ("torch", "onnxruntime", "tritonclient", "pytriton"):
        if importlib.util.find_spec(module) is None:
            pytest.skip(f"the tutorial uses {module}, which setup.sh installs; it is missing here")
    work = _checkout_like(tmp_path)
    found = blocks((ROOT / "docs" / "tutorial.md").read_text())
    assert {lang for lang, _ in found} == {"bash", "python"} and len(found) >= 10
    proc = _run(as_script(found), work, timeout=1200)
    log = proc.stdout[-6000:] + "\n--- stderr ---\n" + proc.stderr[-6000:]
    assert proc.returncode == 0, log
    assert "failed |" not in proc.stderr, log
    runs = work / "runs"
    for made in ("rx/results.jsonl", "hazelnut/model.onnx", "hazelnut-test/summary.json", "hazelnut-eval.json",
                 "triton/isstad/config.pbtxt", "fers/summary.json", "mavd-out/summary.json", "mdmf-out/summary.json",
                 "good-panel.png"):
        assert (runs / made).is_file(), made
    assert "image AUROC" in proc.stdout and "checked: the repository's pre -> graphs" in proc.stdout


def test_readme_python_snippets_run_or_say_they_are_templates(tmp_path):
    found = [code for lang, code in blocks((ROOT / "README.md").read_text()) if lang == "python"]
    assert found, "the README has Python snippets"
    runnable = [code for code in found if not code.lstrip().startswith(TEMPLATE)]
    if not runnable:
        return
    for module in ("torch",):
        if importlib.util.find_spec(module) is None:
            pytest.skip(f"the README snippets use {module}")
    work = _checkout_like(tmp_path)
    proc = _run(as_script([("bash", "source .venv/bin/activate")] + [("python", c) for c in runnable]), work, 600)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]
