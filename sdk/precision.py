"""Precision variants of a bundle and the choice among them (``edgesentry.load(..., precision=...)``).

A bundle's graphs are FP32 (``<graph>.onnx``). ``edgesentry quantize`` adds variants beside them,
``<graph>.int8.onnx`` (static INT8, QDQ) and ``<graph>.fp16.onnx`` (FP16 with the sensitive ops in
FP32), each listed and hashed in ``meta.json`` like every bundle file, and recorded under
``meta["precisions"][precision]``::

    "precisions": {
      "int8": {"graphs": {"model": {"file": "model.int8.onnx", "kept_float": [...], ...}},
               "method": "minmax", "calibration_samples": 16,
               "calibrations": {"onnxruntime": {...}, "openvino": {...}}},   # written by `tune`
      "fp16": {"graphs": {"model": {"file": "model.fp16.onnx", ...}}}
    },
    "tune": {"decision": {"backend": "openvino", "precision": "int8"}, "reason": "...",
             "table": [...], "machine": {...}, "libraries": {...}}

BF16 needs no file: OpenVINO runs the FP32 graph in BF16 on CPUs that have it (AVX512_BF16,
AMX). ``select_precision`` turns a requested precision into what the family builders need: a
read-only view of the bundle whose graphs point at the variant's files and whose calibration is
the variant's own (quantisation shifts score distributions, so FP32 thresholds are not reused),
the backend, and the runner options (OpenVINO's inference precision).

``precision="auto"`` follows ``meta["tune"]``'s decision when the machine's fingerprint (CPU
model, ISA flags, core count, GPU) equals the one ``tune`` measured on; on another machine it
warns and runs FP32 until ``edgesentry tune`` is run there.
"""

from __future__ import annotations

import copy
import hashlib
import json
import logging
import os
import platform
import shutil
import subprocess
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any, Literal

from edgesentry.bundle import Bundle
from edgesentry.errors import BundleError, ConfigError

log = logging.getLogger("edgesentry.precision")

Precision = Literal["fp32", "bf16", "fp16", "int8", "auto"]
PRECISIONS = ("fp32", "bf16", "fp16", "int8")
#: precisions stored as graph files (bf16 is an inference hint on the FP32 graph)
FILE_PRECISIONS = ("int8", "fp16")
#: OpenVINO's inference-precision hint per edgesentry precision (int8: the QDQ graph, run as f32 hint)
OPENVINO_HINT = {"fp32": "f32", "bf16": "bf16", "fp16": "f16", "int8": "f32"}
#: ISA flags that decide which reduced precision is fast (x86 /proc/cpuinfo names; ARM "Features")
ISA_FLAGS = ("avx2", "fma", "f16c", "avx512f", "avx512bw", "avx512_vnni", "avx_vnni", "avx512_bf16", "avx512_fp16",
             "amx_tile", "amx_bf16", "amx_int8", "asimd", "asimddp", "asimdhp", "bf16", "i8mm", "sve")
LIBRARIES = ("edgesentry", "numpy", "onnx", "onnxruntime", "onnxruntime-gpu", "openvino", "tensorrt", "torch")


def variant_file(graph: str, precision: str) -> str:
    """``model`` + ``int8`` -> ``model.int8.onnx``."""
    return f"{graph}.{precision}.onnx"


def precisions_of(bundle: Bundle) -> list[str]:
    """The precisions this bundle's graphs can run in: fp32 (when exported), the stored variants,
    and bf16 (an OpenVINO hint on the FP32 graph, on CPUs with BF16)."""
    graphs = bundle.meta.get("graphs", {})
    if not graphs:
        return ["fp32"]
    stored = [p for p in FILE_PRECISIONS if _record(bundle, p) is not None]
    return ["fp32", "bf16", *stored]


def _record(bundle: Bundle, precision: str) -> dict[str, Any] | None:
    record = (bundle.meta.get("precisions") or {}).get(precision)
    if record is None:
        return None
    if not isinstance(record, dict) or not isinstance(record.get("graphs"), dict):
        raise BundleError(f"{bundle.path}/meta.json: precisions[{precision!r}] must be an object with 'graphs'")
    return record


