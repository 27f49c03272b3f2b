"""``edgesentry info --memory`` against the measured peak of ``load`` + ``predict``, per family.

Each row makes a bundle (``export_memory.CASES``, exported to ONNX; RX bundles are
configuration only), asks ``edgesentry.memory.estimate`` what loading it and running one input
at the bundle's input size will need, then runs a fresh child ``PYTHON -c ...`` that loads the
bundle on the row's backend and calls ``predict`` once on a random input of that size; the
child's peak is ``ru_maxrss`` from ``os.wait4`` (torch and ONNX Runtime allocations included).
The ratio estimate / measured should lie within 0.75..1.25.

    .venv/bin/python benchmarks/bundle_memory.py                      # every row
    .venv/bin/python benchmarks/bundle_memory.py --cases fers-ort rx-global
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from export_memory import CASES as BUNDLES, peak_of  # noqa: E402

#: row -> (bundle case or an RX configuration, backend, --size values)
ROWS: dict[str, tuple[str | dict, str | None, dict[str, int]]] = {
    "fers-ort": ("fers", "onnxruntime", {"H": 512, "W": 512}),
    "fers-torch": ("fers", "torch", {"H": 512, "W": 512}),
    "mavd-ort": ("mavd", "onnxruntime", {"T": 1024}),
    "mavd-torch": ("mavd", "torch", {"T": 1024}),
    "isstad-tiny-ort": ("isstad-tiny", "onnxruntime", {}),
    "isstad-vit-b-ort": ("isstad-vit-b", "onnxruntime", {}),
    "isstad-vit-b-torch": ("isstad-vit-b", "torch", {}),
    "rx-global": ({"mode": "global"}, None, {"H": 1024, "W": 1024, "B": 224}),
    "rx-local": ({"mode": "local", "window": [3, 9]}, None, {"H": 128, "W": 128, "B": 64}),
}

#: the child: load, build a random input of the estimate's size, predict once; prints one JSON line
CHILD = r"""
import json, sys
import numpy as np
import edgesentry
spec = json.loads(sys.argv[1])
det = edgesentry.load(spec["bundle"], **({"backend": spec["backend"]} if spec["backend"] else {}))
rng = np.random.default_rng(0)
shapes = spec["input"]
family = spec["family"]
if family in ("fers", "rx"):
    h, w, b = (shapes["x"][2], shapes["x"][3], shapes["x"][1]) if family == "fers" else shapes["cube"]
    x = np.empty((h, w, b), np.float32)
    for r in range(0, h, 16):
        x[r:r + 16] = rng.random((min(16, h - r), w, b), dtype=np.float32) * 50 + 1000
elif family == "isstad":
    size = next(iter(shapes.values()))[-1]
    x = rng.integers(0, 256, (size, size, 3), dtype=np.uint8)
else:
    x = {k: rng.random(tuple(s), dtype=np.float32) for k, s in shapes.items()}
    if x["audio"].shape[0] == 1:
        x["audio"] = x["audio"][0]
result = det.predict(x)
print(json.dumps({"score": float(result.score)}))
"""


def make_bundle(source: str | dict, out: Path) -> Path:
    import edgesentry
    from edgesentry.bundle import Bundle
    from edgesentry.export.onnx import export_bundle

    if isinstance(source, dict):
        return Path(edgesentry.convert("rx", output=out, **source).path)
    BUNDLES[source](out)
    export_bundle(Bundle.open(out))
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cases", nargs="+", default=list(ROWS), choices=list(ROWS))
    parser.add_argument("--workdir", default="/tmp/edgesentry-bundle-memory")
    parser.add_argument("--json", default=None, help="also write the rows here")
    args = parser.parse_args(argv)
    from edgesentry.memory import estimate

    work = Path(args.workdir)
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    made: dict[str, Path] = {}
    rows = []
    print(f"{'row':20} {'input':28} {'estimate MB':>11} {'measured MB':>11} {'ratio':>6}  parts (MB)")
    for row in args.cases:
        source, backend, sizes = ROWS[row]
        key = json.dumps(source, sort_keys=True)
        if key not in made:
            made[key] = make_bundle(source, work / f"bundle-{len(made)}")
        est = estimate(made[key], backend=backend, sizes=sizes)
        spec = {"bundle": str(made[key]), "backend": backend, "input": est.input, "family": est.family}
        log = work / f"{row}.log"
        rc, seconds, peak = peak_of([sys.executable, "-c", CHILD, json.dumps(spec)], log)
        shape = ", ".join(f"{k} {'x'.join(map(str, v))}" for k, v in est.input.items())
        parts = " ".join(f"{p}={getattr(est, p) / 2**20:.0f}" for p in ("runtime", "weights", "activations", "io"))
        print(f"{row:20} {shape[:28]:28} {est.total / 2**20:11.0f} {peak / 2**20:11.0f} {est.total / peak:6.2f}  "
              f"{parts}{'' if rc == 0 else f'  FAILED rc {rc}, see {log}'}", flush=True)
        rows.append({"row": row, "estimate": est.to_dict(), "peak_rss_bytes": peak, "ratio": est.total / peak,
                     "rc": rc, "seconds": seconds})
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=1))
    return 0 if all(r["rc"] == 0 for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
