"""Industrial (GenICam) camera sources: Aravis (GigE Vision / USB3 Vision) and Basler pylon.

    edgesentry watch BUNDLE 'aravis:Aravis-Fake-GV01?trigger=software&pixel_format=Mono8'
    edgesentry watch BUNDLE 'pylon:0815-0000?exposure_us=2000&roi=0,0,640,480'

``ID`` after the backend is a device id, serial number, user id, address, model or
``vendor/model`` (empty: the first camera); the query sets ``CameraSettings``. Each backend is
an optional extra (``edgesentry[aravis]``, ``edgesentry[pylon]``) with a clear message when
missing. See ``source.py`` for frame-loss accounting, triggers and reconnects, ``pixels.py``
for what each pixel format becomes.
"""

from __future__ import annotations

from typing import Literal

from edgesentry.errors import ConfigError
from edgesentry.stream.cameras.pixels import FORMATS, PixelFormat, lookup, to_rgb8
from edgesentry.stream.cameras.settings import CameraSettings
from edgesentry.stream.cameras.source import CameraBusy, CameraInfo, CameraNotFound, CameraSource, pick_camera
from edgesentry.stream.sources import Source, open_source

Backend = Literal["aravis", "pylon"]
BACKENDS = ("aravis", "pylon")


def camera_source(backend: Backend, camera: str = "", settings: CameraSettings | None = None) -> CameraSource:
    """A camera source of ``backend`` (the backend's library is imported when it opens)."""
    if backend == "aravis":
        from edgesentry.stream.cameras.aravis import AravisSource

        return AravisSource(camera, settings)
    if backend == "pylon":
        from edgesentry.stream.cameras.pylon import PylonSource

        return PylonSource(camera, settings)
    raise ConfigError(f"camera backend must be one of {list(BACKENDS)}; got {backend!r}")


def open_camera(spec: str) -> CameraSource:
    """``BACKEND:ID[?setting=value&...]`` -> a camera source (not yet opened)."""
    backend, _, rest = spec.partition(":")
    camera, _, query = rest.partition("?")
    settings = CameraSettings.from_query(query, who=f"camera source {spec!r}")
    return camera_source(backend, camera, settings)  # type: ignore[arg-type]


def is_camera_spec(source: object) -> bool:
    """Whether ``source`` names an industrial camera (``aravis:...`` / ``pylon:...``)."""
    return isinstance(source, str) and source.partition(":")[0] in BACKENDS and ":" in source


def open_any_source(source: object, **options: object) -> Source:
    """``open_source`` that also knows industrial cameras: ``aravis:ID?...`` / ``pylon:ID?...``.

    This is ``edgesentry.stream.open_source``; ``options`` go to ``sources.open_source``.
    """
    if is_camera_spec(source):
        return open_camera(source)  # type: ignore[arg-type]
    return open_source(source, **options)  # type: ignore[arg-type]


def list_cameras(backend: Backend) -> list[CameraInfo]:
    """The cameras ``backend`` finds now."""
    if backend == "aravis":
        from edgesentry.stream.cameras.aravis import list_cameras as found
    elif backend == "pylon":
        from edgesentry.stream.cameras.pylon import list_cameras as found
    else:
        raise ConfigError(f"camera backend must be one of {list(BACKENDS)}; got {backend!r}")
    return found()


__all__ = ["BACKENDS", "FORMATS", "CameraBusy", "CameraInfo", "CameraNotFound", "CameraSettings", "CameraSource",
           "PixelFormat", "camera_source", "is_camera_spec", "list_cameras", "lookup", "open_any_source", "open_camera",
           "pick_camera", "to_rgb8"]
