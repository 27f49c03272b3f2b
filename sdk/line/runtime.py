"""The line runtime: many cameras, shared detectors, parts with deadlines, gates and record sinks.

    cameras (one capture thread each)     detectors (workers: 1 by default)   output thread
    source -> claim(part?) --lane--> FairQueue -> scorer.score(batch) --> frame records, accounting
                  |                                    |                   gates: OPC UA nodes, PLC writer
                  +------------- PartTracker <---------+ outcomes          records (in part order):
    triggers: MQTT, HTTP, OPC UA --^   ^-- ticker (deadlines, timeouts)    audit JSONL, MQTT, webhooks

Guarantees (tested in tests/line):

- every camera's frames are accounted for: ``produced == processed + dropped + failed + pending``
  per camera at every moment (so also in total), and ``pending == 0`` at the end;
- every part triggered is decided once (the gate gets its decision by the deadline: the verdict,
  or the fail-safe) and recorded once, at every record sink, in trigger order;
- a part lists every frame it used, with its camera and outcome; cameras that gave none are
  named (``missing_cameras``), and such a part never gets an ``accept`` it was not sure of;
- a remote (Triton) call that fails or times out is a failed frame, never a lost one;
- a camera that stalls or disconnects is reconnected with backoff and marks its station
  degraded meanwhile; one camera's crash or loss never stops the others;
- ``stop()`` (SIGINT/SIGTERM in ``edgesentry line run``) stops reading and triggers, drains
  every queue through the detectors, lets every open part go final, flushes every sink, and
  writes the summary; a second ``stop`` drops what is still queued (counted: ``shutdown``).

``state()`` and ``subscribe()`` are the in-process API for dashboards (see ``events.py``).
"""

from __future__ import annotations

import logging
import os
import queue
import secrets
import sys
import threading
import time
from collections.abc import Mapping
from typing import Any, TextIO

from edgesentry.errors import ConfigError, EdgesentryError
from edgesentry.line.cameras import Camera, build_source
from edgesentry.line.config import LineConfig, load_line_file
from edgesentry.line.detectors import as_scorer, build_scorer
from edgesentry.line.drift import DriftMonitor, DriftSettings, drift_reference
from edgesentry.line.events import Event, EventBus, Subscription
from edgesentry.line.parts import Part, PartTracker
from edgesentry.line.scheduler import DetectorWorker, FairQueue
from edgesentry.stream.accounting import Snapshot
from edgesentry.stream.cameras import CameraSource
from edgesentry.stream.monitor import StatusPrinter
from edgesentry.stream.queues import Frame
from edgesentry.stream.runtime import EXIT_INTERNAL_ERROR, EXIT_OK, EXIT_SINK_ERRORS, EXIT_SOURCE_LOST, INTERNAL_ERROR
from edgesentry.stream.sinks import JsonlSink, MqttCredentials, MqttSink, Sink, atomic_write_text, dumps
from edgesentry.stream.sources import Source
from edgesentry.stream.supervisor import InHand, describe_crash, supervise, wait_handling_signals

log = logging.getLogger("edgesentry.line")

#: how often deadlines and collection timeouts are checked
TICK_S = 0.002
_END = object()


