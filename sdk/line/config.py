"""The line file: cameras, shared detectors, stations, triggers and outputs of one production line.

    cfg = load_line_file("line.toml")          # TOML or YAML (.yaml / .yml)

The file is read (bounded), parsed, validated against the published JSON schema
(``line.schema.json`` beside this module, ``schema()`` in Python), then checked for what a schema
cannot say: unique ids, every reference resolving (a camera's detector, a station's cameras, a
trigger's station), every station triggered, bundles present, output paths writable. Each
problem is a ``LineFileError`` whose message is one line naming the file, the line and the key::

    line.toml:14: cameras[1].id: duplicate camera id 'cam1' (first at line 9)

Relative paths in the file are relative to the file's folder. Secrets never sit in the file:
the schema has no password or token key, only ``*_file`` and ``*_env`` keys naming where
they are.
"""

from __future__ import annotations

import json
import re
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any, Literal

from edgesentry.errors import ConfigError, EdgesentryError
from edgesentry.io.paths import check_output_file, read_text_bounded
from edgesentry.line._locate import Locator, format_path, toml_lines, yaml_lines

SCHEMA_PATH = Path(__file__).with_name("line.schema.json")
#: a line file larger than this is refused before it is parsed
MAX_LINE_FILE_BYTES = 1 << 20

FailSafe = Literal["reject", "accept"]
RuleKind = Literal["any", "max", "mean"]
TriggerKind = Literal["mqtt", "http", "opcua", "free_run", "part_id"]
#: trigger kinds that own their station's parts alone (no other trigger may open parts there)
EXCLUSIVE_TRIGGERS = ("free_run", "part_id")


class LineFileError(ConfigError):
    """A line file that cannot be run; the message names the file, the line and the key."""

    def __init__(self, message: str, *, file: str = "", line: int | None = None, key: str = ""):
        where = f"{file}:{line}" if line is not None else file
        text = ": ".join(p for p in (where, key, message) if p)
        super().__init__(text)
        self.file, self.line, self.key, self.reason = file, line, key, message


# ------------------------------------------------------------------------- the model
@dataclass(frozen=True)
class DetectorSpec:
    """One detector, shared by every camera naming it: a local bundle or a Triton model."""

    name: str
    bundle: Path | None = None
    triton: dict[str, Any] | None = None
    backend: str = "auto"
    kernels: str = "auto"
    threshold: float | None = None
    batch_size: int = 8
    latency_budget_ms: float = 20.0
    torch_threads: int | None = None
    workers: int = 1  # worker threads sharing the detector's queue (detectors are thread-safe)
    #: a signature by one of the trusted keys is required (keys here or in the environment)
    require_signature: bool = False
    #: public keys (PEM) whose signatures this detector's bundle may carry; given, a signature is required
    trusted_keys: tuple[str, ...] = ()
    #: public keys or sha256 fingerprints refused even when trusted (added to the environment's)
    revoked_keys: tuple[str, ...] = ()


@dataclass(frozen=True)
class CameraSpec:
    id: str
    detector: str
    source: dict[str, Any]
    policy: str | None = None  # default by source: live -> drop-oldest, recordings -> block
    queue_size: int = 8
    max_retries: int = 5
    backoff_s: tuple[float, float] = (0.5, 8.0)
    stall_timeout_s: float = 5.0


@dataclass(frozen=True)
class Rule:
    """A part's verdict from its frames' scores: ``any`` frame over the threshold, ``max``, ``mean``."""

    kind: RuleKind = "any"
    threshold: float | None = None  # None: the detector's own threshold (its label)


@dataclass(frozen=True)
class StationSpec:
    id: str
    cameras: tuple[str, ...]
    frames: int = 1
    rule: Rule = field(default_factory=Rule)
    camera_rules: dict[str, Rule] = field(default_factory=dict)
    deadline_ms: float = 1000.0
    fail_safe: FailSafe = "reject"
    collect_timeout_ms: float | None = None  # default: the deadline

    @property
    def collect_timeout_s(self) -> float:
        return (self.collect_timeout_ms if self.collect_timeout_ms is not None else self.deadline_ms) / 1e3


