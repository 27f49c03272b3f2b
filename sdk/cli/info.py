"""``edgesentry info``: what this install can run. Works without torch.

Versions of the packages edgesentry uses, graph backends and why one is missing, ONNX
Runtime providers (with the CPU-wheel-shadows-GPU-wheel check), kernel tiers
(``edgesentry.kernels.tier_status()``), CUDA device, and for every family whether its module
is present and which optional dependencies it lacks. Nothing here imports torch.

``edgesentry info BUNDLE`` describes a bundle instead: its family and files, and its signature:
the signer's key fingerprint and the verification state (``verified`` against the trusted keys,
``refused`` with the reason, ``unchecked`` when no trusted key is configured, ``unsigned``). A
bundle whose signature is refused is not parsed further.

``edgesentry info --memory BUNDLE`` states what loading and running the bundle will need: the
runtime, weights, activations at the bundle's input size, inputs and outputs, and TensorRT's
workspace (``edgesentry.export.memory``); ``--backend`` and ``--size AXIS=N`` choose what is sized.
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
from edgesentry.cli._args import add_trust_args, trust_policy

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
    "model-signing",
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
    parser.add_argument("bundle", nargs="?", default=None,
                        help="describe this bundle (family, files, version, thresholds, recalibration lineage, "
                             "signer and verification state) instead of the install")
    parser.add_argument("--json", action="store_true", help="print the facts as JSON")
    parser.add_argument("--memory", action="store_true",
                        help="estimate the memory loading BUNDLE and running one input will need")
    parser.add_argument("--backend", choices=["onnxruntime", "torch", "tensorrt"], default=None,
                        help="with --memory: the graph backend to size (default: onnxruntime when exported)")
    parser.add_argument("--size", action="append", default=[], metavar="AXIS=N",
                        help="with --memory: a dynamic input axis's size, e.g. --size H=512 (repeatable; "
                             "default: the bundle's optimisation profile)")
    add_trust_args(parser)


def _sizes(values: list[str]) -> dict[str, int]:
    from edgesentry.errors import ConfigError

    out = {}
    for value in values:
        axis, _, n = value.partition("=")
        if not axis or not n.isdigit() or int(n) < 1:
            raise ConfigError(f"--size takes AXIS=N with N a positive integer; got {value!r}")
        out[axis] = int(n)
    return out


def _print_memory(est: dict[str, Any]) -> None:
    mb = 1 << 20
    shapes = ", ".join(f"{k} {'x'.join(map(str, v))}" for k, v in est["input"].items())
    print(f"memory of {est['family']} on {est['backend']} at {shapes}:")
    for part in ("runtime", "weights", "activations", "io", "workspace"):
        if est[part] or part != "workspace":
            print(f"  {part:12s} {est[part] / mb:10.0f} MB")
    print(f"  {'total':12s} {est['total'] / mb:10.0f} MB")
    for note in est["notes"]:
        print(f"  note: {note}")


def bundle_facts(path: str, policy: Any, signature: str | None) -> dict[str, Any]:
    """Family, files, version, thresholds, lineage and signature state of a bundle; a refused
    signature stops before ``meta.json`` is read, a broken lineage chain fails ``Bundle.open``."""
    from edgesentry.bundle import Bundle, bundle_version
    from edgesentry.signing import signature_state

    facts: dict[str, Any] = {"bundle": path, "signature": signature_state(path, policy, signature=signature)}
    if facts["signature"]["state"] == "refused" and policy is not None:
        return facts
    bundle = Bundle.open(path)
    facts.update(family=bundle.family, files=bundle.files, created=bundle.meta.get("created"),
                 edgesentry_version=bundle.meta.get("edgesentry_version"), version=bundle_version(bundle.meta),
                 thresholds=bundle.meta.get("thresholds"), lineage=[_lineage_row(r) for r in
                                                                   bundle.meta.get("lineage") or []])
    return facts


def _lineage_row(record: dict[str, Any]) -> dict[str, Any]:
    row = {k: record.get(k) for k in ("version", "when", "who", "parent", "audit_log")}
    return row | {"parts": record.get("parts", {}).get("count"),
                  "old_raw_threshold": record.get("old", {}).get("raw_threshold"),
                  "new_raw_threshold": record.get("new", {}).get("raw_threshold"), "digest": record.get("digest")}


def _print_bundle(facts: dict[str, Any]) -> None:
    sig = facts["signature"]
    print(f"bundle {facts['bundle']}" + (f": family {facts['family']}, {len(facts['files'])} files, created "
                                         f"{facts['created']} by edgesentry {facts['edgesentry_version']}"
                                         if "family" in facts else ""))
    signer = f" by {sig['signer']}" if sig.get("signer") else ""
    where = f" ({sig['key']}, {sig['files']} files)" if sig["state"] == "verified" else ""
    print(f"signature: {sig['state']}{signer}{where}" + (f": {sig['reason']}" if sig.get("reason") else ""))
    if "family" not in facts:
        return
    thresholds = facts["thresholds"] or {}
    print(f"version {facts['version']}, raw threshold {thresholds.get('raw_threshold')}")
    if not facts["lineage"]:
        print("lineage: none (never recalibrated)")
    for r in facts["lineage"]:
        print(f"  v{r['version']} {r['when']} by {r['who']}: from v{r['parent']['version']} ({r['parent']['path']}), "
              f"{r['parts']} parts of {r['audit_log']['path']}; raw threshold {r['old_raw_threshold']} -> "
              f"{r['new_raw_threshold']}; digest {r['digest'][:16]}")


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
    if args.memory:
        from edgesentry.errors import ConfigError
        from edgesentry.export.memory import estimate

        if args.bundle is None:
            raise ConfigError("--memory needs a BUNDLE: edgesentry info --memory BUNDLE")
        est = estimate(args.bundle, backend=args.backend, sizes=_sizes(args.size)).to_dict()
        print(json.dumps(est, indent=2, sort_keys=True)) if args.json else _print_memory(est)
        return 0
    if args.bundle is not None:
        facts = bundle_facts(args.bundle, trust_policy(args), args.signature)
        if args.json:
            print(json.dumps(facts, indent=2, sort_keys=True))
        else:
            _print_bundle(facts)
        return 0 if facts["signature"]["state"] != "refused" else 1
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
