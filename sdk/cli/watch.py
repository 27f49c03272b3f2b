"""``edgesentry watch BUNDLE SOURCE``: score a live or recorded stream of images continuously.

Every frame is accounted for (produced = processed + dropped + failed); see docs/stream.md.
Exit codes: 0 the source ended or SIGINT/SIGTERM stopped it after a full drain; 1 a user
error (bad bundle, option); 3 the source could not be (re)opened within ``--max-retries``;
4 some records were not delivered by a sink, or the summary could not be written (see the
summary's ``sink_errors``); 70 a runtime worker crashed (see ``worker_crashes``).

Every option, output path and the MQTT broker's answer are checked before the model is loaded
and before the signal handlers are installed: a bad one is one line and exit code 1.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from edgesentry.cli._args import add_backend_args, add_kernel_args, add_threshold_args
from edgesentry.errors import ConfigError

HELP = "watch a camera, video, RTSP/HTTP stream, GStreamer pipeline or hot folder with a detector"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("bundle", help="bundle directory (edgesentry convert) or a weight-free family name")
    parser.add_argument("source", help="camera index, video file, rtsp:// or http:// URL, GStreamer pipeline "
                                       "(contains '!'), a folder of images (hot folder), an industrial camera: "
                                       "aravis:ID or pylon:ID, optionally ?exposure_us=..&trigger=software (see "
                                       "docs/stream.md); for a line-scan bundle a cube file (.hdr, .mat, .npy) "
                                       "replayed line by line")
    out = parser.add_argument_group("outputs (several at once)")
    out.add_argument("--jsonl", default=None, metavar="PATH", help="append one JSON line per frame")
    out.add_argument("--summary", default=None, metavar="PATH",
                     help="JSON summary with the counters produced/processed/dropped/failed (rewritten each second)")
    out.add_argument("--overlays", default=None, metavar="DIR", help="PNG overlays of frames above the threshold")
    out.add_argument("--overlay-threshold", type=float, default=None,
                     help="score for --overlays (default: the detector's label)")
    out.add_argument("--mqtt", default=None, metavar="HOST:PORT/TOPIC", help="publish each record with QoS 1")
    out.add_argument("--mqtt-user", default=None, metavar="NAME",
                     help="MQTT user name (default: $EDGESENTRY_MQTT_USERNAME)")
    out.add_argument("--mqtt-password-file", default=None, metavar="PATH",
                     help="file whose first line is the MQTT password (default: $EDGESENTRY_MQTT_PASSWORD_FILE, "
                          "or the password itself in $EDGESENTRY_MQTT_PASSWORD; never on the command line)")
    out.add_argument("--mqtt-tls", action="store_true",
                     help="connect with TLS, verifying the broker with the system's CAs (default: off, or "
                          "$EDGESENTRY_MQTT_TLS=1)")
    out.add_argument("--mqtt-cafile", default=None, metavar="PATH",
                     help="TLS with this CA bundle to verify the broker (implies --mqtt-tls)")
    out.add_argument("--mqtt-certfile", default=None, metavar="PATH",
                     help="TLS client certificate (with --mqtt-keyfile)")
    out.add_argument("--mqtt-keyfile", default=None, metavar="PATH", help="TLS client key (with --mqtt-certfile)")
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
    run.add_argument("--settle", type=float, default=0.5, metavar="S",
                     help="hot folder: read a file once its size and mtime have not changed for S seconds; 0 for "
                          "producers that write under a .tmp/.part/dot name and rename (default: 0.5)")
    run.add_argument("--max-restarts", type=int, default=3, metavar="N",
                     help="restarts of a crashed runtime worker before the stream stops (default: 3)")
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
    return first, longest


def _check(args: argparse.Namespace) -> tuple[float, float]:
    """Every option, checked before anything is opened or loaded (errors name the flags)."""
    from edgesentry.io.paths import check_output_file
    from edgesentry.stream import check_options

    backoff = _backoff(args.backoff)
    check_options(flags=True, batch_size=args.batch, latency_budget_ms=args.latency_budget, queue_size=args.queue_size,
                  max_frames=args.max_frames, max_retries=args.max_retries, backoff_s=backoff,
                  metrics_port=args.metrics_port, status_interval_s=args.status_interval,
                  idle_timeout=args.idle_timeout, settle_s=args.settle, max_restarts=args.max_restarts,
                  overlay_threshold=args.overlay_threshold, torch_threads=args.torch_threads)
    if args.summary is not None:
        check_output_file(args.summary, flag="--summary")
    if args.mqtt is None and any((args.mqtt_user, args.mqtt_password_file, args.mqtt_tls, args.mqtt_cafile,
                                  args.mqtt_certfile, args.mqtt_keyfile)):
        raise ConfigError("--mqtt-user, --mqtt-password-file and the TLS flags need --mqtt HOST[:PORT]/TOPIC")
    return backoff


def _sinks(args: argparse.Namespace) -> list:
    from edgesentry.stream import MqttCredentials, build_sinks

    credentials = None
    if args.mqtt is not None:
        credentials = MqttCredentials.from_env(
            username=args.mqtt_user, password_file=args.mqtt_password_file, tls=args.mqtt_tls,
            ca_file=args.mqtt_cafile, cert_file=args.mqtt_certfile, key_file=args.mqtt_keyfile)
    return build_sinks(jsonl=args.jsonl, overlays=args.overlays, overlay_threshold=args.overlay_threshold,
                       mqtt=args.mqtt, mqtt_credentials=credentials, flags=True)


def _load(args: argparse.Namespace):
    from edgesentry.api import load

    options = {"kernels": args.kernels}
    if args.backend != "auto":
        options["backend"] = args.backend
    if args.threshold is not None:
        options["threshold"] = args.threshold
    return load(args.bundle, **options)


def _line_scan_source(args: argparse.Namespace, detector: Any, source: Any) -> Any:
    """A line-scan bundle reads a cube line by line (``--line-rate``); other bundles keep ``source``."""
    from edgesentry.detectors.linescan import LineScanDetector
    from edgesentry.stream import open_source
    from edgesentry.stream.linescan import open_line_source

    if isinstance(detector, LineScanDetector):
        return open_line_source(args.source, line_rate=args.line_rate)
    if args.line_rate is not None:
        raise ConfigError("--line-rate needs a line-scan bundle (edgesentry convert rx --linescan ...)")
    return source if source is not None else open_source(args.source, once=args.once,
                                                         idle_timeout=args.idle_timeout, settle_s=args.settle)


def run(args: argparse.Namespace) -> int:
    from edgesentry.stream import open_source, stream
    from edgesentry.stream.cameras import CameraSource

    backoff = _check(args)
    if args.torch_threads is not None:
        try:
            import torch
        except ImportError:
            raise ConfigError("--torch-threads needs torch (edgesentry[torch])") from None
        torch.set_num_threads(args.torch_threads)
    from edgesentry.io.files import CUBE_SUFFIXES

    # a cube file is a line-scan source: which kind is known once the bundle says line-scan
    cube = Path(args.source).suffix.lower() in CUBE_SUFFIXES
    source = None if cube else open_source(int(args.source) if args.source.isdigit() else args.source,
                                           once=args.once, idle_timeout=args.idle_timeout, settle_s=args.settle)
    if isinstance(source, CameraSource):
        source.open()  # a bad camera id or setting, or a busy camera: one line now, not retries later
    try:
        sinks = _sinks(args)  # opened (and checked) before the model loads and before signals are handled
    except BaseException:
        if source is not None:
            source.close()
        raise
    try:
        detector = _load(args)
        source = _line_scan_source(args, detector, source)
    except BaseException:
        for sink in sinks:
            sink.close()
        if source is not None:
            source.close()
        raise
    summary = stream(
        detector, source, sinks=sinks, summary=args.summary, metrics_port=args.metrics_port,
        batch_size=args.batch, latency_budget_ms=args.latency_budget, policy=args.policy,
        queue_size=args.queue_size, max_frames=args.max_frames, max_retries=args.max_retries,
        backoff_s=backoff, status=None if args.quiet else sys.stderr,
        status_interval_s=args.status_interval, max_restarts=args.max_restarts,
    )
    print(summary.line())
    return summary.exit_code
