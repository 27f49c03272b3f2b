"""Emulated industrial cameras for the camera tests.

- ``fake_gv_camera``: Aravis' ``arv-fake-gv-camera-0.8 -i 127.0.0.1``, a GigE Vision camera
  speaking GVCP / GVSP over UDP on loopback (installed by scripts/services.sh). GVCP uses the
  fixed port 3956, so one fake camera runs at a time on a machine: a file lock serialises test
  processes. Every process it starts is killed at the end.
- pylon's camera emulation: ``PYLON_CAMEMU=2`` (set here, before pypylon initialises).
"""

from __future__ import annotations

import fcntl
import os
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

import pytest

os.environ.setdefault("PYLON_CAMEMU", "2")

FAKE_BINARY = "arv-fake-gv-camera-0.8"


def aravis_or_skip():
    """The Aravis module, or skip naming what is missing (scripts/services.sh installs both)."""
    from edgesentry.errors import ConfigError
    from edgesentry.stream.cameras.aravis import import_aravis

    if shutil.which(FAKE_BINARY) is None:
        pytest.skip(f"{FAKE_BINARY} is not installed (aravis-tools; scripts/services.sh installs it)")
    try:
        return import_aravis()
    except ConfigError as exc:
        pytest.skip(str(exc))


class FakeCamera:
    """One ``arv-fake-gv-camera`` process on 127.0.0.1 that a test can kill and restart."""

    serial = "GV01"

    def __init__(self) -> None:
        self.proc: subprocess.Popen | None = None
        self.starts = 0

    def start(self, wait: bool = True, lost_per_thousand: int = 0) -> None:
        """(Re)start it; ``lost_per_thousand`` GVSP packets are then dropped by the camera itself."""
        self.kill()
        extra = ["-r", str(lost_per_thousand)] if lost_per_thousand else []
        self.proc = subprocess.Popen([FAKE_BINARY, "-i", "127.0.0.1", "-s", self.serial, *extra],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        self.starts += 1
        if wait:
            self.wait_visible()

    def wait_visible(self, timeout_s: float = 30.0) -> None:
        from edgesentry.stream.cameras import list_cameras

        deadline = time.monotonic() + timeout_s
        while not any(c.serial == self.serial for c in list_cameras("aravis")):
            if self.proc is None or self.proc.poll() is not None or time.monotonic() > deadline:
                self.kill()
                pytest.fail(f"{FAKE_BINARY} did not become visible on 127.0.0.1 within {timeout_s:g}s")
            time.sleep(0.1)

    def kill(self) -> None:
        proc, self.proc = self.proc, None
        if proc is not None and proc.poll() is None:
            proc.kill()
            proc.wait(10)


@pytest.fixture(scope="module")
def _fake_gv_process():
    aravis_or_skip()
    lock_path = Path(tempfile.gettempdir()) / "edgesentry-fake-gv-camera.lock"
    with open(lock_path, "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # GVCP's port 3956 is per machine
        camera = FakeCamera()
        try:
            yield camera
        finally:
            camera.kill()


@pytest.fixture
def fake_gv_camera(_fake_gv_process):
    """A running fake GigE Vision camera (serial GV01), shared by a module's tests (a test may kill
    and restart it); killed at the end of the module, whatever happens."""
    camera = _fake_gv_process
    if camera.proc is None or camera.proc.poll() is not None:
        camera.start()
    return camera


@pytest.fixture
def pylon_emulation():
    """pypylon with two emulated cameras (skips, naming why, where pypylon is not installed)."""
    from edgesentry.errors import ConfigError
    from edgesentry.stream.cameras import list_cameras

    try:
        found = list_cameras("pylon")
    except ConfigError as exc:
        pytest.skip(str(exc))
    emulated = [c for c in found if c.model.startswith("Emulation")]
    if len(emulated) < 2:
        pytest.skip(f"pylon offers {len(emulated)} emulated cameras (PYLON_CAMEMU={os.environ.get('PYLON_CAMEMU')} "
                    "was set after pylon started?)")
    return emulated