@dataclass(frozen=True)
class TriggerSpec:
    station: str
    kind: TriggerKind
    topic: str | None = None
    pattern: str | None = None


@dataclass
class LineConfig:
    """A validated line file (see the module docstring); ``raw`` is the parsed data."""

    path: Path
    name: str
    detectors: dict[str, DetectorSpec]
    cameras: list[CameraSpec]
    stations: list[StationSpec]
    triggers: list[TriggerSpec]
    mqtt: dict[str, Any] | None
    http: dict[str, Any] | None
    outputs: dict[str, Any]
    drift: dict[str, Any] | None = None
    status_interval_s: float = 1.0
    max_restarts: int = 3
    drain_timeout_s: float = 30.0
    raw: dict[str, Any] = field(default_factory=dict)
    locator: Locator = field(default_factory=lambda: Locator({}))

    def camera(self, camera_id: str) -> CameraSpec:
        return next(c for c in self.cameras if c.id == camera_id)

    def error(self, path: tuple[Any, ...], message: str) -> LineFileError:
        """A ``LineFileError`` for the key at ``path`` (what runtime checks raise too)."""
        return LineFileError(message, file=str(self.path), line=self.locator.line_of(path), key=format_path(path))


#: checks run on every local bundle a line file names, after it is opened: ``check(bundle, spec)``
#: raises ``EdgesentryError`` to refuse it.
BUNDLE_CHECKS: list[Callable[[Any, DetectorSpec], None]] = []
#: further signature checks (the bundle arrives verified: ``bundle.signature``), e.g. a site's
#: rule on which signer may sign which detector
SIGNATURE_VERIFIERS: list[Callable[[Any, DetectorSpec], None]] = []


@lru_cache(maxsize=1)
def schema() -> dict[str, Any]:
    """The published JSON schema of line files (``edgesentry/line/line.schema.json``)."""
    return json.loads(SCHEMA_PATH.read_text())


# --------------------------------------------------------------------------- loading
def load_line_file(path: str | Path, *, check_bundles: bool = True) -> LineConfig:
    """Read, validate and check a line file (see the module docstring).

    Raises:
        LineFileError: the first problem, by position in the file.
    """
    path = Path(path)
    text = read_text_bounded(path, limit=MAX_LINE_FILE_BYTES, what="line file", error=ConfigError)
    data, locator = parse(text, path)
    _validate(data, locator, path)
    return _build(data, locator, path, check_bundles=check_bundles)


def parse(text: str, path: Path) -> tuple[dict[str, Any], Locator]:
    """TOML (``.toml``) or YAML (``.yaml``/``.yml``) text -> (data, key lines)."""
    suffix = path.suffix.lower()
    if suffix == ".toml":
        return _parse_toml(text, path)
    if suffix in (".yaml", ".yml"):
        return _parse_yaml(text, path)
    raise LineFileError(f"a line file must end in .toml, .yaml or .yml; got {path.name!r}", file=str(path))


def toml_module() -> Any:
    """``tomllib`` (Python 3.11+) or its backport ``tomli`` (3.10; in the ``line`` extra)."""
    if sys.version_info >= (3, 11):
        import tomllib  # novermin - only reached on 3.11+

        return tomllib
    try:
        import tomli
    except ImportError:
        raise ConfigError("TOML line files on Python 3.10 need tomli: pip install 'edgesentry[line]'") from None
    return tomli


def _parse_toml(text: str, path: Path) -> tuple[dict[str, Any], Locator]:
    tomllib = toml_module()
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        m = re.search(r"\(at line (\d+), column \d+\)", str(exc))
        reason = re.sub(r"\s*\(at line \d+, column \d+\)", "", str(exc))
        raise LineFileError(f"not valid TOML: {reason}", file=str(path), line=int(m.group(1)) if m else None) from None
    return data, toml_lines(text)


