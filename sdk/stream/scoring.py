"""Scoring a micro-batch so that one bad input fails only itself (shared by stream and line)."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

from edgesentry.errors import EdgesentryError

log = logging.getLogger("edgesentry.stream")


def score_isolated(detector: Any, images: Sequence[Any]) -> list[tuple[Any, str | None]]:
    """``(result, None)`` or ``(None, "ErrorType: message")`` for each image, in order.

    One ``predict_batch`` call; if it raises (or returns the wrong number of results), the
    images are scored one by one with ``predict``, so a bad frame never fails its batch-mates.
    """
    try:
        results = detector.predict_batch(list(images))
        if len(results) != len(images):
            raise RuntimeError(f"predict_batch returned {len(results)} results for {len(images)} inputs")
        return [(r, None) for r in results]
    except Exception:
        out: list[tuple[Any, str | None]] = []
        for image in images:
            try:
                out.append((detector.predict(image), None))
            except Exception as exc:
                out.append((None, f"{type(exc).__name__}: {exc}"))
                if not isinstance(exc, EdgesentryError):
                    log.debug("detector raised on one frame", exc_info=True)
        return out
