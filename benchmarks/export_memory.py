"""Peak resident memory of ``edgesentry export`` per family, measured in a child process.

Each row converts a bundle once, then runs ``PYTHON -m edgesentry.cli export COPY`` on a fresh
copy of it for every ``--python`` given (e.g. the interpreter of an older checkout and this
one), one after the other on the same bundle, so two versions are compared side by side.
The peak is the child's ``ru_maxrss`` from ``os.wait4`` (the kernel's high-water mark of its
resident set: torch, ONNX Runtime and protobuf allocations included, unlike tracemalloc), not
a sampled value.

The ISSTAD ViT-B/16 and ViT-L/16 (the paper's model) rows use randomly initialised weights
of the official architecture: memory depends on the shapes, not on the values. The other
rows use the reference weights in ``../shared/reference``.

    .venv/bin/python benchmarks/export_memory.py --cases isstad-vit-l \\
        --python before=/path/to/old/.venv/bin/python --python after=.venv/bin/python

The ViT-L row writes about 4 GB to ``--workdir`` (the checkpoint, the bundle and a copy);
run it where the export's peak fits (the old exporter needed about 16 GB).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared" / "reference"

VIT_B = {"embed_dim": 768, "depth": 12, "num_heads": 12}


def _isstad_synthetic(arch: dict[str, int]) -> Callable[[Path], Path]:
    def make(out: Path) -> Path:
        import torch

        from edgesentry.detectors.isstad import convert
        from edgesentry.models.isstad import ISSTADConfig, ISSTADNet

        cfg = ISSTADConfig(**arch).to_dict()
        ckpt = out.parent / "net_ad.pth"
        torch.manual_seed(0)
        net = ISSTADNet(ISSTADConfig(**arch))
        torch.save(net.state_dict(), ckpt)
        del net
        convert(ckpt, output=out, config=cfg)
        ckpt.unlink()
        return out

    return make


def _reference(family: str, *parts: str, config: str | None = None) -> Callable[[Path], Path]:
    def make(out: Path) -> Path:
        import edgesentry

        source = SHARED.joinpath(*parts)
        extra = {"config": SHARED.joinpath(family, config)} if config else {}
        edgesentry.convert(family, source, output=out, **extra)
        return out

    return make


CASES: dict[str, Callable[[Path], Path]] = {
    "fers": _reference("fers", "fers", "weights", "saved_models", "50bands"),
    "fers200": _reference("fers", "fers", "weights", "saved_models", "200bands"),
    "mavd": _reference("mavd", "mavd", "weights", "saved_models", "ap86.07"),
    "mdmf": _reference("mdmf", "mdmf", "heads_seed0_D256.npz"),
    "isstad-tiny": _reference("isstad", "isstad", "tiny_stage2_seed0.pt", config="tiny_stage2_config.json"),
    "isstad-vit-b": _isstad_synthetic(VIT_B),
    "isstad-vit-l": _isstad_synthetic({}),
}


def weight_bytes(bundle: Path) -> int:
    """Bytes of the bundle's tensors (its safetensors files) before export."""
    return sum(p.stat().st_size for p in bundle.rglob("*.safetensors"))


def peak_of(command: list[str], log: Path) -> tuple[int, float, int]:
    """(exit code, seconds, peak RSS in bytes) of ``command`` run to completion."""
    start = time.perf_counter()
    with open(log, "wb") as fh:
        proc = subprocess.Popen(command, stdout=fh, stderr=subprocess.STDOUT, cwd=ROOT)
        _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    return proc.returncode, time.perf_counter() - start, usage.ru_maxrss * 1024  # Linux: KiB


def add_side_by_side_arguments(parser: argparse.ArgumentParser, verb: str, workdir: str) -> None:
    """``--python`` (repeatable), ``--workdir`` and ``--json``, shared with ``scene_memory.py``."""
    parser.add_argument("--python", action="append", default=None, metavar="LABEL=PYTHON",
                        help=f"interpreter to {verb} with (repeatable; default: this one)")
    parser.add_argument("--workdir", default=workdir)
    parser.add_argument("--json", default=None, help="also write the rows here")


def interpreters(values: list[str] | None) -> list[tuple[str, str]]:
    """``--python LABEL=PYTHON`` values -> (label, interpreter); none given: this interpreter."""
    return [tuple(p.split("=", 1)) if "=" in p else (p, p) for p in (values or [f"this={sys.executable}"])]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cases", nargs="+", default=["fers", "mavd", "mdmf", "isstad-tiny", "isstad-vit-b"],
                        choices=list(CASES))
    add_side_by_side_arguments(parser, "export", "/tmp/edgesentry-export-memory")
    parser.add_argument("--export-args", default="", help="extra arguments for `edgesentry export`")
    args = parser.parse_args(argv)
    pythons = interpreters(args.python)
    work = Path(args.workdir)
    rows = []
    print(f"{'case':14} {'python':8} {'weights MB':>10} {'peak RSS MB':>11} {'ratio':>6} {'time s':>7}  rc")
    for case in args.cases:
        source = work / case / "bundle"
        shutil.rmtree(work / case, ignore_errors=True)
        source.parent.mkdir(parents=True)
        CASES[case](source)
        weights = weight_bytes(source)
        for label, python in pythons:
            copy = work / case / f"export-{label}"
            shutil.copytree(source, copy)
            command = [python, "-m", "edgesentry.cli", "export", str(copy), *args.export_args.split()]
            rc, seconds, peak = peak_of(command, work / case / f"export-{label}.log")
            shutil.rmtree(copy)
            row = {"case": case, "python": label, "weights_bytes": weights, "peak_rss_bytes": peak,
                   "ratio": peak / weights, "seconds": seconds, "rc": rc, "command": " ".join(command)}
            rows.append(row)
            print(f"{case:14} {label:8} {weights / 1e6:10.1f} {peak / 1e6:11.0f} {peak / weights:6.2f} "
                  f"{seconds:7.1f}  {rc}", flush=True)
        shutil.rmtree(source)  # the logs stay beside it
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=1))
    return 0 if all(r["rc"] == 0 for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