def _parse_yaml(text: str, path: Path) -> tuple[dict[str, Any], Locator]:
    try:
        import yaml
    except ImportError:
        raise ConfigError("YAML line files need PyYAML: pip install 'edgesentry[line]' (or use TOML)") from None
    try:
        for event in yaml.parse(text, Loader=yaml.SafeLoader):
            if isinstance(event, yaml.AliasEvent):  # a billion laughs fits in a few lines
                raise LineFileError("YAML aliases (*name) are not allowed in a line file", file=str(path),
                                    line=event.start_mark.line + 1)
        loader = yaml.SafeLoader(text)
        try:
            node = loader.get_single_node()
            if node is None:
                raise LineFileError("the file is empty", file=str(path))
            _refuse_duplicate_keys(node, path)
            data = loader.construct_document(node)
        finally:
            loader.dispose()
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        reason = " ".join(str(getattr(exc, "problem", None) or exc).split())
        raise LineFileError(f"not valid YAML: {reason}", file=str(path),
                            line=mark.line + 1 if mark is not None else None) from None
    if not isinstance(data, dict):
        raise LineFileError(f"the top level must be a mapping of keys; got {type(data).__name__}", file=str(path),
                            line=node.start_mark.line + 1)
    return data, yaml_lines(node)


def _refuse_duplicate_keys(node: Any, path: Path) -> None:
    import yaml

    stack = [node]
    while stack:
        n = stack.pop()
        if isinstance(n, yaml.MappingNode):
            seen: dict[Any, int] = {}
            for k, v in n.value:
                if k.value in seen:
                    raise LineFileError(f"duplicate key {k.value!r} (first at line {seen[k.value]})", file=str(path),
                                        line=k.start_mark.line + 1)
                seen[k.value] = k.start_mark.line + 1
                stack.append(v)
        elif isinstance(n, yaml.SequenceNode):
            stack.extend(n.value)


# ------------------------------------------------------------------------ the schema
def _validate(data: dict[str, Any], locator: Locator, path: Path) -> None:
    try:
        from jsonschema import Draft202012Validator
    except ImportError:
        raise ConfigError("line files are validated with jsonschema: pip install 'edgesentry[line]'") from None
    errors = list(Draft202012Validator(schema()).iter_errors(data))
    if not errors:
        return
    found = [_describe(e) for e in errors]
    found.sort(key=lambda item: (locator.line_of(item[0]) or 0, -len(item[0])))
    key_path, message = found[0]
    raise LineFileError(message, file=str(path), line=locator.line_of(key_path), key=format_path(key_path))


def _describe(error: Any) -> tuple[tuple[Any, ...], str]:
    """(path of the offending key, one-line message) for a jsonschema error."""
    at = tuple(error.absolute_path)
    kind, inst = error.validator, error.instance
    if kind == "additionalProperties" and isinstance(inst, dict):
        known = sorted(error.schema.get("properties", {}))
        extra = next(k for k in inst if k not in known)
        return at + (extra,), f"unknown key {extra!r} (expected one of: {', '.join(known)})"
    if kind == "required":
        missing = re.match(r"'([^']+)'", error.message)
        return at, f"missing key {missing.group(1) if missing else error.message!r}"
    if kind == "enum":
        return at, f"must be one of {error.validator_value}; got {inst!r}"
    if kind == "const":
        return at, f"must be {error.validator_value!r}; got {inst!r}"
    if kind == "type":
        return at, f"must be {_a(error.validator_value)}; got {_json_type(inst)} {inst!r}"[:300]
    if kind == "pattern" and error.validator_value.startswith("^[A-Za-z0-9]"):
        return at, f"must be a name of letters, digits, '_', '.' and '-' (at most 64); got {inst!r}"
    if kind == "propertyNames":
        return at, f"key {inst!r} must be a name of letters, digits, '_', '.' and '-' (at most 64)"
    return at, error.message[:300]


def _a(kind: Any) -> str:
    names = kind if isinstance(kind, list) else [kind]
    words = {"object": "a table", "array": "a list", "string": "a string", "integer": "an integer",
             "number": "a number", "boolean": "true or false"}
    return " or ".join(words.get(n, n) for n in names)


def _json_type(value: Any) -> str:
    return {dict: "table", list: "list", str: "string", bool: "boolean", int: "integer",
            float: "number"}.get(type(value), type(value).__name__)


