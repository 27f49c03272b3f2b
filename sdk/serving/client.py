"""``edgesentry.serving.Client``: call a served detector over KServe v2 (HTTP or gRPC).

    client = Client("127.0.0.1:8000", model="mavd")           # HTTP
    client = Client("127.0.0.1:8001", model="mavd", protocol="grpc")
    result = client.predict({"rgb": rgb, "flow": flow, "audio": audio})   # -> Result

Plain ``tritonclient``; the ensemble's input names and types come from the server's model
metadata. Import this module *after* starting any subprocess: the HTTP client uses gevent,
which must not be forked once imported.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Any

import numpy as np

from edgesentry.errors import BackendUnavailableError, InputError, describe
from edgesentry.result import Result
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

    def _feed(self, x: Any) -> dict[str, np.ndarray]:
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

    def predict(self, x: Any) -> Result:
        """Send one detector input; return the ``Result`` the server computed."""
        feed = self._feed(x)
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
