"""The CLI's words for Python options: what an error message says on the command line.

Library code spells an option with ``edgesentry.errors.option(name, value)``; while a verb
runs, ``main`` installs ``CLI_WORDS`` (``errors.spelling``), so the same message reads
``pass --trim`` on the command line and ``pass trim=True`` in Python. An option the CLI does
not offer is absent here and keeps its Python spelling. Add a flag here when a verb offers it.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any


def _flag(flag: str, placeholder: str = "") -> Callable[[Any], str]:
    """``--flag VALUE`` (the placeholder when no value is given; nothing for switches)."""

    def spell(value: Any) -> str:
        if not placeholder:
            return flag
        if value is None:
            return f"{flag} {placeholder}"
        if isinstance(value, (tuple, list)):
            return f"{flag} {','.join(str(v) for v in value)}"
        return f"{flag} {value}"

    return spell


#: Python option -> its command-line spelling (a function of the value)
CLI_WORDS: dict[str, Callable[[Any], str]] = {
    "backend": _flag("--backend", "NAME"),
    "kernels": _flag("--kernels", "TIER"),
    "threshold": _flag("--threshold", "T"),
    "pixel_threshold": _flag("--pixel-threshold", "T"),
    "overwrite": _flag("--force"),
    "trim": _flag("--trim"),
    "window": _flag("--window", "INNER,OUTER"),
    "mode": _flag("--mode", "MODE"),
    "bands": _flag("--bands", "N"),
    "variable": _flag("--variable", "NAME"),
    "nan_policy": lambda value: "--mask-nan",
    "scoring": _flag("--scoring", "NAME"),
    "top_p": _flag("--top-p", "P"),
    "batch_size": _flag("--batch-size", "N"),
    "seed": _flag("--seed", "N"),
    "prompt": lambda value: "--embedding FILE.npy",
    "clip": _flag("--clip", "RN50.pt"),
    "clip_vocab": _flag("--clip-vocab", "FILE"),
    "gallery": _flag("--gallery", "GALLERY.npz"),
    "config": _flag("--config", "ARCH.json"),
    "memory_budget": lambda value: "--memory-budget GB" if value is None else f"--memory-budget {value / 1e9:g}",
    "trusted_keys": _flag("--trusted-keys", "KEY.pub ..."),
    "revoked_keys": _flag("--revoked-keys", "KEY ..."),
    "signature": _flag("--signature", "PATH"),
}
