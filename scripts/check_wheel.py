"""Install a built edgesentry wheel (or the sdist) into a fresh virtual environment without
torch and run detections there.

    python scripts/check_wheel.py dist/edgesentry-...x86_64.whl --python python3.11
    python scripts/check_wheel.py dist/edgesentry-0.1.0.tar.gz --python python3.10   # builds the kernels
    python scripts/check_wheel.py dist/edgesentry-...aarch64.whl --sysroot .aarch64/sysroot \\
        --find-links .aarch64/wheelhouse                                            # under qemu-aarch64

The detections, run by the fresh environment's interpreter from an empty folder (so nothing
of this checkout is importable):

- global and local RX detectors (compiled cpu tier) on a synthetic cube with one implanted
  anomaly: the anomaly must be the top pixel; the cpu kernels' float64 scores must match the
  reference tier (numpy, same process) to 1e-8 relative;
- with ``--bundle`` (an exported bundle of a family with a graph), ``edgesentry.load(bundle,
  backend="onnxruntime").predict`` on a fixed synthetic input; its score is printed.

``import torch`` must fail in that environment. The last line printed is one JSON record
(``RESULT {...}``); the exit code is 1 when a check fails.

With ``--sysroot`` the interpreter is the arm64 Python of that folder run through
``qemu-aarch64 -L SYSROOT``; the environment is made with ``venv --without-pip`` and pip runs
from its wheel, offline, from ``--find-links`` (aarch64 wheels of the dependencies, which
scripts/test_aarch64.sh downloads).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

DETECT = r"""
import json, platform, sys
import numpy as np
import edgesentry
from edgesentry.kernels import rx as rx_kernels

try:
    import torch  # noqa: F401
except ImportError:
    has_torch = False
else:
    has_torch = True

out = {"machine": platform.machine(), "python": platform.python_version(), "edgesentry": edgesentry.__file__,
       "torch_importable": has_torch, "checks": {}}
rng = np.random.default_rng(20)
cube = rng.standard_normal((24, 24, 16)) @ rng.standard_normal((16, 16)) * 0.1 + 1.0
cube[7, 11] += 0.8 * rng.standard_normal(16)  # the anomaly
kernels = {"global": lambda x, tier: rx_kernels.global_rx(x.reshape(-1, x.shape[-1]), tier=tier),
           "local": lambda x, tier: rx_kernels.local_rx(x, inner=3, outer=9, tier=tier)}
for mode, opts in (("global", {}), ("local", {"mode": "local", "window": (3, 9)})):
    amap = edgesentry.load("rx", kernels="cpu", **opts).predict(cube).anomaly_map  # the detection
    top = np.unravel_index(int(np.argmax(amap)), amap.shape)
    (cpu, used), (ref, _) = kernels[mode](cube, "cpu"), kernels[mode](cube, "reference")  # float64 scores
    rel = float(np.max(np.abs(cpu - ref)) / np.max(np.abs(ref)))
    ok = tuple(top) == (7, 11) and used == "cpu" and rel < 1e-8
    out["checks"][f"rx_{mode}"] = {"top_pixel": [int(top[0]), int(top[1])], "tier": used,
                                   "rel_err_vs_reference": rel, "ok": ok}
bundle = sys.argv[1] if len(sys.argv) > 1 else ""
if bundle:
    det = edgesentry.load(bundle, backend="onnxruntime")
    rng = np.random.default_rng(7)
    if det.family == "isstad":
        res = det.predict(rng.integers(0, 256, (40, 48, 3), dtype=np.uint8))
    elif det.family == "mavd":
        res = det.predict({"rgb": np.maximum(rng.standard_normal((2, 6, 1024)), 0).astype(np.float32),
                           "flow": np.maximum(rng.standard_normal((2, 6, 1024)), 0).astype(np.float32),
                           "audio": (0.5 * rng.standard_normal((1, 6, 128))).astype(np.float32)})
    else:
        raise SystemExit(f"no sample input for family {det.family!r}")
    out["checks"][f"bundle_{det.family}"] = {"raw_score": float(res.raw_score), "ok": bool(np.isfinite(res.raw_score))}
out["ok"] = (not has_torch) and all(c["ok"] for c in out["checks"].values())
print("RESULT " + json.dumps(out))
"""


def _interpreter(sysroot: Path | None, program: Path) -> list[str]:
    if sysroot is None:
        return [str(program)]
    qemu = shutil.which("qemu-aarch64") or shutil.which("qemu-aarch64-static")
    if qemu is None:
        raise SystemExit("qemu-aarch64 not found (Debian: apt-get install qemu-user)")
    return [qemu, "-L", str(sysroot), "-U", "PYTHONPATH", str(program)]


def _run(cmd: list[str], **kwargs) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV", "PYTHONHOME")}
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, **kwargs)
    if proc.returncode != 0:
        sys.stderr.write(proc.stdout[-4000:] + proc.stderr[-4000:])
        raise SystemExit(f"failed ({proc.returncode}): {' '.join(cmd[:6])} ...")
    return proc


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("package", type=Path, help="a wheel or the sdist")
    ap.add_argument("--python", default=sys.executable, help="interpreter that makes the environment (native runs)")
    ap.add_argument("--sysroot", type=Path, help="arm64 root folder: run its python3.11 under qemu-aarch64")
    ap.add_argument("--find-links", type=Path, help="folder of wheels; pip then installs offline from it")
    ap.add_argument("--bundle", type=Path, help="exported bundle to run through onnxruntime")
    ap.add_argument("--keep", type=Path, help="make the environment here and keep it")
    args = ap.parse_args(argv)

    start = time.perf_counter()
    package = args.package.resolve()
    work = Path(tempfile.mkdtemp(prefix="edgesentry-wheel-"))
    venv = (args.keep or work / "venv").resolve()
    if venv.exists():
        shutil.rmtree(venv)
    try:
        if args.sysroot is not None:
            sysroot = args.sysroot.resolve()
            _run([*_interpreter(sysroot, sysroot / "usr/bin/python3.11"), "-m", "venv", "--without-pip", str(venv)])
            pip_wheels = sorted(args.find_links.resolve().glob("pip-*.whl")) if args.find_links else []
            if not pip_wheels:
                raise SystemExit("--sysroot needs --find-links with a pip wheel in it")
            pip = [*_interpreter(sysroot, venv / "bin/python"), str(pip_wheels[-1] / "pip")]
        else:
            sysroot = None
            _run([args.python, "-m", "venv", str(venv)])
            pip = [str(venv / "bin/python"), "-m", "pip"]
        extra = "[ort]" if args.bundle else ""
        source = ["--no-index", "--find-links", str(args.find_links.resolve())] if args.find_links else []
        _run([*pip, "install", "--quiet", "--disable-pip-version-check", *source, f"{package}{extra}"])
        installed = time.perf_counter() - start
        bundle = [str(args.bundle.resolve())] if args.bundle else []
        proc = _run([*_interpreter(sysroot, venv / "bin/python"), "-c", DETECT, *bundle], cwd=work)
    finally:
        if args.keep is None:
            shutil.rmtree(work, ignore_errors=True)
    line = next(ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT "))
    result = json.loads(line[len("RESULT ") :])
    result.update(package=package.name, install_s=round(installed, 1), total_s=round(time.perf_counter() - start, 1))
    print("RESULT " + json.dumps(result))
    return 0 if result["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
