"""Dashboard rows: the line of ``cases/line.py`` (8 cameras of 240 x 320 at 30 fps, the tiny ISSTAD
bundle, shared detector with 2 workers and batches of 4, free-run) without and with the web
dashboard serving one connected client, in alternating rounds of one process.

The client is what the page does, in Python: it holds the ``/api/events`` stream open (a state
every 0.5 s) and fetches each camera's latest overlay JPEG whenever that camera's latest frame
changed. ``first_load_bytes`` is what a browser transfers on first load: the page, its script
and style sheet, one state and one frame per camera (no asset comes from elsewhere).
"""

from __future__ import annotations

import json
import threading
import time
import urllib.request
from pathlib import Path
from typing import Any

import numpy as np

from _harness import Row, Timing, add_speedups
from cases.line import CAMERAS, FPS, LAYOUTS, _line_toml, _sources, one_torch_thread, run_lengths, tiny_bundle

NOTES = [
    "dashboard: the line case's shared detector (2 workers, batch 4) in free-run, without vs with the dashboard and "
    "one client (SSE state every 0.5 s + each camera's latest overlay JPEG on change); frames/s = frames scored per "
    "wall second; first_load_bytes = page + app.js + style.css + one state + one frame per camera.",
]

LAYOUT = LAYOUTS["shared detector, 2 workers, batch 4"]


class _Client(threading.Thread):
    """Reads the SSE stream and fetches the latest frames, as the page does."""

    def __init__(self, url: str):
        super().__init__(daemon=True)
        self.url, self.bytes, self.states, self.frames = url, 0, 0, 0

    def run(self) -> None:
        seen: dict[str, int] = {}
        with urllib.request.urlopen(self.url + "api/events", timeout=60) as stream:
            for raw in stream:
                self.bytes += len(raw)
                if not raw.startswith(b"data: {\"summary\""):
                    if raw.startswith(b"event: end"):
                        return
                    continue
                self.states += 1
                state = json.loads(raw[6:])
                for cam, latest in state["latest"].items():
                    if latest and seen.get(cam) != latest["frame"]:
                        seen[cam] = latest["frame"]
                        with urllib.request.urlopen(self.url + f"api/frame/{cam}.jpg", timeout=60) as res:
                            self.bytes += len(res.read())
                            self.frames += 1


def _first_load(url: str, cameras: list[str]) -> int:
    total = 0
    for path in ["", "static/app.js", "static/style.css", "api/state", *(f"api/frame/{c}.jpg" for c in cameras)]:
        with urllib.request.urlopen(url + path, timeout=60) as res:
            total += len(res.read())
    return total


def _run(path: Path, detectors: dict[str, Any], seconds: float, dashboard: bool) -> dict[str, Any]:
    from edgesentry.line import LineRuntime, load_line_file
    from edgesentry.line.dashboard import Dashboard

    runtime = LineRuntime(load_line_file(path, check_bundles=False), detectors=detectors, sources=_sources(seconds))
    dash = client = None
    if dashboard:
        dash = Dashboard(runtime, port=0).start()
        client = _Client(dash.url)
    runtime.start()
    t0 = time.perf_counter()
    if client is not None:
        client.start()
    try:
        summary = runtime.join(seconds + 120)
        if summary is None:
            runtime.stop(drain=False)
            raise RuntimeError("the line did not finish")
        summary["wall_s"] = time.perf_counter() - t0
        if dash is not None:
            summary["first_load_bytes"] = _first_load(dash.url, list(runtime.cameras))
            client.join(10)
            summary["client"] = {"bytes": client.bytes, "states": client.states, "frames": client.frames}
    finally:
        if dash is not None:
            dash.close()
    return summary


def _row(impl: str, runs: list[dict[str, Any]]) -> Row:
    per_frame = [r["wall_s"] / max(1, r["processed"]) for r in runs]
    q = np.quantile(per_frame, [0.2, 0.5, 0.8, 0.9])
    last = runs[-1]
    extra = {"frames_per_s": round(float(np.median([r["processed"] / r["wall_s"] for r in runs])), 1),
             "produced": last["produced"], "queue_full_drops": sum(c["dropped_by_reason"].get("queue_full", 0)
                                                                   for c in last["cameras"].values())}
    if "client" in last:
        extra.update(first_load_bytes=last["first_load_bytes"], client_bytes=last["client"]["bytes"],
                     client_states=last["client"]["states"], client_frames=last["client"]["frames"])
    return Row("dashboard", "free-run", impl, f"{CAMERAS} cams 240x320 @ {FPS:g} fps",
               Timing(*map(float, q), iters=len(runs)), extra=extra)


def latency_rows(ctx: Any) -> list[Row]:
    made = tiny_bundle(ctx, NOTES, "dashboard")
    if made is None:
        return []
    import edgesentry

    tmp, bundle = made
    seconds, rounds = run_lengths(ctx)
    runs: dict[str, list[dict[str, Any]]] = {"no dashboard": [], "dashboard + 1 client": []}
    with one_torch_thread():
        dets = {"shared": edgesentry.load(bundle, backend="torch")}
        path = _line_toml(tmp, bundle, LAYOUT, "free-run")
        for _ in range(rounds):  # alternate, so both see the same machine
            for impl in runs:
                runs[impl].append(_run(path, dets, seconds, dashboard=impl != "no dashboard"))
    rows = [_row(impl, r) for impl, r in runs.items()]
    add_speedups(rows, "no dashboard", "vs none")
    return rows
