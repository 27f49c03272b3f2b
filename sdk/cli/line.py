"""``edgesentry line check|run LINE_FILE``: validate or run a production line (docs/line.md).

``check`` validates the file against the published schema and checks every reference, bundle
and output path: one line naming the key and its line on the first problem, exit code 1.
``run`` then starts the line: cameras, shared detectors, triggers, the OPC UA server, webhooks,
MQTT and the audit log, until every camera ended or SIGINT/SIGTERM (first: drain and flush;
second: drop what is queued). Exit codes as ``watch``: 0 done, 1 user error, 3 every camera
lost, 4 records not delivered by a sink, 70 a runtime worker crashed.
"""

from __future__ import annotations

import argparse
import sys

from edgesentry.errors import ConfigError

HELP = "validate (check) or run (run) a production line file: cameras, stations, triggers, outputs"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="line_action", metavar="ACTION", required=True)
    check = sub.add_parser("check", help="validate a line file (schema, references, bundles, paths) and exit",
                           description="validate a line file (schema, references, bundles, paths) and exit")
    check.add_argument("line_file", metavar="LINE_FILE", help="the line file (.toml, .yaml or .yml)")
    run = sub.add_parser("run", help="run the line until its cameras end or SIGINT/SIGTERM",
                         description="run the line until its cameras end or SIGINT/SIGTERM")
    run.add_argument("line_file", metavar="LINE_FILE", help="the line file (.toml, .yaml or .yml)")
    run.add_argument("--quiet", action="store_true", help="no status line (default: one per status interval)")
    run.add_argument("--summary-json", action="store_true",
                     help="print the final summary as JSON on stdout (default: one line)")
    run.add_argument("--dashboard", nargs="?", const="127.0.0.1:8080", metavar="HOST:PORT",
                     help="serve the live web dashboard (default address 127.0.0.1:8080; docs/dashboard.md)")
    run.add_argument("--dashboard-token-file", metavar="PATH",
                     help="NAME:SECRET lines allowing dashboard actions (default: $EDGESENTRY_DASHBOARD_TOKEN; "
                          "without either the dashboard is read-only)")


def run(args: argparse.Namespace) -> int:
    from edgesentry.line import load_line_file

    cfg = load_line_file(args.line_file)
    if args.line_action == "check":
        detectors = ", ".join(f"{n} ({'triton ' + d.triton['url'] if d.triton else d.bundle})"
                              for n, d in cfg.detectors.items())
        print(f"{cfg.path}: line {cfg.name!r}: {len(cfg.cameras)} cameras, {len(cfg.stations)} stations, "
              f"{len(cfg.triggers)} triggers; detectors: {detectors}; outputs: {', '.join(sorted(cfg.outputs)) or '-'}")
        return 0
    from edgesentry.line.runtime import LineRuntime, status_line
    from edgesentry.stream.sinks import dumps

    runtime = LineRuntime(cfg, status=None if args.quiet else sys.stderr)
    dashboard = None
    if args.dashboard is not None:
        from edgesentry.line.dashboard import Dashboard, parse_address, read_tokens

        host, port = parse_address(args.dashboard)
        try:
            dashboard = Dashboard(runtime, host, port, tokens=read_tokens(args.dashboard_token_file)).start()
        except OSError as exc:
            runtime.stop(drain=False)
            raise ConfigError(f"--dashboard {args.dashboard}: cannot listen: {exc.strerror or exc}") from None
        print(f"dashboard: {dashboard.url}", file=sys.stderr, flush=True)
    try:
        summary = runtime.run()
    finally:
        if dashboard is not None:
            dashboard.linger()
            dashboard.close()
    print(dumps(summary) if args.summary_json else f"{summary['exit_reason']}: {status_line(summary)}; "
                                                  f"exit code {summary['exit_code']}")
    return int(summary["exit_code"])