class LineRuntime:
    """One production line, from a ``LineConfig`` (see the module docstring).

    Args:
        config: a validated line file (``load_line_file``) or its path.
        detectors: detector name -> a ``Detector`` or scorer to use instead of the line file's
            (tests, custom models); the others are built from the file.
        sources: camera id -> a ``Source`` to use instead of the file's ``source`` table.
        status: where to print a status line every ``status_interval_s`` (``None``: no status).
    """

    def __init__(self, config: LineConfig | str | os.PathLike, *, detectors: Mapping[str, Any] | None = None,
                 sources: Mapping[str, Source] | None = None, status: TextIO | None = None):
        self.cfg = config if isinstance(config, LineConfig) else load_line_file(config)
        self.run_id = secrets.token_hex(4)
        self.bus = EventBus()
        self._stop = threading.Event()
        self._aborted = False
        self._finished = threading.Event()
        self._started = False
        self._exit_reason = "end_of_stream"
        self._printer = StatusPrinter(status) if status is not None else None
        self._closers: list[Any] = []
        self._events: queue.Queue = queue.Queue(maxsize=10_000)
        self._sink_errors: dict[str, int] = {}
        self._crashes: dict[str, int] = {}
        self._reorder: dict[int, Part] = {}
        self._next_record = 0
        self._summary: dict[str, Any] | None = None
        self._threads: dict[str, threading.Thread] = {}
        self._health: dict[str, str] = {}
        try:
            self._build(dict(detectors or {}), dict(sources or {}))
        except BaseException:
            self._close_outputs()
            raise

    # ------------------------------------------------------------------------ building
    def _build(self, detectors: dict[str, Any], sources: dict[str, Source]) -> None:
        cfg = self.cfg
        used = {c.detector for c in cfg.cameras}
        self.scorers = {name: (as_scorer(detectors[name]) if name in detectors else build_scorer(spec, cfg))
                        for name, spec in cfg.detectors.items() if name in used}
        self._closers.extend(self.scorers.values())
        thresholds = {c.id: self.scorers[c.detector].threshold for c in cfg.cameras}
        self._check_rules(thresholds)
        self.queues = {name: FairQueue({c.id: c.queue_size for c in cfg.cameras if c.detector == name})
                       for name in self.scorers}
        self.tracker = PartTracker(cfg.stations, cfg.triggers, thresholds, self._on_part_event)
        self.cameras: dict[str, Camera] = {}
        for spec in cfg.cameras:
            lane = self.queues[spec.detector]
            source = sources.get(spec.id) or build_source(spec.source)
            self.cameras[spec.id] = Camera(
                spec, source, claim=self.tracker.claim, stop=self._stop, on_dropped=self._frame_dropped,
                enqueue=lambda frame, drop_oldest, lane=lane, cid=spec.id: lane.put(cid, frame,
                                                                                     drop_oldest=drop_oldest))
        self.workers = {name: [DetectorWorker(name, scorer, self.queues[name], hold=InHand(),
                                              batch_size=cfg.detectors[name].batch_size,
                                              latency_budget_ms=cfg.detectors[name].latency_budget_ms,
                                              on_scored=self._scored)
                               for _ in range(cfg.detectors[name].workers)]
                        for name, scorer in self.scorers.items()}
        self._fired_by_parts = self._software_fired_cameras()
        self._open_industrial_cameras()
        self._build_outputs()
        self._build_triggers()
        self.drift = self._build_drift(detectors)

    def _build_drift(self, detectors: dict[str, Any]) -> dict[str, DriftMonitor]:
        """One drift monitor per camera when the line file has a ``[drift]`` table; the reference is the
        bundle's ``drift_reference`` (written by ``edgesentry recalibrate``) when it has one."""
        if self.cfg.drift is None:
            return {}
        settings = DriftSettings.from_dict(self.cfg.drift)
        monitors = {}
        for cam in self.cfg.cameras:
            bundle = getattr(getattr(self.scorers[cam.detector], "detector", None), "bundle", None)
            reference = drift_reference(bundle)
            monitors[cam.id] = DriftMonitor(cam.id, settings, reference)
        return monitors

    def _check_rules(self, thresholds: dict[str, float | None]) -> None:
        for i, station in enumerate(self.cfg.stations):
            for cam in station.cameras:
                rule = station.camera_rules.get(cam, station.rule)
                if rule.threshold is None and rule.kind != "any" and thresholds[cam] is None:
                    raise self.cfg.error(("stations", i, "rule"), f"rule {rule.kind!r} needs a 'threshold': the "
                                         f"detector of camera {cam!r} has none")

    def _build_outputs(self) -> None:
        out = self.cfg.outputs
        self.frame_sinks: list[Sink] = []
        self.record_sinks: list[Sink] = []
        self.opcua = self.opcua_writer = None
        if "frames" in out:
            self.frame_sinks.append(self._closing(JsonlSink(out["frames"], key="frame", label="outputs.frames")))
        if "audit" in out:
            sink = self._closing(JsonlSink(out["audit"], key="part", label="outputs.audit"))
            sink.name = "audit"
            self.record_sinks.append(sink)
        if "mqtt" in out:
            m = self.cfg.mqtt or {}
            sink = self._closing(MqttSink(m["host"], m.get("port", 1883), out["mqtt"]["topic"],
                                          credentials=self._mqtt_credentials()))
            self.record_sinks.append(sink)
        from edgesentry.line.outputs.webhook import WebhookSink, read_token

        for i, hook in enumerate(out.get("webhooks", [])):
            token = read_token(token_env=hook.get("token_env"), token_file=hook.get("token_file"),
                               what=f"outputs.webhooks[{i}]")
            self.record_sinks.append(self._closing(WebhookSink(
                hook["url"], hook["spool"], token=token, max_spool=hook.get("max_spool", 10_000),
                timeout_s=hook.get("timeout_s", 5.0), backoff_s=tuple(hook.get("backoff_s", (0.5, 30.0))),
                run=self.run_id, name=f"webhook{i}" if i else "webhook")))
        if "opcua" in out:
            from edgesentry.line.outputs.opcua import DEFAULT_PORT, OpcUaServer

            o = out["opcua"]
            opcua_stations = tuple(t.station for t in self.cfg.triggers if t.kind == "opcua")
            self.opcua = self._closing(OpcUaServer(
                self.cfg.name, [s.id for s in self.cfg.stations], list(self.cameras), host=o.get("host", "127.0.0.1"),
                port=o.get("port", DEFAULT_PORT), namespace=o.get("namespace", "urn:edgesentry:line"),
                security=o.get("security"), certificate=o.get("certificate"), private_key=o.get("private_key"),
                on_trigger=lambda station, pid: self.trigger(station, pid, source="opcua"),
                trigger_stations=opcua_stations))
        if "opcua_client" in out:
            from edgesentry.line.outputs.opcua import OpcUaWriter
            from edgesentry.line.outputs.webhook import read_token as read_secret

            c = out["opcua_client"]
            self.opcua_writer = self._closing(OpcUaWriter(
                c["endpoint"], c["nodes"], username=c.get("username"),
                password=read_secret(token_env=c.get("password_env"), token_file=c.get("password_file"),
                                     what="outputs.opcua_client password"),
                security=c.get("security", "none"), certificate=c.get("certificate"),
                private_key=c.get("private_key"), timeout_s=c.get("timeout_s", 5.0)))

    def _mqtt_credentials(self) -> MqttCredentials:
        m = self.cfg.mqtt or {}
        password = None
        if "password_env" in m:
            password = os.environ.get(m["password_env"])
            if password is None:
                raise ConfigError(f"mqtt.password_env: environment variable {m['password_env']} is not set")
        return MqttCredentials.from_env(username=m.get("username"), password=password,
                                        password_file=m.get("password_file"), tls=m.get("tls", False),
                                        ca_file=m.get("ca_file"), cert_file=m.get("cert_file"),
                                        key_file=m.get("key_file"))

    def _build_triggers(self) -> None:
        self.mqtt_trigger = self.http_trigger = None
        topics = {t.topic: t.station for t in self.cfg.triggers if t.kind == "mqtt"}
        if topics:
            from edgesentry.line.triggers import MqttTrigger

            m = self.cfg.mqtt or {}
            self.mqtt_trigger = self._closing(MqttTrigger(topics, m["host"], m.get("port", 1883),
                                                          self._mqtt_credentials(), self.trigger,
                                                          client_id=m.get("client_id")))
        http_stations = {t.station for t in self.cfg.triggers if t.kind == "http"}
        if http_stations:
            from edgesentry.line.triggers import HttpTriggerServer

            h = self.cfg.http or {}
            self.http_trigger = self._closing(HttpTriggerServer(http_stations, self.trigger,
                                                                host=h.get("host", "127.0.0.1"),
                                                                port=h.get("port", 8088), health=self.health))

    def _closing(self, obj: Any) -> Any:
        self._closers.append(obj)
        return obj

    # ------------------------------------------------------------------------- control
    def trigger(self, station: str, part_id: str | None = None, source: str = "software") -> int:
        """Open a part of ``station`` now; returns its sequence number (the order of its record).

        The station's software-triggered industrial cameras are then fired ``frames`` times: their
        frames arrive after the part opened, so the part tracker gives them to this part.
        """
        if self._stop.is_set():
            raise RuntimeError("the line is stopping; no new parts")
        seq = self.tracker.trigger(station, part_id, source).seq
        fired = self._fired_by_parts.get(station)
        if fired:
            frames = self.tracker.stations[station].frames
            threading.Thread(target=self._fire_cameras, args=(fired, frames), daemon=True,
                             name=f"edgesentry-line-fire-{station}").start()  # the trigger path never waits
        return seq

    def _fire_cameras(self, cameras: list[Camera], frames: int) -> None:
        for cam in cameras:
            try:
                for _ in range(frames):
                    if not cam.source.fire():
                        break  # not open (reconnecting): the part misses this camera, and is degraded
            except Exception as exc:  # a vanished camera: its reader reconnects; the part is degraded
                log.warning("camera %s: software trigger failed: %s", cam.id, exc)

    def _open_industrial_cameras(self) -> None:
        """Open the GenICam cameras now: an unknown id, a setting the camera refuses or a busy camera is
        one error before the line starts, not a reconnect loop (their capture loops find them open)."""
        opened: list[Source] = []
        try:
            for cam in self.cameras.values():
                if isinstance(cam.source, CameraSource):
                    try:
                        cam.source.open()
                    except EdgesentryError as exc:
                        raise ConfigError(f"camera {cam.id}: {exc}") from None
                    opened.append(cam.source)
        except BaseException:
            for source in opened:
                source.close()
            raise

    def _software_fired_cameras(self) -> dict[str, list[Camera]]:
        """Per station with a software part trigger, its cameras that take their frames on a software
        trigger: they stop triggering themselves and are fired by the part trigger instead."""
        self_paced = {t.station for t in self.cfg.triggers if t.kind in ("free_run", "part_id")}
        out: dict[str, list[Camera]] = {}
        for st in self.cfg.stations:
            if st.id in self_paced:
                continue
            for cid in st.cameras:
                cam = self.cameras[cid]
                if isinstance(cam.source, CameraSource) and cam.source.settings.trigger == "software":
                    cam.source.self_trigger = False
                    out.setdefault(st.id, []).append(cam)
        return out

    def start(self) -> LineRuntime:
        if self._started:
            raise ConfigError("this LineRuntime was already started; make a new one")
        self._started = True
        self._t0 = time.perf_counter()
        for cam in self.cameras.values():
            cam.acc.start_clock()
            self._spawn(f"camera-{cam.id}", cam.loop, on_crash=self._camera_crashed(cam),
                        on_exit=lambda name, gave_up, cam=cam: self.queues[cam.spec.detector].close(cam.id))
        for name, workers in self.workers.items():
            for i, worker in enumerate(workers):
                self._spawn(f"detector-{name}-{i}", worker.loop, on_crash=self._worker_crashed(worker))
        self._spawn("output", self._output_loop, on_crash=self._output_crashed)
        self._threads["ticker"] = threading.Thread(target=self._tick_loop, name="edgesentry-line-ticker", daemon=True)
        self._threads["control"] = threading.Thread(target=self._control_loop, name="edgesentry-line-control",
                                                    daemon=True)
        for t in self._threads.values():
            t.start()
        return self

    def _spawn(self, name: str, loop: Any, *, on_crash: Any, on_exit: Any = None) -> None:
        target = supervise(name, loop, max_restarts=self.cfg.max_restarts, on_crash=on_crash, on_exit=on_exit)
        self._threads[name] = threading.Thread(target=target, name=f"edgesentry-line-{name}", daemon=True)

    def stop(self, drain: bool = True) -> None:
        """Stop reading and triggers; drain (default) or drop what is queued (``shutdown``)."""
        if self._exit_reason == "end_of_stream":
            self._exit_reason = "stopped"
        if self._stop.is_set() or not drain:
            self._abort()
        self._stop.set()
        self.tracker.stop_accepting()

    def _abort(self) -> None:
        if self._aborted:
            return
        self._aborted = True
        for q in self.queues.values():
            for frame in q.abort():
                cam = self.cameras[frame.meta["camera"]]
                cam.acc.drop(frame, "shutdown")
                self._frame_dropped(frame, "shutdown")

    def run(self, *, handle_signals: bool = True) -> dict[str, Any]:
        """Run until every camera ended or a signal stops the line; returns the summary."""
        if not self._started:
            self.start()
        wait_handling_signals(self._finished, self.stop, handle_signals=handle_signals)
        assert self._summary is not None
        return self._summary

    def join(self, timeout: float | None = None) -> dict[str, Any] | None:
        if not self._finished.wait(timeout):
            return None
        return self._summary

    def subscribe(self, kinds: set[str] | None = None, maxsize: int = 10_000) -> Subscription:
        """Events of this line (see ``events.py``); the subscription ends when the runtime finishes."""
        return self.bus.subscribe(kinds, maxsize)

    # -------------------------------------------------------------------- frame flow
    def _scored(self, frame: Frame, result: Any, error: str | None) -> None:
        """A frame's outcome (detector worker thread): the part learns it now, the sinks next."""
        cam = frame.meta["camera"]
        if error is None:
            self.tracker.resolve(cam, frame.index, "ok", score=float(result.score),
                                 label=None if result.label is None else bool(result.label))
        else:
            self.tracker.resolve(cam, frame.index, "failed", error=error)
        self._events.put(("frame", frame, result, error))

    def _frame_dropped(self, frame: Frame, reason: str) -> None:
        self.tracker.resolve(frame.meta["camera"], frame.index, "dropped", error=f"dropped: {reason}")

    def _on_part_event(self, event: tuple[str, Part]) -> None:
        self._events.put(event)

    def _camera_crashed(self, cam: Camera) -> Any:
        def handle(worker: str, exc: BaseException, restarting: bool) -> None:
            self._crashes[worker] = self._crashes.get(worker, 0) + 1
            self._fail_held(cam.held, f"{INTERNAL_ERROR}: {worker} crashed: {describe_crash(exc)}")
            if not restarting:
                cam.crashed = True
        return handle

    def _worker_crashed(self, worker: DetectorWorker) -> Any:
        def handle(name: str, exc: BaseException, restarting: bool) -> None:
            self._crashes[name] = self._crashes.get(name, 0) + 1
            error = f"{INTERNAL_ERROR}: {name} crashed: {describe_crash(exc)}"
            self._fail_held(worker.held, error)
            if not restarting:  # nobody will score this detector's frames: fail them, stop its cameras
                for frame in self.queues[worker.name].abort():
                    self._scored(frame, None, error)
        return handle

    def _fail_held(self, held: InHand, error: str) -> None:
        for frame in held.release():
            if isinstance(frame, Frame) and self.cameras[frame.meta["camera"]].acc.is_outstanding(frame.index):
                self._scored(frame, None, error)

    def _output_crashed(self, worker: str, exc: BaseException, restarting: bool) -> None:
        self._crashes[worker] = self._crashes.get(worker, 0) + 1

    # ---------------------------------------------------------------------- outputs
    def _output_loop(self) -> None:
        while True:
            try:
                event = self._events.get(timeout=0.05)
            except queue.Empty:
                event = None
            self._write_drop_notes()
            if event is _END:
                return
            if event is None:
                continue
            kind = event[0]
            if kind == "frame":
                self._deliver_frame(*event[1:])
            elif kind == "decision":
                self._deliver_decision(event[1])
            elif kind == "final":
                self._reorder[event[1].seq] = event[1]
                while self._next_record in self._reorder:
                    self._deliver_part(self._reorder.pop(self._next_record))
                    self._next_record += 1

    def _frame_record(self, frame: Frame, status: str, result: Any = None, error: str | None = None,
                      reason: str | None = None) -> dict[str, Any]:
        record: dict[str, Any] = {"frame": frame.index, "camera": frame.meta["camera"],
                                  "timestamp": round(frame.timestamp, 6), "source": frame.name, "status": status}
        if "part" in frame.meta:
            record["part"] = frame.meta["part"]
        if status == "ok":
            record.update(score=float(result.score), label=None if result.label is None else bool(result.label))
        elif error is not None:
            record.update(error=error, reason=error.split(":", 1)[0])
        elif reason is not None:
            record["reason"] = reason
        for key in ("batch", "cameras", "position_ms", "acquisition"):
            if key in frame.meta:
                record[key] = frame.meta[key]
        return record

    def _deliver_frame(self, frame: Frame, result: Any, error: str | None) -> None:
        cam = self.cameras[frame.meta["camera"]]
        if not cam.acc.is_outstanding(frame.index):
            return  # already left (failed by a crash handler): one record per frame
        record = self._frame_record(frame, "ok" if error is None else "failed", result, error)
        latency = time.perf_counter() - frame.captured
        record["latency_ms"] = round(latency * 1e3, 3)
        self._send(self.frame_sinks, record, frame, result)
        cam.acc.finish(frame.index, error is None, latency, None if error is None else record["reason"])
        if result is not None:
            cam.latest["result"] = (frame, result)
        if self.bus.active:
            self.bus.publish(Event("frame", record, frame, result))

    def _write_drop_notes(self) -> None:
        for cam in self.cameras.values():
            for frame, reason in cam.acc.take_drop_notes():
                if self.frame_sinks:
                    self._send(self.frame_sinks, self._frame_record(frame, "dropped", reason=reason), frame, None)

    def _deliver_decision(self, part: Part) -> None:
        station = part.station.id
        stats = self.tracker.stats[station]
        values = {"PartId": part.part_id, "PartSeq": part.seq, "Decision": part.decision, "Late": part.late,
                  "FailSafe": part.fail_safe_applied,
                  "DecisionLatencyMs": (part.decided_at - part.t_trigger) * 1e3,
                  "Triggered": stats.triggered, "Decided": stats.decided, "Accepted": stats.accepted,
                  "Rejected": stats.rejected, "LateCount": stats.late, "FailSafeCount": stats.fail_safe}
        if self.opcua is not None:
            self._guard("opcua", lambda: self.opcua.write("station", station, values))
        if self.opcua_writer is not None:
            self._guard("opcua_client", lambda: self.opcua_writer.write(station, {
                "part_id": part.part_id, "decision": part.decision, "late": part.late,
                "score": part.score if part.score is not None else float("nan")}))
        if self.bus.active:
            self.bus.publish(Event("decision", part.record()))

    def _deliver_part(self, part: Part) -> None:
        record = part.record()
        record["run"] = self.run_id
        self._send(self.record_sinks, record, None, None)
        if self.opcua is not None:
            values = {"FinalPartId": part.part_id, "Verdict": part.verdict or "", "Score": part.score,
                      "Degraded": part.degraded, "MissingCameras": ",".join(sorted(part.missing))}
            self._guard("opcua", lambda: self.opcua.write("station", part.station.id, values))
        if self.bus.active:
            self.bus.publish(Event("part", record))
        if self.drift and record["decision"] == "accept" and not (record["late"] or record["fail_safe"]
                                                                   or record["degraded"]):
            self._track_drift(record)

    def _track_drift(self, part: dict[str, Any]) -> None:
        """Feed an accepted part's scores to the drift monitors; a changed state goes to every record sink."""
        for frame in part["frames"]:
            if frame["status"] != "ok" or frame["camera"] not in self.drift:
                continue
            change = self.drift[frame["camera"]].add(frame["score"])
            if change is not None:  # led by the part that moved it: the audit log's records all start with "part"
                change = {"part": part["part"], **change, "run": self.run_id}
                log.warning("drift %s: %s (PSI %.3f, KS p %.2g)", change["drift"], change["state"], change["psi"],
                            change["ks_p"])
                self._send(self.record_sinks, change, None, None)
                if self.bus.active:
                    self.bus.publish(Event("drift", change))

    def _send(self, sinks: list[Sink], record: dict[str, Any], frame: Frame | None, result: Any) -> None:
        for sink in sinks:
            self._guard(sink.name, lambda sink=sink: sink.write(record, frame, result))

    def _guard(self, name: str, fn: Any) -> None:
        try:
            fn()
        except BaseException as exc:  # noqa: BLE001 - one broken sink must not stop the others or the line
            self._sink_errors[name] = self._sink_errors.get(name, 0) + 1
            log.warning("sink %s failed: %s", name, describe_crash(exc))

    # ----------------------------------------------------------------------- control
    def _tick_loop(self) -> None:
        while not self._finished.is_set():
            try:
                self.tracker.tick()
            except Exception:  # noqa: BLE001 - a tick that fails is logged; the next one runs
                log.exception("deadline tick failed")
            self._finished.wait(TICK_S)

    def _control_loop(self) -> None:
        """Watch the cameras, report status; when they are done, drain and finish."""
        cams = [self._threads[f"camera-{c}"] for c in self.cameras]
        last_status = 0.0
        try:
            while any(t.is_alive() for t in cams):
                for t in cams:
                    t.join(0.05)
                now = time.monotonic()
                if now - last_status >= self.cfg.status_interval_s:
                    last_status = now
                    self._report(final=False)
            if self._exit_reason == "end_of_stream" and any(c.reader.lost for c in self.cameras.values()):
                self._exit_reason = "source_lost"
            self.tracker.close_all("cameras stopped" if self._stop.is_set() else "cameras ended")
            self._drain()
        finally:
            self._finish()

    def _drain(self) -> None:
        deadline = time.monotonic() + self.cfg.drain_timeout_s
        workers = [self._threads[f"detector-{n}-{i}"] for n, ws in self.workers.items() for i in range(len(ws))]
        for t in workers:
            t.join(max(0.0, deadline - time.monotonic()))
        if any(t.is_alive() for t in workers):
            log.error("detectors did not finish within drain_timeout_s=%.1f; dropping what is queued",
                      self.cfg.drain_timeout_s)
            self._abort()
        while self.tracker.unfinished() and time.monotonic() < deadline:
            time.sleep(0.01)
        if self.tracker.unfinished():
            self.tracker.abandon(f"{INTERNAL_ERROR}: frame not scored within drain_timeout_s")

    def _finish(self) -> None:
        try:
            self._settle_leftovers()
            self._events.put(_END)
            self._threads["output"].join(30.0)
            for cam in self.cameras.values():
                cam.acc.stop_clock()
            self._summary = self._report(final=True, sinks=self._close_outputs())
        except BaseException:
            log.exception("finishing the line failed")
            self._exit_reason = INTERNAL_ERROR
            if self._summary is None:
                self._summary = self.summary(final=True)
        finally:
            self.bus.close()
            self._finished.set()

    def _settle_leftovers(self) -> None:
        """Fail every frame a crashed worker lost, so every camera's identity holds at the end."""
        for cam in self.cameras.values():
            for index, frame in cam.acc.outstanding():
                if frame is None:
                    frame = Frame(index=index, timestamp=time.time(), captured=time.perf_counter(),
                                  name=f"{cam.id}#{index}", meta={"camera": cam.id})
                self._scored(frame, None, f"{INTERNAL_ERROR}: frame {index} was lost by a crashed worker")

    def _close_outputs(self) -> dict[str, Any]:
        facts: dict[str, Any] = {}
        for trigger in (getattr(self, "mqtt_trigger", None), getattr(self, "http_trigger", None)):
            if trigger is not None and trigger in self._closers:
                self._closers.remove(trigger)
                facts["trigger_" + type(trigger).__name__] = self._close_one(trigger)
        for obj in reversed(self._closers):
            name = getattr(obj, "name", type(obj).__name__)
            facts[name if name not in facts else f"{name}_{id(obj):x}"] = self._close_one(obj)
            if isinstance(facts.get(name), dict) and facts[name].get("unacked"):
                self._sink_errors[name] = self._sink_errors.get(name, 0) + int(facts[name]["unacked"])
        self._closers = []
        for cam in getattr(self, "cameras", {}).values():
            cam.close()
        return facts

    def _close_one(self, obj: Any) -> Any:
        try:
            if hasattr(obj, "pending"):  # webhooks: give the spool the drain time
                return obj.close(self.cfg.drain_timeout_s)
            return obj.close()
        except Exception as exc:  # noqa: BLE001 - reported in the summary
            self._sink_errors[getattr(obj, "name", "close")] = self._sink_errors.get("close", 0) + 1
            return {"error": describe_crash(exc)}

    # ------------------------------------------------------------------------ reading
    def health(self) -> dict[str, Any]:
        """Per camera and detector health, and per station ``ok`` / ``degraded`` (naming the cameras)."""
        cams = {cid: cam.health for cid, cam in self.cameras.items()}
        dets = {name: ("ok" if w.scorer.healthy or not w.scorer.remote else "unreachable")
                for name, ws in self.workers.items() for w in ws[:1]}
        stations = {}
        for s in self.cfg.stations:
            bad = [c for c in s.cameras if cams[c] not in ("ok", "starting", "ended", "stopped")
                   or dets[self.cfg.camera(c).detector] != "ok"]
            stations[s.id] = "ok" if not bad else "degraded: " + ", ".join(f"{c} {cams[c]}" for c in bad)
        return {"cameras": cams, "detectors": dets, "stations": stations}

    def state(self) -> dict[str, Any]:
        """A consistent-per-camera view for dashboards: counters, health, latest frame/result, stations."""
        out = self.summary(final=False)
        out["latest"] = {cid: dict(cam.latest) for cid, cam in self.cameras.items()}
        return out

    def snapshots(self) -> dict[str, Snapshot]:
        return {cid: cam.acc.snapshot() for cid, cam in self.cameras.items()}

    def summary(self, *, final: bool, sinks: dict[str, Any] | None = None) -> dict[str, Any]:
        snaps = self.snapshots()
        total = {k: sum(getattr(s, k) for s in snaps.values())
                 for k in ("produced", "processed", "dropped", "failed", "pending")}
        elapsed = max((s.elapsed_s for s in snaps.values()), default=0.0)
        cameras = {}
        for cid, s in snaps.items():
            d = s.to_dict()
            d["health"] = self.cameras[cid].health
            d["policy"] = self.cameras[cid].policy
            facts = getattr(self.cameras[cid].source, "facts", None)
            if callable(facts):
                d["camera"] = facts()  # an industrial camera: model, settings read back, transport losses
            cameras[cid] = d
        crashes = dict(self._crashes)
        reason = self._exit_reason if final else "running"
        code = EXIT_OK
        if crashes or reason == INTERNAL_ERROR:
            code = EXIT_INTERNAL_ERROR
        elif reason == "source_lost":
            code = EXIT_SOURCE_LOST
        elif self._sink_errors:
            code = EXIT_SINK_ERRORS
        return {
            "line": self.cfg.name, "run": self.run_id, "exit_code": code, "exit_reason": reason,
            "elapsed_s": round(elapsed, 4), **total,
            "identity_holds": all(s.identity_holds for s in snaps.values()) and (not final or total["pending"] == 0),
            "fps": total["processed"] / elapsed if elapsed > 0 else 0.0,
            "cameras": cameras,
            "detectors": {name: _merge_stats([w.stats() for w in ws]) for name, ws in self.workers.items()},
            "stations": {sid: st.to_dict() for sid, st in self.tracker.stats.items()},
            "drift": {cid: dict(m.last) for cid, m in self.drift.items()},
            "health": self.health(), "sink_errors": dict(self._sink_errors), "worker_crashes": crashes,
            "sinks": sinks or {},
        }

    def _report(self, *, final: bool, sinks: dict[str, Any] | None = None) -> dict[str, Any]:
        summary = self.summary(final=final, sinks=sinks)
        if self.opcua is not None and not final:
            for cid, d in summary["cameras"].items():
                self._guard("opcua", lambda cid=cid, d=d: self.opcua.write("camera", cid, {
                    "Health": d["health"], "Produced": d["produced"], "Processed": d["processed"],
                    "Dropped": d["dropped"], "Failed": d["failed"]}))
            for sid, h in summary["health"]["stations"].items():
                self._guard("opcua", lambda sid=sid, h=h: self.opcua.write("station", sid, {"Health": h}))
        self._publish_health(summary["health"])
        path = self.cfg.outputs.get("summary")
        if path is not None:
            try:
                atomic_write_text(path, dumps(summary) + "\n")
            except OSError as exc:
                log.warning("cannot write summary %s: %s", path, exc)
                if final:
                    self._sink_errors["summary"] = self._sink_errors.get("summary", 0) + 1
                    summary = self.summary(final=True, sinks=sinks)
        if self._printer is not None:
            self._printer.show(status_line(summary))
            if final:
                self._printer.finish()
        return summary

    def _publish_health(self, health: dict[str, Any]) -> None:
        for kind, key in (("cameras", "camera"), ("detectors", "detector")):
            for name, value in health[kind].items():
                if self._health.get(f"{key}:{name}") != value:
                    self._health[f"{key}:{name}"] = value
                    if value not in ("ok", "starting", "ended", "stopped"):
                        log.warning("%s %s: %s", key, name, value)
                    self.bus.publish(Event("health", {key: name, "health": value}))