# -------------------------------------------------------------------- cross-checks
def _build(data: dict[str, Any], locator: Locator, path: Path, *, check_bundles: bool) -> LineConfig:
    base = path.parent
    line = data.get("line", {})
    cfg = LineConfig(path=path, name=line.get("name", path.stem), detectors={}, cameras=[], stations=[], triggers=[],
                     mqtt=data.get("mqtt"), http=data.get("http"), outputs=dict(data.get("outputs", {})),
                     drift=data.get("drift"), status_interval_s=line.get("status_interval_s", 1.0),
                     max_restarts=line.get("max_restarts", 3),
                     drain_timeout_s=line.get("drain_timeout_s", 30.0), raw=data, locator=locator)
    deadline, fail_safe = line.get("deadline_ms", 1000.0), line.get("fail_safe", "reject")

    for name, d in data["detectors"].items():
        at = ("detectors", name)
        if ("bundle" in d) == ("triton" in d):
            raise cfg.error(at, "needs exactly one of 'bundle' (a local bundle) or 'triton' (a served model)")
        keys = {k: tuple(_key_entry(base, v) for v in d.get(k, ())) for k in ("trusted_keys", "revoked_keys")}
        spec = DetectorSpec(name=name, bundle=_resolve(base, d["bundle"]) if "bundle" in d else None,
                            triton=d.get("triton"), **keys,
                            **{k: v for k, v in d.items() if k not in ("bundle", "triton", *keys)})
        if spec.triton is not None and (spec.require_signature or spec.trusted_keys):
            raise cfg.error(at + ("require_signature" if spec.require_signature else "trusted_keys",),
                            "applies to a local bundle; a served model is verified by its Triton server "
                            "(docs/signing.md)")
        if spec.bundle is not None and check_bundles:
            check_bundle(spec, cfg)
        cfg.detectors[name] = spec

    seen: dict[str, int] = {}
    for i, c in enumerate(data["cameras"]):
        at = ("cameras", i)
        _unique(cfg, seen, c["id"], at + ("id",), "camera id")
        if c["detector"] not in cfg.detectors:
            raise cfg.error(at + ("detector",), f"unknown detector {c['detector']!r} (defined: "
                                                f"{', '.join(sorted(cfg.detectors))})")
        source = _resolve_source(base, c["source"])
        if "backoff_s" in c and c["backoff_s"][0] > c["backoff_s"][1]:
            raise cfg.error(at + ("backoff_s",), f"must be [FIRST, MAX] with FIRST <= MAX; got {c['backoff_s']}")
        options = {k: (tuple(v) if k == "backoff_s" else v) for k, v in c.items() if k not in ("id", "detector",
                                                                                                 "source")}
        cfg.cameras.append(CameraSpec(id=c["id"], detector=c["detector"], source=source, **options))

    owner: dict[str, str] = {}
    seen = {}
    for i, s in enumerate(data["stations"]):
        at = ("stations", i)
        _unique(cfg, seen, s["id"], at + ("id",), "station id")
        for j, cam in enumerate(s["cameras"]):
            if cam not in {c.id for c in cfg.cameras}:
                raise cfg.error(at + ("cameras", j), f"unknown camera {cam!r} (defined: "
                                                     f"{', '.join(c.id for c in cfg.cameras)})")
            if cam in owner:
                raise cfg.error(at + ("cameras", j), f"camera {cam!r} already belongs to station {owner[cam]!r}; "
                                                     "a camera looks at one station's parts")
            owner[cam] = s["id"]
        rule = s.get("rule", {})
        camera_rules = {}
        for cam, r in rule.get("cameras", {}).items():
            if cam not in s["cameras"]:
                raise cfg.error(at + ("rule", "cameras", cam), f"camera {cam!r} is not one of this station's cameras")
            camera_rules[cam] = Rule(r.get("kind", rule.get("kind", "any")), r.get("threshold", rule.get("threshold")))
        cfg.stations.append(StationSpec(
            id=s["id"], cameras=tuple(s["cameras"]), frames=s.get("frames", 1),
            rule=Rule(rule.get("kind", "any"), rule.get("threshold")), camera_rules=camera_rules,
            deadline_ms=s.get("deadline_ms", deadline), fail_safe=s.get("fail_safe", fail_safe),
            collect_timeout_ms=s.get("collect_timeout_ms")))
    for i, c in enumerate(cfg.cameras):
        if c.id not in owner:
            raise cfg.error(("cameras", i, "id"), f"camera {c.id!r} belongs to no station")

    _build_triggers(cfg, data)
    _check_outputs(cfg, base)
    _check_drift(cfg)
    return cfg