# ------------------------------------------------------------------------------ machine
def machine_info() -> dict[str, Any]:
    """What a precision decision depends on: architecture, CPU model, the ISA flags that matter
    for reduced precision, usable cores, GPU and driver (``nvidia-smi``, when present)."""
    cpu, flags = _cpu_model_and_flags()
    info: dict[str, Any] = {
        "arch": platform.machine(),
        "cpu": cpu,
        "isa": sorted(f for f in ISA_FLAGS if f in flags),
        "cpus": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count(),
        "gpu": _gpu(),
    }
    info["fingerprint"] = fingerprint(info)
    return info


def fingerprint(info: dict[str, Any]) -> str:
    """A short hash of the facts a tuned decision depends on (not the driver version)."""
    gpu = info.get("gpu") or {}
    key = {k: info.get(k) for k in ("arch", "cpu", "isa", "cpus")} | {"gpu": gpu.get("name")}
    return hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:16]


def _cpu_model_and_flags() -> tuple[str, set[str]]:
    model, flags = platform.processor() or platform.machine(), set()
    try:
        text = Path("/proc/cpuinfo").read_text(errors="replace")
    except OSError:
        return model, flags
    for line in text.splitlines():
        key, _, value = line.partition(":")
        key = key.strip().lower()
        if key in ("model name", "hardware", "cpu model") and value.strip():
            model = value.strip()
        elif key in ("flags", "features"):
            flags = set(value.split())
        if flags and key == "" and model:
            break  # first processor block is enough
    return model, flags


def _gpu() -> dict[str, str] | None:
    exe = shutil.which("nvidia-smi")
    if exe is None:
        return None
    try:
        out = subprocess.run([exe, "--query-gpu=name,driver_version", "--format=csv,noheader"], capture_output=True,
                             text=True, timeout=10, check=False).stdout.strip().splitlines()
    except (OSError, subprocess.SubprocessError):
        return None
    if not out or "," not in out[0]:
        return None
    name, driver = (s.strip() for s in out[0].split(",", 1))
    return {"name": name, "driver": driver}


