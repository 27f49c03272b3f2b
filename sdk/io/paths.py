"""Paths from outside: names that must stay inside a folder, files that must be regular, reads
that must be bounded, outputs that must be writable before anything starts.

    name = check_relative_name("engines/model.fp16.plan", what="bundle file")  # or BundleError
    path = resolve_inside(root, name, error=BundleError)     # symlinks resolved, still under root
    text = read_text_bounded(path, limit=1 << 20, what="ENVI header", error=InputError)
    check_output_file(path, flag="--jsonl")                  # ConfigError unless a regular file or absent

A name is checked *before* anything is opened, so the answer for ``../x`` or ``/etc/passwd``
is the same whether that file exists or not (no existence oracle for paths outside).
"""

from __future__ import annotations

import hashlib
import os
import stat
import tempfile
from pathlib import Path, PurePosixPath

from edgesentry.errors import ConfigError, EdgesentryError

#: longest accepted relative name and path component (bytes of UTF-8), as common filesystems allow
MAX_NAME_BYTES = 1024
MAX_COMPONENT_BYTES = 255


def sha256_file(path: str | os.PathLike) -> str:
    """sha256 (hex) of a file, read in 1 MiB pieces."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def limit_from_env(name: str, default: int) -> int:
    """A positive integer limit from environment variable ``name``, else ``default``.

    Raises:
        ConfigError: the variable is set but not a positive integer.
    """
    text = os.environ.get(name)
    if text is None:
        return default
    if not text.strip().isdigit() or int(text) < 1:
        raise ConfigError(f"{name} must be a positive integer; got {text!r}")
    return int(text)


def check_relative_name(name: object, *, what: str, error: type[EdgesentryError]) -> str:
    """``name`` if it is a plain relative POSIX path that stays inside its folder, else ``error``.

    Refused: non-strings, empty names, absolute paths, ``..`` / ``.`` / empty components,
    backslashes and drive letters (Windows paths), NUL and other control characters, names
    longer than ``MAX_NAME_BYTES`` or with a component over ``MAX_COMPONENT_BYTES``.
    """
    if not isinstance(name, str):
        raise error(f"{what} name must be a string; got {type(name).__name__}")
    shown = repr(name[:80])
    if not name or len(name.encode("utf-8", "surrogatepass")) > MAX_NAME_BYTES:
        raise error(f"{what} name must be 1 to {MAX_NAME_BYTES} bytes; got {shown} ({len(name)} characters)")
    if any(ord(c) < 32 or ord(c) == 127 for c in name) or "\\" in name or ":" in name.split("/", 1)[0]:
        raise error(f"{what} name {shown} holds a control character, a backslash or a drive letter; "
                    "expected a plain relative path such as 'engines/model.plan'")
    if name.startswith("/"):
        raise error(f"{what} name {shown} is absolute; expected a path relative to its folder")
    parts = name.split("/")
    if any(p in ("", ".", "..") for p in parts):
        raise error(f"{what} name {shown} has an empty, '.' or '..' component; expected a plain relative path "
                    "that stays inside its folder")
    if any(len(p.encode("utf-8", "surrogatepass")) > MAX_COMPONENT_BYTES for p in parts):
        raise error(f"{what} name {shown} has a component longer than {MAX_COMPONENT_BYTES} bytes")
    return str(PurePosixPath(name))


def resolve_inside(root: str | os.PathLike, name: str, *, what: str, error: type[EdgesentryError]) -> Path:
    """``root / name`` with symlinks resolved, refused when the result leaves ``root``.

    ``name`` is checked with ``check_relative_name`` first. The path need not exist (writers
    use this for their destinations); an existing symlink anywhere on the way is followed, so
    a link that points out of ``root`` is refused whether or not its target exists.
    """
    check_relative_name(name, what=what, error=error)
    base = Path(root).resolve()
    target = (base / name).resolve()
    if target != base and base not in target.parents:
        raise error(f"{what} {name!r} resolves outside {str(root)!r} (a symbolic link leaves the folder); refused")
    return target


def is_special(path: str | os.PathLike) -> bool:
    """True when ``path`` exists and is not a regular file or a directory (FIFO, socket, device)."""
    try:
        mode = os.stat(path).st_mode
    except OSError:
        return False
    return not (stat.S_ISREG(mode) or stat.S_ISDIR(mode))


def check_regular_file(path: str | os.PathLike, *, what: str, error: type[EdgesentryError]) -> os.stat_result:
    """``os.stat`` of ``path`` when it is a regular file; ``error`` otherwise (missing, FIFO, device ...).

    Reading a FIFO blocks until a writer comes and a device such as ``/dev/zero`` never ends,
    so readers call this before ``open``.
    """
    try:
        st = os.stat(path)
    except FileNotFoundError:
        raise error(f"{what} {str(path)!r} does not exist") from None
    except OSError as exc:
        raise error(f"{what} {str(path)!r} cannot be read: {exc.strerror or exc}") from None
    if not stat.S_ISREG(st.st_mode):
        kind = "a directory" if stat.S_ISDIR(st.st_mode) else "a FIFO, socket or device"
        raise error(f"{what} {str(path)!r} is {kind}, not a regular file")
    return st


def read_bytes_bounded(path: str | os.PathLike, *, limit: int, what: str, error: type[EdgesentryError]) -> bytes:
    """The bytes of a regular file of at most ``limit`` bytes (checked before and while reading)."""
    st = check_regular_file(path, what=what, error=error)
    if st.st_size > limit:
        raise error(f"{what} {str(path)!r} has {st.st_size} bytes; the limit is {limit}")
    try:
        with open(path, "rb") as fh:
            data = fh.read(limit + 1)
    except OSError as exc:
        raise error(f"{what} {str(path)!r} cannot be read: {exc.strerror or exc}") from None
    if len(data) > limit:  # grew between stat and read
        raise error(f"{what} {str(path)!r} has more than {limit} bytes; the limit is {limit}")
    return data


def read_text_bounded(path: str | os.PathLike, *, limit: int, what: str, error: type[EdgesentryError],
                      errors: str = "strict") -> str:
    """``read_bytes_bounded`` decoded as UTF-8 (``error`` on undecodable bytes unless ``errors``)."""
    data = read_bytes_bounded(path, limit=limit, what=what, error=error)
    try:
        return data.decode("utf-8", errors=errors)
    except UnicodeDecodeError as exc:
        raise error(f"{what} {str(path)!r} is not UTF-8 text ({exc})") from None


def check_output_file(path: str | os.PathLike, *, flag: str) -> Path:
    """An output file path that can be written without blocking or destroying anything special.

    The path must be a regular file or absent, its folder must exist (or be creatable) and be
    writable. Checked before a run starts so that a bad option is one line, not a failure later.

    Raises:
        ConfigError: naming ``flag``.
    """
    p = Path(path)
    if p.is_dir():
        raise ConfigError(f"{flag} {str(p)!r} is a directory; expected a file path")
    if is_special(p):
        raise ConfigError(f"{flag} {str(p)!r} is a FIFO, socket or device, not a regular file; refused "
                          "(writing to it could block or never be read back)")
    check_output_dir(p.parent if str(p.parent) else Path("."), flag=f"{flag}: folder", create=True)
    if p.exists() and not os.access(p, os.W_OK):
        raise ConfigError(f"{flag} {str(p)!r} is not writable")
    return p


def check_output_dir(path: str | os.PathLike, *, flag: str, create: bool = True) -> Path:
    """A folder that exists (created when ``create``) and accepts new files (a probe file is made)."""
    p = Path(path)
    if p.exists() and not p.is_dir():
        raise ConfigError(f"{flag} {str(p)!r} is not a directory")
    if create:
        try:
            p.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise ConfigError(f"{flag}: cannot create folder {str(p)!r}: {exc.strerror or exc}") from None
    try:
        fd, probe = tempfile.mkstemp(dir=p, prefix=".edgesentry-probe-")
    except OSError as exc:
        raise ConfigError(f"{flag}: cannot write into folder {str(p)!r}: {exc.strerror or exc}") from None
    os.close(fd)
    os.unlink(probe)
    return p
