"""Hyperspectral cube readers: MATLAB ``.mat`` (v5 and v7.3), ``.npy`` and ENVI.

Every reader returns an (H, W, B) array, band-last, in the file's own dtype (integer cubes
stay integer; some ABU scenes hold negative int16 values).
"""

from __future__ import annotations

import os
import re
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from edgesentry.errors import InputError

CUBE_NAMES = ("data", "cube", "hsi", "img", "image", "X", "x")
GT_NAMES = ("map", "gt", "groundtruth", "ground_truth", "mask", "label", "labels")

_ENVI_DTYPES = {1: "u1", 2: "i2", 3: "i4", 4: "f4", 5: "f8", 12: "u2", 13: "u4", 14: "i8", 15: "u8"}


def read_cube(path: str | os.PathLike, variable: str | None = None) -> np.ndarray:
    """Read an (H, W, B) cube from ``.mat``, ``.npy`` or ENVI (``.hdr`` + binary).

    Args:
        path: the file; for ENVI either the ``.hdr`` or the binary next to it.
        variable: the ``.mat`` variable; by default ``data``/``cube``/... or else the
            largest 3-D numeric array in the file.
    """
    p = Path(path)
    if not p.exists():
        raise InputError(f"cube file {str(p)!r} does not exist")
    suffix = p.suffix.lower()
    if suffix == ".mat":
        arrays = _read_mat(p)
        cube = _pick(arrays, variable, CUBE_NAMES, ndim=3, path=p)
    elif suffix == ".npy":
        try:
            cube = np.load(p, allow_pickle=False)
        except ValueError as exc:
            raise InputError(f"{p} is not a plain .npy array ({exc})") from None
    elif suffix == ".hdr" or p.with_suffix(".hdr").exists() or Path(str(p) + ".hdr").exists():
        cube = read_envi(p)
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
        gt = _pick(_read_mat(p), variable, GT_NAMES, ndim=2, path=p)
    elif suffix == ".npy":
        gt = np.load(p, allow_pickle=False)
    elif suffix in (".png", ".bmp", ".tif", ".tiff", ".jpg"):
        from PIL import Image

        with Image.open(p) as img:
            gt = np.asarray(img.convert("L"))
    else:
        raise InputError(f"unsupported ground-truth format {suffix!r} for {p}")
    if gt.ndim != 2:
        raise InputError(f"{p}: expected an (H, W) ground-truth map; got shape {gt.shape}")
    return gt > 0


def _read_mat(path: Path) -> dict[str, np.ndarray]:
    with open(path, "rb") as fh:
        head = fh.read(128)
    if b"MATLAB 7.3" in head or head[:8] == b"\x89HDF\r\n\x1a\n":
        return _read_mat73(path)
    import scipy.io

    try:
        raw = scipy.io.loadmat(path)
    except Exception as exc:  # scipy raises several types for corrupt files
        raise InputError(f"{path} is not a readable MATLAB v5 file: {exc}") from None
    return {k: v for k, v in raw.items() if isinstance(v, np.ndarray) and not k.startswith("__")}


def _read_mat73(path: Path) -> dict[str, np.ndarray]:
    try:
        import h5py
    except ImportError:
        raise InputError(f"{path} is a MATLAB v7.3 (HDF5) file; install h5py (`pip install edgesentry[io]`)") from None
    out = {}
    with h5py.File(path, "r") as fh:
        for key, item in fh.items():
            if isinstance(item, h5py.Dataset) and item.dtype.kind in "biuf":
                # MATLAB writes column-major: the HDF5 dataset holds the transpose.
                out[key] = np.asarray(item).T
    return out


