"""``edgesentry tune``: every backend x precision this machine has, measured, gated, decided.

    report = tune_bundle(bundle, calib_samples, eval_samples=labelled, max_drop=0.01, min_speedup=1.2)
    print(report.table())              # rows: backend x precision; columns: p50 / p99, speedup, gates, verdict

1. The calibration samples are split: the first half calibrates the INT8 graphs (``quantize_bundle``,
   re-made so that none of the held-aside samples was seen), the second half is *held aside* for
   accuracy. FP16 graphs are made when the bundle has none.
2. Candidates: ONNX Runtime fp32 (the reference), int8, fp16; OpenVINO fp32, int8, and bf16 / fp16
   where the CPU runs them natively. A candidate this machine cannot run is listed with the reason.
3. Latency: the graphs alone (what precision changes), p50 / p99 at batch 1 and at ``batch`` (the
   held-aside sample repeated; graphs whose first axis is static have no batched row), all
   candidates timed in alternating rounds so each sees the same stretch of a noisy machine.
4. Accuracy against the reference on the held-aside samples (and the labelled ones): per-output
   parity (max / mean / p99 absolute error), anomaly-map Pearson r (MAVD: the snippet scores),
   image-score Spearman rho, and agreement of the labels at each variant's *own* threshold (every
   candidate is calibrated on its own held-aside scores with ``edgesentry.calibration``'s rule:
   quantisation shifts score distributions). With labelled samples the family's metric and its drop:
   AUROC (isstad: image labels; fers / rx: pixel AUROC per scene, the worst scene's drop counts),
   AP (mavd), accuracy (mdmf: query clips in folders named by class, classified against the
   ``gallery`` each candidate loads; its label agreement is the agreement of the predicted
   classes, its map r the correlation of the class logits).
5. Gates: map r >= ``min_map_corr``, score rho >= ``min_score_corr``, drop <= ``max_drop`` (the
   metric's drop with labelled samples; without, the loss of fidelity ``max(1 - r, 1 - rho,
   1 - label agreement)``), speedup over the reference >= ``min_speedup``. The decision is the
   fastest candidate passing every gate; when none does, the fastest FP32 candidate passing the
   accuracy gates (at worst the reference), and the reason names each gate that failed.
6. ``meta.json`` gets the decision, the table, the machine (CPU model, ISA flags, cores, GPU and
   driver) and library versions under ``tune``, and each variant's thresholds under
   ``precisions[p]["calibrations"][backend]``; ``edgesentry.load(..., precision="auto")`` uses them.
"""

from __future__ import annotations

import datetime as _dt
import json
import logging
import math
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from edgesentry.bundle import Bundle
from edgesentry.calibration import fit_calibration
from edgesentry.errors import BackendUnavailableError, ConfigError, EdgesentryError, InputError
from edgesentry.export.quantize import Method, quantize_bundle, record_runners
from edgesentry.precision import library_versions, machine_info

log = logging.getLogger("edgesentry.export.tune")

REFERENCE = ("onnxruntime", "fp32")
CANDIDATES = (REFERENCE, ("onnxruntime", "int8"), ("onnxruntime", "fp16"), ("openvino", "fp32"), ("openvino", "int8"),
              ("openvino", "bf16"), ("openvino", "fp16"), ("tensorrt", "fp16"), ("tensorrt", "int8"))


@dataclass
class Gates:
    max_drop: float = 0.01
    min_speedup: float = 1.2
    min_map_corr: float = 0.999
    min_score_corr: float = 0.99


@dataclass
class TuneRow:
    backend: str
    precision: str
    available: bool = True
    reason: str = ""
    p50_ms: float | None = None
    p99_ms: float | None = None
    batch_p50_ms: float | None = None
    batch_p99_ms: float | None = None
    speedup: float | None = None
    parity: dict[str, dict[str, float]] = field(default_factory=dict)
    map_corr: float | None = None
    score_corr: float | None = None
    label_agreement: float | None = None
    metric: float | None = None
    metric_drop: float | None = None
    drop: float | None = None
    gates: dict[str, bool] = field(default_factory=dict)
    verdict: str = ""
    calibration: dict[str, Any] | None = None

    @property
    def name(self) -> str:
        return f"{self.backend}/{self.precision}"

    @property
    def passed(self) -> bool:
        return self.available and bool(self.gates) and all(self.gates.values())


