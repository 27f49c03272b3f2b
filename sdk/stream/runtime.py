"""The stream runtime: capture -> inference -> output threads joined by bounded queues.

    capture thread          inference thread              output thread
    source.read() --[capture queue]--> det.predict_batch --[output queue]--> sinks
      policy: block | drop-oldest      micro-batch: <= batch_size,   JSONL, overlays, MQTT,
      reconnect with backoff           <= latency budget              callbacks; counters

Guarantees (tested in tests/stream):

- every frame that enters gets an index and leaves exactly once, as ``processed``,
  ``failed`` (decode or scoring error, recorded with the error) or ``dropped`` (with the
  reason); ``produced == processed + dropped + failed + pending`` in every snapshot and
  ``pending == 0`` when ``run`` returns;
- under ``block`` nothing is dropped: a slow detector or sink slows the reader down;
- the output queue always blocks: a scored result is never discarded;
- a source that fails is reopened with exponential backoff, at most ``max_retries`` times
  in a row, then the stream ends with exit code ``EXIT_SOURCE_LOST``;
- ``stop()`` (SIGINT/SIGTERM in the CLI) stops reading, drains both queues through the
  detector and the sinks, closes the sinks and writes the summary; a second ``stop`` (or
  ``stop(drain=False)``) drops what is still queued, counted under reason ``shutdown``;
- one input never ends the stream: an exception while reading, decoding or scoring a frame
  makes that frame a failed record and the stream goes on;
- the capture, inference and output loops run supervised (``supervisor.py``): a worker that
  crashes (an exception escaping its loop, even ``SystemExit``) has what it held failed with
  reason ``internal_error`` and is restarted, at most ``max_restarts`` times; then the stream
  stops, and every frame still inside is failed or dropped, so the identity holds on every
  exit path. Any crash makes the exit code ``EXIT_INTERNAL_ERROR``.
"""

from __future__ import annotations

import logging
import os
import sys
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, TextIO

from edgesentry.detector import Detector
from edgesentry.detectors.linescan import LineScanDetector
from edgesentry.errors import ConfigError
from edgesentry.io.paths import check_output_file
from edgesentry.stream.accounting import Accounting, Snapshot
from edgesentry.stream.cameras import open_any_source as open_source
from edgesentry.stream.capture import ReconnectingReader, count_lost
from edgesentry.stream.linescan import LineScorer, open_line_source
from edgesentry.stream.monitor import MetricsServer, StatusPrinter, status_line
from edgesentry.stream.options import check_options
from edgesentry.stream.queues import BoundedQueue, Closed, Frame
from edgesentry.stream.scoring import score_isolated
from edgesentry.stream.sinks import (
    CallbackSink,
    JsonlSink,
    MqttCredentials,
    MqttSink,
    OverlaySink,
    Sink,
    atomic_write_text,
    dumps,
    parse_mqtt_target,
)
from edgesentry.stream.sources import (
    DEFAULT_SETTLE_S,
    RawFrame,
    Source,
)
from edgesentry.stream.supervisor import InHand, describe_crash, supervise, wait_handling_signals

log = logging.getLogger("edgesentry.stream")

Policy = Literal["block", "drop-oldest"]
POLICIES = ("block", "drop-oldest")

EXIT_OK = 0
EXIT_SOURCE_LOST = 3  # the source could not be (re)opened within max_retries
EXIT_SINK_ERRORS = 4  # the stream ran, but some records were not delivered by every sink
EXIT_INTERNAL_ERROR = 70  # a runtime thread crashed (a bug: the log has the traceback)

#: the record reason of frames failed because a worker crashed
INTERNAL_ERROR = "internal_error"


