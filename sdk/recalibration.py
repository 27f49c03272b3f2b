"""Recalibration from a line's audit log: a new bundle version with a hash-chained audit record.

``recalibrate(bundle, audit_log, who=...)`` refits the thresholds (``edgesentry.calibration``'s
rule) from the scores of the parts the line **accepted** (complete: not late, not fail-safe,
not degraded), optionally only those triggered since a time, and writes them into a **new
bundle directory** (``BUNDLE.vN`` beside it unless told otherwise). The source bundle is never
touched, so every earlier version still loads: rolling back is pointing the line at it again.

The new bundle's ``meta.json`` gets:

- ``calibration`` / ``thresholds``: the new fit (pixel thresholds are kept from the old one:
  an audit log holds scores, not anomaly maps);
- ``drift_reference``: the fitted scores on the new normalised scale, the reference of the line's
  drift monitor;
- ``lineage``: the list of audit records, one per recalibration, each with ``version``,
  ``when``, ``who`` (the token's name), the audit log (path, sha256, ``since``), the parts used,
  the old and new calibration, the parent's ``meta.json`` sha256, ``prev`` (the previous
  record's digest) and ``digest`` (sha256 of the record's canonical JSON without ``digest``).

``edgesentry.bundle.check_lineage`` (run by ``Bundle.verify``, so on every load) recomputes the chain and checks
that the bundle's calibration is the last record's: an edited record, a removed one, or
thresholds changed without a record raise ``ChecksumError``. The chain detects edits; it is not
a signature (whoever can write the bundle can also recompute it), which is what bundle signing
(``SIGNATURE_VERIFIERS`` of the line) is for.

Audit-log scores of a calibrated detector are normalised and clipped to [0, 1]; they are mapped
back to raw scores with the old calibration (a clipped 0 or 1 maps to the end of the line, so
a fit where more than half the scores sit at 0 is refused as uninformative).
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import shutil
import tempfile
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from edgesentry.bundle import META_NAME, Bundle, bundle_version, record_digest, sha256_file
from edgesentry.calibration import Calibration, fit_calibration
from edgesentry.errors import BundleError, ConfigError, InputError

#: longest audit log line read (a part record with many frames stays far below)
MAX_LINE_BYTES = 1 << 20
#: at most this many part ids are listed in a lineage record (all of them are hashed)
MAX_LISTED_PARTS = 1000
MAX_REFERENCE = 5000


def passed_scores(audit_log: str | os.PathLike, since: float | None = None) -> tuple[list[float], list[str]]:
    """Scores of the frames of accepted, complete parts in a line audit log, and those parts' ids."""
    scores: list[float] = []
    parts: list[str] = []
    path = Path(audit_log)
    try:
        fh = open(path, "rb")
    except OSError as exc:
        raise InputError(f"--from-log {str(path)!r} cannot be read: {exc.strerror or exc}") from None
    with fh:
        for n, raw in enumerate(iter(lambda: fh.readline(MAX_LINE_BYTES + 1), b""), 1):
            if len(raw) > MAX_LINE_BYTES:
                raise InputError(f"--from-log {path}:{n}: line longer than {MAX_LINE_BYTES} bytes")
            try:
                record = json.loads(raw)
            except ValueError:
                raise InputError(f"--from-log {path}:{n}: not a JSON line") from None
            if not isinstance(record, dict) or "decision" not in record:
                continue  # drift records and the like
            if not _usable(record, since):
                continue
            frames = [f for f in record.get("frames", []) if isinstance(f, dict) and f.get("status") == "ok"]
            values = [f.get("score") for f in frames]
            if not values or not all(isinstance(v, (int, float)) and math.isfinite(v) for v in values):
                continue
            scores.extend(float(v) for v in values)
            parts.append(str(record.get("part_id")))
    return scores, parts


def _usable(record: dict[str, Any], since: float | None) -> bool:
    if record.get("decision") != "accept" or record.get("verdict") != "accept":
        return False
    if record.get("late") or record.get("fail_safe") or record.get("degraded"):
        return False
    at = record.get("triggered_at")
    return since is None or (isinstance(at, (int, float)) and at >= since)