def _build_triggers(cfg: LineConfig, data: dict[str, Any]) -> None:
    stations = {s.id for s in cfg.stations}
    kinds: dict[str, list[tuple[str, int]]] = {}
    for i, t in enumerate(data["triggers"]):
        at = ("triggers", i)
        if t["station"] not in stations:
            raise cfg.error(at + ("station",), f"unknown station {t['station']!r} (defined: "
                                               f"{', '.join(sorted(stations))})")
        if t["kind"] == "mqtt":
            if "topic" not in t:
                raise cfg.error(at, "an mqtt trigger needs a 'topic'")
            if cfg.mqtt is None:
                raise cfg.error(at + ("kind",), "an mqtt trigger needs the broker: add an [mqtt] table with 'host'")
            if "+" in t["topic"] or "#" in t["topic"]:
                raise cfg.error(at + ("topic",), "must be one topic (no '+' or '#' wildcard)")
        if t["kind"] == "part_id":
            if "pattern" not in t:
                raise cfg.error(at, "a part_id trigger needs a 'pattern' (a regular expression with a group "
                                    "(?P<part>...) matched against frame names)")
            try:
                if "part" not in re.compile(t["pattern"]).groupindex:
                    raise cfg.error(at + ("pattern",), "needs a named group (?P<part>...)")
            except re.error as exc:
                raise cfg.error(at + ("pattern",), f"not a regular expression: {exc}") from None
        if t["kind"] == "opcua" and "opcua" not in cfg.outputs:
            raise cfg.error(at + ("kind",), "an opcua trigger is a method of the line's OPC UA server: add "
                                            "[outputs.opcua]")
        for other, j in kinds.get(t["station"], []):
            if t["kind"] in EXCLUSIVE_TRIGGERS or other in EXCLUSIVE_TRIGGERS:
                first = cfg.locator.line_of(("triggers", j))
                raise cfg.error(at + ("kind",), f"station {t['station']!r} already has a {other} trigger (line "
                                                f"{first}); {' and '.join(EXCLUSIVE_TRIGGERS)} triggers cannot be "
                                                "combined with others")
        kinds.setdefault(t["station"], []).append((t["kind"], i))
        cfg.triggers.append(TriggerSpec(**t))
    for i, s in enumerate(cfg.stations):
        if s.id not in kinds:
            raise cfg.error(("stations", i, "id"), f"station {s.id!r} has no trigger (add a [[triggers]] entry "
                                                   "naming it)")


def _check_drift(cfg: LineConfig) -> None:
    d = cfg.drift or {}
    if d.get("min_samples", 100) > d.get("window", 300):
        raise cfg.error(("drift", "min_samples"), f"must be <= drift.window ({d.get('window', 300)})")
    if d.get("psi_warn", 0.1) > d.get("psi_alert", 0.25):
        raise cfg.error(("drift", "psi_warn"), "must be <= drift.psi_alert")
    if d.get("ks_alert", 1e-4) > d.get("ks_warn", 0.01):
        raise cfg.error(("drift", "ks_alert"), "must be <= drift.ks_warn")


