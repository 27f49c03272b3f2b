"""Latency benchmark: every detector, tier and size side by side in one run.

    python benchmarks/latency.py            # full run (CPU default)
    python benchmarks/latency.py --quick    # CI-sized
    python benchmarks/latency.py --only rx  # one family
    python benchmarks/latency.py --rss      # also the rows at scale, one fresh process each
    python benchmarks/latency.py --sweep    # the shapes users pass, per kernel, + worst-ratio table

With ``--rss``, a family's ``rss_rows(ctx) -> list[Row]`` (where it has one) adds rows at the
sizes where memory matters, each set up and run once in a fresh child process whose peak
resident set (``os.wait4``: numpy, torch, ONNX Runtime and mapped pages included, which
tracemalloc misses) fills the "peak RSS MB" column.

Each family contributes a module ``benchmarks/cases/<family>.py`` with
``latency_rows(ctx) -> list[Row]`` (and, for ``--sweep``, ``sweep_rows(ctx)``: every kernel
over a sample of the shapes a user can pass, each tier and forced path beside the ``auto`` one,
the peer or seed path and the GEMM floor where there is one). A sweep ends with the worst
ratio per kernel: ``auto`` against the best forced path (want <= 1.1), against the peer, and
against the floor. The CPU model and ISA flags are recorded with every run.

Rows report p50 / p90 latency, throughput, tracemalloc
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

from _harness import Row, dump_json, environment, markdown_table, worst_ratio_table  # noqa: E402

SHARED = Path(os.environ.get("EDGESENTRY_SHARED", HERE.parent.parent / "shared"))


@dataclass
class Context:
    quick: bool
    shared: Path
    iters: int
    sweep: bool = False

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
    parser.add_argument("--sweep", action="store_true",
                        help="the shape sweep (sweep_rows of each family) instead of the default rows")
    parser.add_argument("--json", default=None,
                        help="where to write the JSON rows (default: bench_out/latency.json, sweep.json with --sweep)")
    args = parser.parse_args(argv)
    args.json = args.json or str(HERE.parent / "bench_out" / ("sweep.json" if args.sweep else "latency.json"))
    ctx = Context(quick=args.quick, shared=SHARED, iters=3 if args.quick else 10, sweep=args.sweep)
    env = environment()
    kind = "shape sweep" if args.sweep else ("quick" if args.quick else "full")
    print(f"# edgesentry latency benchmark ({kind})\n")
    print("environment: " + ", ".join(f"{k}={v}" for k, v in env.items()) + "\n")
    rows: list[Row] = []
    failures = 0
    for name in discover(args.only):
        start = time.perf_counter()
        try:
            module = importlib.import_module(f"cases.{name}")
            entry = getattr(module, "sweep_rows" if args.sweep else "latency_rows", None)
            if entry is None:
                continue  # a GPU-only case module (gpu_cases alone), or no sweep for this family
            family_rows = entry(ctx)
            if args.rss and not args.sweep and hasattr(module, "rss_rows"):
                family_rows += module.rss_rows(ctx)
        except Exception:  # one broken family must not hide the others' numbers
            failures += 1
            print(f"## {name}: FAILED\n```\n{traceback.format_exc()}```\n")
            continue
        rows.extend(family_rows)
        print(f"## {name} ({time.perf_counter() - start:.1f}s)\n")
        print(markdown_table(family_rows) + "\n")
        for note in getattr(module, "SWEEP_NOTES" if args.sweep else "NOTES", []):
            print(f"- {note}")
    if args.sweep:
        print("\n## worst ratio per kernel\n")
        print(f"cpu: {env['cpu_model']} ({env['cpu_id']}), flags: {env['cpu_flags']}, {env['cpus']} cores, "
              f"load average at start: {env['load_avg']}\n")
        print(worst_ratio_table(rows) + "\n")
        print("auto / best path: auto's time over the fastest of auto and every forced path (1.00 = auto is "
              "the best; want <= 1.10). speed-up vs peer: the peer's time over auto's. auto / floor: auto's time "
              "over the bound's (a GEMM of the same multiply-adds). Worst over the shapes swept, shape in "
              "parentheses.")
    Path(args.json).parent.mkdir(parents=True, exist_ok=True)
    dump_json(args.json, rows, env)
    print(f"\nwrote {len(rows)} rows to {args.json}")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
