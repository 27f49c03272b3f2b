"""Peak resident memory of RX (global, local) and FERS on a large scene, in a child process.

Each run is a fresh ``PYTHON -c ...`` child that builds or opens the cube and calls
``predict`` once on ``edgesentry.load("rx")`` (``--detector rx``), ``edgesentry.load("rx",
mode="local", window=...)`` (``rx-local``) or a FERS bundle (``fers``: ``--bundle``, else the
reference 200-band weights converted into ``--workdir``), or ``spectral.rx`` with
``--impl spectral``; its
peak is ``ru_maxrss`` from ``os.wait4`` (the kernel's high-water mark: numpy, the compiled
kernels and the pages of a memory-mapped file included), its time the ``predict`` call alone
(after an untimed call on a 16 x 16 cube with the scene's bands that does the lazy imports).
Several ``--python`` interpreters (an older checkout's and this one) run one after the other,
``--repeat`` rounds alternating, on the same cube, so versions are compared side by side.

    # in memory: a 1024 x 1024 x 224 float32 cube (0.94 GB), before and after
    .venv/bin/python benchmarks/scene_memory.py --source array \\
        --python before=/path/to/old/.venv/bin/python --python after=.venv/bin/python
    # from disk: a 5 GB ENVI file (5450 lines x 1024 samples x 224 bands, float32, bip)
    .venv/bin/python benchmarks/scene_memory.py --source envi --shape 5450 1024 224
    # local RX (3 x 3 guard, 9 x 9 outer window) and FERS (200 bands), before and after
    .venv/bin/python benchmarks/scene_memory.py --detector rx-local --shape 512 512 224 \
        --python before=/path/to/old/.venv/bin/python --python after=.venv/bin/python
    .venv/bin/python benchmarks/scene_memory.py --detector fers --shape 512 512 224 \
        --python before=/path/to/old/.venv/bin/python --python after=.venv/bin/python

``--source npy`` / ``envi`` write the cube to ``--workdir`` block by block (the parent never
holds it) and delete it afterwards unless ``--keep``.
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from export_memory import add_side_by_side_arguments, interpreters, peak_of  # noqa: E402

#: the child: build or open the cube, then time one predict; prints one JSON line
CHILD = r"""
import json, sys, time
import numpy as np
spec = json.loads(sys.argv[1])

def rss():
    with open("/proc/self/status") as fh:
        return next(int(l.split()[1]) * 1024 for l in fh if l.startswith("VmRSS:"))

if spec["impl"] == "edgesentry":
    import edgesentry
    if spec.get("detector", "rx") == "rx":
        det = edgesentry.load("rx")
    elif spec["detector"] == "rx-local":
        det = edgesentry.load("rx", mode="local", window=tuple(spec["window"]))
    else:
        det = edgesentry.load(spec["bundle"], backend=spec["backend"])
    run = det.predict
    score = lambda r: r.score
else:
    import spectral
    spectral.settings.show_progress = False
    run = spectral.rx
    score = lambda r: float(np.max(r))
if spec["source"] == "array":
    h, w, b = spec["shape"]
    rng = np.random.default_rng(0)
    cube = np.empty((h, w, b), np.float32)
    for r in range(0, h, 16):
        block = rng.standard_normal((min(16, h - r), w, b), dtype=np.float32)
        cube[r:r + 16] = block * np.float32(50) + np.float32(1000)
    del block
else:
    cube = spec["path"]
