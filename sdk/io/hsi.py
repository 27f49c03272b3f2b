"""Hyperspectral cube readers: MATLAB ``.mat`` (v5 and v7.3), ``.npy`` and ENVI.

Every reader returns an (H, W, B) array, band-last, in the file's own dtype (integer cubes
stay integer; some ABU scenes hold negative int16 values).

Every reader is bounded: what a file declares (a ``.mat`` variable's shape, a ``.npy``
header, an ENVI header's samples x lines x bands) is checked against the file and against
``max_cube_bytes()`` before anything is read, only the one variable asked for is read from a
``.mat`` file, ENVI headers are read only up to ``ENVI_HEADER_MAX_BYTES``, and only regular
files are opened (a FIFO or a device never is).

``mapped=True`` (for a consumer that reads the cube block by block, such as RX) gives
``.npy`` and ENVI cubes as read-only memory maps after the same header and size checks:
nothing is read until used, so ``max_cube_bytes()`` (a bound on what is materialised) does not
apply to them; ``.mat`` files are always read whole.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from edgesentry.errors import InputError
from edgesentry.io.paths import check_regular_file, limit_from_env, read_text_bounded

CUBE_NAMES = ("data", "cube", "hsi", "img", "image", "X", "x")
GT_NAMES = ("map", "gt", "groundtruth", "ground_truth", "mask", "label", "labels")

_ENVI_DTYPES = {1: "u1", 2: "i2", 3: "i4", 4: "f4", 5: "f8", 12: "u2", 13: "u4", 14: "i8", 15: "u8"}
_ENVI_INTERLEAVE = {  # interleave -> (shape on disk, axes to (lines, samples, bands))
    "bsq": (("bands", "lines", "samples"), (1, 2, 0)),
    "bil": (("lines", "bands", "samples"), (0, 2, 1)),
    "bip": (("lines", "samples", "bands"), (0, 1, 2)),
}
#: an ENVI header is a few hundred bytes of text; a larger one is not a header
ENVI_HEADER_MAX_BYTES = 1 << 20
#: the largest cube (or ground truth) read, in bytes; ``EDGESENTRY_MAX_CUBE_BYTES`` changes it
DEFAULT_MAX_CUBE_BYTES = 2 << 30
#: MATLAB classes -> bytes per element (what ``scipy.io.whosmat`` reports)
_MAT_CLASS_BYTES = {"double": 8, "single": 4, "int8": 1, "uint8": 1, "int16": 2, "uint16": 2, "int32": 4,
                    "uint32": 4, "int64": 8, "uint64": 8, "logical": 1}


def max_cube_bytes() -> int:
    """The largest array a cube reader materialises: ``EDGESENTRY_MAX_CUBE_BYTES`` or 2 GiB."""
    return limit_from_env("EDGESENTRY_MAX_CUBE_BYTES", DEFAULT_MAX_CUBE_BYTES)


def _check_declared(nbytes: int, what: str, path: Path) -> None:
    limit = max_cube_bytes()
    if nbytes > limit:
        raise InputError(f"{path}: {what} declares {nbytes} bytes, above the limit of {limit} bytes "
                         "(EDGESENTRY_MAX_CUBE_BYTES raises it)")


def read_cube(path: str | os.PathLike, variable: str | None = None, *, mapped: bool = False) -> np.ndarray:
    """Read an (H, W, B) cube from ``.mat``, ``.npy`` or ENVI (``.hdr`` + binary).

    Args:
        path: the file; for ENVI either the ``.hdr`` or the binary next to it.
        variable: the ``.mat`` variable; by default ``data``/``cube``/... or else the
            largest 3-D numeric array in the file.
        mapped: ``.npy`` and ENVI cubes as read-only memory maps (see the module docstring).

    Raises:
        InputError: missing or not a regular file, unreadable, malformed, or declaring more
            than ``max_cube_bytes()``.
    """
    p = Path(path)
    if not p.exists():
        raise InputError(f"cube file {str(p)!r} does not exist")
    suffix = p.suffix.lower()
    if suffix == ".mat":
        cube = read_mat_variable(p, variable, CUBE_NAMES, ndim=3)
    elif suffix == ".npy":
        cube = read_npy(p, mapped=mapped)
    elif suffix == ".hdr" or p.with_suffix(".hdr").exists() or Path(str(p) + ".hdr").exists():
        cube = read_envi(p, mapped=mapped)
    else:
        raise InputError(f"unsupported cube format {suffix!r} for {p}; expected .mat, .npy or ENVI .hdr")
    if cube.ndim != 3:
        raise InputError(f"{p}: expected an (H, W, B) cube; got shape {cube.shape}")
    return cube


def read_ground_truth(path: str | os.PathLike, variable: str | None = None) -> np.ndarray:
    """Read an (H, W) ground-truth map (``.mat`` ``map``, ``.npy`` or an image, nonzero = anomaly)."""
    p = Path(path)
    if not p.exists():
        raise InputError(f"ground-truth file {str(p)!r} does not exist")
    suffix = p.suffix.lower()
    if suffix == ".mat":
        gt = read_mat_variable(p, variable, GT_NAMES, ndim=2)
    elif suffix == ".npy":
        gt = read_npy(p)
    elif suffix in (".png", ".bmp", ".tif", ".tiff", ".jpg"):
        from edgesentry.io.image import read_image

        gt = read_image(p).max(axis=2)
    else:
        raise InputError(f"unsupported ground-truth format {suffix!r} for {p}")
    if gt.ndim != 2:
        raise InputError(f"{p}: expected an (H, W) ground-truth map; got shape {gt.shape}")
    return gt > 0


def read_npy(path: str | os.PathLike, *, mapped: bool = False) -> np.ndarray:
    """A plain ``.npy`` array (no pickles), its header checked against the file size first;
    ``mapped``: a read-only memory map (not bound by ``max_cube_bytes()``)."""
    p = Path(path)
    size = check_regular_file(p, what="array file", error=InputError).st_size
    try:
        with open(p, "rb") as fh:
            version = np.lib.format.read_magic(fh)
            fmt = np.lib.format
            reader = fmt.read_array_header_1_0 if version == (1, 0) else fmt.read_array_header_2_0
            shape, _, dtype = reader(fh, max_header_size=10_000)
            header_end = fh.tell()
    except (ValueError, OSError, EOFError, SyntaxError) as exc:
        raise InputError(f"{p} is not a plain .npy array ({exc})") from None
    if dtype.hasobject:
        raise InputError(f"{p} is not a plain .npy array (it holds Python objects, i.e. a pickle)")
    nbytes = int(np.prod(shape, dtype=object)) * dtype.itemsize
    if not mapped:
        _check_declared(nbytes, f"array of shape {shape} and dtype {dtype}", p)
    if header_end + nbytes > size:
        raise InputError(f"{p}: header declares {nbytes} bytes of data but the file has {size - header_end} "
                         "(truncated?)")
    try:
        return np.load(p, allow_pickle=False, mmap_mode="r" if mapped else None)
    except (ValueError, OSError, EOFError) as exc:
        raise InputError(f"{p} is not a plain .npy array ({exc})") from None


@dataclass(frozen=True)
class _Variable:
    """A ``.mat`` variable as its header declares it (nothing read yet)."""

    name: str
    shape: tuple[int, ...]
    numeric: bool
    nbytes: int


def read_mat_variable(path: str | os.PathLike, variable: str | None, names: Sequence[str], ndim: int) -> np.ndarray:
    """Read one variable of a MATLAB file (v5 through scipy, v7.3 through h5py).

    The variable is chosen from the headers alone: ``variable`` if given, else the first of
    ``names`` that is numeric with ``ndim`` dimensions, else the largest such array. Its
    declared size is checked against ``max_cube_bytes()``; no other variable is read.
    """
    p = Path(path)
    check_regular_file(p, what="MATLAB file", error=InputError)
    with open(p, "rb") as fh:
        head = fh.read(128)
    v73 = b"MATLAB 7.3" in head or head[:8] == b"\x89HDF\r\n\x1a\n"
    listing, read = (_list_mat73, _read_mat73) if v73 else (_list_mat5, _read_mat5)
    chosen = _pick(listing(p), variable, names, ndim, p)
    _check_declared(chosen.nbytes, f"variable {chosen.name!r} of shape {chosen.shape}", p)
    return read(p, chosen.name)


def _list_mat5(path: Path) -> list[_Variable]:
    import scipy.io

    try:
        listed = scipy.io.whosmat(path)
    except Exception as exc:  # scipy raises several types for corrupt files
        raise InputError(f"{path} is not a readable MATLAB v5 file: {exc}") from None
    out = []
    for name, shape, cls in listed:
        size = int(np.prod(shape, dtype=object)) * _MAT_CLASS_BYTES.get(cls, 8)
        out.append(_Variable(name, tuple(int(d) for d in shape), cls in _MAT_CLASS_BYTES, size))
    return out


def _read_mat5(path: Path, name: str) -> np.ndarray:
    import scipy.io

    try:
        raw = scipy.io.loadmat(path, variable_names=[name])
    except Exception as exc:
        raise InputError(f"{path} is not a readable MATLAB v5 file: {exc}") from None
    value = raw.get(name)
    if not isinstance(value, np.ndarray):
        raise InputError(f"{path}: variable {name!r} is not an array")
    return value


def _h5(path: Path) -> Any:
    try:
        import h5py
    except ImportError:
        raise InputError(f"{path} is a MATLAB v7.3 (HDF5) file; install h5py (`pip install edgesentry[io]`)") from None
    return h5py


def _with_mat73(path: Path, body: Callable[[Any, Any], Any]) -> Any:
    h5py = _h5(path)
    try:
        with h5py.File(path, "r") as fh:
            return body(h5py, fh)
    except InputError:
        raise
    except Exception as exc:  # h5py raises OSError, KeyError, ValueError, RuntimeError on corrupt files
        raise InputError(f"{path} is not a readable MATLAB v7.3 (HDF5) file: {type(exc).__name__}: {exc}") from None


def _list_mat73(path: Path) -> list[_Variable]:
    def listing(h5py: Any, fh: Any) -> list[_Variable]:
        out = []
        for key in fh.keys():
            item = fh.get(key, getclass=True)
            if item is not h5py.Dataset:
                continue
            ds = fh[key]
            # MATLAB writes column-major: the HDF5 dataset holds the transpose.
            shape = tuple(int(d) for d in reversed(ds.shape))
            nbytes = int(np.prod(shape, dtype=object)) * ds.dtype.itemsize
            out.append(_Variable(key, shape, ds.dtype.kind in "biuf", nbytes))
        return out

    return _with_mat73(path, listing)


def _read_mat73(path: Path, name: str) -> np.ndarray:
    return _with_mat73(path, lambda h5py, fh: np.asarray(fh[name][()]).T)


def _pick(variables: list[_Variable], variable: str | None, names: Sequence[str], ndim: int, path: Path) -> _Variable:
    by_name = {v.name: v for v in variables}
    if variable is not None:
        if variable not in by_name:
            raise InputError(f"{path} has no variable {variable!r}; it has {sorted(by_name)}")
        return by_name[variable]
    numeric = [v for v in variables if v.numeric and len(v.shape) == ndim]
    for name in names:
        for v in numeric:
            if v.name == name:
                return v
    if not numeric:
        shapes = {v.name: v.shape for v in variables}
        raise InputError(f"{path} holds no {ndim}-D numeric array; variables: {shapes}")
    return max(numeric, key=lambda v: v.nbytes)


def _parse_envi_header(text: str) -> dict[str, str]:
    """``key = value`` lines (``{...}`` values may span lines) -> lower-case key -> value text."""
    if not text.lstrip().upper().startswith("ENVI"):
        raise InputError("not an ENVI header (first line must be 'ENVI')")
    fields: dict[str, str] = {}
    lines = iter(text.splitlines()[1:])
    for line in lines:
        key, eq, value = line.partition("=")
        if not eq or not key.strip():
            continue
        value = value.strip()
        if value.startswith("{"):
            parts = [value]
            while "}" not in parts[-1]:
                nxt = next(lines, None)
                if nxt is None:
                    raise InputError(f"ENVI header field {key.strip()[:40]!r} opens '{{' and never closes it")
                parts.append(nxt)
            value = " ".join(parts)
        fields[key.strip().lower()] = value
    return fields


def _envi_int(fields: dict[str, str], key: str, header: Path, minimum: int, default: int | None = None) -> int:
    text = fields.get(key)
    if text is None:
        if default is None:
            raise InputError(f"{header}: ENVI header lacks the field {key!r}")
        return default
    if not re.fullmatch(r"\s*\+?\d{1,18}\s*", text):
        raise InputError(f"{header}: ENVI field {key!r} must be an integer >= {minimum}; got {text[:40]!r}")
    value = int(text)
    if value < minimum:
        raise InputError(f"{header}: ENVI field {key!r} must be an integer >= {minimum}; got {value}")
    return value


def read_envi(path: str | os.PathLike, *, mapped: bool = False) -> np.ndarray:
    """Read an ENVI cube (bsq, bil or bip; either byte order) as (H, W, B).

    Every header field used is validated (positive sizes, a known data type, byte order 0 or
    1, a non-negative offset, a known interleave), and the binary must be a regular file
    holding at least ``offset + samples * lines * bands * itemsize`` bytes before it is read;
    only that many bytes are read. ``mapped``: a read-only memory map of the binary, viewed
    as (H, W, B) in the file's interleave and byte order (not bound by ``max_cube_bytes()``).
    """
    p = Path(path)
    header = (
        p
        if p.suffix.lower() == ".hdr"
        else (p.with_suffix(".hdr") if p.with_suffix(".hdr").exists() else Path(str(p) + ".hdr"))
    )
    text = read_text_bounded(header, limit=ENVI_HEADER_MAX_BYTES, what="ENVI header", error=InputError,
                             errors="replace")
    fields = _parse_envi_header(text)
    sizes = {k: _envi_int(fields, k, header, 1) for k in ("samples", "lines", "bands")}
    code = _envi_int(fields, "data type", header, 0)
    if code not in _ENVI_DTYPES:
        raise InputError(f"{header}: ENVI data type {code} is not supported; expected one of {sorted(_ENVI_DTYPES)}")
    order = _envi_int(fields, "byte order", header, 0, default=0)
    if order not in (0, 1):
        raise InputError(f"{header}: ENVI byte order must be 0 (little endian) or 1 (big endian); got {order}")
    offset = _envi_int(fields, "header offset", header, 0, default=0)
    interleave = fields.get("interleave", "bsq").strip().lower()
    if interleave not in _ENVI_INTERLEAVE:
        raise InputError(f"{header}: unknown interleave {interleave[:20]!r}; expected bsq, bil or bip")
    dtype = np.dtype(_ENVI_DTYPES[code]).newbyteorder(">" if order == 1 else "<")
    count = sizes["samples"] * sizes["lines"] * sizes["bands"]
    dims = "x".join(str(sizes[k]) for k in ("lines", "samples", "bands"))
    if not mapped:
        _check_declared(count * dtype.itemsize, f"ENVI cube {dims} of {dtype.name}", header)
    data = p if p.suffix.lower() != ".hdr" else _envi_data_file(p)
    size = check_regular_file(data, what="ENVI data file", error=InputError).st_size
    if offset + count * dtype.itemsize > size:
        raise InputError(f"{data}: expected {count} values for {dims} after a {offset}-byte offset "
                         f"({offset + count * dtype.itemsize} bytes); the file has {size} (truncated?)")
    layout, axes = _ENVI_INTERLEAVE[interleave]
    on_disk = tuple(sizes[k] for k in layout)
    if mapped:
        try:
            return np.memmap(data, dtype=dtype, mode="r", offset=offset, shape=on_disk).transpose(axes)
        except (OSError, ValueError) as exc:
            raise InputError(f"{data}: cannot map the ENVI data file ({exc})") from None
    raw = np.fromfile(data, dtype=dtype, count=count, offset=offset)
    if raw.size != count:
        raise InputError(f"{data}: expected {count} values for {dims}, found {raw.size} (truncated?)")
    cube = raw.reshape(on_disk).transpose(axes)
    return np.ascontiguousarray(cube).astype(dtype.newbyteorder("="))


def _envi_data_file(header: Path) -> Path:
    for suffix in ("", ".img", ".dat", ".raw", ".bin", ".bsq", ".bil", ".bip"):
        candidate = header.with_suffix(suffix)
        if candidate.exists() and candidate != header:
            return candidate
    raise InputError(f"no binary data file next to ENVI header {header}")


def select_bands(cube: np.ndarray, bands: int | Sequence[int] | None) -> np.ndarray:
    """First ``bands`` bands (int) or the listed band indices (sequence); ``None`` keeps all."""
    if bands is None:
        return cube
    total = cube.shape[-1]
    if isinstance(bands, (int, np.integer)):
        if not 1 <= bands <= total:
            raise InputError(f"cannot take the first {bands} bands of a cube with {total} bands")
        return cube[..., : int(bands)]
    idx = np.asarray(list(bands))
    if idx.size == 0 or idx.dtype.kind not in "iu":
        raise InputError(f"band indices must be a non-empty list of integers; got {list(bands)[:10]}")
    if idx.min() < -total or idx.max() >= total:
        raise InputError(f"band indices must lie in [0, {total}); got min {idx.min()} max {idx.max()}")
    return cube[..., idx]


def as_cube(
    x: object, *, variable: str | None = None, who: str = "RX", mapped: bool = False
) -> tuple[np.ndarray, dict[str, str]]:
    """Validate a detector input: an (H, W, B) real array or a cube file path.

    Returns the array (file dtype kept) and a source record (``{"path": ...}`` for files).
    ``who`` names the detector in the error messages; ``mapped`` is ``read_cube``'s.
    """
    from edgesentry.errors import describe

    source: dict[str, str] = {}
    if isinstance(x, (str, os.PathLike)):
        source["path"] = os.fspath(x)
        x = read_cube(x, variable, mapped=mapped)
    if not isinstance(x, np.ndarray):
        raise InputError(f"{who} expects an (H, W, B) numpy array or a cube file path; got {describe(x)}")
    if x.ndim != 3:
        raise InputError(f"{who} expects an (H, W, B) cube (band-last); got shape {x.shape}")
    if x.dtype.kind not in "iuf":
        raise InputError(f"{who} expects a real numeric cube (int, uint or float); got dtype {x.dtype}")
    if min(x.shape) == 0:
        raise InputError(f"{who} got an empty cube of shape {x.shape}")
    return x, source
