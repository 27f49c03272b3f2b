"""Live status: a one-line status report and a Prometheus text endpoint on loopback."""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import Any, TextIO

from edgesentry.errors import ConfigError
from edgesentry.stream.accounting import Snapshot


def status_line(snap: Snapshot, queue_depth: int, queue_size: int) -> str:
    """``fps 24.1 | p50 38 ms p99 91 ms | queue 3/8 | produced 120 processed 110 failed 2 dropped 5 (queue_full 5)``."""
    lat = "p50 - p99 -" if snap.latency_p50_ms is None else \
        f"p50 {snap.latency_p50_ms:.1f} ms p99 {snap.latency_p99_ms:.1f} ms"
    drops = ""
    if snap.dropped_by_reason:
        drops = " (" + ", ".join(f"{k} {v}" for k, v in sorted(snap.dropped_by_reason.items())) + ")"
    extra = f" | reconnects {snap.reconnects}" if snap.reconnects else ""
    return (f"fps {snap.fps:.1f} | {lat} | queue {queue_depth}/{queue_size} | produced {snap.produced} "
            f"processed {snap.processed} failed {snap.failed} dropped {snap.dropped}{drops}{extra}")


class StatusPrinter:
    """Prints status lines: rewritten in place on a terminal, one per interval otherwise."""

    def __init__(self, stream: TextIO | None = None):
        self.stream = stream or sys.stderr
        self.tty = bool(getattr(self.stream, "isatty", lambda: False)())
        self._width = 0

    def show(self, line: str) -> None:
        if self.tty:
            pad = max(0, self._width - len(line))
            self.stream.write("\r" + line + " " * pad)
            self._width = len(line)
        else:
            self.stream.write(line + "\n")
        self.stream.flush()

    def finish(self) -> None:
        if self.tty and self._width:
            self.stream.write("\n")
            self.stream.flush()


class MetricsServer:
    """Prometheus text endpoint (``/metrics``) on 127.0.0.1, fed from consistent snapshots.

    A private registry (not the process-global one) so several streams in one process do
    not collide; ``port=0`` picks a free port (see ``.port``).
    """

    def __init__(self, port: int, collect: Callable[[], tuple[Snapshot, dict[str, Any]]],
                 host: str = "127.0.0.1"):
        try:
            from prometheus_client import CollectorRegistry, start_http_server
        except ImportError as exc:
            raise ConfigError("--metrics-port needs prometheus-client: "
                              f"pip install 'edgesentry[stream]'; {exc}") from None
        self._collect = collect
        self.registry = CollectorRegistry(auto_describe=False)
        self.registry.register(self)
        try:
            self._server, self._thread = start_http_server(port, addr=host, registry=self.registry)
        except OSError as exc:
            raise ConfigError(f"cannot serve metrics on {host}:{port}: {exc}") from None
        self.host = host
        self.port = int(self._server.server_port)

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}/metrics"

    def collect(self):  # prometheus_client collector protocol
        from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

        snap, extra = self._collect()
        p = "edgesentry_stream_"
        for name, value, doc in (("frames_produced", snap.produced, "frames read from the source"),
                                 ("frames_processed", snap.processed, "frames scored and delivered to the sinks"),
                                 ("frames_failed", snap.failed, "frames that could not be decoded or scored"),
                                 ("reconnects", snap.reconnects, "source reopen attempts"),
                                 ("batches", snap.batches, "detector batches run")):
            yield CounterMetricFamily(p + name, doc, value=value)
        dropped = CounterMetricFamily(p + "frames_dropped", "frames discarded under overload, by reason",
                                      labels=["reason"])
        for reason in sorted(set(snap.dropped_by_reason) | {"queue_full"}):
            dropped.add_metric([reason], snap.dropped_by_reason.get(reason, 0))
        yield dropped
        sink_errors = CounterMetricFamily(p + "sink_errors", "records a sink failed to deliver", labels=["sink"])
        for sink, n in sorted(snap.sink_errors.items()):
            sink_errors.add_metric([sink], n)
        yield sink_errors
        yield GaugeMetricFamily(p + "frames_pending", "frames inside the runtime (queued or in progress)",
                                value=snap.pending)
        depth = GaugeMetricFamily(p + "queue_depth", "frames waiting in a queue", labels=["queue"])
        for queue, n in extra["queues"].items():
            depth.add_metric([queue], n)
        yield depth
        yield GaugeMetricFamily(p + "fps", "processed frames per second (recent window)", value=snap.fps)
        lat = GaugeMetricFamily(p + "latency_seconds", "capture-to-sink latency quantile (recent frames)",
                                labels=["quantile"])
        for q, ms in (("0.5", snap.latency_p50_ms), ("0.99", snap.latency_p99_ms)):
            if ms is not None:
                lat.add_metric([q], ms / 1e3)
        yield lat

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()
