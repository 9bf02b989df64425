"""Imports run one way, and no module cycle: schemas <- udfs <- connectors <- jobs <- tools; infra beside connectors.

A small AST check of ours over every `import` and `from ... import` of the project's packages,
inside functions too. `schemas/` is the contracts (data and their loaders), `udfs/` the record
logic, `connectors/` sources, sinks and settings, `infra/` the local stack (beside connectors: the
jobs never import it), `jobs/` the Flink jobs and doors, `tools/` the `medistream` command and the
check tooling (nothing imports it).
"""

from __future__ import annotations

import ast
from collections import defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("schemas", "udfs", "connectors", "infra", "jobs", "tools")
# What each layer may import (itself included; cycles are checked apart).
MAY_IMPORT = {
    "schemas": {"schemas"},
    "udfs": {"schemas", "udfs"},
    "connectors": {"schemas", "udfs", "connectors"},
    "infra": {"schemas", "udfs", "connectors", "infra"},
    "jobs": {"schemas", "udfs", "connectors", "jobs"},
    "tools": set(PACKAGES),
}
# jobs/ holds job and door entry points (a module with main()) and these few pieces of Flink glue.
JOB_SUPPORT = {"jobs", "jobs.runtime", "jobs.preflight", "jobs.topics", "jobs.ingest_operator", "jobs.fraud_operator",
               "jobs.event_time_operator", "jobs.plan_uids"}


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
    """(importer, imported) pairs where a layer imports one it may not (a higher one, or jobs <-> infra)."""
    return {(a, b) for a, targets in graph.items() for b in targets if _layer(b) not in MAY_IMPORT[_layer(a)]}


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


def test_no_import_runs_upward() -> None:
    assert upward_imports(import_graph()) == set()


def test_no_import_cycle() -> None:
    assert cycles(import_graph()) == set()


def test_jobs_holds_only_job_and_door_entry_points() -> None:
    for name, path in _modules().items():
        if _layer(name) != "jobs" or name in JOB_SUPPORT:
            continue
        functions = {n.name for n in ast.parse(path.read_text(encoding="utf-8")).body if isinstance(n, ast.FunctionDef)}
        assert "main" in functions, f"{name} is not a job or door entry point: its home is tools/ or a lower layer"


def test_the_check_sees_imports_inside_functions_and_finds_cycles() -> None:
    # jobs.ingest_operator opens its S3 client with an import inside a method: the walk must see it.
    assert "connectors.s3" in import_graph()["jobs.ingest_operator"]
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == {frozenset({"a", "b", "c"})}
    assert upward_imports({"udfs.x": {"jobs.y", "schemas.z"}}) == {("udfs.x", "jobs.y")}
    assert upward_imports({"jobs.x": {"infra.local.y"}, "infra.local.y": {"jobs.x"}, "tools.z": {"jobs.x"}}) == {
        ("jobs.x", "infra.local.y"), ("infra.local.y", "jobs.x")}
