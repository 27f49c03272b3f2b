"""Industrial camera rows: frames/s and per-frame acquisition overhead from emulated cameras.

Cameras: pypylon's emulated camera (``PYLON_CAMEMU``) and Aravis' fake GigE Vision camera
(``arv-fake-gv-camera-0.8 -i 127.0.0.1``, started and killed here; real GVCP / GVSP over UDP
on loopback), both software-triggered, Mono8, ROI 320 x 240. Per camera, side by side:

- ``driver loop``: the vendor library alone (trigger, wait, copy the buffer out), no edgesentry;
- ``source.read loop``: edgesentry's source (the same, plus block-id accounting and the
  conversion to RGB);
- ``watch noop``: the whole stream runtime with a detector that does not look at the pixels;
- ``watch isstad``: the tiny ISSTAD bundle (torch, 1 thread).

p50 is the wall time of a whole run / frames (opening and configuring the camera not timed).
``overhead_ms`` (on the source and watch rows) is that row's per-frame time minus the driver
loop's: what acquisition through edgesentry costs.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("PYLON_CAMEMU", "1")

import numpy as np  # noqa: E402

from _harness import Row, Timing, add_speedups  # noqa: E402

NOTES = [
    "cameras: software-triggered emulated cameras, Mono8 320x240; p50 = run wall time / frames; overhead_ms = "
    "per-frame time minus the vendor library's own loop; opening the camera is not timed. The Aravis fake camera "
    "answers a software trigger about every 40 ms whatever its AcquisitionFrameRate (free running it reaches ~150 "
    "fps), so its frames/s is the fake camera's pace; its overhead_ms is still ours.",
]

ROI = (0, 0, 320, 240)


def _timed(setup: Any, body: Any, frames: int, iters: int, warmup: int = 1) -> Timing:
    """Per-frame timing of ``body(source)``; opening the camera (``setup``) is not timed."""
    times = []
    for i in range(warmup + iters):
        source = setup()
        try:
            t0 = time.perf_counter()
            body(source)
            elapsed = time.perf_counter() - t0
        finally:
            source.close()
        if i >= warmup:
            times.append(elapsed / frames)
    p20, p50, p80, p90 = np.quantile(times, [0.2, 0.5, 0.8, 0.9])
    return Timing(float(p20), float(p50), float(p80), float(p90), iters, None)


def _opener(backend: str, camera: str, settings: Any) -> Any:
    from edgesentry.stream.cameras import camera_source

    def setup() -> Any:
        source = camera_source(backend, camera, settings)
        source.open()  # enumerate, connect, configure, start: once per run, outside the timing
        return source
    return setup


def _pylon_driver_loop(n: int) -> Any:
    """pylon alone on the camera the source configured: trigger, wait, copy the buffer out."""
    from pypylon import pylon

    def body(source: Any) -> None:
        cam = source._cam
        for _ in range(n):
            cam.WaitForFrameTriggerReady(5000, pylon.TimeoutHandling_ThrowException)
            cam.ExecuteSoftwareTrigger()
            result = cam.RetrieveResult(5000, pylon.TimeoutHandling_ThrowException)
            result.Array.copy()
            result.Release()
    return body


def _aravis_driver_loop(n: int) -> Any:
    """Aravis alone on the camera the source configured: trigger, pop, copy, push back."""
    def body(source: Any) -> None:
        cam, stream = source._cam, source._stream
        for _ in range(n):
            cam.software_trigger()
            buffer = None
            while buffer is None:
                buffer = stream.timeout_pop_buffer(5_000_000)
            buffer.get_data()
            stream.push_buffer(buffer)
    return body


def _source_loop(n: int) -> Any:
    from edgesentry.stream.sources import IDLE

    def body(source: Any) -> None:
        got = 0
        while got < n:
            raw = source.read()
            if raw is not IDLE:
                if raw.image is None:
                    raise RuntimeError(f"camera frame failed: {raw.error}")
                got += 1
    return body


def _watch(n: int, det: Any, last: dict) -> Any:
    from edgesentry.stream import Stream

    def body(source: Any) -> None:
        summary = Stream(det, source, max_frames=n, policy="block",
                         latency_budget_ms=20.0).run(handle_signals=False).to_dict()
        if summary["processed"] != n or not summary["identity_holds"]:
            raise RuntimeError(f"camera stream lost frames: {summary}")
        last.update(summary)
    return body


def _camera_rows(backend: str, camera: str, driver: Any, settings: Any, detectors: dict[str, Any], n: int,
                 n_isstad: int, iters: int) -> list[Row]:
    setup = _opener(backend, camera, settings)
    size = f"{n} frames Mono8 320x240"
    base = _timed(setup, driver, n, iters)
    rows = [Row("cameras", f"{backend}-emulated", "driver loop", size, base)]

    def add(impl: str, body: Any, frames: int, extra: dict | None = None) -> None:
        t = _timed(setup, body, frames, iters)
        shown = size if frames == n else f"{frames} frames Mono8 320x240 -> 224x224, tiny"
        rows.append(Row("cameras", f"{backend}-emulated", impl, shown, t,
                        extra={"overhead_ms": round((t.p50 - base.p50) * 1e3, 3), **(extra or {})}))

    add("source.read loop", _source_loop(n), n)
    for name, det in detectors.items():
        frames = n if name == "noop" else n_isstad
        last: dict[str, Any] = {}
        add(f"watch {name}", _watch(frames, det, last), frames)
        rows[-1].extra.update(latency_p50_ms=last["latency_ms"]["p50"], dropped=last["dropped"])
    return rows


def _detectors(ctx: Any, tmp: Path) -> dict[str, Any]:
    from cases.stream import _detectors as stream_detectors

    NoOp, _ = stream_detectors()
    out: dict[str, Any] = {"noop": NoOp()}
    ref = ctx.shared / "reference" / "isstad"
    if (ref / "tiny_stage2_seed0.pt").is_file():
        import edgesentry

        bundle = edgesentry.convert("isstad", ref / "tiny_stage2_seed0.pt", output=tmp / "isstad",
                                    config=ref / "tiny_stage2_config.json")
        out["isstad"] = edgesentry.load(bundle.path)
    else:
        NOTES.append(f"cameras: ISSTAD rows skipped (no tiny reference weights under {ref})")
    return out


def _start_fake_gv_camera() -> subprocess.Popen | None:
    binary = shutil.which("arv-fake-gv-camera-0.8")
    if binary is None:
        NOTES.append("cameras: Aravis rows skipped (arv-fake-gv-camera-0.8 not installed; scripts/services.sh)")
        return None
    from edgesentry.errors import ConfigError
    from edgesentry.stream.cameras import list_cameras

    try:
        list_cameras("aravis")
    except ConfigError as exc:
        NOTES.append(f"cameras: Aravis rows skipped ({exc})")
        return None
    proc = subprocess.Popen([binary, "-i", "127.0.0.1", "-s", "GVBENCH"], stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 30
    while not any(c.serial == "GVBENCH" for c in list_cameras("aravis")):
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            proc.wait()
            NOTES.append("cameras: Aravis rows skipped (the fake camera did not come up)")
            return None
        time.sleep(0.1)
    return proc


def latency_rows(ctx: Any) -> list[Row]:
    import torch

    from edgesentry.errors import ConfigError
    from edgesentry.stream.cameras import CameraSettings, list_cameras

    tmp = Path(tempfile.mkdtemp(prefix="edgesentry_bench_cameras_"))
    n = 60 if ctx.quick else 150  # the fake GigE camera answers a trigger every ~40 ms: keep the run short
    n_isstad = 8 if ctx.quick else 24
    iters = 2 if ctx.quick else 3
    detectors = _detectors(ctx, tmp)
    rows: list[Row] = []
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as the stream rows: 2 OpenMP threads on a shared 2-core box are erratic
    try:
        try:
            emulated = [c for c in list_cameras("pylon") if c.model.startswith("Emulation")]
        except ConfigError as exc:
            emulated = []
            NOTES.append(f"cameras: pylon rows skipped ({exc})")
        if emulated:
            settings = CameraSettings(pixel_format="Mono8", roi=ROI, trigger="software")
            rows += _camera_rows("pylon", emulated[0].serial, _pylon_driver_loop(n), settings, detectors, n,
                                 n_isstad, iters)
        proc = _start_fake_gv_camera()
        if proc is not None:
            try:
                settings = CameraSettings(pixel_format="Mono8", roi=ROI, trigger="software")
                rows += _camera_rows("aravis", "GVBENCH", _aravis_driver_loop(n), settings, detectors, n,
                                     n_isstad, iters)
            finally:
                proc.kill()
                proc.wait()
    finally:
        torch.set_num_threads(threads)
    add_speedups(rows, "driver loop", "vs driver")
    return rows


if __name__ == "__main__":  # quick manual run: python benchmarks/cases/cameras.py
    import sys

    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from latency import SHARED, Context

    from _harness import markdown_table

    start = time.perf_counter()
    print(markdown_table(latency_rows(Context(quick=True, shared=SHARED, iters=3))))
    print(NOTES)
    print(f"{time.perf_counter() - start:.1f}s")