@dataclass
class StreamSummary:
    """Final accounting of a stream (also written by ``--summary PATH``)."""

    source: str
    policy: str
    exit_code: int
    exit_reason: str  # end_of_stream | max_frames | stopped | source_lost | internal_error
    counters: Snapshot
    sinks: dict[str, Any] = field(default_factory=dict)
    batch_size: int = 1
    latency_budget_ms: float = 0.0
    detector: str = ""
    source_facts: dict[str, Any] = field(default_factory=dict)  # a camera's model, settings read back

    @property
    def produced(self) -> int:
        return self.counters.produced

    @property
    def processed(self) -> int:
        return self.counters.processed

    @property
    def dropped(self) -> int:
        return self.counters.dropped

    @property
    def failed(self) -> int:
        return self.counters.failed

    def to_dict(self) -> dict[str, Any]:
        c = self.counters
        out: dict[str, Any] = {
            "source": self.source, "policy": self.policy, "detector": self.detector,
            "exit_code": self.exit_code, "exit_reason": self.exit_reason,
            "produced": c.produced, "processed": c.processed, "dropped": c.dropped, "failed": c.failed,
            "pending": c.pending, "identity_holds": c.identity_holds and c.pending == 0,
            "dropped_by_reason": c.dropped_by_reason, "failed_by_reason": c.failed_by_reason,
            "reconnects": c.reconnects, "batches": c.batches, "batch_size": self.batch_size,
            "mean_batch": c.batched_frames / c.batches if c.batches else 0.0,
            "latency_budget_ms": self.latency_budget_ms, "elapsed_s": round(c.elapsed_s, 4),
            "fps_mean": c.processed / c.elapsed_s if c.elapsed_s > 0 else 0.0,
            "latency_ms": {"p50": c.latency_p50_ms, "p99": c.latency_p99_ms, "max": c.latency_max_ms},
            "sink_errors": c.sink_errors, "worker_crashes": c.worker_crashes, "sinks": self.sinks,
        }
        if self.source_facts:
            out["camera"] = self.source_facts
        return out

    def line(self) -> str:
        c = self.counters
        lat = ""
        if c.latency_p50_ms is not None:
            lat = f", latency p50 {c.latency_p50_ms:.1f} ms p99 {c.latency_p99_ms:.1f} ms"
        return (f"{self.exit_reason}: produced {c.produced} = processed {c.processed} + dropped {c.dropped} "
                f"+ failed {c.failed}; {c.processed / c.elapsed_s if c.elapsed_s else 0:.1f} frames/s{lat}; "
                f"exit code {self.exit_code}")


