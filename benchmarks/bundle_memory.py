"""``edgesentry info --memory`` against the measured peak of ``load`` + ``predict``, per family.

Each row makes a bundle (``export_memory.CASES``, in a child process whose peak is the
``convert`` column; for the synthetic ViT rows that child also builds the random checkpoint)
and exports it to ONNX (``edgesentry export`` in a child: the ``export`` column; RX bundles are
configuration only), asks ``edgesentry info --memory`` (a child: the ``info`` column) what
loading it and running one input at the bundle's input size will need, then runs a fresh child
``PYTHON -c ...`` that loads the bundle on the row's backend and calls ``predict`` once on a
random input of that size. Every peak is the child's ``ru_maxrss`` from ``os.wait4`` (torch and ONNX Runtime allocations
included). The parent imports nothing heavy: a child's ``ru_maxrss`` starts from its parent's
resident set at ``fork``. The ratio estimate / measured should lie within 0.75..1.25.

    .venv/bin/python benchmarks/bundle_memory.py                      # every row but ViT-L
    .venv/bin/python benchmarks/bundle_memory.py --cases fers-ort rx-global
    .venv/bin/python benchmarks/bundle_memory.py --cases isstad-vit-l-ort   # the paper's ViT-L/16
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from export_memory import peak_of  # noqa: E402

#: row -> (bundle case or an RX configuration, backend, --size values)
ROWS: dict[str, tuple[str | dict, str | None, dict[str, int]]] = {
    "fers-ort": ("fers200", "onnxruntime", {"H": 100, "W": 100}),  # an ABU scene (the paper's)
    "fers-ort-512": ("fers200", "onnxruntime", {"H": 512, "W": 512}),
    "fers-torch-512": ("fers200", "torch", {"H": 512, "W": 512}),
    "mavd-ort": ("mavd", "onnxruntime", {"T": 182}),  # the XD-Violence test mean, 5 crops
    "mavd-torch": ("mavd", "torch", {"T": 182}),
    "mavd-ort-1024": ("mavd", "onnxruntime", {"T": 1024}),
    "isstad-tiny-ort": ("isstad-tiny", "onnxruntime", {}),
    "isstad-vit-b-ort": ("isstad-vit-b", "onnxruntime", {}),
    "isstad-vit-b-torch": ("isstad-vit-b", "torch", {}),
    "isstad-vit-l-ort": ("isstad-vit-l", "onnxruntime", {}),  # the paper's model
    "isstad-vit-l-torch": ("isstad-vit-l", "torch", {}),
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


#: the convert child: one ``export_memory.CASES`` entry (or an RX configuration) into a folder
CONVERT = r"""
import json, sys
from pathlib import Path
sys.path.insert(0, sys.argv[3])
source, out = json.loads(sys.argv[1]), Path(sys.argv[2])
if isinstance(source, dict):
    import edgesentry
    edgesentry.convert("rx", output=out, **source)
else:
    from export_memory import CASES
    CASES[source](out)
"""


def make_bundle(source: str | dict, out: Path, work: Path) -> dict[str, float | None]:
    """Convert (and, with graphs, export) into ``out`` in children -> their peaks in bytes."""
    rc, _, convert = peak_of([sys.executable, "-c", CONVERT, json.dumps(source), str(out), str(HERE)],
                             work / f"{out.name}-convert.log")
    if rc != 0:
        raise SystemExit(f"convert of {source} failed; see {work / f'{out.name}-convert.log'}")
    if isinstance(source, dict):
        return {"convert": convert, "export": None}
    rc, _, export = peak_of([sys.executable, "-m", "edgesentry.cli", "export", str(out)],
                            work / f"{out.name}-export.log")
    if rc != 0:
        raise SystemExit(f"export of {source} failed; see {work / f'{out.name}-export.log'}")
    return {"convert": convert, "export": export}


def estimate(bundle: Path, backend: str | None, sizes: dict[str, int], log: Path) -> tuple[dict, int]:
    """``edgesentry info --memory`` of ``bundle`` in a child -> (its JSON, the child's peak bytes)."""
    command = [sys.executable, "-m", "edgesentry.cli", "info", "--memory", str(bundle), "--json",
               *(["--backend", backend] if backend else []), *(f"--size={k}={v}" for k, v in sizes.items())]
    rc, _, peak = peak_of(command, log)
    text = log.read_text()
    if rc != 0:
        raise SystemExit(f"{' '.join(command)} failed:\n{text[-2000:]}")
    return json.loads(text[text.index("{"): text.rindex("}") + 1]), peak


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cases", nargs="+", default=[r for r in ROWS if "vit-l" not in r], choices=list(ROWS))
    parser.add_argument("--workdir", default="/tmp/edgesentry-bundle-memory")
    parser.add_argument("--json", default=None, help="also write the rows here")
    args = parser.parse_args(argv)
    work = Path(args.workdir)
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    made: dict[str, tuple[Path, dict]] = {}
    rows = []
    print(f"{'row':20} {'input':28} {'convert MB':>10} {'export MB':>9} {'info MB':>7} {'estimate MB':>11} "
          f"{'measured MB':>11} "
          f"{'ratio':>6}  parts (MB)")
    for row in args.cases:
        source, backend, sizes = ROWS[row]
        key = json.dumps(source, sort_keys=True)
        if key not in made:
            path = work / f"bundle-{len(made)}"
            made[key] = (path, make_bundle(source, path, work))
        bundle, peaks = made[key]
        est, info_peak = estimate(bundle, backend, sizes, work / f"{row}-info.log")
        spec = {"bundle": str(bundle), "backend": backend, "input": est["input"], "family": est["family"]}
        log = work / f"{row}.log"
        rc, seconds, peak = peak_of([sys.executable, "-c", CHILD, json.dumps(spec)], log)
        shape = ", ".join(f"{k} {'x'.join(map(str, v))}" for k, v in est["input"].items())
        parts = " ".join(f"{p}={est[p] / 2**20:.0f}" for p in ("runtime", "weights", "activations", "io"))
        exported = f"{peaks['export'] / 2**20:9.0f}" if peaks["export"] else f"{'-':>9}"
        print(f"{row:20} {shape[:28]:28} {peaks['convert'] / 2**20:10.0f} {exported} {info_peak / 2**20:7.0f} "
              f"{est['total'] / 2**20:11.0f} {peak / 2**20:11.0f} {est['total'] / peak:6.2f}  "
              f"{parts}{'' if rc == 0 else f'  FAILED rc {rc}, see {log}'}", flush=True)
        rows.append({"row": row, "estimate": est, "peak_rss_bytes": peak, "ratio": est["total"] / peak,
                     "info_peak_bytes": info_peak,
                     "convert_peak_bytes": peaks["convert"], "export_peak_bytes": peaks["export"],
                     "rc": rc, "seconds": seconds})
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=1))
    return 0 if all(r["rc"] == 0 for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