@dataclass
class TuneReport:
    bundle: str
    family: str
    batch: int
    gates: Gates
    rows: list[TuneRow]
    decision: dict[str, str]
    reason: str
    metric_name: str | None
    samples: dict[str, int]
    machine: dict[str, Any]
    libraries: dict[str, str | None]

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["rows"] = [asdict(r) for r in self.rows]
        return out

    def table(self) -> str:
        g = self.gates
        drop_name = f"{self.metric_name} drop" if self.metric_name else "fidelity loss"
        head = (f"tune {self.bundle} ({self.family}; batch 1 and {self.batch}; "
                f"{self.samples['held_aside']} held-aside, {self.samples['eval']} labelled samples; "
                f"machine {self.machine.get('cpu')}, "
                f"ISA {','.join(self.machine.get('isa', [])) or '-'})\n"
                f"gates: map r >= {g.min_map_corr:g}, score rho >= {g.min_score_corr:g}, {drop_name} <= "
                f"{g.max_drop:g}, speedup >= {g.min_speedup:g}\n"
                f"| backend | precision | p50 ms | p99 ms | p50 ms b{self.batch} | speedup | map r | score rho "
                f"| labels | {drop_name} | verdict |\n|---|---|---|---|---|---|---|---|---|---|---|")
        lines = [head]
        for r in self.rows:
            if not r.available:
                dashes = " - |" * 8
                lines.append(f"| {r.backend} | {r.precision} |{dashes} unavailable: {r.reason} |")
                continue
            lines.append(
                f"| {r.backend} | {r.precision} | {_f(r.p50_ms, '.2f')} | {_f(r.p99_ms, '.2f')} | "
                f"{_f(r.batch_p50_ms, '.2f')} | {_f(r.speedup, '.2f')}x | {_f(r.map_corr, '.6f')} | "
                f"{_f(r.score_corr, '.4f')} | {_f(r.label_agreement, '.3f')} | {_f(r.drop, '.2e')} | {r.verdict} |")
        lines.append(f"decision: {self.decision['backend']}/{self.decision['precision']} ({self.reason})")
        return "\n".join(lines)


def _f(v: float | None, fmt: str) -> str:
    return "-" if v is None or (isinstance(v, float) and math.isnan(v)) else format(v, fmt)


# ------------------------------------------------------------------------- statistics
def pearson(a: np.ndarray, b: np.ndarray) -> float:
    a = np.asarray(a, np.float64).ravel()
    b = np.asarray(b, np.float64).ravel()
    a, b = a - a.mean(), b - b.mean()
    den = math.sqrt(float(a @ a) * float(b @ b))
    if den == 0:
        return 1.0 if np.array_equal(a, b) else 0.0
    return float(a @ b) / den


def _ranks(x: np.ndarray) -> np.ndarray:
    """Ranks with ties averaged (as scipy's ``rankdata``)."""
    x = np.asarray(x, np.float64).ravel()
    order = np.argsort(x, kind="mergesort")
    ranks = np.empty(len(x))
    ranks[order] = np.arange(len(x), dtype=np.float64)
    _, inverse, counts = np.unique(x, return_inverse=True, return_counts=True)
    sums = np.bincount(inverse, weights=ranks)
    return sums[inverse] / counts[inverse]


def spearman(a: np.ndarray, b: np.ndarray) -> float:
    return pearson(_ranks(a), _ranks(b))


# ----------------------------------------------------------------------------- samples
def load_sample(path: str | os.PathLike) -> Any:
    """A sample as a detector takes it: ``.npz`` -> dict of arrays, anything else -> its path."""
    p = Path(path)
    if not p.is_file():
        raise InputError(f"sample {str(p)!r} does not exist")
    if p.suffix == ".npz":
        with np.load(p, allow_pickle=False) as data:
            return {k: np.asarray(data[k]) for k in data.files if k not in ("gt", "label")}
    return str(p)