class Stream:
    """One detector watching one source. ``run()`` blocks; ``start()``/``stop()``/``join()`` don't.

    Args:
        detector: any ``Detector`` whose ``predict`` takes an (H, W, 3) uint8 RGB image.
        source: see ``open_source`` (camera index, file, URL, pipeline, folder, iterable, Source),
            or an industrial camera ``aravis:ID?settings`` / ``pylon:ID?settings``.
        sinks: ``Sink`` objects (``JsonlSink``, ``OverlaySink``, ``MqttSink``, ...).
        batch_size: most frames per ``predict_batch`` call.
        latency_budget_ms: longest a frame waits for its batch to fill (from capture).
        policy: ``block`` or ``drop-oldest``; default by source (live -> drop-oldest).
        queue_size: capacity of the capture queue (frames).
        max_frames: stop reading after this many frames.
        max_retries / backoff_s: reconnect attempts in a row and (first, longest) delay.
        summary_path: JSON summary, rewritten atomically every status interval and at the end.
        metrics_port: serve Prometheus metrics on 127.0.0.1:PORT (0 = any free port).
        status: where to print status lines (``None`` = no status), every ``status_interval_s``.
        once / idle_timeout / settle_s: hot folders (see ``FolderSource``).
        max_restarts: restarts of a crashed worker loop before the stream stops.
    """

    def __init__(self, detector: Detector, source: Any, *, sinks: Sequence[Sink] = (), batch_size: int = 1,
                 latency_budget_ms: float = 20.0, policy: Policy | None = None, queue_size: int = 8,
                 max_frames: int | None = None, max_retries: int = 5, backoff_s: tuple[float, float] = (0.5, 8.0),
                 summary_path: str | os.PathLike | None = None, metrics_port: int | None = None,
                 status: TextIO | None = None, status_interval_s: float = 1.0, once: bool = False,
                 idle_timeout: float | None = None, settle_s: float = DEFAULT_SETTLE_S, max_restarts: int = 3):
        if not isinstance(detector, Detector):
            raise ConfigError(f"stream needs an edgesentry Detector; got {type(detector).__name__}")
        check_options(batch_size=batch_size, latency_budget_ms=latency_budget_ms, queue_size=queue_size,
                      max_frames=max_frames, max_retries=max_retries, backoff_s=backoff_s, metrics_port=metrics_port,
                      status_interval_s=status_interval_s, idle_timeout=idle_timeout, settle_s=settle_s,
                      max_restarts=max_restarts)
        self.detector = detector
        # a line-scan detector reads push-broom lines (a cube replayed, a camera callback) and
        # delivers each line when its look-ahead is complete
        self._lines = LineScorer(detector) if isinstance(detector, LineScanDetector) else None
        self.source: Source = (open_line_source(source) if self._lines is not None
                               else open_source(source, once=once, idle_timeout=idle_timeout, settle_s=settle_s))
        if policy is None:
            policy = "drop-oldest" if self.source.live else "block"
        if policy not in POLICIES:
            raise ConfigError(f"policy must be one of {list(POLICIES)}; got {policy!r}")
        self.policy: Policy = policy
        # Overlays annotate the record with their path, so they run before the other sinks.
        self.sinks = sorted(sinks, key=lambda s: not isinstance(s, OverlaySink))
        self.batch_size = batch_size
        self.budget_s = latency_budget_ms / 1e3
        self.max_frames = max_frames
        self.max_retries = max_retries
        self.backoff_s = backoff_s
        self.summary_path = check_output_file(summary_path, flag="summary_path") if summary_path else None
        self.status_interval_s = status_interval_s
        self._printer = StatusPrinter(status) if status is not None else None
        self._status = status
        self.acc = Accounting()
        self.capture_q = BoundedQueue(queue_size)
        self.output_q = BoundedQueue(max(queue_size, 2 * batch_size))
        self._stop = threading.Event()
        self._abort = threading.Event()
        self._finished = threading.Event()
        self._exit_reason = "end_of_stream"
        self._threads: list[threading.Thread] = []
        self._summary: StreamSummary | None = None
        self._metrics_port = metrics_port
        self.metrics: MetricsServer | None = None
        self.stop_grace_s = 5.0
        self._started = False
        self.max_restarts = max_restarts
        self._held = {name: InHand() for name in ("capture", "inference", "output")}
        self._late: list[tuple[Frame, Any, str | None]] = []  # results no queue will take any more
        self._late_lock = threading.Lock()
        self._output_alive = True
        self._capture_abandoned = False  # stuck in read() past stop_grace_s: not waited for again
        self._reader = ReconnectingReader(self.source, stop=self._stop, max_retries=max_retries,
                                          backoff_s=backoff_s, on_reconnect=self.acc.count_reconnect)

    # ------------------------------------------------------------------------ control
    def start(self) -> Stream:
        if self._started:
            raise ConfigError("this Stream was already started; make a new one")
        self._started = True
        self.acc.start_clock()
        if self._metrics_port is not None:
            try:
                self.metrics = MetricsServer(self._metrics_port,
                                             lambda: (self.acc.snapshot(), {"queues": self._queue_depths()}))
            except BaseException:
                for sink in self.sinks:  # nothing ran: release the files and connections
                    sink.close()
                raise
            # the port actually bound (port 0 picks one): said where the user reads, even when quiet
            print(f"metrics: {self.metrics.url}", file=self._status or sys.stderr, flush=True)
        for name, loop in (("capture", self._capture_loop), ("inference", self._inference_loop),
                           ("output", self._output_loop)):
            target = supervise(name, loop, max_restarts=self.max_restarts, on_crash=self._on_crash,
                               on_exit=self._on_exit)
            self._threads.append(threading.Thread(target=target, name=f"edgesentry-stream-{name}", daemon=True))
        self._threads.append(threading.Thread(target=self._status_loop, name="edgesentry-stream-status", daemon=True))
        for thread in self._threads:
            thread.start()
        return self

    def stop(self, drain: bool = True) -> None:
        """Stop reading; with ``drain`` finish every queued frame, else drop them (``shutdown``).

        Safe to call from any thread or a signal handler. A source stuck inside ``read`` (a
        camera driver that never returns) is given ``stop_grace_s``; then the capture queue
        is closed without it, so the queued frames still drain and the summary is written.
        """
        if self._stop.is_set() or not drain:
            self._abort_queued()
        if self._exit_reason == "end_of_stream":
            self._exit_reason = "stopped"
        first = not self._stop.is_set()
        self._stop.set()
        if first and self._threads:
            timer = threading.Timer(self.stop_grace_s, self._unstick_capture)
            timer.daemon = True
            timer.start()

    def _unstick_capture(self) -> None:
        if self._threads and self._threads[0].is_alive():
            log.warning("source %s did not return from read() within %.1fs of stop; finishing without it",
                        self.source.name, self.stop_grace_s)
            self._capture_abandoned = True
            self.capture_q.close()  # a late frame from the stuck reader is then counted as dropped

    def join(self, timeout: float | None = None) -> StreamSummary | None:
        """Wait for the stream to end and return its summary (``None`` on timeout)."""
        if not self._finished.wait(timeout):
            return None
        return self._summary

    def run(self, *, handle_signals: bool = True) -> StreamSummary:
        """Run to the end. In the main thread SIGINT/SIGTERM stop (first: drain; second: drop)."""
        self.start()
        wait_handling_signals(self._finished, self.stop, handle_signals=handle_signals)
        assert self._summary is not None
        return self._summary

    def snapshot(self) -> Snapshot:
        return self.acc.snapshot()

    def _queue_depths(self) -> dict[str, int]:
        return {"capture": len(self.capture_q), "output": len(self.output_q)}

    def _abort_queued(self) -> None:
        self._abort.set()
        for frame in self.capture_q.abort():
            self.acc.drop(frame, "shutdown")

    # -------------------------------------------------------------------- supervision
    def _on_crash(self, worker: str, exc: BaseException, restarting: bool) -> None:
        """A worker loop crashed: count it, fail what it held, stop the stream if it gave up."""
        self.acc.count_crash(worker)
        error = f"{INTERNAL_ERROR}: {worker} worker crashed: {describe_crash(exc)}"
        held = self._held[worker].release()
        if worker == "output":
            # the first held result is the one whose delivery crashed: it fails; the rest are
            # delivered later as they are
            held = [item for item in held if self.acc.is_outstanding(item[0].index)]
            self._emit_late([(frame, None, error) for frame, _, _ in held[:1]] + held[1:])
        else:
            self._emit([(frame, None, error) for frame in held if isinstance(frame, Frame)])
        if worker == "inference" and self._lines is not None:
            self._lines.reset()  # its waiting lines just failed: the scan starts again
        if restarting:
            return
        self._exit_reason = INTERNAL_ERROR
        self.stop()
        if worker == "inference":  # nobody will score what is queued: fail it now
            self._emit([(frame, None, error) for frame in self.capture_q.abort()])
        elif worker == "output":
            self._output_alive = False
            self._emit_late(self.output_q.abort())

    def _on_exit(self, worker: str, gave_up: bool) -> None:
        if worker == "capture":
            self.capture_q.close()
        elif worker == "inference":
            self.output_q.close()

    def _emit(self, items: list[tuple[Frame, Any, str | None]]) -> None:
        """Hand results to the output worker; if it is gone, keep them for the final delivery."""
        for item in items:
            try:
                if not self._output_alive:
                    raise Closed("output worker gone")
                self.output_q.put(item)
            except Closed:
                self._emit_late([item])

    def _emit_late(self, items: list[tuple[Frame, Any, str | None]]) -> None:
        with self._late_lock:
            self._late.extend(items)

    def _take_late(self) -> list[tuple[Frame, Any, str | None]]:
        with self._late_lock:
            items, self._late = self._late, []
            return items

    # ------------------------------------------------------------------------ capture
    def _capture_loop(self) -> None:
        reader = self._reader
        drop_oldest = self.policy == "drop-oldest"
        held = self._held["capture"]
        try:
            while not self._stop.is_set():
                if self.max_frames is not None and self.acc.produced >= self.max_frames:
                    self._exit_reason = "max_frames"
                    break
                raw = reader.next()
                if raw is None:
                    if reader.lost:
                        self._exit_reason = "source_lost"
                    break
                count_lost(self.acc, raw)
                frame = self._make_frame(raw)
                held.take([frame])
                try:
                    self.capture_q.put(frame, drop_oldest=drop_oldest,
                                       on_evict=lambda old: self.acc.drop(old, "queue_full"))
                except Closed:
                    self.acc.drop(frame, "shutdown")
                    break
                finally:
                    held.passed(frame)
        finally:
            reader.close()

    def _make_frame(self, raw: RawFrame) -> Frame:
        meta = {} if raw.position_ms is None else {"position_ms": raw.position_ms}
        if raw.meta:
            meta["acquisition"] = dict(raw.meta)
        index = self.acc.produce()
        frame = Frame(index=index, timestamp=time.time(), captured=time.perf_counter(), name=str(raw.name),
                      image=raw.image, error=raw.error, meta=meta)
        self.acc.attach(index, frame)
        return frame

    # ---------------------------------------------------------------------- inference
    def _inference_loop(self) -> None:
        deadline = lambda frame: frame.captured + self.budget_s
        held = self._held["inference"]
        while True:
            batch = self.capture_q.get_batch(self.batch_size, deadline, hold=held.take)
            if not batch:
                break
            # line scan: lines awaiting their look-ahead stay held by this worker until scored
            for item in self._score(batch) if self._lines is None else self._score_lines(batch):
                self._emit([item])
                held.passed(item[0])
        if self._lines is not None:  # end of the source: the lines still waiting
            for item in self._lines.flush():
                self._emit([item])
                held.passed(item[0])

    def _score_lines(self, frames: list[Frame]) -> list[tuple[Frame, Any, str | None]]:
        """Push-broom lines, one at a time and in order (the model learns each line)."""
        out: list[tuple[Frame, Any, str | None]] = []
        for f in frames:
            if f.image is None:
                out.append((f, None, f.error))
                continue
            f.meta["queue_s"] = time.perf_counter() - f.captured
            out += self._lines.score(f)
        return out

    def _score(self, frames: list[Frame]) -> list[tuple[Frame, Any, str | None]]:
        """Score decodable frames in one ``predict_batch``; isolate a failure frame by frame."""
        ready = [f for f in frames if f.image is not None]
        scored: dict[int, tuple[Any, str | None]] = {f.index: (None, f.error) for f in frames if f.image is None}
        if ready:
            t0 = time.perf_counter()
            for f in ready:
                f.meta["queue_s"] = t0 - f.captured
            for f, outcome in zip(ready, score_isolated(self.detector, [f.image for f in ready])):
                scored[f.index] = outcome
            self.acc.count_batch(len(ready))
            for f in ready:
                f.meta["batch"] = len(ready)
        return [(f, *scored[f.index]) for f in frames]

    # ------------------------------------------------------------------------- output
    def _output_loop(self) -> None:
        held = self._held["output"]
        while True:
            late = self._take_late()
            held.take(late)
            self._deliver_all(late, held)
            items = self.output_q.get_batch(64, hold=held.take)
            self._write_drop_notes()
            if not items:
                break
            self._deliver_all(items, held)
        late = self._take_late()
        held.take(late)
        self._deliver_all(late, held)
        self._write_drop_notes()

    def _deliver_all(self, items: list[tuple[Frame, Any, str | None]], held: InHand | None = None) -> None:
        for item in items:
            self._deliver(*item)
            if held is not None:
                held.passed(item)

    def _deliver(self, frame: Frame, result: Any, error: str | None) -> None:
        record: dict[str, Any] = {"frame": frame.index, "timestamp": round(frame.timestamp, 6), "source": frame.name}
        if error is None:
            summary = result.summary()
            record.update(status="ok", score=summary["score"], raw_score=summary["raw_score"], label=summary["label"])
            record.update(summary.get("record", {}))  # a family's own fields (line-scan: line, objects)
            timings = dict(summary["timings"])
        else:
            reason = error.split(":", 1)[0]  # "decode" or the exception's type name
            record.update(status="failed", error=error, reason=reason)
            timings = {}
        if "queue_s" in frame.meta:
            timings["queue"] = round(frame.meta["queue_s"], 6)
        if "batch" in frame.meta:
            record["batch"] = frame.meta["batch"]
        if "position_ms" in frame.meta:
            record["position_ms"] = frame.meta["position_ms"]
        if "acquisition" in frame.meta:
            record["acquisition"] = frame.meta["acquisition"]
        latency = time.perf_counter() - frame.captured
        timings["latency"] = round(latency, 6)
        record["timings"] = timings
        if not self.acc.is_outstanding(frame.index):
            return  # already left the runtime (failed by a crash handler): one record per index
        self._send(record, frame, result)
        self.acc.finish(frame.index, error is None, latency, None if error is None else record["reason"])

    def _write_drop_notes(self) -> None:
        for frame, reason in self.acc.take_drop_notes():
            record = {"frame": frame.index, "timestamp": round(frame.timestamp, 6), "source": frame.name,
                      "status": "dropped", "reason": reason}
            self._send(record, None, None)

    def _send(self, record: dict[str, Any], frame: Frame | None, result: Any) -> None:
        for sink in self.sinks:
            try:
                sink.write(record, frame, result)
            except BaseException as exc:  # noqa: BLE001 - one broken sink must not stop the others or the stream
                self.acc.count_sink_error(sink.name)
                log.warning("sink %s failed on frame %s: %s", sink.name, record.get("frame"), exc)

    # ------------------------------------------------------------------------- status
    def _status_loop(self) -> None:
        workers = self._threads[1:3]  # inference, then output: the last to end (capture may hang in read)
        try:
            while any(t.is_alive() for t in workers):
                for t in workers:
                    t.join(self.status_interval_s if t.is_alive() else 0)
                    if t.is_alive():
                        break
                if not any(t.is_alive() for t in workers):
                    break
                try:
                    if self._printer is not None:
                        self._printer.show(status_line(self.acc.snapshot(), len(self.capture_q),
                                                       self.capture_q.maxsize))
                    if self.summary_path is not None:
                        self._write_summary(self._build_summary(final=False))
                except Exception:  # a broken status stream must not end the watch
                    log.exception("status report failed")
        finally:
            try:
                self._finish()
            finally:
                if self._summary is None:  # _finish itself failed: still hand run() a summary
                    self._exit_reason = INTERNAL_ERROR
                    self._summary = self._build_summary(final=True)
                self._finished.set()

    def _settle_leftovers(self) -> None:
        """After the workers: deliver what no queue took, then fail every frame nobody finished.

        This is what keeps ``produced == processed + dropped + failed`` when a worker crashed at
        any point: an index still outstanding here gets a failed record (``internal_error``).
        """
        self._deliver_all(self._take_late())
        self._write_drop_notes()
        for index, frame in self.acc.outstanding():
            if frame is None:
                frame = Frame(index=index, timestamp=time.time(), captured=time.perf_counter(),
                              name=f"{self.source.name}#{index}")
            self._deliver(frame, None, f"{INTERNAL_ERROR}: frame {index} was lost by a crashed worker")

    def _finish(self) -> None:
        if self._threads and self._threads[0].is_alive() and not self._capture_abandoned:
            self._threads[0].join(self.stop_grace_s)  # capture: normally long done here
        self._settle_leftovers()
        self.acc.stop_clock()
        sink_facts: dict[str, Any] = {}
        for sink in self.sinks:
            try:
                sink_facts[sink.name] = sink.close()
            except Exception as exc:
                self.acc.count_sink_error(sink.name)
                sink_facts[sink.name] = {"error": f"{type(exc).__name__}: {exc}"}
        unacked = sum(int(f.get("unacked", 0)) for f in sink_facts.values() if isinstance(f, dict))
        for _ in range(unacked):
            self.acc.count_sink_error("mqtt")
        if self.metrics is not None:
            self.metrics.close()
        summary = self._build_summary(final=True, sinks=sink_facts)
        if self.summary_path is not None and not self._write_summary(summary):
            self.acc.count_sink_error("summary")  # the run's record is lost: the exit code says so
            summary = self._build_summary(final=True, sinks=sink_facts)
        if self._printer is not None:
            self._printer.show(status_line(summary.counters, 0, self.capture_q.maxsize))
            self._printer.finish()
        self._summary = summary
        self._finished.set()

    def _build_summary(self, final: bool, sinks: dict[str, Any] | None = None) -> StreamSummary:
        snap = self.acc.snapshot()
        reason = self._exit_reason if final else "running"
        code = EXIT_OK
        if reason == INTERNAL_ERROR or snap.worker_crashes:
            code = EXIT_INTERNAL_ERROR
        elif reason == "source_lost":
            code = EXIT_SOURCE_LOST
        elif snap.sink_errors:
            code = EXIT_SINK_ERRORS
        facts = getattr(self.source, "facts", None)
        return StreamSummary(source=self.source.name, policy=self.policy, exit_code=code, exit_reason=reason,
                             counters=snap, sinks=sinks or {}, batch_size=self.batch_size,
                             latency_budget_ms=self.budget_s * 1e3, detector=type(self.detector).__name__,
                             source_facts=facts() if callable(facts) else {})

    def _write_summary(self, summary: StreamSummary) -> bool:
        try:
            atomic_write_text(self.summary_path, dumps(summary.to_dict()) + "\n")
        except OSError as exc:
            log.warning("cannot write summary %s: %s", self.summary_path, exc)
            return False
        return True


