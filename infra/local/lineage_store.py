"""The local OpenLineage endpoint: ours, not Marquez (which does not run here), storing events in SQLite.

It takes what any OpenLineage HTTP client sends (`POST /api/v1/lineage`, one run event as JSON) and
answers what an operator or a test asks of it:
- `GET /api/v1/lineage/events?job=NAME&limit=N`: the newest events, newest first;
- `GET /api/v1/lineage/graph?dataset=NAMESPACE/NAME`: the lineage graph around a dataset, from each job's
  newest START or COMPLETE event: nodes (jobs and datasets), edges (dataset -> job it feeds, job -> dataset
  it writes), walked upstream and downstream from the dataset; without `dataset`, the whole graph;
- `GET /healthz`.
Events are checked for the fields the graph needs (eventType, eventTime, run.runId, job.namespace and
name); anything else is refused with 400 and a one-line reason. Served by uvicorn on 127.0.0.1 only:
`python -m infra.local.lineage_store --port 19500 --db <home>/lineage/events.db`, which `medistream
stack up` starts (an observer: the stack is healthy without it).
"""

from __future__ import annotations

import argparse
import json
import os
import sqlite3
import sys
import threading
import urllib.request
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from infra.local import process
from infra.local.settings import LOOPBACK

ENV_PORT = "MEDISTREAM_LINEAGE_PORT"
DEFAULT_PORT = 19500
GRAPH_EVENTS = ("START", "RUNNING", "COMPLETE")


class EventStore:
    """Run events in one SQLite file (one writer at a time)."""

    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self._db = sqlite3.connect(path, check_same_thread=False)
        self._lock = threading.Lock()
        self._db.execute("""CREATE TABLE IF NOT EXISTS events (
            seq INTEGER PRIMARY KEY AUTOINCREMENT, event_time TEXT NOT NULL, event_type TEXT NOT NULL,
            job_namespace TEXT NOT NULL, job_name TEXT NOT NULL, run_id TEXT NOT NULL, body TEXT NOT NULL)""")
        self._db.commit()

    def add(self, event: dict[str, Any]) -> None:
        with self._lock:
            self._db.execute(
                "INSERT INTO events (event_time, event_type, job_namespace, job_name, run_id, body) "
                "VALUES (?, ?, ?, ?, ?, ?)",
                (event["eventTime"], event["eventType"], event["job"]["namespace"], event["job"]["name"],
                 event["run"]["runId"], json.dumps(event)))
            self._db.commit()

    def events(self, job: str | None = None, limit: int = 100) -> list[dict[str, Any]]:
        query, args = "SELECT body FROM events", []
        if job:
            query, args = query + " WHERE job_name = ?", [job]
        rows = self._db.execute(query + " ORDER BY seq DESC LIMIT ?", [*args, limit]).fetchall()
        return [json.loads(body) for (body,) in rows]

    def newest_per_job(self) -> list[dict[str, Any]]:
        """Each job's newest event that names its datasets (START, RUNNING or COMPLETE)."""
        marks = ",".join("?" * len(GRAPH_EVENTS))
        rows = self._db.execute(
            f"SELECT body FROM events WHERE seq IN (SELECT MAX(seq) FROM events WHERE event_type IN ({marks}) "  # noqa: S608
            "GROUP BY job_namespace, job_name)", GRAPH_EVENTS).fetchall()
        return [json.loads(body) for (body,) in rows]


def _refusal(event: Any) -> str | None:
    """Why an event cannot be stored (None: it can)."""
    if not isinstance(event, dict):
        return "an OpenLineage run event is a JSON object"
    for path in ("eventType", "eventTime", "run.runId", "job.namespace", "job.name"):
        node: Any = event
        for step in path.split("."):
            node = node.get(step) if isinstance(node, dict) else None
        if not isinstance(node, str) or not node:
            return f"{path} is missing or not a string"
    return None


def flows(events: Iterable[dict[str, Any]]) -> set[tuple[str, str, str]]:
    """(input dataset, job, output dataset) of the jobs' events. An output with column lineage flows only from
    the inputs its columns name (the partner topic from the claim and payment feeds, not from eligibility);
    one without, from every input of its job."""
    found: set[tuple[str, str, str]] = set()
    for event in events:
        job = f"job:{event['job']['namespace']}/{event['job']['name']}"
        inputs = {f"dataset:{d['namespace']}/{d['name']}" for d in event.get("inputs") or ()}
        for output in event.get("outputs") or ():
            columns = ((output.get("facets") or {}).get("columnLineage") or {}).get("fields") or {}
            named = {f"dataset:{ref['namespace']}/{ref['name']}" for column in columns.values()
                     for ref in column.get("inputFields") or ()}
            target = f"dataset:{output['namespace']}/{output['name']}"
            found |= {(source, job, target) for source in (named & inputs if named else inputs)}
            if not inputs:
                found.add(("", job, target))
    return found


