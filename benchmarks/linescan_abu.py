"""Speed-and-AUC table of line-scan RX on the ABU scenes, all methods in one process.

    python benchmarks/linescan_abu.py            # Markdown table to stdout
    python benchmarks/linescan_abu.py --json out.json

Every scene of ``../shared/data/abu`` is scanned top to bottom by edgesentry's line-scan
detector (all bands in float64 and float32, 5-line look-ahead, 5 PCA dimensions), by global RX
on the whole cube, and by the official ERX and RX baseline (``../shared/peers/hyperad``, 10-line
buffers). AUC over every pixel; lines per second over all scans (the machine's load shows in
the absolute numbers; compare methods within one run).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from _harness import environment  # noqa: E402
from cases.linescan import abu_table, markdown_abu  # noqa: E402

SHARED = Path(os.environ.get("EDGESENTRY_SHARED", HERE.parent.parent / "shared"))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--json", default=None, help="also write the table as JSON (default: no file)")
    args = parser.parse_args(argv)
    if not (SHARED / "data" / "abu").is_dir():
        print(f"ABU scenes not found under {SHARED}/data/abu (set EDGESENTRY_SHARED)", file=sys.stderr)
        return 1
    env = environment()
    auc, lines_per_s, scenes = abu_table(SHARED)
    print("environment: " + ", ".join(f"{k}={v}" for k, v in env.items()) + "\n")
    print(markdown_abu(auc, lines_per_s, scenes))
    if args.json:
        Path(args.json).write_text(json.dumps({"environment": env, "auc": auc, "lines_per_s": lines_per_s}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
