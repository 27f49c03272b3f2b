"""Latency benchmark: every detector, tier and size side by side in one run.

    python benchmarks/latency.py            # full run (CPU default)
    python benchmarks/latency.py --quick    # CI-sized
    python benchmarks/latency.py --only rx  # one family
    python benchmarks/latency.py --rss      # also the rows at scale, one fresh process each

With ``--rss``, a family's ``rss_rows(ctx) -> list[Row]`` (where it has one) adds rows at the
sizes where memory matters, each set up and run once in a fresh child process whose peak
resident set (``os.wait4``: numpy, torch, ONNX Runtime and mapped pages included, which
tracemalloc misses) fills the "peak RSS MB" column.

Each family contributes a module ``benchmarks/cases/<family>.py`` with
``latency_rows(ctx) -> list[Row]``. Rows report p50 / p90 latency, throughput, tracemalloc
peak memory and speed ratios measured in this same process (against the seed-faithful
reference and peers such as ``spectral.rx``). A Markdown table goes to stdout, JSON to
``--json`` (default ``bench_out/latency.json``).
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
import time
import traceback
from dataclasses import dataclass
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from _harness import Row, dump_json, environment, markdown_table  # noqa: E402

SHARED = Path(os.environ.get("EDGESENTRY_SHARED", HERE.parent.parent / "shared"))


@dataclass
class Context:
    quick: bool
    shared: Path
    iters: int

    def scale(self, full: int, quick: int) -> int:
        return quick if self.quick else full


def discover(only: list[str] | None) -> list[str]:
    names = sorted(p.stem for p in (HERE / "cases").glob("*.py") if not p.stem.startswith("_"))
    return [n for n in names if not only or n in only]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="small sizes and few iterations (CI)")
    parser.add_argument("--only", nargs="*", help="families to run (default: all)")
    parser.add_argument("--rss", action="store_true",
                        help="add the rows at scale, each in a fresh process with its peak resident set")
    parser.add_argument("--json", default=str(HERE.parent / "bench_out" / "latency.json"),
                        help="where to write the JSON rows (default: bench_out/latency.json)")
    args = parser.parse_args(argv)
    ctx = Context(quick=args.quick, shared=SHARED, iters=3 if args.quick else 10)
    env = environment()
    print(f"# edgesentry latency benchmark ({'quick' if args.quick else 'full'})\n")
    print("environment: " + ", ".join(f"{k}={v}" for k, v in env.items()) + "\n")
    rows: list[Row] = []
    failures = 0
    for name in discover(args.only):
        start = time.perf_counter()
        try:
            module = importlib.import_module(f"cases.{name}")
            if not hasattr(module, "latency_rows"):
                continue  # a GPU-only case module (gpu_cases alone)
            family_rows = module.latency_rows(ctx)
            if args.rss and hasattr(module, "rss_rows"):
                family_rows += module.rss_rows(ctx)
        except Exception:  # one broken family must not hide the others' numbers
            failures += 1
            print(f"## {name}: FAILED\n```\n{traceback.format_exc()}```\n")
            continue
        rows.extend(family_rows)
        print(f"## {name} ({time.perf_counter() - start:.1f}s)\n")
        print(markdown_table(family_rows) + "\n")
        for note in getattr(module, "NOTES", []):
            print(f"- {note}")
    Path(args.json).parent.mkdir(parents=True, exist_ok=True)
    dump_json(args.json, rows, env)
    print(f"\nwrote {len(rows)} rows to {args.json}")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
