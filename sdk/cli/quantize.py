"""``edgesentry quantize BUNDLE --precision int8|fp16 [--calib SAMPLES...] [--method ...]``.

INT8: static QDQ graphs (``<graph>.int8.onnx``: weights per-channel, activations per-tensor,
symmetric INT8; LayerNorm, Softmax, attention products and the heads kept float), calibrated on
``--calib`` samples that pass through the family's own preprocessing, one at a time. FP16:
``<graph>.fp16.onnx`` with LayerNorm, Softmax and reductions in FP32 (for GPU providers and
TensorRT). Each variant is checked, TensorRT-linted, loaded by ONNX Runtime and OpenVINO, and
listed and hashed in ``meta.json``. Python: ``edgesentry.export.quantize.quantize_bundle``.
"""

from __future__ import annotations

import argparse
from pathlib import Path

HELP = "add INT8 (QDQ) or FP16 graphs beside a bundle's FP32 ones (checked, linted, hashed)"
LONG_RUNNING = True


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("bundle", type=Path, help="bundle directory with exported graphs (`edgesentry export`)")
    parser.add_argument("--precision", choices=["int8", "fp16"], required=True, help="precision of the new graphs")
    parser.add_argument("--calib", nargs="+", default=[], metavar="SAMPLES",
                        help="int8: normal inputs the family reads (images, cubes, feature .npz; or .npz named "
                        "like the graph inputs), streamed one at a time")
    parser.add_argument("--method", choices=["minmax", "entropy", "percentile"], default="minmax",
                        help="activation range calibration (default: minmax)")
    parser.add_argument("--quantize-heads", action="store_true",
                        help="quantise the heads that feed the graph outputs too (default: kept float)")
    parser.add_argument("--quantize-attention", action="store_true",
                        help="quantise attention's activation x activation MatMuls too (default: kept float)")
    parser.add_argument("--gallery", default=None, metavar="GALLERY.npz",
                        help="mdmf: the gallery (edgesentry enroll) the calibration clips are classified against")
    parser.add_argument("--full-range-weights", action="store_true",
                        help="8-bit weights instead of the 7-bit range (only for targets with VNNI / AMX, ARM dot "
                        "products or GPUs: x86 without VNNI saturates)")


def run(args: argparse.Namespace) -> int:
    from edgesentry.bundle import Bundle
    from edgesentry.errors import ConfigError
    from edgesentry.export.quantize import quantize_bundle

    if args.precision == "fp16" and args.calib:
        raise ConfigError("--calib is for --precision int8; fp16 needs no calibration")
    bundle = Bundle.open(args.bundle)
    detector = None
    if args.gallery is not None:
        from edgesentry.api import load

        if bundle.family != "mdmf":
            raise ConfigError(f"--gallery is for mdmf bundles; this one is {bundle.family}")
        detector = load(bundle, backend="onnxruntime")
        detector.default_gallery = detector.load_gallery(args.gallery)
    reports = quantize_bundle(bundle, args.precision, args.calib, method=args.method,
                              keep_heads=not args.quantize_heads, quantize_attention=args.quantize_attention,
                              reduce_range=not args.full_range_weights, detector=detector, progress=print)
    for graph, report in reports.items():
        if report is None:
            continue
        quantized = ", ".join(f"{n} {op}" for op, n in sorted(report.quantized.items()))
        kinds: dict[str, int] = {}
        for why in report.kept_float.values():
            kinds[why.split(":")[0]] = kinds.get(why.split(":")[0], 0) + 1
        kept = ", ".join(f"{n} {k}" for k, n in sorted(kinds.items())) or "none"
        print(f"{graph}: quantised {quantized} ({report.method}, {report.samples} samples); kept float: {kept}, "
              "LayerNorm/Softmax/GELU/reductions")
    return 0