warm = np.random.default_rng(1).standard_normal((16, 16, spec["shape"][2]))
run(warm * 50 + 1000)  # first call: lazy imports and set-up, untimed
del warm
before = rss()
start = time.perf_counter()
result = run(cube)
seconds = time.perf_counter() - start
print(json.dumps({"seconds": seconds, "rss_before": before, "score": score(result)}))
"""


def run_child(python: str, spec: dict, log: Path) -> dict:
    """One child run of ``CHILD`` -> {"rc", "peak_rss_bytes", and the child's "seconds",
    "rss_before", "score" when it succeeded}."""
    rc, _, peak = peak_of([python, "-c", CHILD, json.dumps(spec)], log)
    out = log.read_text().strip().splitlines()
    return {"rc": rc, "peak_rss_bytes": peak, **(json.loads(out[-1]) if rc == 0 and out else {})}


def write_cube(path: Path, shape: tuple[int, int, int], kind: str) -> Path:
    """A random float32 cube written block by block as ``.npy`` or ENVI (bip) -> the path to open."""
    import numpy as np

    h, w, b = shape
    rng = np.random.default_rng(0)
    data = path.with_suffix(".npy" if kind == "npy" else ".img")
    with open(data, "wb") as fh:
        if kind == "npy":
            np.lib.format.write_array_header_2_0(fh, {"descr": "<f4", "fortran_order": False, "shape": shape})
        for r in range(0, h, 16):
            block = rng.standard_normal((min(16, h - r), w, b), dtype=np.float32) * np.float32(50) + np.float32(1000)
            fh.write(block.astype("<f4").tobytes())
    if kind == "npy":
        return data
    header = path.with_suffix(".hdr")
    header.write_text(f"ENVI\nsamples = {w}\nlines = {h}\nbands = {b}\nheader offset = 0\n"
                      "data type = 4\ninterleave = bip\nbyte order = 0\n")
    return header


def fers_bundle(out: Path) -> Path:
    """The reference 200-band FERS weights converted into ``out`` (spectral-only)."""
    import edgesentry

    if not out.exists():
        source = HERE.parent.parent / "shared" / "reference" / "fers" / "weights" / "saved_models" / "200bands"
        edgesentry.convert("fers", source, output=out)
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--source", choices=["array", "npy", "envi"], default="array")
    parser.add_argument("--shape", nargs=3, type=int, default=[1024, 1024, 224], metavar=("H", "W", "B"))
    parser.add_argument("--impl", choices=["edgesentry", "spectral"], default="edgesentry")
    parser.add_argument("--detector", choices=["rx", "rx-local", "fers"], default="rx")
    parser.add_argument("--window", nargs=2, type=int, default=[3, 9], metavar=("INNER", "OUTER"),
                        help="local RX's windows (--detector rx-local)")
    parser.add_argument("--bundle", default=None, help="FERS bundle (--detector fers); default: the reference "
                        "200-band weights converted into --workdir")
    parser.add_argument("--backend", default="torch", help="FERS backend (--detector fers)")
    add_side_by_side_arguments(parser, "run", "/tmp/edgesentry-scene-memory")
    parser.add_argument("--repeat", type=int, default=1, help="rounds, the interpreters alternating")
    parser.add_argument("--keep", action="store_true", help="keep the cube file written to --workdir")
    args = parser.parse_args(argv)
    pythons = interpreters(args.python)
    shape = tuple(args.shape)
    cube_bytes = shape[0] * shape[1] * shape[2] * 4
    work = Path(args.workdir)
    work.mkdir(parents=True, exist_ok=True)
    spec = {"source": args.source, "shape": shape, "impl": args.impl, "detector": args.detector,
            "window": args.window, "backend": args.backend, "bundle": args.bundle}
    if args.detector == "fers" and args.bundle is None:
        spec["bundle"] = str(fers_bundle(work / "fers200"))
    if args.source != "array":
        spec["path"] = str(write_cube(work / "scene", shape, args.source))
    runs: dict[str, list[dict]] = {label: [] for label, _ in pythons}
    try:
        for _ in range(args.repeat):
            for label, python in pythons:
                log = work / f"{label}.log"
                runs[label].append(run_child(python, spec, log))
                if runs[label][-1]["rc"] != 0:
                    print(f"{label}: exit {runs[label][-1]['rc']}; see {log}", file=sys.stderr)
    finally:
        if args.source != "array" and not args.keep:
            for p in work.glob("scene.*"):
                p.unlink()
    what = {"rx": "rx", "rx-local": f"rx-local {args.window[0]}x{args.window[1]}", "fers": f"fers {args.backend}"}
    label_of = f"{args.source} {args.impl} {what[args.detector]} {'x'.join(map(str, shape))} float32"
    print(f"{label_of}: cube {cube_bytes / 1e6:.0f} MB, {args.repeat} round(s)")
    print(f"{'python':10} {'peak RSS MB':>11} {'x cube':>7} {'RSS before MB':>13} {'predict s':>9}  score")
    rows = []
    for label, results in runs.items():
        ok = [r for r in results if r["rc"] == 0]
        if not ok:
            print(f"{label:10} failed")
            continue
        peak = max(r["peak_rss_bytes"] for r in ok)
        seconds = statistics.median(r["seconds"] for r in ok)
        before = max(r["rss_before"] for r in ok)
        print(f"{label:10} {peak / 1e6:11.0f} {peak / cube_bytes:7.2f} {before / 1e6:13.0f} {seconds:9.2f}  "
              f"{ok[0]['score']:.6g}")
        rows.append({"case": label_of, "python": label, "cube_bytes": cube_bytes, "peak_rss_bytes": peak,
                     "ratio": peak / cube_bytes, "seconds_median": seconds, "runs": results})
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=1))
    if len(rows) > 1:
        scores = {r["python"]: r["runs"][0]["score"] for r in rows}
        print("scores:", scores)
    if not args.keep:
        shutil.rmtree(work, ignore_errors=True)
    return 0 if all(r["rc"] == 0 for rs in runs.values() for r in rs) else 1


if __name__ == "__main__":
    sys.exit(main())
