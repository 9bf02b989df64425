"""`medistream lineage`: the OpenLineage events our jobs and operator commands send, and the graph they make.

    medistream lineage graph [--dataset NAMESPACE/NAME]   # jobs and datasets, around one dataset or all
    medistream lineage events [--job NAME] [--limit N]    # the newest run events

Who sends what (to the `lineage.url` of the properties; none set: nothing is sent):
- `medistream deploy` / `jobs start|upgrade` on the local cluster: START of each job it submits, the run id
  being the Flink job id; `jobs stop` and `deploy --stop`: COMPLETE of that run (with the savepoint);
- the demo's embedded jobs: START when they start, COMPLETE when they stop;
- `medistream backfill`: START, then COMPLETE with the counts copied (or FAIL with the error), as the
  BATCH job `backfill.<feed>` that reads the feed's raw topic (and landing prefix) and writes copies back.
The ingest job's datasets come from the feed contracts and the PHI policy (connectors/lineage/datasets.py);
the partner delivery job reads each partner's curated topic and writes to the partner's endpoint, with
column lineage that marks each field the partner contract reveals (decrypted for it) and how every other
one went out. No facet ever holds a value: names, types, paths and counts only.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import urllib.parse
import urllib.request
import uuid
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from connectors.lineage.datasets import Dataset, ingest_datasets, kafka_namespace, protection, url_dataset
from connectors.lineage.emitter import send
from connectors.properties import default_properties_path, load_ingest_config, read_property_groups
from schemas.contracts import load_contracts

REVEALED = ("IDENTITY", False, "decrypted for the partner: a reveal the partner contract and schemas/access grant")


def job_datasets(job: str, groups: Mapping[str, Mapping[str, str]]) -> tuple[list[Dataset], list[Dataset]]:
    """(inputs, outputs) of one of our Flink jobs under these properties."""
    if job == "ingest":
        cfg = load_ingest_config(groups)
        return ingest_datasets(cfg, load_contracts(cfg.feeds.directory))
    if job == "partner_delivery":
        return partner_datasets(groups)
    raise ValueError(f"no lineage known for job {job!r}")


def partner_datasets(groups: Mapping[str, Mapping[str, str]]) -> tuple[list[Dataset], list[Dataset]]:
    """Each partner's curated topic in; its endpoint out, field by field as its contract maps and reveals."""
    from jobs.partner_delivery import load_delivery_config, rebase
    from schemas.phi_policy import load_policy

    cfg = load_delivery_config(groups)
    kafka = kafka_namespace(cfg.bootstrap_servers)
    policy = load_policy("default-v1")
    inputs, outputs = [], []
    for partner, contract in sorted(cfg.contracts.items()):
        topic = cfg.topic(partner)
        inputs.append(Dataset(kafka, topic))
        endpoint = url_dataset(rebase(contract.url, cfg.base_urls.get(partner)))
        lineage: dict[str, tuple[tuple[str, str, str], ...]] = {}
        actions: dict[str, tuple[str, bool, str]] = {}
        for record_type, mapping in sorted(contract.payload.items()):
            for field, source in mapping.fields.items():
                if source.startswith("$"):
                    continue  # the envelope (record id, business key), not a record field
                column = f"{record_type}.{field}"
                lineage[column] = ((kafka, topic, f"{record_type}.{source}"),)
                actions[column] = REVEALED if source in mapping.reveal else protection(policy, record_type, source)
        outputs.append(dataclasses.replace(endpoint, lineage=lineage, transformations=actions))
    return inputs, outputs


def run_id(flink_job_id: str) -> str:
    """The OpenLineage run id of a Flink job: its 32 hex digits as a UUID (so a stop finds the run of a start)."""
    return str(uuid.UUID(hex=flink_job_id))


def _groups(properties: Path | Mapping[str, Mapping[str, str]] | None) -> Mapping[str, Mapping[str, str]]:
    return properties if isinstance(properties, Mapping) else read_property_groups(
        properties or default_properties_path())


def run_quality(properties: Path | Mapping[str, Mapping[str, str]] | None,
                rest: Callable[[], Any]) -> dict[str, dict[str, Any]]:
    """A running job's per-feed counts for its COMPLETE event (`rest()`: its tools.minicluster_rest.MiniClusterRest),
    read only when lineage is on; {} when it is off or the REST API does not answer (lineage never stops a stop)."""
    if not (_groups(properties).get("lineage") or {}).get("url"):
        return {}
    try:
        return dict(rest().feed_quality())
    except (OSError, KeyError, ValueError):
        return {}


def emit(kind: str, job: str, properties: Path | Mapping[str, Mapping[str, str]] | None, run: str,
         error: str | None = None, datasets: tuple[Sequence[Dataset], Sequence[Dataset]] | None = None,
         processing: str = "STREAMING", quality: Mapping[str, Mapping[str, Any]] | None = None,
         **facets: Any) -> dict[str, int]:
    """Send one run event of `job` under these properties (a file, its groups, or None for the default), reading
    and writing `datasets` (default: the job's own, job_datasets); the counts (connectors.lineage.emitter.send)."""
    groups = _groups(properties)
    if not (groups.get("lineage") or {}).get("url"):
        return {"sent": 0, "failed": 0, "dropped": 0}
    try:
        inputs, outputs = datasets or job_datasets(job, groups)
    except Exception as err:  # lineage must not stop a deploy: sent without datasets
        inputs, outputs, facets = [], [], {**facets, "lineage_error": type(err).__name__}
    return send(kind, job, groups, run, inputs, outputs, error=error, processing=processing, quality=quality,
                **facets)


def _get(url: str) -> Any:
    with urllib.request.urlopen(url, timeout=10) as answer:  # noqa: S310 - the configured lineage store
        return json.loads(answer.read())


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="medistream lineage", description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    graph = sub.add_parser("graph", help="jobs and datasets, as the newest event of each job names them")
    graph.add_argument("--dataset", help="NAMESPACE/NAME: only what is upstream or downstream of it")
    events = sub.add_parser("events", help="the newest run events")
    events.add_argument("--job")
    events.add_argument("--limit", type=int, default=20)
    parser.add_argument("--properties", type=Path, default=None)
    args = parser.parse_args(argv)
    url = read_property_groups(args.properties or default_properties_path()).get("lineage", {}).get("url")
    if not url:
        print("medistream lineage: no lineage.url in the properties: lineage is off", file=sys.stderr)
        return 2
    query: dict[str, Any] = {}
    if args.command == "graph":
        query = {"dataset": args.dataset} if args.dataset else {}
        path = "/api/v1/lineage/graph"
    else:
        query = {"limit": args.limit, **({"job": args.job} if args.job else {})}
        path = "/api/v1/lineage/events"
    try:
        found = _get(url.rstrip("/") + path + ("?" + urllib.parse.urlencode(query) if query else ""))
    except OSError as err:
        print(f"medistream lineage: the lineage store at {url} does not answer ({err}); is `medistream stack up` "
              "running?", file=sys.stderr)
        return 2
    print(json.dumps(found, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