def library_versions() -> dict[str, str | None]:
    out: dict[str, str | None] = {}
    for dist in LIBRARIES:
        try:
            out[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            out[dist] = None
    return out


# ---------------------------------------------------------------------------- selection
class _ReadOnlyBundle(Bundle):
    """A bundle whose graphs point at a precision variant: for running, never for writing."""

    def _write_meta(self) -> None:
        raise BundleError(f"{self.path} was opened with a reduced precision; open it at precision 'fp32' "
                          "to change it (its meta.json would otherwise record the variant's graph files)")


@dataclass
class Selection:
    """What ``edgesentry.load`` passes on: the bundle (or a view), backend and runner options."""

    bundle: Bundle
    backend: str
    precision: str
    runner_options: dict[str, Any] = field(default_factory=dict)


def select_precision(bundle: Bundle, precision: str = "fp32", backend: str = "auto") -> Selection:
    """Resolve ``precision`` for ``bundle`` on ``backend`` (see the module docstring).

    Raises:
        ConfigError: unknown precision; a precision the bundle has no graph for (listing the
            ones it has); a precision the backend cannot run.
    """
    if precision == "auto":
        precision, backend = _tuned(bundle, backend)
    if precision not in PRECISIONS:
        raise ConfigError(f"precision must be one of {[*PRECISIONS, 'auto']}; got {precision!r}")
    if precision == "fp32":
        return Selection(bundle, backend, "fp32", {"openvino_precision": "f32"} if backend == "openvino" else {})
    has = precisions_of(bundle)
    if not bundle.meta.get("graphs"):
        raise ConfigError(f"precision {precision!r} runs exported graphs; bundle {bundle.path} has none "
                          f"(run `edgesentry export {bundle.path}` first); it has precisions {has}")
    if backend in ("torch", "tensorrt"):
        hint = (" (TensorRT engines take their precision from `edgesentry build --precision`)"
                if backend == "tensorrt" else "")
        raise ConfigError(f"backend {backend!r} runs precision 'fp32' here{hint}; precision {precision!r} runs on "
                          "'onnxruntime' or 'openvino'")
    if precision == "bf16":
        if backend not in ("auto", "openvino"):
            raise ConfigError(f"precision 'bf16' runs on backend 'openvino' (an inference hint on the FP32 graph); "
                              f"got backend {backend!r}")
        return Selection(bundle, "openvino", "bf16", {"openvino_precision": "bf16"})
    if precision == "fp16" and backend == "openvino" and _record(bundle, "fp16") is None:
        return Selection(bundle, "openvino", "fp16", {"openvino_precision": "f16"})
    record = _record(bundle, precision)
    if record is None:
        raise ConfigError(f"bundle {bundle.path} has no {precision} graphs; it has precisions {has} "
                          f"(make one with `edgesentry quantize {bundle.path} --precision {precision}`)")
    chosen = backend if backend != "auto" else _auto_backend()
    return Selection(_variant_view(bundle, precision, record, chosen), chosen, precision,
                     {"openvino_precision": OPENVINO_HINT[precision]} if chosen == "openvino" else {})


def _auto_backend() -> str:
    import importlib.util

    for name in ("onnxruntime", "openvino"):
        if importlib.util.find_spec(name) is not None:
            return name
    return "onnxruntime"  # resolve_backend then says what to install


def _variant_view(bundle: Bundle, precision: str, record: dict[str, Any], backend: str) -> Bundle:
    meta = copy.deepcopy(bundle.meta)
    for graph, gmeta in meta.get("graphs", {}).items():
        entry = record["graphs"].get(graph)
        if entry is None:
            raise BundleError(f"bundle {bundle.path}: precision {precision} lacks graph {graph!r} "
                              f"(it has {sorted(record['graphs'])}); re-run `edgesentry quantize`")
        name = entry.get("file") if isinstance(entry, dict) else None
        if not isinstance(name, str) or name not in bundle.files:
            raise BundleError(f"bundle {bundle.path}: {precision} graph {graph!r} file {str(name)[:80]!r} is not "
                              "listed in meta.json")
        gmeta["file"] = name
    calibrations = record.get("calibrations") or {}
    own = calibrations.get(backend)
    if own is None and bundle.calibration is not None:
        log.warning("bundle %s: no %s thresholds for backend %s (FP32 thresholds do not carry over: quantisation "
                    "shifts scores); running without labels until `edgesentry tune` is run", bundle.path, precision,
                    backend)
    meta["calibration"] = own
    meta["thresholds"] = None  # saved FP32 thresholds are on the FP32 scores' scale
    return _ReadOnlyBundle(bundle.path, meta)


def _tuned(bundle: Bundle, backend: str) -> tuple[str, str]:
    """(precision, backend) from ``meta["tune"]`` on the machine it was made on, else fp32 with a warning."""
    record = bundle.meta.get("tune")
    if not isinstance(record, dict) or not isinstance(record.get("decision"), dict):
        log.warning("bundle %s has no tune decision; precision='auto' runs fp32 (run `edgesentry tune %s`)",
                    bundle.path, bundle.path)
        return "fp32", backend
    here = machine_info()
    tuned_on = record.get("machine") or {}
    if tuned_on.get("fingerprint") != here["fingerprint"]:
        log.warning("bundle %s was tuned on another machine (%s, %s); this one is %s, %s: running fp32 until "
                    "`edgesentry tune` is run here", bundle.path, tuned_on.get("cpu"), tuned_on.get("isa"),
                    here["cpu"], here["isa"])
        return "fp32", backend
    decided = record["decision"]
    if backend not in ("auto", decided.get("backend")):
        log.warning("bundle %s was tuned for backend %s; backend %s was requested, so it runs fp32", bundle.path,
                    decided.get("backend"), backend)
        return "fp32", backend
    return str(decided.get("precision", "fp32")), str(decided.get("backend", backend))