def _pick(
    arrays: dict[str, np.ndarray], variable: str | None, names: Sequence[str], ndim: int, path: Path
) -> np.ndarray:
    numeric = {k: v for k, v in arrays.items() if v.dtype.kind in "biuf"}
    if variable is not None:
        if variable not in arrays:
            raise InputError(f"{path} has no variable {variable!r}; it has {sorted(arrays)}")
        return arrays[variable]
    for name in names:
        if name in numeric and numeric[name].ndim == ndim:
            return numeric[name]
    candidates = [v for v in numeric.values() if v.ndim == ndim]
    if not candidates:
        shapes = {k: v.shape for k, v in arrays.items()}
        raise InputError(f"{path} holds no {ndim}-D numeric array; variables: {shapes}")
    return max(candidates, key=lambda v: v.size)


def _parse_envi_header(text: str) -> dict[str, str]:
    if not text.lstrip().upper().startswith("ENVI"):
        raise InputError("not an ENVI header (first line must be 'ENVI')")
    fields: dict[str, str] = {}
    for match in re.finditer(r"^\s*([^=\n]+?)\s*=\s*(\{[^}]*\}|[^\n]*)", text, flags=re.MULTILINE):
        fields[match.group(1).strip().lower()] = match.group(2).strip()
    return fields


def read_envi(path: str | os.PathLike) -> np.ndarray:
    """Read an ENVI cube (bsq, bil or bip; either byte order) as (H, W, B)."""
    p = Path(path)
    header = (
        p
        if p.suffix.lower() == ".hdr"
        else (p.with_suffix(".hdr") if p.with_suffix(".hdr").exists() else Path(str(p) + ".hdr"))
    )
    fields = _parse_envi_header(header.read_text(errors="replace"))
    try:
        samples, lines, bands = (int(fields[k]) for k in ("samples", "lines", "bands"))
        dtype = np.dtype(_ENVI_DTYPES[int(fields["data type"])])
    except KeyError as exc:
        raise InputError(f"{header}: ENVI header lacks or has an unsupported {exc.args[0]!r}") from None
    dtype = dtype.newbyteorder(">" if fields.get("byte order", "0").strip() == "1" else "<")
    offset = int(fields.get("header offset", "0"))
    interleave = fields.get("interleave", "bsq").strip().lower()
    data = p if p.suffix.lower() != ".hdr" else _envi_data_file(p)
    count = samples * lines * bands
    raw = np.fromfile(data, dtype=dtype, count=count, offset=offset)
    if raw.size != count:
        raise InputError(
            f"{data}: expected {count} values for {lines}x{samples}x{bands}, found {raw.size} (truncated?)"
        )
    order = {
        "bsq": ((bands, lines, samples), (1, 2, 0)),
        "bil": ((lines, bands, samples), (0, 2, 1)),
        "bip": ((lines, samples, bands), (0, 1, 2)),
    }
    if interleave not in order:
        raise InputError(f"{header}: unknown interleave {interleave!r}")
    shape, axes = order[interleave]
    return np.ascontiguousarray(raw.reshape(shape).transpose(axes)).astype(dtype.newbyteorder("="))


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


def as_cube(x: object, *, variable: str | None = None, who: str = "RX") -> tuple[np.ndarray, dict[str, str]]:
    """Validate a detector input: an (H, W, B) real array or a cube file path.

    Returns the array (file dtype kept) and a source record (``{"path": ...}`` for files).
    ``who`` names the detector in the error messages.
    """
    from edgesentry.errors import describe

    source: dict[str, str] = {}
    if isinstance(x, (str, os.PathLike)):
        source["path"] = os.fspath(x)
        x = read_cube(x, variable)
    if not isinstance(x, np.ndarray):
        raise InputError(f"{who} expects an (H, W, B) numpy array or a cube file path; got {describe(x)}")
    if x.ndim != 3:
        raise InputError(f"{who} expects an (H, W, B) cube (band-last); got shape {x.shape}")
    if x.dtype.kind not in "iuf":
        raise InputError(f"{who} expects a real numeric cube (int, uint or float); got dtype {x.dtype}")
    if min(x.shape) == 0:
        raise InputError(f"{who} got an empty cube of shape {x.shape}")
    return x, source
