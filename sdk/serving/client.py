"""``edgesentry.serving.Client``: call a served detector over KServe v2 (HTTP or gRPC).

    client = Client("127.0.0.1:8000", model="isstad")          # HTTP
    client = Client("127.0.0.1:8001", model="mavd", protocol="grpc")
    result = client.predict("part.png")                          # -> Result, as Detector.predict
    results = client.predict("parts/")                           # a folder / glob / list -> [Result]
    result = client.predict({"rgb": rgb, "flow": flow, "audio": audio})

``predict`` accepts what ``Detector.predict`` of the served family accepts (paths, PIL images,
arrays, ``.npy`` files ...): the ensemble's ``edgesentry_family`` parameter names the family,
whose ``serving_feed`` turns the input into the served raw tensors (an image's pixels, a cube,
feature streams). Plain ``tritonclient``; the input names and types come from the server's
model metadata. Import this module *after* starting any subprocess: the HTTP client uses
gevent, which must not be forked once imported.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Any

import numpy as np

from edgesentry.errors import BackendUnavailableError, InputError, describe
from edgesentry.result import Result
from edgesentry.serving.repository import FAMILY_PARAMETER
from edgesentry.serving.runtime import ARRAY_INPUT, RESULT_OUTPUTS, decode_result

_NP_TO_TRITON = {
    "float32": "FP32",
    "float16": "FP16",
    "float64": "FP64",
    "int64": "INT64",
    "int32": "INT32",
    "int16": "INT16",
    "int8": "INT8",
    "uint8": "UINT8",
    "bool": "BOOL",
}


class Client:
    """A KServe v2 client for an edgesentry ensemble served by Triton."""

    def __init__(self, url: str = "127.0.0.1:8000", model: str = "", *, protocol: str = "http", timeout: float = 60.0):
        if protocol not in ("http", "grpc"):
            raise InputError(f"protocol must be 'http' or 'grpc'; got {protocol!r}")
        try:
            if protocol == "http":
                import tritonclient.http as tc
            else:
                import tritonclient.grpc as tc
        except ImportError:
            raise BackendUnavailableError(
                "the Triton client needs tritonclient (pip install 'tritonclient[http,grpc]')"
            ) from None
        self.tc, self.protocol, self.model = tc, protocol, model
        if protocol == "http":
            self.client = tc.InferenceServerClient(url, connection_timeout=timeout, network_timeout=timeout)
        else:
            self.client = tc.InferenceServerClient(url)
        self.inputs = self._input_meta()
        self.family = self._family()

    def _family(self) -> str | None:
        """The served family (the ensemble's ``edgesentry_family`` parameter), if it says."""
        config = self.client.get_model_config(self.model)
        if isinstance(config, dict):
            params = config.get("config", config).get("parameters", {})
            return (params.get(FAMILY_PARAMETER) or {}).get("string_value")
        params = config.config.parameters
        return params[FAMILY_PARAMETER].string_value if FAMILY_PARAMETER in params else None

    def _input_meta(self) -> dict[str, str]:
        meta = self.client.get_model_metadata(self.model)
        items = (
            meta["inputs"]
            if isinstance(meta, dict)
            else [{"name": i.name, "datatype": i.datatype} for i in meta.inputs]
        )
        return {i["name"]: i["datatype"] for i in items}

    def is_ready(self) -> bool:
        return bool(self.client.is_model_ready(self.model))

    def _feed(self, x: Any, **options: Any) -> dict[str, np.ndarray]:
        if self.family is not None:
            from edgesentry.detectors import family_module

            x = family_module(self.family).serving_feed(x, **options)
        elif options:
            raise InputError(f"model {self.model!r} names no family; options {sorted(options)} cannot apply")
        if isinstance(x, Mapping):
            feed = {k: np.asarray(v) for k, v in x.items()}
        else:
            feed = {ARRAY_INPUT: np.asarray(x)}
        if set(feed) != set(self.inputs):
            raise InputError(f"model {self.model!r} takes inputs {sorted(self.inputs)}; got {describe(x)}")
        out = {}
        for name, arr in feed.items():
            want = self.inputs[name]
            if _NP_TO_TRITON.get(str(arr.dtype)) != want:
                arr = arr.astype({v: k for k, v in _NP_TO_TRITON.items()}[want])
            out[name] = np.ascontiguousarray(arr)
        return out

    def predict(self, x: Any, **options: Any) -> Result | list[Result]:
        """Send what ``Detector.predict`` of the served family accepts; return the ``Result`` the
        server computed (a list for a folder, a glob or a list of paths, one request each).

        ``options`` are the family's input options (``color="bgr"`` for isstad, ``variable=``
        for fers cubes).
        """
        if self.family is not None:
            from edgesentry.detector import many_inputs
            from edgesentry.detectors import family_module

            many = many_inputs(x, family_module(self.family).DETECTOR)
            if many is not None:
                return [self._predict_one(item, options) for item in many]
        return self._predict_one(x, options)

    def _predict_one(self, x: Any, options: dict[str, Any]) -> Result:
        feed = self._feed(x, **options)
        inputs = []
        for name, arr in feed.items():
            t = self.tc.InferInput(name, list(arr.shape), self.inputs[name])
            if self.protocol == "http":
                t.set_data_from_numpy(arr, binary_data=True)
            else:
                t.set_data_from_numpy(arr)
            inputs.append(t)
        outputs = [
            self.tc.InferRequestedOutput(n, **({"binary_data": True} if self.protocol == "http" else {}))
            for n in RESULT_OUTPUTS
        ]
        start = time.perf_counter()
        response = self.client.infer(self.model, inputs, outputs=outputs)
        elapsed = time.perf_counter() - start
        return decode_result({n: response.as_numpy(n) for n in RESULT_OUTPUTS}, timings={"request": elapsed})

    def close(self) -> None:
        self.client.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()
