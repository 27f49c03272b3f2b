"""``edgesentry validate BUNDLE --backends torch,onnxruntime[,openvino,tensorrt]``: Polygraphy-style parity.

Per output: max / mean / median / p99 absolute and relative error against the first backend,
pass/fail with precision-dependent tolerances. Table to stdout, ``--json PATH`` for a file,
exit code 1 when any output is outside its tolerance.
"""

from __future__ import annotations

import argparse
from pathlib import Path

HELP = "compare a bundle's backends output by output (parity report; non-zero exit on any failure)"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("bundle", type=Path, help="bundle directory with exported graphs")
    parser.add_argument(
        "--backends",
        default="torch,onnxruntime",
        help="comma-separated; the first is the reference (default: torch,onnxruntime)",
    )
    parser.add_argument(
        "--precision",
        choices=["fp32", "bf16", "fp16", "int8"],
        default="fp32",
        help="precision of the candidate backends: int8 / fp16 run the graphs `edgesentry quantize` stored "
        "(fp16 without one: converted on the fly); bf16 is OpenVINO's hint (sets default tolerances)",
    )
    parser.add_argument(
        "--samples",
        nargs="+",
        default=[],
        metavar="FILE",
        help="inputs (.npz named like the graph inputs, or .npy); default: seeded synthetic",
    )
    parser.add_argument("--n-synthetic", type=int, default=2, help="number of synthetic samples (default 2)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the synthetic samples")
    parser.add_argument("--graph", action="append", default=None, help="validate only this graph (repeatable)")
    parser.add_argument("--atol", type=float, default=None, help="absolute tolerance (default: by precision)")
    parser.add_argument("--rtol", type=float, default=None, help="relative tolerance (default: by precision)")
    parser.add_argument("--json", type=Path, default=None, metavar="PATH", help="write the report as JSON")


def run(args: argparse.Namespace) -> int:
    from edgesentry.bundle import Bundle
    from edgesentry.export.validate import validate_bundle, write_json
    from edgesentry.signing import default_policy

    bundle = Bundle.open(args.bundle, trust=default_policy())
    backends = [b.strip() for b in args.backends.split(",") if b.strip()]
    report = validate_bundle(
        bundle,
        backends=backends,
        precision=args.precision,
        samples=args.samples,
        n_synthetic=args.n_synthetic,
        seed=args.seed,
        atol=args.atol,
        rtol=args.rtol,
        graphs=args.graph,
    )
    print(report.table())
    if args.json is not None:
        print(f"wrote {write_json(report, args.json)}")
    return 0 if report.passed else 1
