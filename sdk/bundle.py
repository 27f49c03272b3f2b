"""Bundles: a directory holding everything a detector needs, and nothing executable.

Layout::

    BUNDLE/
      meta.json            schema version, family, architecture config, preprocessing,
                           calibration, input/output spec, sha256 of every file below
      weights.safetensors  tensors for the torch backend (absent for weight-free families)
      model.onnx           exported graph(s) (``edgesentry export``), metadata mirrored
      engines/             TensorRT plans, keyed (``edgesentry build``)

No pickle anywhere: tensors are safetensors, the rest JSON and ONNX. Every listed file is
checked against its sha256 when the bundle is opened, so a truncated copy or a tampered
file is refused before any of it is used.

A bundle is a closed world: every name in ``meta.json``'s ``files`` is a plain relative path
inside the bundle (no ``..``, no absolute path, no symbolic link leaving it), checked before
any file is opened, and only listed files are read (``Bundle.file``). ``meta.json`` is read
only when it is a regular file of at most ``META_MAX_BYTES``, nested at most
``META_MAX_DEPTH`` deep, with the documented types; non-finite weights are refused.

A bundle may carry a signature (``bundle.sig``, ``edgesentry.signing``): ``Bundle.open(path,
trust=policy)`` verifies it before ``meta.json`` is read. Changing a signed bundle in place (export,
build, calibrate, save) removes its signature with a warning: the result is a new, unsigned
version, never one with a silently broken signature. Copies (``Detector.save`` elsewhere) are
unsigned too.
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import json
import logging
import os
import re
import shutil
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from edgesentry._version import __version__
from edgesentry.errors import BundleError, ChecksumError, WeightsError, option
from edgesentry.io.paths import (
    check_regular_file,
    check_relative_name,
    read_bytes_bounded,
    resolve_inside,
    sha256_file as sha256_file,
)
from edgesentry.signing import SIGNATURE_NAME, TrustPolicy, Verification, is_signed, verify_bundle

log = logging.getLogger(__name__)

SCHEMA_VERSION = 1
META_NAME = "meta.json"
WEIGHTS_NAME = "weights.safetensors"
#: caps on what ``meta.json`` may declare (real bundles: a few KiB, nesting depth < 10)
META_MAX_BYTES = 8 << 20
META_MAX_DEPTH = 64
#: family and graph names become folder and file names (serving repositories, engine plans)
_SIMPLE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]{0,63}")
_SHA256 = re.compile(r"[0-9a-f]{64}")

_PICKLE_MAGIC = (b"\x80\x02", b"\x80\x03", b"\x80\x04", b"\x80\x05")
_ZIP_MAGIC = b"PK\x03\x04"


def _umask() -> int:
    """This process's umask, read without changing it where Linux allows (``os.umask`` sets it
    process-wide, which races with other threads creating files)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def file_mode() -> int:
    """The mode a plain ``open()`` would give a new file (0o666 less the umask): bundle files are
    as readable as the user's other files, e.g. by the group a serving account belongs to."""
    return 0o666 & ~_umask()


def _atomic_write(path: Path, write: Any) -> None:
    # Write then rename so that a crash never leaves a half-written meta.json or weight file.
    # mkstemp creates 0600; the file gets the mode a plain open() would give it.
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "wb") as fh:
            write(fh)
        os.chmod(tmp, file_mode())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _atomic_write_bytes(path: Path, data: bytes) -> None:
    _atomic_write(path, lambda fh: fh.write(data))


def _check_not_pickle(path: Path) -> None:
    with open(path, "rb") as fh:
        head = fh.read(4)
    if head[:2] in _PICKLE_MAGIC or head == _ZIP_MAGIC:
        raise BundleError(
            f"{path} is a pickle/torch archive, but a bundle holds safetensors only; "
            "convert the checkpoint with `edgesentry convert FAMILY CKPT -o BUNDLE`"
        )


