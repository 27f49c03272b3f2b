"""``edgesentry tune BUNDLE --calib SAMPLES... [--eval LABELLED...] [--gallery G.npz] [--max-drop D] ...``.

Every backend x precision this machine runs (ONNX Runtime and OpenVINO at fp32 / int8 / fp16, BF16
where the CPU has it, TensorRT on a GPU), timed side by side and compared with FP32 ONNX Runtime on
samples held aside from calibration; the fastest variant that passes every gate is kept, else a
float one, with the reason. The decision, the table, the machine and the library versions go into
``meta.json``; ``edgesentry.load(BUNDLE, precision="auto")`` follows it on this machine. The exit
code is 0 whenever a decision was made (also when it falls back to FP32), 1 on errors.
"""

from __future__ import annotations

import argparse
from pathlib import Path

HELP = "measure every backend x precision on this machine, gate accuracy and speed, keep the best in meta.json"
LONG_RUNNING = True


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("bundle", type=Path, help="bundle directory with exported graphs")
    parser.add_argument("--calib", nargs="+", required=True, metavar="SAMPLES",
                        help="normal inputs: the first half calibrates INT8, the second half is held aside to "
                        "measure accuracy")
    parser.add_argument("--eval", nargs="+", default=[], metavar="LABELLED", dest="eval_samples",
                        help="labelled inputs for the family metric: images under good/ vs defect folders (isstad), "
                        ".mat cubes with a 'map' (fers), .npz features with frame labels 'gt' (mavd), query clips or "
                        ".npy frame features in folders named by their class (mdmf)")
    parser.add_argument("--gallery", default=None, metavar="GALLERY.npz",
                        help="mdmf: the gallery (edgesentry enroll) the queries are classified against")
    parser.add_argument("--max-drop", type=float, default=0.01,
                        help="largest accepted drop of the family metric (with --eval), else of fidelity "
                        "max(1 - map r, 1 - score rho, 1 - label agreement) (default: 0.01)")
    parser.add_argument("--min-speedup", type=float, default=1.2,
                        help="speedup over FP32 ONNX Runtime a reduced variant must reach (default: 1.2)")
    parser.add_argument("--min-map-corr", type=float, default=0.999, help="anomaly-map Pearson r gate (default: 0.999)")
    parser.add_argument("--min-score-corr", type=float, default=0.99,
                        help="image-score Spearman rho gate (default: 0.99)")
    parser.add_argument("--batch", type=int, default=8, help="the batch timed besides batch 1 (default: 8)")
    parser.add_argument("--method", choices=["minmax", "entropy", "percentile"], default="minmax",
                        help="INT8 activation calibration (default: minmax)")
    parser.add_argument("--rounds", type=int, default=5, help="timing rounds, candidates alternating (default: 5)")
    parser.add_argument("--json", type=Path, default=None, metavar="PATH", help="write the whole report as JSON")


def run(args: argparse.Namespace) -> int:
    from edgesentry.bundle import Bundle
    from edgesentry.export.tune import Gates, tune_bundle, write_json

    bundle = Bundle.open(args.bundle)
    gates = Gates(max_drop=args.max_drop, min_speedup=args.min_speedup, min_map_corr=args.min_map_corr,
                  min_score_corr=args.min_score_corr)
    report = tune_bundle(bundle, args.calib, eval_samples=args.eval_samples, gates=gates, batch=args.batch,
                         method=args.method, rounds=args.rounds, gallery=args.gallery, progress=print)
    print(report.table())
    if args.json is not None:
        print(f"wrote {write_json(report, args.json)}")
    return 0
