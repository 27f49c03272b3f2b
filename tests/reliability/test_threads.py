"""Thread safety: one detector shared by 8 threads gives exactly what serial calls give.

Each family's inputs are distinct per call, so a result delivered to the wrong caller, a
buffer reused across calls or state mutated during ``predict`` would show as a mismatch.
"""

from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np
import pytest

THREADS = 8


def _inputs(family: str, det: Any, n: int) -> tuple[list[Any], Callable[[Any], Any]]:
    rng = np.random.default_rng(123)
    if family == "rx":
        return [rng.normal(size=(10, 12, 4)) for _ in range(n)], det.predict
    if family == "fers":
        return [rng.normal(size=(8, 9, det.bands)) for _ in range(n)], det.predict
    if family == "mavd":
        def x(t: int) -> dict[str, np.ndarray]:
            return {"rgb": rng.normal(size=(t, 1024)).astype(np.float32),
                    "flow": rng.normal(size=(t, 1024)).astype(np.float32),
                    "audio": rng.normal(size=(t, 128)).astype(np.float32)}
        return [x(2 + i % 3) for i in range(n)], det.predict
    if family == "mdmf":
        t, d = det.settings.frames, det.settings.dim

        def episode() -> dict[str, np.ndarray]:
            return {"query_feats": rng.normal(size=(1, t, d)).astype(np.float32),
                    "support_feats": rng.normal(size=(4, t, d)).astype(np.float32),
                    "support_labels": np.array([0, 0, 1, 2]),
                    "text_embeddings": rng.normal(size=(3, d)).astype(np.float32)}
        return [episode() for _ in range(n)], lambda kw: det.classify_features(**kw)
    if family == "isstad":
        return [rng.integers(0, 256, (40 + i, 56, 3), dtype=np.uint8) for i in range(n)], det.predict
    raise AssertionError(family)


def _same(a: Any, b: Any) -> None:
    assert a.score == b.score
    if a.anomaly_map is None:
        assert b.anomaly_map is None
    else:
        np.testing.assert_array_equal(a.anomaly_map, b.anomaly_map)
    for key, value in a.extras.items():
        if isinstance(value, np.ndarray) and value.dtype.kind in "fiub":
            np.testing.assert_array_equal(value, b.extras[key], err_msg=key)


@pytest.mark.parametrize("family", ["rx", "fers", "mavd", "mdmf", "isstad"])
def test_one_detector_eight_threads_equals_serial(session_env, family, torch_one_thread):
    det = session_env.det(family)
    n = THREADS  # one call per thread; the pool still interleaves them (torch families: ~0.1-0.3 s a call here)
    inputs, call = _inputs(family, det, n)
    serial = [call(x) for x in inputs]
    with ThreadPoolExecutor(THREADS) as pool:
        threaded = list(pool.map(call, inputs))
    for a, b in zip(serial, threaded):
        _same(a, b)
    # The inputs differ, so distinct results prove no caller got another's answer.
    assert len({r.score for r in serial}) == len(inputs)
