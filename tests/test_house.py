"""The house of DESIGN.md §3: arrows run one way, between modules and between wings.

Every import is read from the source (module level and inside functions; ``TYPE_CHECKING``
blocks aside, and the package's lazily loaded names, which `ensembler/__init__.py` imports only
on first use). Wings, from the ground up: the package base (``errors``, the package itself),
``data``, ``scoring``, ``pipeline``, ``evaluate``, ``predictors`` (the torch side), ``api``,
``cli``. An import may stay in its wing or go down, never up; inside a wing, no circle.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
WINGS = ("base", "data", "scoring", "pipeline", "evaluate", "predictors", "api", "cli")


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {module_name(p): p for package in ("ensembler", "predictors") for p in (ROOT / package).rglob("*.py")}


def wing(module: str) -> str:
    parts = module.split(".")
    if parts[0] == "predictors":
        return "predictors"
    if len(parts) == 1 or parts[1] in ("errors", "__main__"):
        return "base" if parts[-1] != "__main__" else "cli"
    return parts[1]


class Imports(ast.NodeVisitor):
    """The project modules one module imports (TYPE_CHECKING blocks aside)."""

    def __init__(self, module: str, package: bool):
        self.module, self.package, self.found = module, package, set()

    def visit_If(self, node: ast.If) -> None:
        test = node.test
        if (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"):
            for child in node.orelse:
                self.visit(child)
            return
        self.generic_visit(node)

    def target(self, name: str) -> None:
        parts = name.split(".")
        while parts:
            candidate = ".".join(parts)
            if candidate in MODULES and candidate != self.module:
                self.found.add(candidate)
                return
            parts.pop()

    def visit_Import(self, node: ast.Import) -> None:
        for alias in node.names:
            self.target(alias.name)

    def visit_ImportFrom(self, node: ast.ImportFrom) -> None:
        prefix = node.module or ""
        if node.level:
            base = self.module.split(".") if self.package else self.module.split(".")[:-1]
            base = base[: len(base) - (node.level - 1)]
            prefix = ".".join(base + ([node.module] if node.module else []))
        for alias in node.names:
            self.target(f"{prefix}.{alias.name}" if f"{prefix}.{alias.name}" in MODULES else prefix)


def imports() -> dict[str, set[str]]:
    graph = {}
    for module, path in MODULES.items():
        visitor = Imports(module, path.name == "__init__.py")
        visitor.visit(ast.parse(path.read_text()))
        graph[module] = visitor.found
    # the lazy entry points: `ensembler`'s lazily loaded names (imported by __getattr__ on first use)
    graph["ensembler"] = {m for m in graph["ensembler"] if wing(m) == "base"}
    return graph


def circles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan)."""
    index, low, stack, on, out, counter = {}, {}, [], set(), [], [0]

    def visit(v: str) -> None:
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in graph.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                out.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return out


def test_no_import_circle_among_modules():
    assert circles(imports()) == []


def test_wings_import_only_their_own_or_lower_wings():
    upward = [
        f"{module} ({wing(module)}) -> {target} ({wing(target)})"
        for module, targets in imports().items()
        for target in targets
        if WINGS.index(wing(target)) > WINGS.index(wing(module))
    ]
    assert upward == []


def test_the_checker_sees_a_circle_and_an_upward_import():
    assert circles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert WINGS.index(wing("ensembler.evaluate.report")) > WINGS.index(wing("ensembler.pipeline.voting")) > WINGS.index(wing("ensembler.scoring.metrics"))
    graph = imports()
    assert "ensembler.pipeline.engine" in graph["ensembler.pipeline.composition"] and "ensembler.data.labels" in graph["ensembler.pipeline.voting"]


@pytest.mark.parametrize("package", ["ensembler"])
def test_the_core_never_imports_torch_at_module_level(package):
    for path in (ROOT / package).rglob("*.py"):
        tree = ast.parse(path.read_text())
        top = [n for n in tree.body if isinstance(n, (ast.Import, ast.ImportFrom))]
        names = [a.name for n in top if isinstance(n, ast.Import) for a in n.names] + [n.module or "" for n in top if isinstance(n, ast.ImportFrom)]
        assert not any(name.split(".")[0] in ("torch", "predictors") for name in names), path
