"""``edgesentry info``: what this install can run. Works without torch.

Versions of the packages edgesentry uses, graph backends and why one is missing, ONNX
Runtime providers (with the CPU-wheel-shadows-GPU-wheel check), kernel tiers
(``edgesentry.kernels.tier_status()``), CUDA device, and for every family whether its module
is present and which optional dependencies it lacks. Nothing here imports torch.
"""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import json
import platform
import sys
from importlib import metadata
from typing import Any

from edgesentry._version import __version__

HELP = "show versions, backends, ONNX Runtime providers, kernel tiers and families available here"

PACKAGES = (
    "numpy",
    "onnx",
    "onnxruntime",
    "onnxruntime-gpu",
    "openvino",
    "torch",
    "triton",
    "cuda-python",
    "cuda-bindings",
    "tensorrt",
    "tensorrt-lean",
    "onnxslim",
    "onnxconverter-common",
    "tritonclient",
    "nvidia-pytriton",
    "opencv-python-headless",
    "safetensors",
)
# What a bundle of each family needs beyond numpy: to convert (torch) and to run (one backend).
FAMILY_NEEDS = {
    "rx": {"run": []},
    "fers": {"convert": ["torch"], "run": ["onnxruntime|torch"]},
    "isstad": {"convert": ["torch"], "run": ["onnxruntime|torch"]},
    "mavd": {"convert": ["torch"], "run": ["onnxruntime|torch"]},
    "mdmf": {"convert": ["torch"], "run": ["onnxruntime|torch"]},
}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--json", action="store_true", help="print the facts as JSON")


def _version(dist: str) -> str | None:
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return None


def _has(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):
        return False


def _ort() -> dict[str, Any]:
    if not _has("onnxruntime"):
        return {"available": False, "reason": "onnxruntime not installed (pip install edgesentry[ort])"}
    import onnxruntime as ort

    from edgesentry.backends.onnxruntime import gpu_wheel_shadowed

    return {
        "available": True,
        "version": ort.__version__,
        "providers": ort.get_available_providers(),
        "shadowed": gpu_wheel_shadowed(),
    }


def _cuda() -> dict[str, Any]:
    try:
        from edgesentry.backends.tensorrt import cuda_device_capability

        major, minor = cuda_device_capability()
        return {"available": True, "compute_capability": f"{major}.{minor}"}
    except Exception as exc:  # any failure here means "no usable GPU"
        return {"available": False, "reason": str(exc)}


def _backends(cuda: dict[str, Any]) -> dict[str, str | None]:
    trt_reason = None
    if not (_has("tensorrt") or _has("tensorrt_lean")):
        trt_reason = "TensorRT not installed (JetPack ships it; on x86 `pip install tensorrt`)"
    elif not cuda["available"]:
        trt_reason = f"no CUDA device ({cuda['reason']})"
    return {
        "torch": None if _has("torch") else "torch not installed (pip install edgesentry[torch])",
        "onnxruntime": None if _has("onnxruntime") else "onnxruntime not installed (pip install edgesentry[ort])",
        "openvino": None if _has("openvino") else "openvino not installed (pip install edgesentry[openvino])",
        "tensorrt": trt_reason,
    }


def _families() -> dict[str, Any]:
    from edgesentry.detectors import FAMILIES, family_module
    from edgesentry.export.onnx import EXPORTERS

    out = {}
    for name in FAMILIES:
        try:
            present = family_module(name) is not None
        except ImportError:
            present = False
        missing = {}
        for purpose, needs in FAMILY_NEEDS.get(name, {}).items():
            lack = [n for n in needs if not any(_has(alt) for alt in n.split("|"))]
            if lack:
                missing[purpose] = lack
        entry: dict[str, Any] = {"module": present, "missing": missing}
        entry["exporter"] = name in EXPORTERS
        out[name] = entry
    return out


def _kernels() -> dict[str, str | None]:
    try:
        from edgesentry.kernels import tier_status

        return tier_status()
    except Exception as exc:  # report, never crash `info`
        return {"error": str(exc)}


def collect() -> dict[str, Any]:
    cuda = _cuda()
    return {
        "edgesentry": __version__,
        "python": sys.version.split()[0],
        "platform": f"{platform.system()} {platform.machine()}",
        "packages": {p: _version(p) for p in PACKAGES},
        "cuda": cuda,
        "backends": _backends(cuda),
        "onnxruntime": _ort(),
        "kernel_tiers": _kernels(),
        "families": _families(),
        "torch_imported": sys.modules.get("torch") is not None,
    }


def run(args: argparse.Namespace) -> int:
    facts = collect()
    if args.json:
        print(json.dumps(facts, indent=2, sort_keys=True))
        return 0
    print(f"edgesentry {facts['edgesentry']} | Python {facts['python']} | {facts['platform']}")
    print("packages: " + ", ".join(f"{k} {v}" for k, v in facts["packages"].items() if v))
    cuda = facts["cuda"]
    print(f"CUDA device: {cuda.get('compute_capability') if cuda['available'] else 'none (' + cuda['reason'] + ')'}")
    print("backends:")
    for name, reason in facts["backends"].items():
        print(f"  {name:12s} {'available' if reason is None else 'unavailable: ' + reason}")
    ort = facts["onnxruntime"]
    if ort["available"]:
        print(f"ONNX Runtime {ort['version']} providers: {', '.join(ort['providers'])}")
        if ort["shadowed"]:
            print(f"  WARNING: {ort['shadowed']}")
    print("kernel tiers:")
    for tier, reason in facts["kernel_tiers"].items():
        print(f"  {tier:12s} {'available' if reason is None else 'unavailable: ' + str(reason)}")
    print("families:")
    for name, f in facts["families"].items():
        lack = "; ".join(f"{k} needs {', '.join(v)}" for k, v in f["missing"].items()) or "all dependencies present"
        state = "present" if f["module"] else "not in this build"
        print(f"  {name:8s} {state}; exporter {'yes' if f['exporter'] else 'no'}; {lack}")
    return 0