def graph(events: Iterable[dict[str, Any]], around: str | None = None) -> dict[str, Any]:
    """Nodes and edges of the jobs' newest events; only what flows into or out of `around` when it is given."""
    events = list(events)
    states = {f"job:{e['job']['namespace']}/{e['job']['name']}": e["eventType"] for e in events}
    kept = flows(events)
    if around is not None:
        start = f"dataset:{around}"
        kept = _reach(start, kept, downstream=True) | _reach(start, kept, downstream=False)
    nodes: dict[str, dict[str, str]] = {}
    edges: set[tuple[str, str]] = set()
    for source, job, target in kept:
        nodes[job] = {"id": job, "kind": "job", "name": job.removeprefix("job:"), "state": states[job]}
        for dataset in (source, target):
            if dataset:
                nodes[dataset] = {"id": dataset, "kind": "dataset", "name": dataset.removeprefix("dataset:")}
        edges |= {(source, job), (job, target)} if source else {(job, target)}
    return {"nodes": sorted(nodes.values(), key=lambda n: n["id"]),
            "edges": [{"from": a, "to": b} for a, b in sorted(edges)]}


def _reach(start: str, found: set[tuple[str, str, str]], downstream: bool) -> set[tuple[str, str, str]]:
    """The flows reached from `start`, following outputs (downstream) or inputs (upstream)."""
    reached: set[tuple[str, str, str]] = set()
    todo, seen = [start], {start}
    while todo:
        node = todo.pop()
        for flow in found:
            source, _, target = flow
            if (source if downstream else target) == node and flow not in reached:
                reached.add(flow)
                step = target if downstream else source
                if step and step not in seen:
                    seen.add(step)
                    todo.append(step)
    return reached


def build_app(store: EventStore) -> Starlette:
    async def receive(request: Request) -> JSONResponse:
        try:
            event = json.loads(await request.body())
        except ValueError:
            return JSONResponse({"error": "the body is not JSON"}, status_code=400)
        refusal = _refusal(event)
        if refusal:
            return JSONResponse({"error": refusal}, status_code=400)
        store.add(event)
        return JSONResponse({"stored": True}, status_code=201)

    async def events(request: Request) -> JSONResponse:
        limit = min(int(request.query_params.get("limit", "100")), 1000)
        return JSONResponse(store.events(request.query_params.get("job"), limit))

    async def lineage_graph(request: Request) -> JSONResponse:
        return JSONResponse(graph(store.newest_per_job(), request.query_params.get("dataset")))

    async def healthz(_: Request) -> JSONResponse:
        return JSONResponse({"ok": True})

    return Starlette(routes=[Route("/api/v1/lineage", receive, methods=["POST"]),
                             Route("/api/v1/lineage/events", events), Route("/api/v1/lineage/graph", lineage_graph),
                             Route("/healthz", healthz)])


def port_from_env() -> int:
    return int(os.environ.get(ENV_PORT, DEFAULT_PORT))


def url(port: int | None = None) -> str:
    return f"http://{LOOPBACK}:{port or port_from_env()}"


def _files(home: Path) -> tuple[Path, Path, Path]:
    """(PID file, log file, database) of the store under a stack home."""
    return home / "run" / "lineage.pid", home / "logs" / "lineage.log", home / "lineage" / "events.db"


def running(port: int | None = None) -> bool:
    try:
        with urllib.request.urlopen(url(port) + "/healthz", timeout=2) as answer:  # noqa: S310 - loopback
            return bool(answer.status == 200)
    except OSError:
        return False


def start(home: Path, port: int | None = None, timeout_s: float = 30.0) -> str:
    """Start the store under `home` unless ours runs (idempotent); its URL. StackError when it cannot."""
    port = port or port_from_env()
    pid_file, log_file, db = _files(home)
    if process.owned_process(pid_file) is None:
        process.ensure_port_free(port, "lineage", ENV_PORT)
        process.launch([sys.executable, "-m", "infra.local.lineage_store", "--port", str(port), "--db", str(db)],
                       log_file=log_file, pid_file=pid_file, marker=f"--port {port}", cwd=Path(__file__).parents[2])
    process.wait_until(lambda: running(port), component="lineage", timeout_s=timeout_s, pid_file=pid_file,
                       log_file=log_file)
    return url(port)


def stop(home: Path) -> int | None:
    """Stop our store (its PID file's process); its PID, or None when none of ours ran."""
    return process.stop(_files(home)[0], term_timeout_s=10.0)


def main(argv: list[str] | None = None) -> int:
    import uvicorn

    parser = argparse.ArgumentParser(prog="python -m infra.local.lineage_store", description=__doc__.split("\n")[0])
    parser.add_argument("--port", type=int, default=DEFAULT_PORT)
    parser.add_argument("--db", type=Path, required=True)
    args = parser.parse_args(argv)
    uvicorn.run(build_app(EventStore(args.db)), host=LOOPBACK, port=args.port, log_level="warning")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
