"""``edgesentry export BUNDLE``: ONNX graphs (or a Triton model repository) from a bundle.

Each graph is exported with the bundle metadata in ``metadata_props``, checked with
``onnx.checker``, optionally simplified with onnxslim, compared with torch (the parity table
is printed) and linted for TensorRT. ``--format triton-repo OUT`` writes a Triton Inference
Server model repository (see ``edgesentry.serving``).
"""

from __future__ import annotations

import argparse
from pathlib import Path

HELP = "export a bundle's graphs to ONNX (checked, parity-tested, TensorRT-linted) or a Triton model repository"
LONG_RUNNING = True


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
    parser.add_argument(
        "--triton-variant",
        choices=["onnxruntime", "python", "tensorrt"],
        default="onnxruntime",
        help="triton-repo graph model: onnxruntime_onnx (default), python backend with ONNX Runtime "
        "inside (runs on CPU-only servers), or tensorrt_plan (needs `edgesentry build` first)",
    )
    parser.add_argument("--max-batch", type=int, default=8, help="triton-repo: max_batch_size / dynamic batching")


def _format(values: list[str]) -> tuple[str, Path | None]:
    if values == ["onnx"]:
        return "onnx", None
    if len(values) == 2 and values[0] == "triton-repo":
        return "triton-repo", Path(values[1])
    raise argparse.ArgumentTypeError(f"--format must be 'onnx' or 'triton-repo OUT'; got {' '.join(values)!r}")


def run(args: argparse.Namespace) -> int:
    from edgesentry.bundle import Bundle
    from edgesentry.errors import ConfigError
    from edgesentry.export.lint import lint_model
    from edgesentry.export.onnx import DEFAULT_OPSET, export_bundle

    try:
        fmt, output = _format(args.format)
    except argparse.ArgumentTypeError as exc:
        raise ConfigError(str(exc)) from None
    bundle = Bundle.open(args.bundle)
    if fmt == "triton-repo":
        from edgesentry.serving import write_model_repository

        if not bundle.meta.get("graphs"):
            export_bundle(
                bundle,
                opset=args.opset or DEFAULT_OPSET,
                check_parity=not args.no_parity,
                simplify=not args.no_simplify,
            )
        repo = write_model_repository(bundle, output, variant=args.triton_variant, max_batch=args.max_batch)
        print(f"wrote Triton model repository {repo}")
        for cfg in sorted(Path(repo).glob("*/config.pbtxt")):
            print(f"  {cfg.parent.name}")
        return 0
    reports = export_bundle(
        bundle, opset=args.opset or DEFAULT_OPSET, check_parity=not args.no_parity, simplify=not args.no_simplify
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
    return 0
