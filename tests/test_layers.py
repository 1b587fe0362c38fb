"""Layers import downward only: every import in slimbert/ (module- and function-level) is read
with ast and checked against the rules below, and the package graph must have no cycle.

``python -m tests.test_layers`` prints the package graph (less the edges a longer path
implies) as the Mermaid diagram in docs/architecture.md.
"""

from __future__ import annotations

import ast
from collections.abc import Iterable, Mapping
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1] / "slimbert"

# leaves import only other leaves; everything else may import them
LEAVES = frozenset({"formats", "hw", "validation", "errors", "progress", "artifacts", "assets", "data"})
# (importer, imported): the two import cycles issue 18 cut, and what keeps them cut
FORBIDDEN = frozenset({
    ("runtimes", "export"), ("runtimes", "compress"), ("runtimes", "quantize"),
    ("export", "compress"), ("export", "quantize"),
    ("compress", "export"), ("compress", "quantize"),
})


def module_sources(root: Path = ROOT) -> dict[str, str]:
    """Dotted module name -> source text, for every module of the package at ``root``."""
    sources = {}
    for path in sorted(root.rglob("*.py")):
        parts = path.relative_to(root.parent).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        sources[name] = path.read_text()
    return sources


def unit(module: str) -> str:
    """The layer a module belongs to: its subpackage (export, runtimes, ...) or its own name."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else parts[0]


def imports(sources: Mapping[str, str]) -> list[tuple[str, str, int]]:
    """(importer, imported module, line) for every slimbert import anywhere in each module."""
    found = []
    for name, text in sources.items():
        package = name if name.count(".") == 0 or _is_package(name, sources) else name.rpartition(".")[0]
        for node in ast.walk(ast.parse(text)):
            if isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:  # relative import
                    anchor = package.rsplit(".", node.level - 1)[0] if node.level > 1 else package
                    base = f"{anchor}.{base}" if base else anchor
                # `from slimbert.x import y` imports module slimbert.x.y when that is a module
                targets = [f"{base}.{a.name}" if f"{base}.{a.name}" in sources else base for a in node.names]
            else:
                continue
            for target in targets:
                while target and target not in sources:  # `import slimbert.x.y.z` -> the known module
                    target = target.rpartition(".")[0]
                if target.startswith("slimbert") and target != name:
                    found.append((name, target, node.lineno))
    return found


def _is_package(name: str, sources: Mapping[str, str]) -> bool:
    return any(other.startswith(name + ".") for other in sources)


def violations(sources: Mapping[str, str]) -> list[str]:
    """Every import that breaks the layer rules, as 'module:line imports module (rule)'."""
    bad = []
    for importer, imported, line in imports(sources):
        a, b = unit(importer), unit(imported)
        if a == b or a == "slimbert" or b == "slimbert":
            continue  # inside one layer; the lazy top-level API re-exports everything
        if (a, b) in FORBIDDEN:
            bad.append(f"{importer}:{line} imports {imported} ({a} must not import {b})")
        elif a in LEAVES and b not in LEAVES:
            bad.append(f"{importer}:{line} imports {imported} (leaf {a} must import only leaves)")
    return bad


def package_graph(sources: Mapping[str, str]) -> dict[str, set[str]]:
    """Layer -> the layers it imports (the top-level ``slimbert`` facade left out)."""
    graph: dict[str, set[str]] = {unit(n): set() for n in sources if unit(n) != "slimbert"}
    for importer, imported, _ in imports(sources):
        a, b = unit(importer), unit(imported)
        if a != b and "slimbert" not in (a, b):
            graph[a].add(b)
    return graph


def find_cycle(graph: Mapping[str, Iterable[str]]) -> list[str] | None:
    """One cycle of ``graph`` as [a, b, ..., a], or None."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                return path[path.index(nxt):] + [nxt]
            if nxt not in state and (cycle := visit(nxt)):
                return cycle
        path.pop()
        state[node] = 2
        return None

    for start in sorted(graph):
        if start not in state and (cycle := visit(start)):
            return cycle
    return None


def reduced(graph: Mapping[str, Iterable[str]]) -> dict[str, set[str]]:
    """The edges of an acyclic ``graph`` that no longer path implies (what a picture needs)."""
    def reachable(start: str, skip: tuple[str, str]) -> set[str]:
        seen, todo = set(), [start]
        while todo:
            node = todo.pop()
            for nxt in graph.get(node, ()):
                if (node, nxt) != skip and nxt not in seen:
                    seen.add(nxt)
                    todo.append(nxt)
        return seen

    return {a: {b for b in targets if b not in reachable(a, (a, b))} for a, targets in graph.items()}


def mermaid(graph: Mapping[str, Iterable[str]]) -> str:
    lines = ["graph TD"]
    lines += [f"    {a} --> {b}" for a in sorted(graph) for b in sorted(graph[a])]
    return "\n".join(lines)


# ---- the tree as it is ------------------------------------------------------------------------

def test_no_layer_imports_upward():
    assert violations(module_sources()) == []


def test_the_package_graph_has_no_cycle():
    graph = package_graph(module_sources())
    assert {"export", "runtimes", "compress", "quantize", "formats", "hw", "validation"} <= set(graph)
    assert find_cycle(graph) is None


# ---- the checker catches what it must ---------------------------------------------------------

@pytest.mark.parametrize(("module", "source", "rule"), [
    ("slimbert.runtimes.onnxruntime_runtime", "from slimbert.export.onnx import ONNX_FILE",
     "runtimes must not"),
    ("slimbert.runtimes.tensorrt_runtime",
     "def load():\n    from slimbert.export.tensorrt import ENGINE_FILE\n", "runtimes must not"),
    ("slimbert.export.onnx", "def f():\n    from slimbert.compress.trainer import predict_logits\n",
     "export must not"),
    ("slimbert.export.onnx", "import slimbert.compress.trainer", "export must not"),
    ("slimbert.compress.distill", "from slimbert.quantize import qat", "compress must not"),
    ("slimbert.formats", "from slimbert.export import onnx", "leaf formats"),
    ("slimbert.validation", "from slimbert.runtimes.torch_runtime import predict_logits", "leaf validation"),
    ("slimbert.data.loading", "def f():\n    from slimbert.models import resolve_model\n", "leaf data"),
    ("slimbert.hw", "from ..runtimes import base", "leaf hw"),
])
def test_a_reintroduced_upward_import_is_caught(module, source, rule):
    sources = dict(module_sources())
    sources[module] = sources.get(module, "") + "\n" + source + "\n"
    found = violations(sources)
    assert any(module in v and rule in v for v in found), found


def test_the_reduced_picture_keeps_what_each_layer_reaches():
    graph = package_graph(module_sources())
    picture = reduced(graph)
    assert reduced({"a": {"b", "c"}, "b": {"c"}, "c": set()}) == {"a": {"b"}, "b": {"c"}, "c": set()}
    assert "runtimes" in graph["quantize"] and "runtimes" not in picture["quantize"]  # via export
    assert "runtimes" in picture["export"] and picture.keys() == graph.keys()


def test_a_cycle_is_found():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": set()}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None
    sources = dict(module_sources())
    sources["slimbert.formats"] += "\nfrom slimbert.pipeline import run_recipe\n"  # pipeline imports formats
    assert find_cycle(package_graph(sources)) is not None


if __name__ == "__main__":
    print(mermaid(reduced(package_graph(module_sources()))))
