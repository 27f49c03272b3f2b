"""The machine the code runs on, and measurements of it cached per CPU model.

Where a kernel or a detector chooses between paths (local RX's shared windows, a kernel's
thread count, ONNX Runtime or torch for a graph), the choice rests on timings taken on the
running machine, not on constants tuned on one CPU. A measurement is short (tens of ms), taken
once per CPU model and kept in the user's cache directory::

    values = measured("rx.local.costs", 1, measure_fn)     # dict[str, float], cached

Cache: ``$EDGESENTRY_CACHE_DIR`` (else ``$XDG_CACHE_HOME/edgesentry``, else
``~/.cache/edgesentry``) ``/machine/<cpu key>/<name>.v<version>.json``. One file per
measurement, written to a temporary file in the same folder and renamed over the old one
(atomic on POSIX and Windows), so concurrent writers never interleave: each writes a complete
file and the last rename wins, and readers see either the old or the new file, never a
partial one. A file that does not parse, has the wrong schema, another CPU key or version, or
values that are not finite numbers is ignored and measured again. ``EDGESENTRY_MEASURE=off``
skips measuring (and the cache): callers then use their documented defaults.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import json
import math
import os
import platform
import re
import tempfile
import threading
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

ENV_CACHE = "EDGESENTRY_CACHE_DIR"
ENV_MEASURE = "EDGESENTRY_MEASURE"
SCHEMA = "edgesentry-machine/1"

#: CPU features that change which code runs or how fast (x86-64 and aarch64 spellings)
ISA_FLAGS = (
    "sse4_2", "avx", "avx2", "fma", "f16c", "avx512f", "avx512vl", "avx512bw", "avx512dq", "avx512_vnni",
    "avx512_bf16", "avx512_fp16", "amx_tile", "amx_bf16", "amx_int8",  # x86-64
    "asimd", "asimdhp", "asimddp", "fphp", "sve", "sve2", "bf16", "i8mm",  # aarch64
)

_lock = threading.Lock()
_memo: dict[tuple[str, int], dict[str, float]] = {}


@functools.lru_cache(maxsize=1)
def cpu_info() -> dict[str, Any]:
    """CPU model, vendor, family/model numbers, architecture, ISA flags (those of ``ISA_FLAGS``
    present) and usable cores."""
    model = vendor = ""
    flags: set[str] = set()
    ident: dict[str, str] = {}  # family / model numbers (a VM may hide the model name)
    try:
        text = Path("/proc/cpuinfo").read_text(errors="replace")
    except OSError:
        text = ""
    for line in text.splitlines():
        key, _, value = line.partition(":")
        key, value = key.strip().lower(), value.strip()
        if key == "model name" and not model:
            model = value
        elif key in ("vendor_id", "cpu implementer") and not vendor:
            vendor = value
        elif key in ("flags", "features") and not flags:
            flags = set(value.split())
        elif key in ("cpu family", "model", "cpu part", "cpu variant") and key not in ident:
            ident[key] = value
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # macOS / Windows
        cores = os.cpu_count() or 1
    return {
        "model": model or platform.processor() or platform.machine(),
        "vendor": vendor,
        "id": "/".join(f"{k}={v}" for k, v in sorted(ident.items())),
        "machine": platform.machine(),
        "flags": [f for f in ISA_FLAGS if f in flags],
        "cores": cores,
    }


def cpu_key() -> str:
    """A file-name-safe key of the CPU model, ISA flags and usable cores."""
    info = cpu_info()
    ident = json.dumps([info["machine"], info["id"], info["flags"], info["cores"]])
    digest = hashlib.sha1(ident.encode()).hexdigest()[:10]
    name = re.sub(r"[^A-Za-z0-9]+", "-", info["model"]).strip("-")[:60] or "cpu"
    return f"{name}-{digest}"


def cache_root() -> Path:
    if os.environ.get(ENV_CACHE):
        return Path(os.environ[ENV_CACHE])
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "edgesentry"


def measuring_enabled() -> bool:
    return os.environ.get(ENV_MEASURE, "on").strip().lower() not in ("off", "0", "no", "false")


def _path(name: str, version: int) -> Path:
    if not re.fullmatch(r"[A-Za-z0-9_.-]+", name):
        raise ValueError(f"measurement names are [A-Za-z0-9_.-]+; got {name!r}")
    return cache_root() / "machine" / cpu_key() / f"{name}.v{version}.json"


def _valid(values: Any) -> bool:
    return (isinstance(values, dict) and bool(values)
            and all(isinstance(k, str) and isinstance(v, (int, float)) and not isinstance(v, bool)
                    and math.isfinite(v) for k, v in values.items()))


def read_cached(name: str, version: int) -> dict[str, float] | None:
    """The cached values of a measurement, or None when absent or unusable (any defect)."""
    try:
        doc = json.loads(_path(name, version).read_text())
    except (OSError, ValueError, UnicodeDecodeError):
        return None
    if not (isinstance(doc, dict) and doc.get("schema") == SCHEMA and doc.get("name") == name
            and doc.get("version") == version and doc.get("cpu") == cpu_key() and _valid(doc.get("values"))):
        return None
    return {k: float(v) for k, v in doc["values"].items()}


def write_cached(name: str, version: int, values: Mapping[str, float]) -> Path | None:
    """Write a measurement atomically (temporary file + rename); None when the cache is not writable."""
    path = _path(name, version)
    doc = {"schema": SCHEMA, "name": name, "version": version, "cpu": cpu_key(), "cpu_info": cpu_info(),
           "measured_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "values": dict(values)}
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
        try:
            with os.fdopen(fd, "w") as fh:
                json.dump(doc, fh, indent=1)
            os.replace(tmp, path)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            raise
    except OSError:
        return None  # a read-only home: measure again next time, never fail the caller
    return path


def measured(name: str, version: int, measure: Callable[[], Mapping[str, float]],
             default: Mapping[str, float] | None = None,
             keep: Callable[[Mapping[str, float]], bool] | None = None) -> dict[str, float]:
    """Values of the measurement ``name``: from this process's memo, the cache, or ``measure()``.

    ``measure`` returns finite numbers by name; it runs at most once per process and CPU key
    (under a lock), and its result is cached on disk. With ``EDGESENTRY_MEASURE=off`` the
    ``default`` is returned (``measure`` never runs); without a default, measuring proceeds.
    ``keep`` says whether values can be trusted beyond this process: values it refuses (say a
    thread speed-up of 1.0 on a multi-core CPU, what a machine busy at that moment shows) are
    used by this process only, never written, and a cached entry it refuses is measured again.
    """
    key = (name, version)
    with _lock:
        if key in _memo:
            return dict(_memo[key])
        if not measuring_enabled() and default is not None:
            return dict(default)
        values = read_cached(name, version)
        if values is not None and keep is not None and not keep(values):
            values = None
        if values is None:
            fresh = dict(measure())
            if not _valid(fresh):
                raise ValueError(f"measurement {name!r} returned non-finite or empty values: {fresh}")
            values = {k: float(v) for k, v in fresh.items()}
            if keep is None or keep(values):
                write_cached(name, version, values)
        _memo[key] = values
        return dict(values)


def forget(name: str | None = None) -> None:
    """Drop this process's memo (all, or one measurement): the next call reads the cache again."""
    with _lock:
        for key in [k for k in _memo if name is None or k[0] == name]:
            del _memo[key]