class Bundle:
    """An opened, verified bundle directory."""

    def __init__(self, path: Path, meta: dict[str, Any], signature: Verification | None = None):
        self.path = path
        self.meta = meta
        #: the verified signature when opened with ``trust=`` (else ``None``: not checked)
        self.signature = signature

    # ----------------------------------------------------------------------------- open
    @classmethod
    def open(cls, path: str | os.PathLike, *, verify: bool = True, trust: TrustPolicy | None = None,
             signature: str | os.PathLike | None = None) -> Bundle:
        """Read ``meta.json`` and check the schema version and every file's sha256.

        Args:
            path: the bundle directory.
            verify: check every listed file's sha256 (with ``trust``, against the signed ones).
            trust: require a signature by one of these keys, verified before ``meta.json`` (or
                any other file but the signature) is parsed.
            signature: the signature file (default ``path/bundle.sig``).

        Raises:
            BundleError: not a directory, no/invalid ``meta.json``, unknown schema version,
                a listed file missing.
            ChecksumError: a listed file's sha256 differs from the one recorded.
            SignatureError: ``trust`` given and the bundle is unsigned, tampered with, or signed
                by a key that is not trusted or revoked.
        """
        root = Path(path)
        if not root.is_dir():
            raise BundleError(f"expected a bundle directory containing {META_NAME}; got {str(root)!r}")
        verified = verify_bundle(root, trust, signature=signature) if trust is not None else None
        meta_path = root / META_NAME
        if not meta_path.exists():
            raise BundleError(f"{root} is not a bundle: {META_NAME} is missing")
        meta = parse_meta(read_bytes_bounded(meta_path, limit=META_MAX_BYTES, what="bundle metadata",
                                             error=BundleError), meta_path)
        bundle = cls(root, meta, verified)
        if verify:
            bundle.verify()
        return bundle

    def verify(self) -> None:
        """Check every listed file: inside the bundle, a regular file, its sha256 as recorded.

        A bundle opened with a verified signature compares the recorded sha256 with the signed
        one (the signature check has just hashed every file) instead of reading the file again.

        Raises:
            BundleError: a listed file is missing, not a regular file, or leaves the bundle.
            ChecksumError: a listed file's sha256 differs from the one recorded, or the
                recalibration ``lineage`` chain does not hold (``check_lineage``).
        """
        signed = self.signature.digests if self.signature is not None else {}
        for name, expected in self.files.items():
            file = self.file(name)
            if not file.exists():
                raise BundleError(f"bundle file {name!r} listed in {META_NAME} is missing from {self.path}")
            check_regular_file(file, what=f"bundle file {name!r}", error=BundleError)
            actual = signed.get(name) or sha256_file(file)
            if actual != expected:
                raise ChecksumError(
                    f"bundle file {name!r} has sha256 {actual[:16]}..., expected {expected[:16]}... "
                    f"from {META_NAME}: the file was modified or truncated"
                )
        check_lineage(self.meta, self.path)

    # ------------------------------------------------------------------------ accessors
    @property
    def family(self) -> str:
        return str(self.meta["family"])

    @property
    def files(self) -> dict[str, str]:
        return dict(self.meta.get("files", {}))

    @property
    def config(self) -> dict[str, Any]:
        return dict(self.meta.get("config", {}))

    @property
    def preprocessing(self) -> dict[str, Any]:
        return dict(self.meta.get("preprocessing", {}))

    @property
    def calibration(self) -> dict[str, Any] | None:
        return self.meta.get("calibration")

    def has(self, name: str) -> bool:
        return name in self.files

    def file(self, name: str) -> Path:
        """The path of a listed file, resolved inside the bundle (only listed files are read)."""
        if name not in self.files:
            raise BundleError(f"bundle {self.path} has no file {name!r}; it has {sorted(self.files)}")
        return resolve_inside(self.path, name, what="bundle file", error=BundleError)

    def load_tensors(self, name: str = WEIGHTS_NAME) -> dict[str, np.ndarray]:
        """Tensors of a safetensors file as numpy arrays (refuses pickles)."""
        from safetensors import SafetensorError
        from safetensors.numpy import load_file

        path = self.file(name)
        _check_not_pickle(path)
        try:
            tensors = load_file(str(path))
        except (SafetensorError, OSError, ValueError) as exc:
            raise BundleError(f"{path} is not a readable safetensors file: {exc}") from None
        check_finite_tensors(tensors, f"{self.path.name}/{name}")
        return tensors

    # -------------------------------------------------------------------------- writing
    def add_file(self, name: str, data: bytes | None = None) -> Path:
        """Record (and optionally write) a file in the bundle and update its checksum.

        ``name`` must be a plain relative path that stays inside the bundle (``BundleError``).
        """
        path = resolve_inside(self.path, name, what="bundle file", error=BundleError)
        self._unsign()
        path.parent.mkdir(parents=True, exist_ok=True)
        if data is not None:
            _atomic_write_bytes(path, data)
        self.meta.setdefault("files", {})[name] = sha256_file(path)
        self._write_meta()
        return path

    def remove_file(self, name: str) -> None:
        path = resolve_inside(self.path, name, what="bundle file", error=BundleError)
        self._unsign()
        self.meta.get("files", {}).pop(name, None)
        path.unlink(missing_ok=True)
        self._write_meta()

    def update_meta(self, **changes: Any) -> None:
        """Change ``meta.json`` sections; the exported graphs' ONNX metadata follow any change to
        a section they mirror (``MIRRORED_KEYS``), so they never disagree with ``meta.json``."""
        self.meta.update(changes)
        self._write_meta()
        if set(changes) & set(MIRRORED_KEYS):
            self.mirror_metadata()

    def copy_files_from(self, source: Bundle) -> None:
        """Copy every file listed in ``source`` (weights, graphs, precision variants, engines ...)
        and the records describing them (``graphs``, ``precisions``, ``tune``) into this bundle;
        checksums are re-read from the copies. The copy is a new version: a signature of
        ``source`` does not come along."""
        if is_signed(source.path):
            log.warning("%s is a new, unsigned version of the signed bundle %s; sign it with `edgesentry sign %s "
                        "--key KEY.pem`", self.path, source.path, self.path)
        for name in source.files:
            target = resolve_inside(self.path, name, what="bundle file", error=BundleError)
            target.parent.mkdir(parents=True, exist_ok=True)
            with open(source.file(name), "rb") as src:
                _atomic_write(target, lambda fh, src=src: shutil.copyfileobj(src, fh, 1 << 20))
            self.meta.setdefault("files", {})[name] = sha256_file(target)
        # the records that describe the copied graphs: their files, precision variants, tune decision
        for key in ("graphs", "precisions", "tune"):
            if source.meta.get(key):
                self.meta[key] = json.loads(json.dumps(source.meta[key]))
        self._write_meta()

    def mirror_metadata(self) -> None:
        """Make every exported graph's ONNX ``metadata_props`` mirror ``meta.json`` (the keys of
        ``MIRRORED_KEYS``), so runtimes that read only the ONNX see the same thresholds."""
        changed = False
        for graph in self.meta.get("graphs", {}).values():
            name = graph.get("file")
            if not name or name not in self.files:
                continue
            path = self.file(name)
            wanted = mirrored_metadata(self.meta)
            if {k: read_onnx_metadata(path).get(k) for k in wanted} != wanted:
                write_onnx_metadata(path, wanted)
                self.meta["files"][name] = sha256_file(path)
                changed = True
        if changed:
            self._write_meta()

    def _unsign(self) -> None:
        """Remove this bundle's own signature before it changes: what follows is a new, unsigned
        version (a signature left in place would break silently)."""
        own = self.path / SIGNATURE_NAME
        if own.is_file() or own.is_symlink():
            own.unlink()
            self.signature = None
            log.warning("bundle %s was signed and is being changed: this is a new, unsigned version (%s removed); "
                        "sign it again with `edgesentry sign %s --key KEY.pem`", self.path, SIGNATURE_NAME, self.path)

    def _write_meta(self) -> None:
        self._unsign()
        text = json.dumps(self.meta, indent=2, sort_keys=True, default=_json_default)
        _atomic_write_bytes(self.path / META_NAME, (text + "\n").encode())

    def __repr__(self) -> str:
        return f"Bundle({str(self.path)!r}, family={self.family!r}, files={sorted(self.files)})"


