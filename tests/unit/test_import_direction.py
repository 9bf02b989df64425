"""Imports run one way: schemas <- udfs <- connectors / infra.local <- jobs, and no module cycle.

A small AST check of ours (every `import` and `from ... import`, inside functions too) over the
project's packages. The remaining known violations are listed exactly: they are the rest of
issue 17's layout work. A new upward import or a new cycle fails; so does fixing a listed one
without taking it off the list (the list only shrinks).
"""

from __future__ import annotations

import ast
from collections import defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("schemas", "udfs", "connectors", "infra", "jobs")
# Lower layers never import higher ones; equal ranks may import each other (cycles are checked apart).
RANK = {"schemas": 0, "udfs": 1, "connectors": 2, "infra": 2, "jobs": 3}

KNOWN_UPWARD: set[tuple[str, str]] = set()
KNOWN_CYCLES = {
    # Tools still in jobs/ (issue 17 moves them out).
    frozenset({"jobs.chaos", "jobs.demo", "jobs.demo_doors"}),
    frozenset({"jobs.dlq", "jobs.dlq_replay"}),
}


def _modules() -> dict[str, Path]:
    found = {}
    for package in PACKAGES:
        for path in (ROOT / package).rglob("*.py"):
            name = ".".join(path.relative_to(ROOT).with_suffix("").parts).removesuffix(".__init__")
            found[name] = path
    return found


def import_graph() -> dict[str, set[str]]:
    """Module -> the project modules it imports, anywhere in its body."""
    modules = _modules()
    graph: dict[str, set[str]] = defaultdict(set)
    for name, path in modules.items():
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                targets = [node.module, *(f"{node.module}.{alias.name}" for alias in node.names)]
            else:
                continue
            for target in targets:
                while target and target not in modules:
                    target = target.rpartition(".")[0]
                if target and target != name:
                    graph[name].add(target)
    return graph


def _layer(module: str) -> str:
    return module.split(".", 1)[0]


def upward_imports(graph: dict[str, set[str]]) -> set[tuple[str, str]]:
    """(importer, imported) pairs where a lower layer imports a higher one."""
    return {(a, b) for a, targets in graph.items() for b in targets if RANK[_layer(b)] > RANK[_layer(a)]}


def cycles(graph: dict[str, set[str]]) -> set[frozenset[str]]:
    """The strongly connected components of more than one module (Tarjan, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: set[frozenset[str]] = set()
    for root in sorted(graph):
        if root in index:
            continue
        work = [(root, iter(sorted(graph.get(root, ()))))]
        index[root] = low[root] = len(index)
        stack.append(root)
        on_stack.add(root)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = len(index)
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(graph.get(child, ())))))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                component = set()
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.add(member)
                    if member == node:
                        break
                if len(component) > 1:
                    found.add(frozenset(component))
    return found


def test_no_import_runs_upward_but_the_known_ones() -> None:
    assert upward_imports(import_graph()) == KNOWN_UPWARD


def test_no_import_cycle_but_the_known_ones() -> None:
    assert cycles(import_graph()) == KNOWN_CYCLES


def test_the_check_sees_imports_inside_functions_and_finds_cycles() -> None:
    # jobs.ingest_operator opens its S3 client with an import inside a method: the walk must see it.
    assert "connectors.s3" in import_graph()["jobs.ingest_operator"]
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == {frozenset({"a", "b", "c"})}
    assert upward_imports({"udfs.x": {"jobs.y", "schemas.z"}}) == {("udfs.x", "jobs.y")}
