"""Thread-pool hygiene between a graph backend and numpy post-processing.

After a multi-threaded BLAS call, OpenBLAS keeps its worker threads spinning for a while;
on a small machine they then compete with the next torch / ONNX Runtime graph call for the
same cores (measured on MAVD at T=182 on 2 cores: the graph ran 2x slower right after a
BLAS-threaded head). Small post-processing matmuls gain nothing from threads, so they run
with BLAS limited to one thread.
"""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Iterator
from typing import Any


@functools.lru_cache(maxsize=1)
def _controller() -> Any:
    try:
        from threadpoolctl import ThreadpoolController
    except ImportError:  # optional: without it BLAS keeps its default threads
        return None
    return ThreadpoolController()


@contextlib.contextmanager
def single_threaded_blas() -> Iterator[None]:
    """Run the block with BLAS (OpenBLAS/MKL/BLIS) limited to one thread."""
    controller = _controller()
    if controller is None:
        yield
        return
    with controller.limit(limits=1, user_api="blas"):
        yield
