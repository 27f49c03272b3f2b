"""``edgesentry build BUNDLE --precision fp32|fp16|int8``: TensorRT engines into ``BUNDLE/engines/``.

TensorRT 10: FP16/INT8 builder flags; INT8 from the bundle's QDQ graphs (``edgesentry quantize``)
or calibrated from ``--calib`` samples (cache kept in the bundle). TensorRT 11: strongly typed; FP16
by converting the ONNX first; INT8 from the QDQ graphs only.
Engines are cached by GPU, TensorRT version, precision, shape profile and ONNX hash; a
mismatched or corrupt plan is rebuilt. Needs an NVIDIA GPU and TensorRT; elsewhere it stops
with ``BackendUnavailableError`` naming what is missing.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from edgesentry.errors import ConfigError

HELP = "build TensorRT engines for a bundle's exported graphs (cached per GPU, TensorRT, precision, profile)"


def _hint(text: str) -> tuple[str, tuple[int, int, int]]:
    try:
        name, values = text.split("=")
        lo, opt, hi = (int(v) for v in values.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"--shape-hint must be AXIS=MIN,OPT,MAX (e.g. batch=1,4,16); got {text!r}"
        ) from None
    return name, (lo, opt, hi)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("bundle", type=Path, help="bundle directory with exported graphs")
    parser.add_argument(
        "--precision", choices=["fp32", "fp16", "int8"], default="fp16", help="engine precision (default: fp16)"
    )
    parser.add_argument(
        "--calib",
        nargs="+",
        default=[],
        metavar="SAMPLES",
        help="INT8 calibration samples (.npz with one array per graph input)",
    )
    parser.add_argument(
        "--version-compatible",
        action="store_true",
        help="BuilderFlag.VERSION_COMPATIBLE: runs on newer TensorRT runtimes (possibly slower)",
    )
    parser.add_argument(
        "--shape-hint",
        type=_hint,
        action="append",
        default=[],
        metavar="AXIS=MIN,OPT,MAX",
        help="optimisation profile range of a dynamic axis (repeatable)",
    )
    parser.add_argument("--force", action="store_true", help="rebuild even when a matching engine is cached")


def run(args: argparse.Namespace) -> int:
    from edgesentry.bundle import Bundle
    from edgesentry.export.tensorrt import build_bundle_engines
    from edgesentry.export.validate import load_samples
    from edgesentry.signing import default_policy

    bundle = Bundle.open(args.bundle, trust=default_policy())
    graphs = bundle.meta.get("graphs", {})
    if not graphs:
        raise ConfigError(f"bundle {bundle.path} has no exported graphs; run `edgesentry export {bundle.path}` first")
    from edgesentry.export.tensorrt import qdq_graph

    if args.precision == "int8" and not args.calib and any(qdq_graph(bundle, g) is None for g in graphs):
        raise ConfigError("--precision int8 needs the bundle's INT8 QDQ graphs (`edgesentry quantize BUNDLE "
                          "--precision int8 --calib SAMPLES...`) or, on TensorRT 10, --calib SAMPLES (.npz per sample)")
    # each graph reads its own inputs from the sample files (one file may hold every graph's inputs)
    calibration = {name: [feed for _, feed in load_samples(args.calib, gmeta)] for name, gmeta in graphs.items()}
    results = build_bundle_engines(
        bundle,
        precision=args.precision,
        calibration=calibration if args.calib else [],
        version_compatible=args.version_compatible,
        hints=dict(args.shape_hint),
        force=args.force,
    )
    for r in results:
        state = "built" if r.built else "cached"
        print(f"{r.graph}: {state} {r.path.relative_to(bundle.path)} (profile {r.key.profile.to_dict()})")
    return 0