def _label_of(path: Path, family: str) -> Any:
    """Ground truth of a labelled sample: image label from an MVTec-style folder (``good`` = 0),
    ``map`` of an ABU ``.mat`` cube (fers, rx), frame labels ``gt`` of a MAVD ``.npz``, the class
    of an MDMF query clip (its folder's name)."""
    if family in ("fers", "rx"):
        from edgesentry.io.hsi import read_ground_truth

        return read_ground_truth(path)
    if family == "mavd":
        with np.load(path, allow_pickle=False) as data:
            if "gt" not in data.files:
                raise InputError(f"labelled MAVD sample {path} needs frame labels 'gt' (16 per snippet)")
            return np.asarray(data["gt"])
    if family == "isstad":
        return 0 if path.parent.name == "good" else 1
    if family == "mdmf":
        return path.parent.name
    raise ConfigError(f"tune has no labelled metric for family {family!r} (its --eval samples cannot be scored)")


def _metric(family: str, results: Sequence[Any], labels: Sequence[Any]) -> tuple[str, list[float]]:
    """(name, values): one value per scene for fers / rx (pixel AUROC), one for isstad / mavd / mdmf."""
    from edgesentry.metrics import pr_auc, roc_auc

    if family in ("fers", "rx"):
        return "AUROC", [roc_auc(np.asarray(lab).ravel(), np.asarray(r.extras.get("scores", r.anomaly_map)).ravel())
                         for r, lab in zip(results, labels)]
    if family == "mavd":
        frames = np.concatenate([np.asarray(r.extras["frame_scores"]) for r in results])
        gt = np.concatenate([np.asarray(lab).ravel() for lab in labels])
        if gt.size != frames.size:
            raise InputError(f"MAVD frame labels hold {gt.size} frames; the scores {frames.size} (16 per snippet)")
        return "AP", [pr_auc(gt, frames)]
    if family == "mdmf":
        return "accuracy", [float(np.mean([r.info["label"] == lab for r, lab in zip(results, labels)]))]
    return "AUROC", [roc_auc(np.asarray(labels), np.asarray([r.raw_score for r in results]))]


def _map_of(result: Any) -> np.ndarray:
    if result.anomaly_map is not None:
        return np.asarray(result.anomaly_map)
    for key in ("snippet_scores", "logits"):
        if key in result.extras:
            return np.asarray(result.extras[key])
    return np.asarray([result.raw_score])


# ------------------------------------------------------------------------------ timing
def _batched(feed: dict[str, np.ndarray], spec: dict[str, Any], batch: int) -> dict[str, np.ndarray] | None:
    out = {}
    for k, v in feed.items():
        dims = spec[k].shape
        if dims and isinstance(dims[0], int):
            return None  # static first axis: no batch
        out[k] = np.concatenate([v] * batch, axis=0)
    return out


def _time_rounds(jobs: dict[str, Callable[[], Any]], rounds: int, block: int) -> dict[str, list[float]]:
    """Alternating blocks (A A B B ... A A B B): every job samples the same stretch of machine time."""
    times: dict[str, list[float]] = {k: [] for k in jobs}
    for _ in range(rounds):
        for name, fn in jobs.items():
            fn()  # untimed: wakes the runtime's thread pool after the previous job's
            for _ in range(block):
                t0 = time.perf_counter()
                fn()
                times[name].append(time.perf_counter() - t0)
    return times


# --------------------------------------------------------------------------------- tune
def _availability(backend: str, precision: str) -> str:
    """Why ``backend`` cannot run ``precision`` here ('' when it can)."""
    import importlib.util

    if backend == "tensorrt":
        from edgesentry.backends.tensorrt import cuda_device_capability

        try:
            cuda_device_capability()
        except EdgesentryError as exc:
            return f"no CUDA device ({str(exc)[:80]})"
        return "" if importlib.util.find_spec("tensorrt") else "TensorRT not installed"
    if importlib.util.find_spec(backend) is None:
        return f"{backend} not installed"
    if backend == "openvino" and precision in ("bf16", "fp16"):
        from edgesentry.backends.openvino import device_capabilities

        caps = device_capabilities("CPU")
        cap = {"bf16": "BF16", "fp16": "FP16"}[precision]
        if cap not in caps:
            need = "AVX512_BF16 or AMX" if precision == "bf16" else "AVX512_FP16"
            return f"CPU has no native {precision} (needs {need}; OpenVINO capabilities {caps})"
    return ""