# ---------------------------------------------------------------- recalibration lineage
def record_digest(record: dict[str, Any]) -> str:
    body = {k: v for k, v in record.items() if k != "digest"}
    return hashlib.sha256(json.dumps(body, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


def check_lineage(meta: dict[str, Any], where: Any = "bundle") -> None:
    """Verify a bundle's ``lineage`` chain (see ``edgesentry.recalibration``); no lineage passes."""
    lineage = meta.get("lineage")
    if lineage is None:
        return
    if not isinstance(lineage, list) or not all(isinstance(r, dict) for r in lineage):
        raise ChecksumError(f"{where}: lineage must be a list of records")
    prev = ""
    for i, record in enumerate(lineage):
        if record.get("prev") != prev or record.get("version") != i + 2:
            raise ChecksumError(f"{where}: lineage record {i} does not follow record {i - 1} (a record was removed, "
                                f"reordered or edited)")
        if record.get("digest") != record_digest(record):
            raise ChecksumError(f"{where}: lineage record {i} (version {record.get('version')}) was modified: its "
                                f"digest does not match its content")
        prev = record["digest"]
    if lineage and lineage[-1].get("new", {}).get("calibration") != meta.get("calibration"):
        raise ChecksumError(f"{where}: the bundle's calibration differs from its last lineage record (version "
                            f"{lineage[-1]['version']}): thresholds were changed without an audit record")


def bundle_version(meta: dict[str, Any]) -> int:
    lineage = meta.get("lineage") or []
    return int(lineage[-1]["version"]) if lineage else 1



def parse_meta(data: bytes, where: str | os.PathLike = META_NAME) -> dict[str, Any]:
    """Parse and type-check the bytes of a ``meta.json``.

    Checked: strict JSON (no NaN), an object nested at most ``META_MAX_DEPTH`` deep, an integer
    ``schema_version`` equal to ``SCHEMA_VERSION`` (``true`` is not 1), ``family`` a simple
    name, ``files`` an object from plain relative names to sha256 hex digests, ``config`` /
    ``preprocessing`` / ``io`` / ``extra`` objects, ``calibration`` and ``thresholds`` objects or null,
    ``graphs`` an object from simple names to objects whose ``file`` is a plain relative name.

    Raises:
        BundleError: naming the key, what was expected and what came.
    """
    try:
        meta = json.loads(data.decode("utf-8"), parse_constant=_refuse_constant)
    except (UnicodeDecodeError, ValueError, RecursionError) as exc:
        why = "nested too deeply" if isinstance(exc, RecursionError) else str(exc)[:200]
        raise BundleError(f"{where} is not valid JSON ({why}); the bundle is corrupt") from None
    if not isinstance(meta, dict):
        raise BundleError(f"{where} must hold a JSON object; got {type(meta).__name__}")
    _check_depth(meta, where)
    version = meta.get("schema_version")
    if type(version) is not int or version != SCHEMA_VERSION:
        raise BundleError(
            f"bundle schema_version {version!r} is not supported by edgesentry {__version__} "
            f"(expected {SCHEMA_VERSION}); re-run `edgesentry convert` with this version"
        )
    for key in ("family", "files"):
        if key not in meta:
            raise BundleError(f"{where} lacks the required key {key!r}")
    family = meta["family"]
    if not isinstance(family, str) or not _SIMPLE_NAME.fullmatch(family):
        raise BundleError(f"{where}: family must be a simple name such as 'isstad'; got {str(family)[:80]!r}")
    _check_type(meta, "files", dict, where)
    for name, digest in meta["files"].items():
        check_relative_name(name, what="bundle file", error=BundleError)
        if not isinstance(digest, str) or not _SHA256.fullmatch(digest):
            raise BundleError(f"{where}: files[{name!r}] must be a sha256 hex digest; got {str(digest)[:80]!r}")
    for key in ("config", "preprocessing", "io", "extra", "graphs", "precisions", "tune"):
        _check_type(meta, key, dict, where)
    for key in ("calibration", "thresholds"):
        if meta.get(key) is not None:
            _check_type(meta, key, dict, where)
    for graph, gmeta in meta.get("graphs", {}).items():
        if not _SIMPLE_NAME.fullmatch(graph) or not isinstance(gmeta, dict):
            raise BundleError(f"{where}: graphs must map simple names to objects; got {graph[:80]!r}: "
                              f"{type(gmeta).__name__}")
        check_relative_name(gmeta.get("file"), what=f"graph {graph!r} file", error=BundleError)
    for precision, record in meta.get("precisions", {}).items():  # variants: model.int8.onnx ...
        graphs = record.get("graphs") if isinstance(record, dict) else None
        if not isinstance(graphs, dict):
            raise BundleError(f"{where}: precisions[{str(precision)[:20]!r}] must be an object with 'graphs'")
        for graph, entry in graphs.items():
            name = entry.get("file") if isinstance(entry, dict) else None
            check_relative_name(name, what=f"{str(precision)[:20]} graph {str(graph)[:40]!r} file", error=BundleError)
    return meta


def _refuse_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def _check_type(meta: Mapping[str, Any], key: str, kind: type, where: Any) -> None:
    if key in meta and not isinstance(meta[key], kind):
        raise BundleError(f"{where}: {key!r} must be a JSON {'object' if kind is dict else kind.__name__}; "
                          f"got {type(meta[key]).__name__}")


def _check_depth(obj: Any, where: Any) -> None:
    stack = [(obj, 1)]
    while stack:
        item, depth = stack.pop()
        if depth > META_MAX_DEPTH:
            raise BundleError(f"{where} is nested more than {META_MAX_DEPTH} levels deep; the bundle is corrupt")
        children = item.values() if isinstance(item, dict) else item if isinstance(item, list) else ()
        stack.extend((child, depth + 1) for child in children if isinstance(child, (dict, list)))


def check_finite_tensors(tensors: Mapping[str, np.ndarray], source: str) -> None:
    """Refuse weights holding NaN or Inf: they can only give meaningless scores.

    Raises:
        WeightsError: naming the first tensor with non-finite values and how many it has.
    """
    for key, value in tensors.items():
        arr = np.asarray(value)
        if arr.dtype.kind in "fc" and not np.isfinite(arr).all():
            bad = int(arr.size - np.count_nonzero(np.isfinite(arr)))
            raise WeightsError(f"{source}: tensor {key!r} of shape {tuple(arr.shape)} holds {bad} non-finite values "
                               "(NaN/Inf); the weights are corrupt or came from a diverged training run")


def _json_default(obj: Any) -> Any:
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, Path):
        return str(obj)
    raise TypeError(f"{type(obj).__name__} is not JSON serialisable")


def write_bundle(
    path: str | os.PathLike,
    family: str,
    *,
    config: Mapping[str, Any],
    preprocessing: Mapping[str, Any] | None = None,
    tensors: Mapping[str, np.ndarray] | None = None,
    calibration: Mapping[str, Any] | None = None,
    io: Mapping[str, Any] | None = None,
    extra: Mapping[str, Any] | None = None,
    overwrite: bool = False,
) -> Bundle:
    """Create a bundle directory.

    Args:
        path: directory to create (must not exist unless ``overwrite``).
        family: detector family name (``rx``, ``fers``, ``isstad``, ``mavd``, ``mdmf``).
        config: architecture configuration (JSON-able).
        preprocessing: input preparation the weights expect (JSON-able).
        tensors: name -> array, written as ``weights.safetensors`` (contiguous copies).
        calibration: thresholds and score normalisation (JSON-able).
        io: input/output specification.
        extra: further family facts (source checkpoint, class name ...).
        overwrite: replace an existing bundle directory.
    """
    root = Path(path)
    if root.exists():
        if not overwrite:
            raise BundleError(f"{root} already exists; pass {option('overwrite', True)} to replace it")
        if not root.is_dir():
            raise BundleError(f"{root} exists and is not a directory")
        for stale in (root / SIGNATURE_NAME, root / META_NAME, root / WEIGHTS_NAME):
            stale.unlink(missing_ok=True)
    root.mkdir(parents=True, exist_ok=True)
    meta: dict[str, Any] = {
        "schema_version": SCHEMA_VERSION,
        "family": family,
        "edgesentry_version": __version__,
        "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "config": dict(config),
        "preprocessing": dict(preprocessing or {}),
        "calibration": dict(calibration) if calibration else None,
        "io": dict(io or {}),
        "files": {},
    }
    if extra:
        meta["extra"] = dict(extra)
    bundle = Bundle(root, meta)
    if tensors:
        from safetensors.numpy import save_file

        # np.asarray(order="C") keeps 0-d tensors 0-d (np.ascontiguousarray makes them (1,))
        arrays = {k: np.asarray(v, order="C") for k, v in tensors.items()}
        check_finite_tensors(arrays, f"{root.name}/{WEIGHTS_NAME}")
        tmp = root / f".{WEIGHTS_NAME}.tmp"
        save_file(arrays, str(tmp), metadata={"family": family, "edgesentry_version": __version__})
        os.chmod(tmp, file_mode())  # safetensors writes 0600; a bundle file is as readable as the user's others
        os.replace(tmp, root / WEIGHTS_NAME)
        meta["files"][WEIGHTS_NAME] = sha256_file(root / WEIGHTS_NAME)
    bundle._write_meta()
    return bundle


def split_graph_tensors(tensors: Mapping[str, np.ndarray], graphs: tuple[str, ...],
                        family: str) -> dict[str, dict[str, np.ndarray]]:
    """A multi-graph bundle's tensors by graph: ``"<graph>.<key>"`` -> ``{graph: {key: array}}``.

    Every graph of ``graphs`` gets an entry (empty when the bundle has none of its tensors).

    Raises:
        BundleError: a tensor under none of ``graphs``.
    """
    out: dict[str, dict[str, np.ndarray]] = {g: {} for g in graphs}
    other = []
    for key, value in tensors.items():
        graph, _, name = key.partition(".")
        if graph in out and name:
            out[graph][name] = value
        else:
            other.append(key)
    if other:
        prefixes = "/".join(f"'{g}.'" for g in graphs)
        raise BundleError(f"{family} bundle holds tensors outside {prefixes}: {sorted(other)[:5]}")
    return out


# ----------------------------------------------------------------- ONNX metadata mirror
#: the ``meta.json`` keys every exported graph carries in its ONNX ``metadata_props``
MIRRORED_KEYS = ("family", "config", "preprocessing", "calibration", "thresholds")
_METADATA_FIELD = 14  # ModelProto.metadata_props (onnx.proto): repeated StringStringEntryProto


def metadata_text(value: Any) -> str:
    """How a metadata value is written into ``metadata_props``: strings as they are, the rest JSON."""
    return value if isinstance(value, str) else json.dumps(value, sort_keys=True, default=_json_default)


def mirrored_metadata(meta: Mapping[str, Any]) -> dict[str, str]:
    return {k: metadata_text(meta.get(k)) for k in MIRRORED_KEYS}


def _varint(fh: Any) -> int | None:
    shift = result = 0
    while True:
        byte = fh.read(1)
        if not byte:
            if shift:
                raise BundleError(f"{getattr(fh, 'name', 'ONNX file')} ends inside a protobuf varint")
            return None
        result |= (byte[0] & 0x7F) << shift
        if byte[0] < 0x80:
            return result
        shift += 7
        if shift > 63:
            raise BundleError(f"{getattr(fh, 'name', 'ONNX file')} holds an over-long protobuf varint")


def _encode_varint(n: int) -> bytes:
    out = bytearray()
    while True:
        if n < 0x80:
            out.append(n)
            return bytes(out)
        out.append((n & 0x7F) | 0x80)
        n >>= 7


def _top_level_fields(path: Path) -> list[tuple[int, int, int]]:
    """(field number, start, end) of every top-level field of a serialized ModelProto, found by
    skipping over values, so a 1 GB graph is never held in memory."""
    size = path.stat().st_size
    fields = []
    with open(path, "rb") as fh:
        while True:
            start = fh.tell()
            key = _varint(fh)
            if key is None:
                return fields
            number, wire = key >> 3, key & 7
            if wire == 0:
                _varint(fh)
            elif wire == 1:
                fh.seek(8, os.SEEK_CUR)
            elif wire == 2:
                length = _varint(fh)
                fh.seek(length or 0, os.SEEK_CUR)
            elif wire == 5:
                fh.seek(4, os.SEEK_CUR)
            else:
                raise BundleError(f"{path} is not an ONNX model (protobuf wire type {wire} at byte {start})")
            if fh.tell() > size:
                raise BundleError(f"{path} is truncated (a protobuf field runs past the end of the file)")
            fields.append((number, start, fh.tell()))


def _entry(key: str, value: str) -> bytes:
    body = b""
    for number, text in ((1, key), (2, value)):
        data = text.encode()
        body += _encode_varint(number << 3 | 2) + _encode_varint(len(data)) + data
    return _encode_varint(_METADATA_FIELD << 3 | 2) + _encode_varint(len(body)) + body


def _decode_entry(data: bytes) -> tuple[str, str]:
    import io

    fh, found = io.BytesIO(data), {1: "", 2: ""}
    while (key := _varint(fh)) is not None:
        length = _varint(fh) or 0
        found[key >> 3] = fh.read(length).decode()
    return found[1], found[2]


def read_onnx_metadata(path: str | os.PathLike) -> dict[str, str]:
    """An ONNX file's ``metadata_props`` as a dict, read without the ``onnx`` package."""
    path = Path(path)
    out = {}
    with open(path, "rb") as fh:
        for number, start, _ in _top_level_fields(path):
            if number != _METADATA_FIELD:
                continue
            fh.seek(start)
            _varint(fh)
            length = _varint(fh) or 0
            key, value = _decode_entry(fh.read(length))
            out[key] = value
    return out


def _copy_range(fh: Any, start: int, end: int, sink: Any) -> None:
    """Feed bytes ``[start, end)`` of an open file to ``sink`` in 1 MiB pieces."""
    fh.seek(start)
    remaining = end - start
    while remaining:
        chunk = fh.read(min(remaining, 1 << 20))
        if not chunk:
            raise BundleError(f"{getattr(fh, 'name', 'file')} ended while being read")
        sink(chunk)
        remaining -= len(chunk)


def onnx_graph_sha256(path: str | os.PathLike) -> str:
    """sha256 of an ONNX file without its ``metadata_props``: what a TensorRT engine depends on,
    so mirroring new thresholds into the metadata does not invalidate cached engines. A file that
    does not parse as a protobuf message is hashed whole."""
    path = Path(path)
    try:
        fields = _top_level_fields(path)
    except BundleError:
        return sha256_file(path)
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for number, start, end in fields:
            if number == _METADATA_FIELD:
                continue
            _copy_range(fh, start, end, digest.update)
    return digest.hexdigest()


def write_onnx_metadata(path: str | os.PathLike, updates: Mapping[str, str]) -> None:
    """Set ``metadata_props`` entries of an ONNX file (others kept), rewriting only the top-level
    metadata fields and copying the rest byte for byte (no ``onnx`` package, graph never parsed)."""
    path = Path(path)
    props = {**read_onnx_metadata(path), **updates}
    fields = _top_level_fields(path)
    new_entries = b"".join(_entry(k, v) for k, v in props.items())
    first_meta = next((start for number, start, _ in fields if number == _METADATA_FIELD), None)

    def write(out: Any) -> None:
        placed = False
        with open(path, "rb") as src:
            for number, start, end in fields:
                if number == _METADATA_FIELD:
                    if start == first_meta:
                        out.write(new_entries)
                        placed = True
                    continue
                _copy_range(src, start, end, out.write)
        if not placed:
            out.write(new_entries)

    _atomic_write(path, write)
