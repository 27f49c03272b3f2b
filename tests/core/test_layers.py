"""The house has one staircase: imports only go down the layers of DESIGN.md / STYLE.md section 0.

    errors, result (+ viz, the pictures it draws), calibration, metrics
      -> io, models, kernels, backends (+ bundle, signing, recalibration, precision)
      -> detector, detectors
      -> api
      -> export, serving, stream, evaluation
      -> line (the production line runtime: uses stream, serving and api)
      -> cli (and the package facade ``edgesentry/__init__.py``)

Every module under ``sdk/``, ``kernels/`` and ``export/`` is parsed with ``ast``; every import
counts, module level or inside a function (a lazy import still runs). A module may import its
own layer or any layer below. Module paths in strings (``importlib.import_module``,
``__import__``) are refused: the registries are explicit imports, so this test, a reader and a
static tool see every edge, and the import graph checked for cycles is the run-time one.
Third-party imports (torch, onnxruntime ...) are not edges and may stay lazy.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

#: folder in the repository -> the package it installs as (pyproject's ``package-dir``)
PACKAGES = {"sdk": "edgesentry", "kernels": "edgesentry.kernels", "export": "edgesentry.export"}

#: bottom first; the names are the first component after ``edgesentry.`` ("" = the facade)
LAYERS: tuple[tuple[str, ...], ...] = (
    ("errors", "viz", "result", "calibration", "metrics", "_threads", "_version", "_machine"),
    ("io", "models", "kernels", "backends", "bundle", "signing", "recalibration", "precision"),
    ("detector", "detectors"),
    ("api",),
    ("export", "serving", "stream", "evaluation"),
    ("line",),
    ("cli", ""),
)
RANK = {name: rank for rank, names in enumerate(LAYERS) for name in names}
#: imports the order alone would allow but the design does not: exporters build their graphs
#: from ``models/`` (a detector is a runtime, not a graph factory)
FORBIDDEN = {("export", "detectors"), ("export", "detector")}


def discover(root: Path) -> dict[str, Path]:
    """Module name -> file for every Python module (and compiled extension) of the package."""
    modules: dict[str, Path] = {}
    for folder, package in PACKAGES.items():
        base = root / folder
        for path in sorted(base.rglob("*")):
            if "__pycache__" in path.parts or path.suffix not in (".py", ".so", ".pyd"):
                continue
            parts = list(path.relative_to(base).with_suffix("").parts)
            parts[-1] = parts[-1].split(".")[0]  # _cpu_rx.cpython-311-x86_64-linux-gnu -> _cpu_rx
            if parts[-1] == "__init__":
                parts.pop()
            modules[".".join([package, *parts])] = path
    return modules


def layer_of(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else ""


def _type_checking_only(node: ast.AST) -> bool:
    test = getattr(node, "test", None)
    return isinstance(node, ast.If) and isinstance(test, (ast.Name, ast.Attribute)) and (
        getattr(test, "id", None) == "TYPE_CHECKING" or getattr(test, "attr", None) == "TYPE_CHECKING")


def _walk(node: ast.AST) -> Iterator[ast.AST]:
    """``ast.walk`` that skips ``if TYPE_CHECKING:`` blocks (they never run)."""
    for child in ast.iter_child_nodes(node):
        if _type_checking_only(child):
            continue
        yield child
        yield from _walk(child)


def imports_of(module: str, path: Path, known: set[str]) -> tuple[list[tuple[int, str]], list[tuple[int, str]]]:
    """(edges, string imports) of one source file: ``(line, imported edgesentry module)`` and
    ``(line, call)`` for every ``importlib.import_module`` / ``__import__``."""
    tree = ast.parse(path.read_text(), filename=str(path))
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    edges: list[tuple[int, str]] = []
    dynamic: list[tuple[int, str]] = []
    for node in _walk(tree):
        if isinstance(node, ast.Import):
            edges += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                anchor = package.split(".")
                anchor = anchor[: len(anchor) - node.level + 1]
                base = ".".join(anchor + ([node.module] if node.module else []))
            else:
                base = node.module or ""
            for alias in node.names:
                sub = f"{base}.{alias.name}"
                edges.append((node.lineno, sub if sub in known else base))
        elif isinstance(node, ast.Call):
            func = node.func
            name = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", "")
            if name in ("import_module", "__import__"):
                dynamic.append((node.lineno, ast.unparse(node)))
    ours = [(line, target) for line, target in edges if target == "edgesentry" or target.startswith("edgesentry.")]
    return ours, dynamic


def import_graph(root: Path) -> tuple[dict[str, Path], dict[str, list[tuple[int, str]]], list[str]]:
    modules = discover(root)
    known = set(modules)
    graph: dict[str, list[tuple[int, str]]] = {}
    dynamic: list[str] = []
    for module, path in modules.items():
        if path.suffix != ".py":
            graph[module] = []
            continue
        graph[module], calls = imports_of(module, path, known)
        dynamic += [f"{path.relative_to(root)}:{line}: {call}" for line, call in calls]
    return modules, graph, dynamic


def layer_violations(root: Path) -> list[str]:
    """Every import that climbs, every module outside the layers, every module path in a string."""
    modules, graph, dynamic = import_graph(root)
    problems = [f"{p}  (a module path in a string: import it explicitly)" for p in dynamic]
    for module, edges in graph.items():
        src = layer_of(module)
        if src not in RANK:
            problems.append(f"{modules[module].relative_to(root)}: module {module} is in no layer; add it to LAYERS")
            continue
        for line, target in sorted(set(edges)):
            dst = layer_of(target)
            where = f"{modules[module].relative_to(root)}:{line}: {module} ({src or 'facade'}) imports {target}"
            if dst in RANK and RANK[dst] > RANK[src]:
                problems.append(f"{where} ({dst or 'facade'}), a higher layer")
            elif (src, dst) in FORBIDDEN:
                problems.append(f"{where}: {src}/ must not import {dst}")
    return problems


def import_cycles(root: Path) -> list[list[str]]:
    """Strongly connected groups of modules (Tarjan): modules that import each other, at any depth."""
    _, graph, _ = import_graph(root)
    succ = {m: sorted({t for _, t in edges if t in graph and t != m}) for m, edges in graph.items()}
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    cycles: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in succ[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            group = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                group.append(w)
                if w == v:
                    break
            if len(group) > 1:
                cycles.append(sorted(group))

    for v in sorted(succ):
        if v not in index:
            visit(v)
    return cycles


def test_every_import_goes_down_the_layers():
    problems = layer_violations(ROOT)
    assert not problems, f"{len(problems)} imports climb the layers:\n" + "\n".join(problems)


def test_no_import_cycle():
    cycles = import_cycles(ROOT)
    assert not cycles, "modules that import each other:\n" + "\n".join(" <-> ".join(c) for c in cycles)


def test_the_check_sees_lazy_relative_and_string_imports(tmp_path):
    """The checker itself: a lazy upward import, a relative one and an ``import_module`` are caught."""
    (tmp_path / "sdk" / "detectors").mkdir(parents=True)
    (tmp_path / "sdk" / "cli").mkdir()
    (tmp_path / "kernels").mkdir()
    (tmp_path / "export").mkdir()
    for init in ("sdk", "sdk/detectors", "sdk/cli", "kernels", "export"):
        (tmp_path / init / "__init__.py").write_text("")
    (tmp_path / "sdk" / "cli" / "hooks.py").write_text("from edgesentry.detectors import fam\n")
    (tmp_path / "sdk" / "detectors" / "fam.py").write_text(
        "import importlib\n\ndef run():\n    from ..cli import hooks\n    return importlib.import_module('x')\n")
    problems = layer_violations(tmp_path)
    assert len(problems) == 2, problems
    assert any("fam.py:4" in p and "edgesentry.cli.hooks" in p for p in problems)
    assert any("fam.py:5" in p and "import_module" in p for p in problems)
    assert import_cycles(tmp_path) == [["edgesentry.cli.hooks", "edgesentry.detectors.fam"]]


def test_every_layer_name_exists():
    """A layer entry that names no module is a stale table."""
    names = {layer_of(m) for m in discover(ROOT)}
    assert set(RANK) <= names, f"LAYERS names {sorted(set(RANK) - names)}, which are no modules"