def build_sinks(*, jsonl: str | os.PathLike | None = None, overlays: str | os.PathLike | None = None,
                overlay_threshold: float | None = None, mqtt: str | None = None,
                mqtt_credentials: MqttCredentials | None = None,
                on_result: Callable[[dict[str, Any], Any], None] | None = None, flags: bool = False) -> list[Sink]:
    """The sinks named by ``stream()``'s / ``edgesentry watch``'s options.

    Every path is checked (and the JSONL file recognised as ours) here, before a stream
    starts; if one sink cannot be built, those already built are closed. The MQTT sink takes
    ``mqtt_credentials``, else ``MqttCredentials.from_env()``. ``flags`` names the CLI flags in
    errors.
    """
    sinks: list[Sink] = []
    try:
        if overlays is not None:
            sinks.append(OverlaySink(overlays, threshold=overlay_threshold,
                                     label="--overlays" if flags else "overlays"))
        if jsonl is not None:
            sinks.append(JsonlSink(jsonl, label="--jsonl" if flags else "JSONL file"))
        if mqtt is not None:
            host, port, topic = parse_mqtt_target(mqtt)
            sinks.append(MqttSink(host, port, topic, credentials=mqtt_credentials or MqttCredentials.from_env()))
        if on_result is not None:
            sinks.append(CallbackSink(on_result))
    except BaseException:
        for sink in sinks:
            sink.close()
        raise
    return sinks


