"""The import graph among rucai's own modules: no cycles, no reaching into another package's privates.

Every module under `rucai/` is parsed with `ast` (nothing is imported). An edge A -> B is any import
of B in A, at module level or inside a function (both run sooner or later); imports under
`if TYPE_CHECKING:` never run and do not count. `from rucai.x import y` is an edge to `rucai.x.y`
when that is a module, else to `rucai.x`; importing a submodule is not an edge to its parent
package's `__init__` (only importing names from the package is).
"""

from __future__ import annotations

import ast
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PKG = ROOT / "rucai"


@dataclass(frozen=True)
class Edge:
    src: str
    dst: str
    path: str
    line: int
    names: tuple[str, ...] = ()  # the names a `from ... import` takes


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def modules() -> dict[str, Path]:
    return {module_name(p): p for p in sorted(PKG.rglob("*.py"))}


def _type_checking_lines(tree: ast.AST) -> set[int]:
    """Line numbers of statements under `if TYPE_CHECKING:` (or `typing.TYPE_CHECKING`)."""
    lines: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If):
            t = node.test
            name = t.id if isinstance(t, ast.Name) else t.attr if isinstance(t, ast.Attribute) else None
            if name == "TYPE_CHECKING":
                for stmt in node.body:
                    for sub in ast.walk(stmt):
                        if hasattr(sub, "lineno"):
                            lines.add(sub.lineno)
    return lines


def _resolve(mods: dict[str, Path], name: str) -> str | None:
    """`name` if it is a rucai module, else its nearest enclosing rucai module."""
    while name:
        if name in mods:
            return name
        name = name.rpartition(".")[0]
    return None


def imports(mods: dict[str, Path] | None = None, root: Path = ROOT) -> list[Edge]:
    mods = mods or modules()
    edges: list[Edge] = []
    for src, path in mods.items():
        tree = ast.parse(path.read_text(), filename=str(path))
        skip = _type_checking_lines(tree)
        is_pkg = path.name == "__init__.py"
        rel = str(path.relative_to(root))
        for node in ast.walk(tree):
            if getattr(node, "lineno", None) in skip:
                continue
            if isinstance(node, ast.Import):
                for alias in node.names:
                    if alias.name == "rucai" or alias.name.startswith("rucai."):
                        dst = _resolve(mods, alias.name)
                        if dst:
                            edges.append(Edge(src, dst, rel, node.lineno))
            elif isinstance(node, ast.ImportFrom):
                if node.level:  # relative: from . / .. import
                    base = src.split(".") if is_pkg else src.split(".")[:-1]
                    base = base[: len(base) - (node.level - 1)]
                    target = ".".join(base + ([node.module] if node.module else []))
                else:
                    target = node.module or ""
                if not (target == "rucai" or target.startswith("rucai.")):
                    continue
                for alias in node.names:
                    sub = f"{target}.{alias.name}"
                    if sub in mods:
                        edges.append(Edge(src, sub, rel, node.lineno))
                    else:
                        dst = _resolve(mods, target)
                        if dst:
                            edges.append(Edge(src, dst, rel, node.lineno, (alias.name,)))
    return edges


def cycles(edges: list[Edge]) -> list[list[str]]:
    """Strongly connected components with more than one module (or a module importing itself)."""
    graph: dict[str, set[str]] = {}
    for e in edges:
        graph.setdefault(e.src, set()).add(e.dst)
        graph.setdefault(e.dst, set())
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    out: list[list[str]] = []
    counter = [0]

    def visit(v: str) -> None:  # Tarjan, iteratively deep enough for ~100 modules
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in sorted(graph[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1 or v in graph[v]:
                out.append(sorted(comp))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return out


def _describe(comp: list[str], edges: list[Edge]) -> str:
    members = set(comp)
    inside = sorted({(e.path, e.line, e.src, e.dst) for e in edges if e.src in members and e.dst in members})
    return "cycle: " + " <-> ".join(comp) + "\n" + "\n".join(
        f"    {path}:{line}  {src} -> {dst}" for path, line, src, dst in inside)


def _package(mod: str) -> str:
    """The rucai subpackage a module belongs to (`rucai.data.amazon` -> `rucai.data`; `rucai.tasks` -> `rucai`)."""
    parts = mod.split(".")
    mods = modules()
    if len(parts) >= 2 and (PKG / parts[1]).is_dir() and f"rucai.{parts[1]}" in mods:
        return f"rucai.{parts[1]}"
    return "rucai"


def test_graph_builder_rules(tmp_path):
    """The edge rules on a hand-made package: submodules, names from a package, relative, TYPE_CHECKING."""
    src = {
        "rucai": "",
        "rucai.a": "",
        "rucai.a.m": "from rucai import b\nfrom rucai.a import thing\nfrom .. import b\n",
        "rucai.b": ("from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from rucai.a import m\n"
                    "def f():\n    from . import a\n    import rucai.a.m\n    import numpy\n"),
    }
    mods = {}
    for name, code in src.items():
        rel = name.replace(".", "/") + ("/__init__.py" if name in ("rucai", "rucai.a") else ".py")
        p = tmp_path / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(code)
        mods[name] = p
    edges = {(e.src, e.dst, e.names) for e in imports(mods, root=tmp_path)}
    assert edges == {("rucai.a.m", "rucai.b", ()), ("rucai.a.m", "rucai.a", ("thing",)),
                     ("rucai.b", "rucai.a", ()), ("rucai.b", "rucai.a.m", ())}
    assert cycles([Edge("x", "y", "", 0), Edge("y", "x", "", 0), Edge("y", "z", "", 0)]) == [["x", "y"]]


def test_no_import_cycles_among_rucai_modules():
    edges = imports()
    found = cycles(edges)
    assert not found, "import cycles among rucai modules:\n" + "\n".join(_describe(c, edges) for c in found)


def test_no_package_imports_another_packages_private_names():
    bad = []
    for e in imports():
        if _package(e.src) == _package(e.dst):
            continue
        private = [n for n in e.names if n.startswith("_") and not n.startswith("__")]
        if e.dst.rpartition(".")[2].startswith("_") and not e.dst.rpartition(".")[2].startswith("__"):
            private.append(e.dst)  # a private submodule of another package
        if private:
            bad.append(f"{e.path}:{e.line}  {e.src} imports {', '.join(private)} from {e.dst}")
    assert not bad, "private names imported across packages:\n" + "\n".join(bad)
