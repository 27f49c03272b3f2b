"""``edgesentry.line``: a production line of cameras, shared detectors, parts with deadlines and gates.

    from edgesentry.line import LineRuntime, load_line_file

    runtime = LineRuntime(load_line_file("line.toml")).start()
    for event in runtime.subscribe(kinds={"part"}):
        print(event.data["part_id"], event.data["decision"])

CLI: ``edgesentry line check LINE_FILE`` and ``edgesentry line run LINE_FILE``. The line file
schema is ``line.schema.json`` beside this module; docs/line.md is the user guide. Layers: this
package uses ``stream`` (sources, reader, accounting, sinks, supervisor), ``serving`` (Triton
client) and ``api.load``; only ``cli`` uses it.
"""

from __future__ import annotations

from edgesentry.line.cameras import SOURCE_KINDS, Camera, build_source, register_source_kind
from edgesentry.line.config import (
    BUNDLE_CHECKS,
    SCHEMA_PATH,
    SIGNATURE_VERIFIERS,
    CameraSpec,
    DetectorSpec,
    LineConfig,
    LineFileError,
    Rule,
    StationSpec,
    TriggerSpec,
    load_line_file,
    schema,
)
from edgesentry.line.events import Event, EventBus, Subscription
from edgesentry.line.parts import Part, PartTracker
from edgesentry.line.runtime import LineRuntime, run_line
from edgesentry.line.scheduler import DetectorWorker, FairQueue, LocalScorer, RemoteScorer

__all__ = [
    "BUNDLE_CHECKS", "SCHEMA_PATH", "SIGNATURE_VERIFIERS", "SOURCE_KINDS", "Camera", "CameraSpec", "DetectorSpec",
    "DetectorWorker", "Event", "EventBus", "FairQueue", "LineConfig", "LineFileError", "LineRuntime", "LocalScorer",
    "Part", "PartTracker", "RemoteScorer", "Rule", "StationSpec", "Subscription", "TriggerSpec", "build_source",
    "load_line_file", "register_source_kind", "run_line", "schema",
]
