"""Serving with Triton Inference Server: model repositories and a KServe v2 client.

``write_model_repository(bundle, OUT)`` (CLI: ``edgesentry export BUNDLE --format triton-repo
OUT``) writes a repository whose ensemble runs the family's pre-processing, its graphs
(``onnxruntime_onnx``, ``tensorrt_plan`` or a python-backend ONNX Runtime model) and its
fused post-processing, and returns the ``Result`` fields as tensors; it takes the detector's
raw input (an image's pixels, a cube, feature streams). ``check_repository`` runs that pipeline
in-process against ``Detector.predict`` (the export verb's check). ``Client`` calls a server over
HTTP or gRPC with anything ``Detector.predict`` accepts and returns a ``Result``.
``tritonclient`` is imported by ``Client`` only.
"""

from __future__ import annotations

from typing import Any

from edgesentry.serving.check import check_repository
from edgesentry.serving.repository import write_model_repository

__all__ = ["Client", "check_repository", "write_model_repository"]


def __getattr__(name: str) -> Any:
    if name == "Client":  # lazy: tritonclient (and gevent) load only when a client is wanted
        from edgesentry.serving.client import Client

        return Client
    raise AttributeError(name)