def stream(detector: Detector | str | os.PathLike, source: Any, *, jsonl: str | os.PathLike | None = None,
           summary: str | os.PathLike | None = None, overlays: str | os.PathLike | None = None,
           overlay_threshold: float | None = None, mqtt: str | None = None, metrics_port: int | None = None,
           on_result: Callable[[dict[str, Any], Any], None] | None = None, sinks: Sequence[Sink] = (),
           batch_size: int = 1, latency_budget_ms: float = 20.0, policy: Policy | None = None,
           queue_size: int = 8, max_frames: int | None = None, max_retries: int = 5,
           backoff_s: tuple[float, float] = (0.5, 8.0), status: TextIO | None = None,
           status_interval_s: float = 1.0, once: bool = False, idle_timeout: float | None = None,
           settle_s: float = DEFAULT_SETTLE_S, max_restarts: int = 3, handle_signals: bool = True,
           **load_options: Any) -> StreamSummary:
    """Watch ``source`` with ``detector`` until the source ends or the process is signalled.

        >>> summary = edgesentry.stream("bundle_dir", "line.mp4", jsonl="results.jsonl", batch_size=4)
        >>> summary.produced == summary.processed + summary.dropped + summary.failed
        True

    ``detector`` is a ``Detector`` or anything ``edgesentry.load`` takes (``**load_options``
    go to it, e.g. ``backend="onnxruntime"``, ``threshold=0.5``). Sinks: ``jsonl`` (JSON
    Lines), ``overlays`` (PNG directory), ``mqtt`` (``"HOST:PORT/TOPIC"``, QoS 1),
    ``on_result(record, result)``, and any ``sinks``. See ``Stream`` for the rest; the
    summary's ``exit_code`` is what ``edgesentry watch`` exits with.
    """
    if not isinstance(detector, Detector):
        from edgesentry.api import load

        detector = load(detector, **load_options)
    elif load_options:
        raise ConfigError(f"options {sorted(load_options)} only apply when the detector is loaded by stream()")
    all_sinks = build_sinks(jsonl=jsonl, overlays=overlays, overlay_threshold=overlay_threshold, mqtt=mqtt,
                            on_result=on_result) + list(sinks)
    try:
        runner = Stream(detector, source, sinks=all_sinks, batch_size=batch_size, latency_budget_ms=latency_budget_ms,
                        policy=policy, queue_size=queue_size, max_frames=max_frames, max_retries=max_retries,
                        backoff_s=backoff_s, summary_path=summary, metrics_port=metrics_port, status=status,
                        status_interval_s=status_interval_s, once=once, idle_timeout=idle_timeout,
                        settle_s=settle_s, max_restarts=max_restarts)
    except BaseException:
        for sink in all_sinks:
            sink.close()
        raise
    return runner.run(handle_signals=handle_signals)