def _merge_stats(stats: list[dict[str, Any]]) -> dict[str, Any]:
    out = dict(stats[0])
    for key in ("batches", "frames", "mixed_batches"):
        out[key] = sum(s[key] for s in stats)
    out["mean_batch"] = out["frames"] / out["batches"] if out["batches"] else 0.0
    out["workers"] = len(stats)
    return out


def status_line(summary: dict[str, Any]) -> str:
    """``line7 | 4/4 cameras ok | 58.1 frames/s | parts 12 decided 12 late 0 | dropped 3 failed 0``."""
    cams = summary["cameras"]
    ok = sum(d["health"] in ("ok", "starting") for d in cams.values())
    stations = summary["stations"].values()
    parts = sum(s["triggered"] for s in stations)
    decided = sum(s["decided"] for s in stations)
    late = sum(s["late"] for s in stations)
    return (f"{summary['line']} | {ok}/{len(cams)} cameras ok | {summary['fps']:.1f} frames/s | parts {parts} "
            f"decided {decided} late {late} | produced {summary['produced']} processed {summary['processed']} "
            f"dropped {summary['dropped']} failed {summary['failed']}")


def run_line(path: str | os.PathLike, *, status: TextIO | None = sys.stderr, handle_signals: bool = True,
             **kwargs: Any) -> dict[str, Any]:
    """Load a line file and run the line until its cameras end or a signal stops it."""
    return LineRuntime(path, status=status, **kwargs).run(handle_signals=handle_signals)