def tune_bundle(bundle: Bundle, calib: Sequence[str | os.PathLike], *, eval_samples: Sequence[str | os.PathLike] = (),
                gates: Gates | None = None, batch: int = 8, method: Method = "minmax", rounds: int = 5,
                block: int = 2, candidates: Sequence[tuple[str, str]] = CANDIDATES,
                gallery: str | os.PathLike | None = None, progress: Callable[[str], None] | None = None,
                write: bool = True) -> TuneReport:
    """Measure, gate and decide (see the module docstring); writes ``meta["tune"]`` when ``write``.

    ``gallery`` (mdmf, required there): the gallery ``.npz`` (``edgesentry enroll``) every candidate
    classifies the queries against.

    Raises:
        InputError: fewer than two calibration samples, or a sample that cannot be read (named).
        ConfigError: a bundle without exported graphs; labelled samples for a family without a metric;
            an mdmf bundle without ``gallery``, or a gallery for another family.
    """
    gates = gates or Gates()
    say = progress or (lambda _: None)
    if not bundle.meta.get("graphs"):
        raise ConfigError(f"bundle {bundle.path} has no exported graphs; run `edgesentry export {bundle.path}` first")
    if bundle.family == "mdmf" and gallery is None:
        raise ConfigError("an mdmf bundle classifies queries against enrolled classes: pass --gallery GALLERY.npz "
                          "(edgesentry enroll)")
    if bundle.family != "mdmf" and gallery is not None:
        raise ConfigError(f"--gallery is for mdmf bundles; this bundle is {bundle.family}")
    if len(calib) < 2:
        raise InputError(f"tune needs at least 2 calibration samples (half calibrates INT8, half is held aside to "
                         f"measure accuracy); got {len(calib)}")
    if batch < 1:
        raise ConfigError(f"--batch must be >= 1; got {batch}")
    split = (len(calib) + 1) // 2
    quant, held = [Path(p) for p in calib[:split]], [Path(p) for p in calib[split:]]
    labelled = [Path(p) for p in eval_samples]
    labels = [_label_of(p, bundle.family) for p in labelled]
    say(f"quantising INT8 on {len(quant)} samples; {len(held)} held aside")
    quantize_bundle(bundle, "int8", quant, method=method,
                    detector=_candidate(bundle, *REFERENCE, gallery)[0] if gallery is not None else None)
    if "fp16" not in (bundle.meta.get("precisions") or {}):
        quantize_bundle(bundle, "fp16")
    bundle = Bundle.open(bundle.path)

    rows: list[TuneRow] = []
    live: dict[str, tuple[TuneRow, Any, dict[str, Any]]] = {}
    for backend, precision in candidates:
        row = TuneRow(backend, precision)
        rows.append(row)
        row.reason = _availability(backend, precision)
        if not row.reason and backend == "tensorrt":
            row.reason = "the detectors run TensorRT engines through `edgesentry validate` only"
        if row.reason:
            row.available = False
            continue
        try:
            det, recorders = _candidate(bundle, backend, precision, gallery)
        except (BackendUnavailableError, ConfigError) as exc:
            row.available, row.reason = False, str(exc)[:200]
            continue
        say(f"running {row.name} on {len(held) + len(labelled)} samples")
        outputs = _run(det, recorders, held + labelled)
        live[row.name] = (row, det, outputs)
    ref_row, _, ref = live[f"{REFERENCE[0]}/{REFERENCE[1]}"]

    _measure_latency(live, batch, rounds, block, say)
    metric_name = None
    for name, (row, _, out) in live.items():
        metric_name = _accuracy(row, out, ref, held, labels, bundle.family) or metric_name
        row.speedup = ref_row.p50_ms / row.p50_ms if row.p50_ms else None
        if name == ref_row.name:
            row.verdict = "reference"
            continue
        row.gates = _gate(row, gates)
        failed = [k for k, ok in row.gates.items() if not ok]
        row.verdict = "pass" if not failed else "fail: " + ", ".join(failed)
    decision, reason = _decide(rows, ref_row, gates)
    report = TuneReport(str(bundle.path), bundle.family, batch, gates, rows, decision, reason, metric_name,
                        {"calibration": len(quant), "held_aside": len(held), "eval": len(labelled)}, machine_info(),
                        library_versions())
    if write:
        _write(bundle, report)
    return report


