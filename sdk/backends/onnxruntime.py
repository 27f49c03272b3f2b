"""ONNX Runtime runner: providers in priority order, verified after session creation.

``providers_for("auto")`` lists what this install can run, best first: the TensorRT EP (with
its engine and timing caches in a directory, so the minutes-long first build happens once),
the CUDA EP, then the CPU. ``OrtRunner.infer_bound`` runs through IOBinding so device-resident
inputs (``OrtValue`` on CUDA) are not copied through the host. When both the ``onnxruntime``
and ``onnxruntime-gpu`` distributions are installed they overwrite each other's module and
the CUDA EP silently disappears; ``gpu_wheel_shadowed()`` detects that and a warning says so.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, Union

import numpy as np

from edgesentry.backends.base import InputSpec, Runner
from edgesentry.errors import BackendUnavailableError, ConfigError, InputError

log = logging.getLogger("edgesentry.backends")

Provider = Union[str, tuple[str, dict[str, Any]]]


def _cpu_count() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # macOS / Windows
        return os.cpu_count() or 1


def gpu_wheel_shadowed() -> str | None:
    """A message when the CPU ``onnxruntime`` wheel shadows ``onnxruntime-gpu``, else ``None``."""
    from importlib import metadata

    installed = set()
    for dist in ("onnxruntime", "onnxruntime-gpu"):
        try:
            metadata.version(dist)
            installed.add(dist)
        except metadata.PackageNotFoundError:
            pass
    if installed != {"onnxruntime", "onnxruntime-gpu"}:
        return None
    try:
        import onnxruntime as ort

        providers = ort.get_available_providers()
    except ImportError:
        providers = []
    if "CUDAExecutionProvider" in providers:
        return None
    return ("both onnxruntime and onnxruntime-gpu are installed and the CPU wheel's module won: the CUDA and "
            "TensorRT providers are missing. Fix: pip uninstall -y onnxruntime onnxruntime-gpu && "
            "pip install onnxruntime-gpu")


def providers_for(device: str = "auto", *, cache_dir: str | Path | None = None, fp16: bool = False,
                  device_id: int = 0, available: Sequence[str] | None = None) -> list[Provider]:
    """Execution providers in priority order for ``device`` ("auto", "tensorrt", "cuda", "cpu").

    ``auto`` keeps the providers this install has, TensorRT EP first; an explicit device
    returns that provider (plus the CPU for the nodes it cannot take). With ``cache_dir`` the
    TensorRT EP keeps its engines and timing cache there (``trt_engine_cache_enable``).
    """
    if available is None:
        try:
            import onnxruntime as ort

            available = ort.get_available_providers()
        except ImportError:
            raise BackendUnavailableError("onnxruntime is not installed (pip install edgesentry[ort])") from None
    trt_opts: dict[str, Any] = {"device_id": device_id, "trt_fp16_enable": bool(fp16)}
    if cache_dir is not None:
        Path(cache_dir).mkdir(parents=True, exist_ok=True)
        trt_opts.update(trt_engine_cache_enable=True, trt_engine_cache_path=str(cache_dir),
                        trt_timing_cache_enable=True, trt_timing_cache_path=str(cache_dir))
    table: dict[str, Provider] = {
        "tensorrt": ("TensorrtExecutionProvider", trt_opts),
        "cuda": ("CUDAExecutionProvider", {"device_id": device_id}),
        "cpu": "CPUExecutionProvider",
    }
    if device == "auto":
        wanted = ["tensorrt", "cuda", "cpu"]
        chosen = [table[d] for d in wanted if _provider_name(table[d]) in available]
        if "CUDAExecutionProvider" not in available and (msg := gpu_wheel_shadowed()):
            log.warning(msg)
        return chosen or ["CPUExecutionProvider"]
    if device not in table:
        raise BackendUnavailableError(f"unknown ONNX Runtime device {device!r}; expected auto, tensorrt, cuda or cpu")
    return [table[device]] + (["CPUExecutionProvider"] if device != "cpu" else [])


def _provider_name(p: Provider) -> str:
    return p if isinstance(p, str) else p[0]


@dataclass(frozen=True)
class OrtOptions:
    """Session options of one graph on ONNX Runtime; each family sets them per graph.

    Attributes:
        threads: intra-op threads (``None``: the usable cores).
        optimization: graph optimisation level. ``"all"`` includes the layout transformations
            (NCHWc for convolutions), which pay off on image backbones; ``"extended"`` stops
            before them.
        spinning: whether intra-op workers spin between the nodes of a run. Spinning hands work
            over fast on an idle machine, but on a small or busy one the spinning workers take
            the cores the running node needs: MDMF's ``views`` graph (a transformer over 8
            tokens: hundreds of tiny nodes) ran 4x faster without it on a loaded 2-core EPYC.
        denormal_as_zero: flush denormal floats (Intel cores pay ~100 cycles per denormal
            operand). Off by default: ONNX Runtime sets the flush-to-zero / denormals-are-zero
            bits on the thread that creates the session too, i.e. the caller's Python thread,
            for the rest of the process, and every later numpy / torch computation on that
            thread then silently flushes subnormals. Only for processes that want that.
    """

    threads: int | None = None
    optimization: Literal["all", "extended", "basic", "disabled"] = "all"
    spinning: bool = True
    denormal_as_zero: bool = False


_LEVELS = {"all": "ORT_ENABLE_ALL", "extended": "ORT_ENABLE_EXTENDED", "basic": "ORT_ENABLE_BASIC",
           "disabled": "ORT_DISABLE_ALL"}


def session_options(options: OrtOptions | None = None, threads: int | None = None) -> Any:
    """``onnxruntime.SessionOptions`` for ``options`` (``threads`` overrides theirs)."""
    import onnxruntime as ort

    options = options or OrtOptions()
    if options.optimization not in _LEVELS:
        raise ConfigError(f"ONNX Runtime optimization must be one of {sorted(_LEVELS)}; got {options.optimization!r}")
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads or options.threads or _cpu_count()
    opts.graph_optimization_level = getattr(ort.GraphOptimizationLevel, _LEVELS[options.optimization])
    # Workers spin between the nodes of a run (fast hand-offs) but stop when run() returns:
    # every detector post-processes the outputs on the host, and workers still spinning
    # would take the cores its compiled kernels need (measured on MAVD, T = 182, 2 cores:
    # the host part went from 3.1 to 2.1 ms, the graph itself did not change).
    opts.add_session_config_entry("session.force_spinning_stop", "1")
    if not options.spinning:
        opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
    if options.denormal_as_zero:
        opts.add_session_config_entry("session.set_denormal_as_zero", "1")
    return opts


def session_from_onnx(model: str | Path | bytes, providers: Sequence[Provider] = ("CPUExecutionProvider",),
                      threads: int | None = None, options: OrtOptions | None = None) -> Any:
    """Create an ``InferenceSession`` and fail unless the first requested provider is active.

    ONNX Runtime silently falls back to the CPU when a provider cannot load; here that is an
    error listing the requested and the available providers.
    """
    try:
        import onnxruntime as ort
    except ImportError:
        raise BackendUnavailableError("onnxruntime is not installed (pip install edgesentry[ort])") from None
    available = ort.get_available_providers()
    names = [_provider_name(p) for p in providers]
    missing = [n for n in names if n not in available]
    if missing:
        shadow = gpu_wheel_shadowed()
        hint = f" ({shadow})" if shadow else (
            " (install onnxruntime-gpu instead of onnxruntime)" if "CUDAExecutionProvider" in missing else "")
        raise BackendUnavailableError(
            f"ONNX Runtime providers {missing} are not available; requested {names}, available {available}{hint}"
        )
    opts = session_options(options, threads)
    source = str(model) if isinstance(model, (str, Path)) else model
    try:
        session = ort.InferenceSession(source, sess_options=opts, providers=list(providers))
    except Exception as exc:  # ORT raises its own exception types for invalid models
        raise BackendUnavailableError(f"ONNX Runtime could not load the model: {exc}") from None
    active = session.get_providers()
    if names and names[0] not in active:
        raise BackendUnavailableError(f"requested provider {names[0]} is not active; session runs on {active}")
    return session


class OrtRunner(Runner):
    name = "onnxruntime"

    def __init__(self, model: str | Path | bytes, inputs: Mapping[str, InputSpec], outputs: Sequence[str],
                 providers: Sequence[Provider] = ("CPUExecutionProvider",), threads: int | None = None,
                 options: OrtOptions | None = None):
        super().__init__(inputs, outputs)
        self.model = model
        self.providers = list(providers)
        self.threads = threads
        self.options = options or OrtOptions()
        self.session: Any = None

    def activate_impl(self) -> None:
        self.session = session_from_onnx(self.model, self.providers, self.threads, self.options)

    def deactivate_impl(self) -> None:
        self.session = None

    def infer_impl(self, feed: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        outs = self.session.run(self.outputs, {k: np.ascontiguousarray(v) for k, v in feed.items()})
        return dict(zip(self.outputs, outs))

    def infer_bound(self, feed: Mapping[str, Any], *, output_device: str = "cpu", device_id: int = 0,
                    copy_to_host: bool = True) -> dict[str, Any]:
        """Run through IOBinding: ``OrtValue`` inputs stay where they are (e.g. on CUDA).

        numpy inputs are bound from host memory; outputs are allocated on ``output_device``
        ("cpu" or "cuda") and copied to numpy when ``copy_to_host`` (else ``OrtValue``s).
        """
        import onnxruntime as ort

        if not self.is_active:
            self.activate()
        missing = set(self.inputs) ^ set(feed)
        if missing:
            raise InputError(f"{self.name}: required inputs {sorted(self.inputs)}; feed has {sorted(feed)}")
        binding = self.session.io_binding()
        for name in self.inputs:
            value = feed[name]
            if isinstance(value, ort.OrtValue):
                binding.bind_ortvalue_input(name, value)
            else:
                arr = np.ascontiguousarray(value)
                self.inputs[name].check(name, arr)
                binding.bind_cpu_input(name, arr)
        for name in self.outputs:
            binding.bind_output(name, output_device, device_id)
        self.session.run_with_iobinding(binding)
        if copy_to_host:
            return dict(zip(self.outputs, binding.copy_outputs_to_cpu()))
        return dict(zip(self.outputs, binding.get_outputs()))

    def describe(self) -> dict[str, Any]:
        active = self.session.get_providers() if self.session is not None else self.providers
        return {"backend": self.name, "providers": [_provider_name(p) for p in active],
                "options": {"threads": self.threads or self.options.threads, "optimization": self.options.optimization,
                            "spinning": self.options.spinning}}
