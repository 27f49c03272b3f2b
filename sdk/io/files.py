"""Many inputs from one argument: files, folders (searched recursively) and glob patterns.

    expand("data/test", IMAGE_SUFFIXES)               # every image below data/test, sorted
    expand(["a.png", "more/*.jpg"], IMAGE_SUFFIXES)   # a file as given, a glob's matches sorted
    names_for(paths, root=...)                        # unique, stable output names

``Detector.predict`` / ``predict_batch`` / ``calibrate`` and the ``detect`` / ``calibrate`` /
``eval`` verbs expand their inputs here, so a folder means the same everywhere: every file with
one of the family's suffixes below it (hidden files and folders skipped), in sorted order.
"""

from __future__ import annotations

import glob
import os
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from edgesentry.errors import InputError
from edgesentry.io.hsi import read_npy as read_npy  # feature files: the bounded .npy reader, re-exported

_GLOB_CHARS = frozenset("*?[")
#: cube files (``edgesentry.io.hsi.read_cube``)
CUBE_SUFFIXES = (".mat", ".npy", ".hdr")
#: feature arrays
NPY_SUFFIXES = (".npy",)


def is_pattern(text: str) -> bool:
    """True for a glob pattern (``*``, ``?`` or ``[``) that is not itself an existing path."""
    return bool(_GLOB_CHARS & set(text)) and not Path(text).exists()


def names_many(x: Any) -> bool:
    """True when ``x`` is one path argument that stands for many files (a folder or a glob)."""
    if not isinstance(x, (str, os.PathLike)):
        return False
    text = os.fspath(x)
    return Path(text).is_dir() or is_pattern(text)


def _hidden(path: Path, root: Path) -> bool:
    return any(part.startswith(".") for part in path.relative_to(root).parts)


def _folder(root: Path, suffixes: Sequence[str] | None) -> list[Path]:
    return sorted(f for f in root.rglob("*") if f.is_file() and not _hidden(f, root)
                  and (suffixes is None or f.suffix.lower() in suffixes))


def expand(items: str | os.PathLike | Iterable[str | os.PathLike], suffixes: Sequence[str] | None = None,
           *, what: str = "input") -> list[Path]:
    """Files, folders and glob patterns -> the files they name, in a stable order.

    Args:
        items: one path or pattern, or several.
        suffixes: lower-case suffixes a folder or pattern contributes (``None`` = any file); a
            file named explicitly is always taken.
        what: names the files in error messages (``"image"``, ``"cube"`` ...).

    Raises:
        InputError: a path that does not exist, a pattern that matches nothing, or no files at all.
    """
    if isinstance(items, (str, os.PathLike)):
        items = [items]
    found: list[Path] = []
    for item in items:
        text = os.fspath(item)
        path = Path(text)
        if path.is_dir():
            files = _folder(path, suffixes)
            if not files:
                raise InputError(f"folder {text!r} holds no {what} files{_listing(suffixes)}")
        elif path.is_file():
            files = [path]
        elif is_pattern(text):
            files = sorted(Path(p) for p in glob.glob(text, recursive=True)
                           if Path(p).is_file() and (suffixes is None or Path(p).suffix.lower() in suffixes))
            if not files:
                raise InputError(f"pattern {text!r} matches no {what} files{_listing(suffixes)}")
        else:
            raise InputError(f"{what} {text!r} does not exist (expected a file, a folder or a glob pattern)")
        found.extend(files)
    if not found:
        raise InputError(f"no {what} files given")
    return found


def _listing(suffixes: Sequence[str] | None) -> str:
    return f" ({', '.join(suffixes)})" if suffixes else ""


def names_for(paths: Sequence[Path]) -> list[str]:
    """Unique output names for ``paths``: the stem, or the folders joined with ``__`` when stems
    repeat (``test/good/04.jpg`` and ``test/colour/04.jpg`` -> ``good__04`` and ``colour__04``)."""
    stems = [p.stem for p in paths]
    if len(set(stems)) == len(stems):
        return stems
    common = Path(os.path.commonpath([str(p.resolve().parent) for p in paths]))
    names = ["__".join(p.resolve().relative_to(common).with_suffix("").parts) for p in paths]
    seen: dict[str, int] = {}
    unique = []
    for name in names:
        seen[name] = seen.get(name, 0) + 1
        unique.append(name if seen[name] == 1 else f"{name}_{seen[name]}")
    return unique
