"""``edgesentry watch BUNDLE SOURCE``: score a live or recorded stream of images continuously.

Every frame is accounted for (produced = processed + dropped + failed); see docs/stream.md.
Exit codes: 0 the source ended or SIGINT/SIGTERM stopped it after a full drain; 1 a user
error (bad bundle, option); 3 the source could not be (re)opened within ``--max-retries``;
4 some records were not delivered by a sink (see the summary's ``sink_errors``).
"""

from __future__ import annotations

import argparse
import sys

from edgesentry.cli._args import add_backend_args, add_kernel_args, add_threshold_args
from edgesentry.errors import ConfigError

HELP = "watch a camera, video, RTSP/HTTP stream, GStreamer pipeline or hot folder with a detector"
LONG_RUNNING = True


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("bundle", help="bundle directory (edgesentry convert) or a weight-free family name")
    parser.add_argument("source", help="camera index, video file, rtsp:// or http:// URL, GStreamer pipeline "
                                       "(contains '!'), or a folder of images (hot folder); for a line-scan "
                                       "bundle a cube file (.hdr, .mat, .npy) replayed line by line")
    out = parser.add_argument_group("outputs (several at once)")
    out.add_argument("--jsonl", default=None, metavar="PATH", help="append one JSON line per frame")
    out.add_argument("--summary", default=None, metavar="PATH",
                     help="JSON summary with the counters produced/processed/dropped/failed (rewritten each second)")
    out.add_argument("--overlays", default=None, metavar="DIR", help="PNG overlays of frames above the threshold")
    out.add_argument("--overlay-threshold", type=float, default=None,
                     help="score for --overlays (default: the detector's label)")
    out.add_argument("--mqtt", default=None, metavar="HOST:PORT/TOPIC", help="publish each record with QoS 1")
    out.add_argument("--metrics-port", type=int, default=None, metavar="N",
                     help="Prometheus text endpoint on 127.0.0.1:N (0 = any free port)")
    out.add_argument("--quiet", action="store_true", help="no status line")
    out.add_argument("--status-interval", type=float, default=1.0, help="seconds between status lines (default: 1)")
    run = parser.add_argument_group("runtime")
    run.add_argument("--batch", type=int, default=1, help="most frames per detector call (default: 1)")
    run.add_argument("--latency-budget", type=float, default=20.0, metavar="MS",
                     help="longest a frame waits for its batch to fill, from capture (default: 20 ms)")
    run.add_argument("--policy", choices=["block", "drop-oldest"], default=None,
                     help="when the detector falls behind: block the reader (default for files and folders) "
                          "or drop the oldest queued frame (default for cameras and network streams)")
    run.add_argument("--queue-size", type=int, default=8, help="capture queue capacity in frames (default: 8)")
    run.add_argument("--max-frames", type=int, default=None, help="stop after this many frames")
    run.add_argument("--max-retries", type=int, default=5, help="reconnect attempts in a row (default: 5)")
    run.add_argument("--backoff", default="0.5,8", metavar="FIRST,MAX",
                     help="reconnect delay in seconds, doubling from FIRST up to MAX (default: 0.5,8)")
    run.add_argument("--line-rate", type=float, default=None, metavar="HZ",
                     help="line-scan bundles: replay the cube at HZ lines per second, a simulated push-broom "
                          "camera (default: as fast as the detector takes them)")
    run.add_argument("--once", action="store_true", help="hot folder: read the files present now, then end")
    run.add_argument("--idle-timeout", type=float, default=None, metavar="S",
                     help="hot folder: end after S seconds without a new file")
    run.add_argument("--torch-threads", type=int, default=None, metavar="N",
                     help="torch intra-op threads for the detector (default: torch's; 1 is often fastest on small "
                          "CPUs, where the runtime's own threads compete with torch's OpenMP pool)")
    add_backend_args(parser)
    add_kernel_args(parser)
    add_threshold_args(parser)


def _backoff(text: str) -> tuple[float, float]:
    try:
        first, longest = (float(v) for v in text.split(","))
    except ValueError:
        raise ConfigError(f"--backoff must be 'FIRST,MAX' seconds; got {text!r}") from None
    if not 0 <= first <= longest:
        raise ConfigError(f"--backoff needs 0 <= FIRST <= MAX; got {text!r}")
    return first, longest


def _load(args: argparse.Namespace):
    from edgesentry.api import load

    options = {"kernels": args.kernels}
    if args.backend != "auto":
        options["backend"] = args.backend
    if args.threshold is not None:
        options["threshold"] = args.threshold
    return load(args.bundle, **options)


def run(args: argparse.Namespace) -> int:
    from edgesentry.detectors.linescan import LineScanDetector
    from edgesentry.stream import stream
    from edgesentry.stream.linescan import open_line_source

    if args.torch_threads is not None:
        if args.torch_threads < 1:
            raise ConfigError(f"--torch-threads must be >= 1; got {args.torch_threads}")
        try:
            import torch
        except ImportError:
            raise ConfigError("--torch-threads needs torch (edgesentry[torch])") from None
        torch.set_num_threads(args.torch_threads)
    detector = _load(args)
    source = int(args.source) if args.source.isdigit() else args.source
    if isinstance(detector, LineScanDetector):
        source = open_line_source(args.source, line_rate=args.line_rate)
    elif args.line_rate is not None:
        raise ConfigError("--line-rate needs a line-scan bundle (edgesentry convert rx --linescan ...)")
    summary = stream(
        detector, source, jsonl=args.jsonl, summary=args.summary, overlays=args.overlays,
        overlay_threshold=args.overlay_threshold, mqtt=args.mqtt, metrics_port=args.metrics_port,
        batch_size=args.batch, latency_budget_ms=args.latency_budget, policy=args.policy,
        queue_size=args.queue_size, max_frames=args.max_frames, max_retries=args.max_retries,
        backoff_s=_backoff(args.backoff), status=None if args.quiet else sys.stderr,
        status_interval_s=args.status_interval, once=args.once, idle_timeout=args.idle_timeout,
    )
    print(summary.line())
    return summary.exit_code
