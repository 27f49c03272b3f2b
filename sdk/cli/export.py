"""``edgesentry export BUNDLE``: ONNX graphs (or a Triton model repository) from a bundle.

Each graph is exported with the bundle metadata in ``metadata_props``, checked with
``onnx.checker``, optionally simplified with onnxslim, compared with torch (the parity table
is printed) and linted for TensorRT; the bundle is then opened again (checksums) and every
graph's metadata compared with ``meta.json``. ``--format triton-repo OUT`` writes a Triton
Inference Server model repository whose ensemble takes the detector's raw input (see
``edgesentry.serving``) and checks it: the repository's own pre-processing, graph files and
post-processing, run in this process on a synthetic raw input, must give what
``Detector.predict`` gives. The verb says ``done`` only after these checks.

A signed bundle's repository carries the signature (the bundle copy is verbatim); with
``--trusted-keys`` (or the environment's keys) the bundle is verified first, the copy after, and
the keys travel with the repository for the python models to verify it at start. Exporting ONNX
into a signed bundle changes it: it becomes a new, unsigned version (sign it again).
"""

from __future__ import annotations

import argparse
import math
from pathlib import Path

from edgesentry.cli._args import add_trust_args, trust_policy

HELP = "export a bundle's graphs to ONNX (checked, parity-tested, TensorRT-linted) or a Triton model repository"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("bundle", type=Path, help="bundle directory (from `edgesentry convert`)")
    parser.add_argument(
        "--format",
        nargs="+",
        default=["onnx"],
        metavar=("FORMAT", "OUT"),
        help="onnx: write <graph>.onnx into the bundle (default); triton-repo OUT: write a Triton model repository",
    )
    parser.add_argument("--opset", type=int, default=None, help="ONNX opset (default: 17)")
    parser.add_argument("--no-parity", action="store_true", help="skip the torch vs ONNX Runtime comparison")
    parser.add_argument("--no-simplify", action="store_true", help="do not run onnxslim on the exported graphs")
    parser.add_argument("--memory-budget", type=float, default=None, metavar="GB",
                        help="memory the export may use for optional work: onnxslim (about 9x the weights) is "
                             "skipped when it would need more (default: 4; 0 = no limit)")
    parser.add_argument(
        "--triton-variant",
        choices=["onnxruntime", "python", "tensorrt"],
        default="onnxruntime",
        help="triton-repo graph model: onnxruntime_onnx (default), python backend with ONNX Runtime "
        "inside (runs on CPU-only servers), or tensorrt_plan (needs `edgesentry build` first)",
    )
    parser.add_argument("--max-batch", type=int, default=8, help="triton-repo: max_batch_size / dynamic batching")
    parser.add_argument("--gallery", default=None,
                        help="triton-repo, mdmf: the gallery .npz (edgesentry enroll) served queries are classified "
                             "against (required for mdmf)")
    add_trust_args(parser, signature=False)


def _format(values: list[str]) -> tuple[str, Path | None]:
    if values == ["onnx"]:
        return "onnx", None
    if len(values) == 2 and values[0] == "triton-repo":
        return "triton-repo", Path(values[1])
    raise argparse.ArgumentTypeError(f"--format must be 'onnx' or 'triton-repo OUT'; got {' '.join(values)!r}")


def _budget(args: argparse.Namespace) -> float | None:
    """``--memory-budget`` in bytes (``None`` = no limit); a negative or non-finite value is refused."""
    from edgesentry.errors import ConfigError
    from edgesentry.export.graph import DEFAULT_MEMORY_BUDGET

    if args.memory_budget is None:
        return DEFAULT_MEMORY_BUDGET
    if not math.isfinite(args.memory_budget) or args.memory_budget < 0:
        raise ConfigError(f"--memory-budget must be a number of GB >= 0 (0 = no limit); got {args.memory_budget}")
    return args.memory_budget * 1e9 or None


def check_exported(bundle_path: Path) -> None:
    """Open the bundle again (every checksum) and compare each graph's ONNX metadata with meta.json."""
    from edgesentry.bundle import Bundle, mirrored_metadata, read_onnx_metadata
    from edgesentry.errors import BundleError

    bundle = Bundle.open(bundle_path)
    wanted = mirrored_metadata(bundle.meta)
    for name, graph in bundle.meta.get("graphs", {}).items():
        props = read_onnx_metadata(bundle.path / graph["file"])
        stale = sorted(k for k, v in wanted.items() if props.get(k) != v)
        if stale:
            raise BundleError(f"graph {name!r}: ONNX metadata {stale} differ from meta.json")
    print(f"checked: {bundle.path} opens (every sha256), ONNX metadata mirror meta.json")


def run(args: argparse.Namespace) -> int:
    from edgesentry.bundle import Bundle
    from edgesentry.errors import ConfigError
    from edgesentry.export.lint import lint_model
    from edgesentry.export.onnx import DEFAULT_OPSET, export_bundle, family_exporter

    try:
        fmt, output = _format(args.format)
    except argparse.ArgumentTypeError as exc:
        raise ConfigError(str(exc)) from None
    policy = trust_policy(args)
    bundle = Bundle.open(args.bundle, trust=policy)
    if fmt == "triton-repo":
        from edgesentry.serving import check_repository, write_model_repository
        from edgesentry.signing import is_signed

        if not bundle.meta.get("graphs"):
            export_bundle(bundle, opset=args.opset or DEFAULT_OPSET, check_parity=not args.no_parity,
                          simplify=not args.no_simplify, memory_budget=_budget(args))
            bundle = Bundle.open(bundle.path)
        repo = write_model_repository(bundle, output, variant=args.triton_variant, max_batch=args.max_batch,
                                      gallery=args.gallery, trust=policy)
        print(f"wrote Triton model repository {repo}")
        if bundle.signature is not None:
            print(f"  signed bundle ({bundle.signature.line()}): its python models verify it at start")
        elif is_signed(bundle.path):
            print("  signed bundle, not verified here (no --trusted-keys): its python models verify it at start with "
                  "the server's EDGESENTRY_TRUSTED_KEYS")
        for cfg in sorted(Path(repo).glob("*/config.pbtxt")):
            print(f"  {cfg.parent.name}")
        example = family_exporter(bundle.family).serving_example(bundle)
        check = check_repository(repo, bundle, example)
        shape = "x".join(str(d) for d in getattr(example, "shape", ())) or "features"
        print(f"checked: the repository's pre -> graphs (ONNX Runtime) -> post pipeline on a raw {shape} input "
              f"equals Detector.predict ({check.line()})")
        return 0
    reports = export_bundle(
        bundle, opset=args.opset or DEFAULT_OPSET, check_parity=not args.no_parity, simplify=not args.no_simplify,
        memory_budget=_budget(args),
    )
    failed = False
    for name, report in reports.items():
        gmeta = bundle.meta["graphs"][name]
        print(f"exported {name} -> {bundle.path / gmeta['file']}")
        if report is not None:
            print(report.table())
        lint = lint_model(bundle.path / gmeta["file"], name=name)
        print(lint.table())
        failed |= not lint.passed
    if failed:
        print("TensorRT lint found blockers; ONNX Runtime can still run the graphs")
    check_exported(bundle.path)
    return 0