def recalibrate(bundle_path: str | os.PathLike, audit_log: str | os.PathLike, *, who: str,
                since: float | None = None, out: str | os.PathLike | None = None, quantile: float = 0.99,
                margin: float = 0.1, min_parts: int = 20) -> Bundle:
    """Fit new thresholds from the accepted parts of ``audit_log``; write and return the new version."""
    source = Bundle.open(bundle_path)
    scores, parts = passed_scores(audit_log, since)
    if len(parts) < min_parts:
        raise InputError(f"--from-log {audit_log}: {len(parts)} accepted complete parts"
                         f"{' since --since' if since is not None else ''}; recalibration needs at least {min_parts}")
    old = Calibration.from_dict(source.calibration) if source.calibration else None
    raw = [old.denormalize(s) for s in scores] if old else scores
    if old is not None and sum(s <= 0.0 for s in scores) * 2 > len(scores):
        raise InputError(f"--from-log {audit_log}: more than half of the scores are clipped at 0 on the old "
                         f"normalised scale; they say too little to refit from")
    fit = fit_calibration(raw, quantile=quantile, margin=margin)
    if old is not None:  # an audit log has no anomaly maps: keep the pixel threshold
        fit = Calibration(**{**fit.to_dict(), "pixel_threshold": old.pixel_threshold,
                             "pixel_quantile": old.pixel_quantile})
    version = bundle_version(source.meta) + 1
    target = Path(out) if out is not None else source.path.with_name(f"{_stem(source.path)}.v{version}")
    if target.exists():
        raise ConfigError(f"--out {str(target)!r} already exists; recalibration never overwrites a bundle")
    old_record = source.calibration
    context = {k: v for k, v in (old_record or {}).items() if k not in Calibration.__dataclass_fields__}
    new_record = {**fit.to_dict(), **context}
    thresholds = {**(source.meta.get("thresholds") or {}), "score_scale": "normalised", "threshold": 0.5,
                  "raw_threshold": fit.threshold, "pixel_threshold": fit.pixel_threshold, **context}
    record = {
        "version": version, "when": datetime.now(timezone.utc).isoformat(timespec="seconds"), "who": who,
        "parent": {"path": str(source.path), "version": version - 1,
                   "meta_sha256": sha256_file(source.path / META_NAME)},
        "audit_log": {"path": str(audit_log), "sha256": sha256_file(audit_log), "since": since},
        "parts": {"count": len(parts), "scores": len(scores), "ids": parts[:MAX_LISTED_PARTS],
                  "ids_sha256": hashlib.sha256("\n".join(parts).encode()).hexdigest()},
        "rule": {"quantile": quantile, "margin": margin},
        "old": {"calibration": old_record, "raw_threshold": None if old is None else old.threshold},
        "new": {"calibration": new_record, "raw_threshold": fit.threshold},
        "prev": (source.meta.get("lineage") or [{"digest": ""}])[-1]["digest"],
    }
    record["digest"] = record_digest(record)
    reference = sorted(fit.normalize(s) for s in raw)
    step = max(1, math.ceil(len(reference) / MAX_REFERENCE))
    return _write_version(source, target, calibration=new_record, thresholds=thresholds,
                          lineage=[*(source.meta.get("lineage") or []), record],
                          drift_reference=[round(v, 6) for v in reference[::step]])


def _stem(path: Path) -> str:
    """``bundle.v3`` -> ``bundle``: versions sit beside the first one."""
    stem, _, suffix = path.name.rpartition(".v")
    return stem if stem and suffix.isdigit() else path.name


def _write_version(source: Bundle, target: Path, **changes: Any) -> Bundle:
    """Copy the bundle, apply ``changes`` to the copy's meta.json (and ONNX metadata), then move it in place."""
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=target.parent))
    try:
        work = tmp / "bundle"
        shutil.copytree(source.path, work, symlinks=False)
        copy = Bundle.open(work, verify=False)
        copy.update_meta(**changes)
        Bundle.open(work)  # every checksum and the new lineage hold
        os.rename(work, target)
    except FileExistsError:
        raise ConfigError(f"--out {str(target)!r} already exists; recalibration never overwrites a bundle") from None
    except OSError as exc:
        raise BundleError(f"cannot write the new bundle version {str(target)!r}: {exc}") from None
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return Bundle.open(target)