def _candidate(bundle: Bundle, backend: str, precision: str, gallery: str | os.PathLike | None = None
               ) -> tuple[Any, dict[str, Any]]:
    from edgesentry.api import load

    det = load(bundle, backend=backend, precision=precision)
    if gallery is not None:
        det.default_gallery = det.load_gallery(gallery)
    det.calibration = None  # labels come from each candidate's own thresholds, fitted below
    det.threshold = None
    det.pixel_threshold = None
    recorders = record_runners(det, bundle)
    for rec in recorders.values():
        rec.keep_outputs = True
    return det, recorders


def _run(det: Any, recorders: dict[str, Any], samples: Sequence[Path]) -> dict[str, Any]:
    """Results, graph outputs and the first sample's feeds of one candidate."""
    results, graph_out, first_feeds = [], [], {}
    for i, path in enumerate(samples):
        for rec in recorders.values():
            rec.feeds.clear()
            rec.outputs.clear()
        try:
            results.append(det.predict(load_sample(path)))
        except EdgesentryError as exc:
            raise InputError(f"sample {str(path)!r}: {exc}") from None
        graph_out.append({g: dict(rec.outputs[0]) for g, rec in recorders.items() if rec.outputs})
        if i == 0:
            first_feeds = {g: rec.feeds[0] for g, rec in recorders.items() if rec.feeds}
    return {"results": results, "graphs": graph_out, "feeds": first_feeds, "recorders": recorders}


