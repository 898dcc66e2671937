"""The layer contract of docs/DEVELOPING.md, read from the source's imports (every import, also
those inside functions): a module imports only its own layer and the layers below, and no two
modules import each other, directly or round a longer cycle."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[2] / "src"

# bottom first; a module belongs to the first entry that is a prefix of its dotted name
LAYERS: list[tuple[str, ...]] = [
    ("maxact.errors", "maxact.paths", "maxact.units", "maxact.config", "maxact.fsio", "maxact.tally",
     "maxact.derived"),
    ("maxact.models", "maxact.corpus", "maxact.windows", "maxact.dictionaries"),
    ("maxact.capture",),
    ("maxact.engine", "maxact.sampling", "maxact.ascent"),
    ("maxact.store",),
    ("maxact.analysis", "maxact.atlas_sample"),
    ("maxact.pipeline",),
    ("maxact.report", "maxact.plot", "maxact.inventory", "maxact.web", "maxact.commands", "maxact.api",
     "maxact.demo", "maxact.cli"),
]
NUMPY_ONLY = ("maxact.store", "maxact.analysis", "maxact.atlas_sample")


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(SRC).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def _imports(path: Path) -> set[str]:
    """maxact modules imported anywhere in the file (relative imports resolved)."""
    return _imports_of(path.read_text(), _module_name(path), path.name == "__init__.py")


def _imports_of(source: str, name: str, is_package: bool) -> set[str]:
    package = name if is_package else name.rsplit(".", 1)[0]
    out = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            out |= {a.name for a in node.names if a.name.startswith("maxact")}
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                up = package.split(".")
                up = up[: len(up) - (node.level - 1)]
                base = ".".join(up + ([base] if base else []))
            if base.startswith("maxact"):
                # `from maxact.store import format` imports the module maxact.store.format
                out |= {f"{base}.{a.name}" if _is_module(f"{base}.{a.name}") else base for a in node.names}
    return out


def _is_module(dotted: str) -> bool:
    p = SRC.joinpath(*dotted.split("."))
    return p.with_suffix(".py").is_file() or (p / "__init__.py").is_file()


def _layer(module: str) -> int | None:
    for i, prefixes in enumerate(LAYERS):
        if any(module == p or module.startswith(p + ".") for p in prefixes):
            return i
    return None


MODULES = {_module_name(p): p for p in sorted(SRC.rglob("*.py"))}
GRAPH = {m: {i for i in _imports(p) if i in MODULES and i != m} for m, p in MODULES.items()}


@pytest.mark.parametrize("module", sorted(m for m in MODULES if m != "maxact"))
def test_every_module_has_a_layer(module):
    assert _layer(module) is not None, f"{module} is in no layer: add it to LAYERS and docs/DEVELOPING.md"


def _violations(graph: dict[str, set[str]]) -> list[str]:
    bad = []
    for m, deps in graph.items():
        if m == "maxact":  # the package's lazy API entry may name the API module
            continue
        for d in deps:
            if d != "maxact" and _layer(d) > _layer(m):
                bad.append(f"{m} (layer {_layer(m)}) imports {d} (layer {_layer(d)})")
    return sorted(bad)


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Tarjan's strongly connected components of more than one module."""
    index, low, stack, on, cycles = {}, {}, [], set(), []

    def visit(v):
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in graph.get(v, ()):
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
            if len(comp) > 1:
                cycles.append(sorted(comp))

    for v in list(graph):
        if v not in index:
            visit(v)
    return cycles


def test_imports_only_look_down():
    bad = _violations(GRAPH)
    assert not bad, "\n".join(bad)


def test_no_import_cycles():
    assert not _cycles(GRAPH)


def test_the_checker_sees_violations_and_cycles():
    """The checker itself, on made-up sources: a function-level upward import and a relative import
    are seen, an upward edge is reported, and a three-module cycle is found."""
    found = _imports_of("def f():\n    from maxact.store import format as F\nfrom ..web import server\n",
                        "maxact.engine.x", is_package=False)
    assert found == {"maxact.store.format", "maxact.web.server"}
    assert _violations({"maxact.engine.x": found}) == [
        "maxact.engine.x (layer 3) imports maxact.store.format (layer 4)",
        "maxact.engine.x (layer 3) imports maxact.web.server (layer 7)"]
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


def test_numpy_only_layers_do_not_import_torch():
    mods = sorted(m for m in MODULES if m.startswith(NUMPY_ONLY))
    code = ("import sys\n" + "".join(f"import {m}\n" for m in mods) +
            "heavy = [m for m in ('torch', 'transformers', 'matplotlib') if m in sys.modules]\n"
            "assert not heavy, heavy\n")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
