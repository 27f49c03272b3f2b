"""``edgesentry.stream``: watch a camera, video, network stream or hot folder with a detector.

    >>> import edgesentry
    >>> summary = edgesentry.stream("bundle_dir", "line.mp4", jsonl="results.jsonl", summary="summary.json")

See ``runtime.py`` for the threads and guarantees and docs/stream.md for the user guide.
"""

from __future__ import annotations

from edgesentry.stream.accounting import Snapshot
from edgesentry.stream.cameras import open_any_source as open_source
from edgesentry.stream.options import check_options
from edgesentry.stream.queues import Frame
from edgesentry.stream.runtime import (
    EXIT_INTERNAL_ERROR,
    EXIT_OK,
    EXIT_SINK_ERRORS,
    EXIT_SOURCE_LOST,
    POLICIES,
    Stream,
    StreamSummary,
    build_sinks,
    stream,
)
from edgesentry.stream.sinks import CallbackSink, JsonlSink, MqttCredentials, MqttSink, OverlaySink, Sink
from edgesentry.stream.sources import (
    DEFAULT_SETTLE_S,
    FolderSource,
    IterableSource,
    PacedSource,
    RawFrame,
    Source,
    SourceDisconnected,
    SourceUnavailable,
    VideoSource,
)
from edgesentry.stream.supervisor import InHand, supervise

__all__ = [
    "DEFAULT_SETTLE_S", "EXIT_INTERNAL_ERROR", "EXIT_OK", "EXIT_SINK_ERRORS", "EXIT_SOURCE_LOST", "POLICIES",
    "CallbackSink", "FolderSource", "Frame", "InHand", "PacedSource",
    "IterableSource", "JsonlSink", "MqttCredentials", "MqttSink", "OverlaySink", "RawFrame", "Sink", "Snapshot",
    "Source", "SourceDisconnected", "SourceUnavailable", "Stream", "StreamSummary", "VideoSource", "build_sinks",
    "check_options", "open_source", "stream", "supervise",
]