def _measure_latency(live: dict[str, Any], batch: int, rounds: int, block: int, say: Callable[[str], None]) -> None:
    say(f"timing {len(live)} candidates ({rounds} rounds)")
    single, batched = {}, {}
    for name, (_, _, out) in live.items():
        recs, feeds = out["recorders"], out["feeds"]
        single[name] = lambda r=recs, f=feeds: [r[g].runner.infer(f[g]) for g in f]
        big = {g: _batched(f, recs[g].runner.inputs, batch) for g, f in feeds.items()}
        if batch > 1 and all(v is not None for v in big.values()):
            batched[name] = lambda r=recs, f=big: [r[g].runner.infer(f[g]) for g in f]
    t1 = _time_rounds(single, rounds, block)
    tb = _time_rounds(batched, max(1, rounds // 2), 1) if batched else {}
    for name, (row, _, _) in live.items():
        row.p50_ms, row.p99_ms = (float(np.quantile(t1[name], q)) * 1e3 for q in (0.5, 0.99))
        if name in tb:
            row.batch_p50_ms, row.batch_p99_ms = (float(np.quantile(tb[name], q)) * 1e3 for q in (0.5, 0.99))


def _accuracy(row: TuneRow, out: dict[str, Any], ref: dict[str, Any], held: Sequence[Path], labels: Sequence[Any],
              family: str) -> str | None:
    n_held = len(held)
    for graph in ref["graphs"][0]:
        for key in ref["graphs"][0][graph]:
            e = np.concatenate([np.asarray(g[graph][key], np.float64).ravel() for g in ref["graphs"]])
            a = np.concatenate([np.asarray(g[graph][key], np.float64).ravel() for g in out["graphs"]])
            diff = np.abs(a - e)
            row.parity[f"{graph}.{key}"] = {"max": float(diff.max()), "mean": float(diff.mean()),
                                            "p99": float(np.quantile(diff, 0.99))}
    res, rref = out["results"], ref["results"]
    row.map_corr = pearson(np.concatenate([_map_of(r).ravel() for r in res]),
                           np.concatenate([_map_of(r).ravel() for r in rref]))
    scores, ref_scores = [r.raw_score for r in res], [r.raw_score for r in rref]
    row.score_corr = spearman(scores, ref_scores) if len(scores) >= 3 else None
    own = _fit(res[:n_held]) if family != "mdmf" else None  # a classifier: no threshold to fit
    theirs = _fit(rref[:n_held]) if family != "mdmf" else None
    row.calibration = own.to_dict() if own is not None else None
    if family == "mdmf":
        row.label_agreement = float(np.mean([a.info["label"] == b.info["label"] for a, b in zip(res, rref)]))
    elif own is not None and theirs is not None:
        agree = [(a >= own.threshold) == (b >= theirs.threshold) for a, b in zip(scores, ref_scores)]
        row.label_agreement = float(np.mean(agree))
    metric_name = None
    if labels:
        metric_name, values = _metric(family, res[n_held:], labels)
        _, ref_values = _metric(family, rref[n_held:], labels)
        row.metric = float(np.mean(values))
        row.metric_drop = float(max(b - a for a, b in zip(values, ref_values)))
        row.drop = row.metric_drop
    else:
        losses = [1 - v for v in (row.map_corr, row.score_corr, row.label_agreement) if v is not None]
        row.drop = float(max(losses)) if losses else None
    return metric_name


def _fit(results: Sequence[Any]) -> Any:
    scores = [r.raw_score for r in results]
    if not scores:
        return None
    maps = [r.anomaly_map for r in results if r.anomaly_map is not None]
    return fit_calibration(scores, maps or None)


def _gate(row: TuneRow, gates: Gates) -> dict[str, bool]:
    out = {"map r": row.map_corr is not None and row.map_corr >= gates.min_map_corr}
    if row.score_corr is not None:
        out["score rho"] = row.score_corr >= gates.min_score_corr
    out["drop"] = row.drop is not None and row.drop <= gates.max_drop
    out["speedup"] = row.speedup is not None and row.speedup >= gates.min_speedup
    return out


def _decide(rows: Sequence[TuneRow], ref: TuneRow, gates: Gates) -> tuple[dict[str, str], str]:
    passing = [r for r in rows if r.passed]
    failed = [f"{r.name} failed {', '.join(k for k, ok in r.gates.items() if not ok)} "
              f"({_why(r, gates)})" for r in rows if r.available and r.gates and not r.passed]
    if passing:
        best = min(passing, key=lambda r: r.p50_ms)
        return {"backend": best.backend, "precision": best.precision}, "; ".join([
            f"{best.name} is the fastest variant passing every gate ({best.speedup:.2f}x the reference, map r "
            f"{best.map_corr:.6f})", *failed])
    accurate = [r for r in rows if r.available and r.precision == "fp32" and r is not ref
                and all(ok for k, ok in r.gates.items() if k != "speedup")]
    fallback = min([ref, *accurate], key=lambda r: r.p50_ms)
    return {"backend": fallback.backend, "precision": fallback.precision}, (
        "no reduced-precision variant passed every gate; " + "; ".join(failed) +
        f"; kept {fallback.name}" + (" (the reference)" if fallback is ref else " (FP32, fastest accurate)"))


def _why(r: TuneRow, gates: Gates) -> str:
    parts = []
    if not r.gates.get("map r", True):
        parts.append(f"map r {_f(r.map_corr, '.6f')} < {gates.min_map_corr:g}")
    if not r.gates.get("score rho", True):
        parts.append(f"score rho {_f(r.score_corr, '.4f')} < {gates.min_score_corr:g}")
    if not r.gates.get("drop", True):
        parts.append(f"drop {_f(r.drop, '.3g')} > {gates.max_drop:g}")
    if not r.gates.get("speedup", True):
        parts.append(f"speedup {_f(r.speedup, '.2f')}x < {gates.min_speedup:g}x")
    return ", ".join(parts)


def _write(bundle: Bundle, report: TuneReport) -> None:
    precisions = dict(bundle.meta.get("precisions") or {})
    for row in report.rows:
        if row.available and row.calibration is not None and row.precision in precisions:
            record = dict(precisions[row.precision])
            record["calibrations"] = {**(record.get("calibrations") or {}), row.backend: row.calibration}
            precisions[row.precision] = record
    summary = {k: v for k, v in report.to_dict().items() if k not in ("bundle",)}
    summary["created"] = _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")
    bundle.update_meta(precisions=precisions, tune=_finite(summary))


def _finite(obj: Any) -> Any:
    """``meta.json`` is strict JSON: NaN / Inf (an undefined correlation) become null."""
    if isinstance(obj, dict):
        return {k: _finite(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_finite(v) for v in obj]
    if isinstance(obj, (float, np.floating)):
        return float(obj) if math.isfinite(obj) else None
    if isinstance(obj, np.generic):
        return obj.item()
    return obj


def write_json(report: TuneReport, path: str | os.PathLike) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(_finite(report.to_dict()), indent=2) + "\n")
    return path