def _check_outputs(cfg: LineConfig, base: Path) -> None:
    out = cfg.outputs
    for key in ("audit", "frames", "summary"):
        if key in out:
            out[key] = _resolve(base, out[key])
            try:
                check_output_file(out[key], flag=f"outputs.{key}")
            except EdgesentryError as exc:
                raise cfg.error(("outputs", key), str(exc)) from None
    if "mqtt" in out and cfg.mqtt is None:
        raise cfg.error(("outputs", "mqtt"), "the mqtt output needs the broker: add an [mqtt] table with 'host'")
    for i, hook in enumerate(out.get("webhooks", [])):
        hook["spool"] = _resolve(base, hook["spool"])
        if "backoff_s" in hook and hook["backoff_s"][0] > hook["backoff_s"][1]:
            raise cfg.error(("outputs", "webhooks", i, "backoff_s"), "must be [FIRST, MAX] with FIRST <= MAX")
        if "token_file" in hook:
            hook["token_file"] = _resolve(base, hook["token_file"])
    for key in ("opcua", "opcua_client"):
        spec = out.get(key)
        if spec is None:
            continue
        security = spec.get("security", ["none"])
        secure = [p for p in ([security] if isinstance(security, str) else security) if p != "none"]
        if secure and not ("certificate" in spec and "private_key" in spec):
            raise cfg.error(("outputs", key, "security"), f"{secure[0]} needs 'certificate' and 'private_key' "
                                                          "(PEM or DER files)")
        for f in ("certificate", "private_key", "password_file"):
            if f in spec:
                spec[f] = _resolve(base, spec[f])
    for station in out.get("opcua_client", {}).get("nodes", {}):
        if station not in {s.id for s in cfg.stations}:
            raise cfg.error(("outputs", "opcua_client", "nodes", station), f"unknown station {station!r}")
    if cfg.mqtt is not None:
        for f in ("password_file", "ca_file", "cert_file", "key_file"):
            if f in cfg.mqtt:
                cfg.mqtt[f] = str(_resolve(base, cfg.mqtt[f]))


def check_bundle(spec: DetectorSpec, cfg: LineConfig) -> Any:
    """Open (and hash-check) the detector's bundle, run ``BUNDLE_CHECKS`` and, when asked for,
    a signature verifier; every refusal names the detector's key and line.

    With ``require_signature``, ``trusted_keys`` in the file, or a trust policy in the environment
    (``EDGESENTRY_TRUSTED_KEYS`` / ``EDGESENTRY_SIGNING_CONFIG``), the bundle must be signed by a
    trusted, unrevoked key; the signature is verified before ``meta.json`` is read
    (``edgesentry.signing``). Runs when the file is checked and again when the line starts.
    """
    from edgesentry.bundle import Bundle

    at = ("detectors", spec.name, "bundle")
    if not spec.bundle.exists():
        raise cfg.error(at, f"bundle {str(spec.bundle)!r} does not exist")
    try:
        bundle = Bundle.open(spec.bundle, trust=_trust(spec, cfg))
        for check in BUNDLE_CHECKS:
            check(bundle, spec)
        if bundle.signature is not None:
            for verify in SIGNATURE_VERIFIERS:
                verify(bundle, spec)
    except LineFileError:
        raise
    except EdgesentryError as exc:
        raise cfg.error(at, str(exc)) from None
    return bundle


def _trust(spec: DetectorSpec, cfg: LineConfig) -> Any:
    """The detector's trust policy: its ``trusted_keys`` / ``revoked_keys``, else the environment's;
    ``require_signature`` without any trusted key is refused, naming that key."""
    from edgesentry.signing import resolve_policy

    policy = resolve_policy(spec.trusted_keys or None, spec.revoked_keys or None)
    if spec.require_signature and policy is None:
        raise cfg.error(("detectors", spec.name, "require_signature"),
                        "needs trusted keys: list them in 'trusted_keys' or set EDGESENTRY_TRUSTED_KEYS / "
                        "EDGESENTRY_SIGNING_CONFIG")
    return policy


def _key_entry(base: Path, value: str) -> str:
    """A key file resolved against the line file's folder; a sha256 fingerprint as it is."""
    import re as _re

    return value if _re.fullmatch(r"(sha256:)?[0-9a-fA-F]{64}", value) else str(_resolve(base, value))


def _unique(cfg: LineConfig, seen: dict[str, int], value: str, at: tuple[Any, ...], what: str) -> None:
    line = cfg.locator.line_of(at)
    if value in seen:
        raise cfg.error(at, f"duplicate {what} {value!r} (first at line {seen[value]})")
    seen[value] = line or 0


def _resolve(base: Path, value: str | Path) -> Path:
    p = Path(value).expanduser()
    return p if p.is_absolute() else base / p


def _resolve_source(base: Path, source: dict[str, Any]) -> dict[str, Any]:
    out = dict(source)
    if "path" in out:
        out["path"] = str(_resolve(base, out["path"]))
    return out
