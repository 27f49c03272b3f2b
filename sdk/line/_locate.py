"""Where each key of a TOML or YAML line file sits: ``{("cameras", 1, "id"): 14, ...}`` (1-based lines).

``tomllib`` and PyYAML's constructor give the data without positions, so error messages could not
name a line. For YAML the composed node tree carries them. For TOML a small scanner walks the
(already validated) text: table headers, arrays of tables, dotted keys, inline tables and
arrays spanning lines. ``line_of(path)`` falls back to the nearest ancestor that has a line.
"""

from __future__ import annotations

import re
from typing import Any

Path = tuple[Any, ...]

_BARE = re.compile(r"[A-Za-z0-9_-]+")


class Locator:
    """Line numbers of keys and array items, by path."""

    def __init__(self, lines: dict[Path, int]):
        self.lines = lines

    def line_of(self, path: Path) -> int | None:
        path = tuple(path)
        while path:
            if path in self.lines:
                return self.lines[path]
            path = path[:-1]
        return None


def format_path(path: Path) -> str:
    """``("cameras", 1, "source", "kind")`` -> ``cameras[1].source.kind``."""
    out = ""
    for part in path:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


# ------------------------------------------------------------------------------- TOML
class _TomlScanner:
    def __init__(self, text: str):
        self.s = text
        self.i = 0
        self.line = 1
        self.lines: dict[Path, int] = {}
        self.array_tables: dict[Path, int] = {}

    def peek(self, n: int = 1) -> str:
        return self.s[self.i:self.i + n]

    def advance(self, n: int = 1) -> None:
        self.line += self.s.count("\n", self.i, self.i + n)
        self.i += n

    def skip_blank(self, newlines: bool) -> None:
        while self.i < len(self.s):
            c = self.s[self.i]
            if c in " \t\r" or (newlines and c == "\n"):
                self.advance()
            elif c == "#":
                end = self.s.find("\n", self.i)
                self.advance((len(self.s) if end < 0 else end) - self.i)
            else:
                return

    def key(self) -> Path:
        parts = []
        while True:
            self.skip_blank(False)
            c = self.peek()
            if c in ('"', "'"):
                start = self.i
                self.string()
                raw = self.s[start:self.i]
                parts.append(raw[1:-1] if c == "'" else _unescape(raw))
            else:
                m = _BARE.match(self.s, self.i)
                if not m:
                    break
                parts.append(m.group())
                self.advance(m.end() - self.i)
            self.skip_blank(False)
            if self.peek() == ".":
                self.advance()
                continue
            break
        return tuple(parts)

    def string(self) -> None:
        q = self.peek()
        triple = self.peek(3) == q * 3
        if triple:
            self.advance(3)
            end = self.s.find(q * 3, self.i)
            end = len(self.s) if end < 0 else end
            while self.s[end + 3:end + 4] == q:  # up to two quotes may close the content
                end += 1
            self.advance(end + 3 - self.i)
            return
        self.advance()
        while self.i < len(self.s) and self.peek() != q:
            self.advance(2 if q == '"' and self.peek() == "\\" else 1)
        self.advance()

    def value(self, path: Path) -> None:
        self.skip_blank(False)
        c = self.peek()
        if c == "{":
            self.advance()
            while True:
                self.skip_blank(True)
                if self.peek() in ("}", ""):
                    self.advance()
                    return
                self.assignment(path)
                self.skip_blank(True)
                if self.peek() == ",":
                    self.advance()
        elif c == "[":
            self.advance()
            index = 0
            while True:
                self.skip_blank(True)
                if self.peek() in ("]", ""):
                    self.advance()
                    return
                self.lines[path + (index,)] = self.line
                self.value(path + (index,))
                index += 1
                self.skip_blank(True)
                if self.peek() == ",":
                    self.advance()
        elif c in ('"', "'"):
            self.string()
        else:
            while self.i < len(self.s) and self.peek() not in ",]}\n#":
                self.advance()

    def assignment(self, table: Path) -> None:
        line = self.line
        key = self.key()
        for n in range(1, len(key) + 1):
            self.lines.setdefault(table + key[:n], line)
        self.skip_blank(False)
        if self.peek() == "=":
            self.advance()
        self.value(table + key)

    def scan(self) -> dict[Path, int]:
        table: Path = ()
        while True:
            self.skip_blank(True)
            if self.i >= len(self.s):
                return self.lines
            if self.peek(2) == "[[":
                self.advance(2)
                name = self.key()
                index = self.array_tables.get(name, 0)
                self.array_tables[name] = index + 1
                self.lines.setdefault(name, self.line)
                table = name + (index,)
                self.lines[table] = self.line
                self.advance(self.s.find("]]", self.i) + 2 - self.i)
            elif self.peek() == "[":
                self.advance()
                table = self.key()
                for n in range(1, len(table) + 1):
                    self.lines.setdefault(table[:n], self.line)
                self.advance(self.s.find("]", self.i) + 1 - self.i)
            else:
                start = self.i
                self.assignment(table)
                if self.i == start:  # not a statement we know: skip the line rather than loop
                    end = self.s.find("\n", self.i)
                    self.advance((len(self.s) if end < 0 else end) - self.i)


def _unescape(raw: str) -> str:
    import json

    try:
        return json.loads(raw)
    except ValueError:
        return raw[1:-1]


def toml_lines(text: str) -> Locator:
    """Key lines of a TOML document that ``tomllib`` has already accepted."""
    return Locator(_TomlScanner(text).scan())


# ------------------------------------------------------------------------------- YAML
def yaml_lines(node: Any) -> Locator:
    """Key lines from a composed PyYAML node (``yaml.compose``)."""
    import yaml

    lines: dict[Path, int] = {}

    def walk(n: Any, path: Path) -> None:
        if isinstance(n, yaml.MappingNode):
            for k, v in n.value:
                p = path + (k.value,)
                lines[p] = k.start_mark.line + 1
                walk(v, p)
        elif isinstance(n, yaml.SequenceNode):
            for i, v in enumerate(n.value):
                lines[path + (i,)] = v.start_mark.line + 1
                walk(v, path + (i,))

    walk(node, ())
    return Locator(lines)
