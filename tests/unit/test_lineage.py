"""Lineage: the ingest and partner jobs' datasets and column lineage, the events, the emitter's bounds, the store.

The store runs in process (Starlette's TestClient over the real app and a real SQLite file); the emitter
sends over real loopback sockets: to a closed port, and to a listener that never answers.
"""

from __future__ import annotations

import json
import socket
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from openlineage.client.serde import Serde
from starlette.testclient import TestClient

from connectors.lineage.datasets import ingest_datasets, openlineage_dataset, projection_sources
from connectors.lineage.emitter import LineageEmitter, _run_facets
from connectors.properties import LOCAL_PROPERTIES, load_ingest_config, read_property_groups
from infra.local import process
from infra.local.lineage_store import EventStore, build_app, graph
from schemas.contracts import load_contracts
from schemas.phi_policy import load_policy
from tools.lineage import REVEALED, job_datasets, run_id
from tools.minicluster_rest import feed_quality

GROUPS = read_property_groups(LOCAL_PROPERTIES)


def _by_name(datasets: list[Any]) -> dict[str, Any]:
    return {d.name: d for d in datasets}


def test_the_ingest_job_reads_every_feed_and_writes_what_the_routes_reach() -> None:
    cfg, contracts = load_ingest_config(GROUPS), load_contracts()
    inputs, outputs = ingest_datasets(cfg, contracts)
    names = {d.name for d in inputs}
    assert {f"raw.{feed}" for feed in contracts} <= names
    landing = {f"feeds/{f}/" for f, c in contracts.items() if "landing" in c.sources}
    assert landing and landing <= names and len(names) == len(contracts) + len(landing)
    written = _by_name(outputs)
    for table in ("claims", "claim_lines", "payments", "eligibility", "dead_letters"):
        assert f"medistream/{table}" in written
    assert {"raw/", "dead_letters/", "medistream.dlq", "curated.snowflake", "curated.partner.clearwater_health"} \
        <= set(written)


def test_column_lineage_marks_tokens_and_masks_and_never_names_an_encrypted_field_as_a_column() -> None:
    cfg, contracts = load_ingest_config(GROUPS), load_contracts()
    _, outputs = ingest_datasets(cfg, contracts)
    eligibility = _by_name(outputs)["medistream/eligibility"]
    assert eligibility.lineage is not None and eligibility.transformations is not None
    assert {ref[2] for ref in eligibility.lineage["member_token"]} == {"member.member_id"}
    assert eligibility.transformations["member_token"][:2] == ("TRANSFORMATION", True)  # a token, not the id
    assert eligibility.transformations["person_token"][:2] == ("TRANSFORMATION", True)  # derived from name + DOB
    assert eligibility.transformations["plan_code"][:2] == ("IDENTITY", False)
    # every input is an eligibility feed's raw topic or landing prefix
    feeds = {f for f, c in contracts.items() if c.record_type == "eligibility"}
    assert {ref[1] for ref in eligibility.lineage["member_token"]} <= (
        {f"raw.{f}" for f in feeds} | {f"feeds/{f}/" for f in feeds})
    policy = load_policy("default-v1")
    for table in ("claims", "claim_lines", "payments", "eligibility"):
        found = _by_name(outputs)[f"medistream/{table}"]
        for column, refs in (found.lineage or {}).items():
            for _, _, path in refs:
                record_type = {"claims": "claim", "claim_lines": "claim", "payments": "payment"}.get(table, table)
                rule = policy.rules[record_type].get(path) or policy.rules[record_type].get(f"{path}[]")
                assert rule is None or rule.action != "encrypt", (table, column, path)  # analytics never see it


def test_projection_tracing_follows_the_projection_code() -> None:
    assert projection_sources("claim")["billing_npi"] == "billing_provider.npi"
    assert projection_sources("payment")["payment_method"] == "method"
    assert "diagnosis_count" not in projection_sources("claim")  # a count reads no field


def test_the_partner_job_marks_what_its_contract_reveals() -> None:
    inputs, outputs = job_datasets("partner_delivery", GROUPS)
    assert [d.name for d in inputs] == ["curated.partner.clearwater_health"]
    endpoint = outputs[0]
    assert endpoint.transformations is not None and endpoint.lineage is not None
    assert endpoint.lineage["claim.member_id"][0][2] == "claim.subscriber.member_id"
    assert endpoint.transformations["claim.member_id"] == REVEALED  # decrypted for the partner, named as such
    assert endpoint.transformations["claim.claim_id"][1] is True  # a token


def test_events_serialize_to_openlineage_json_with_names_and_types_only() -> None:
    inputs, outputs = job_datasets("ingest", GROUPS)
    emitter = LineageEmitter(None)
    run = emitter.run("ingest", [openlineage_dataset(d, "input") for d in inputs],
                      [openlineage_dataset(d, "output") for d in outputs], run_id("ab" * 16))
    event = json.loads(Serde.to_json(run.event("START")))
    assert event["run"]["runId"] == str(uuid.UUID(hex="ab" * 16)) and event["eventType"] == "START"
    assert event["job"] == {"namespace": "medistream", "name": "ingest", "facets": event["job"]["facets"]}
    table = next(o for o in event["outputs"] if o["name"] == "medistream/eligibility")
    assert {f["name"] for f in table["facets"]["schema"]["fields"]} >= {"member_token", "plan_code"}
    member = table["facets"]["columnLineage"]["fields"]["member_token"]["inputFields"][0]
    assert member["field"] == "member.member_id" and member["transformations"][0]["masking"] is True
    assert emitter.close() == {"sent": 0, "failed": 0, "dropped": 0}  # no url: a no-op


def test_the_runs_feed_counts_become_the_data_quality_facet() -> None:
    # Values as Flink's REST API serves a vertex's metrics: <subtask>.<operator>.<group path>.<count>.
    metrics = [
        {"id": "0.ingest.kinesisanalytics.feed.hospital_a_claims.recordsIn", "value": "40"},
        {"id": "1.ingest.kinesisanalytics.feed.hospital_a_claims.recordsIn", "value": "12"},
        {"id": "0.ingest.kinesisanalytics.feed.hospital_a_claims.accepted", "value": "37"},
        {"id": "1.ingest.kinesisanalytics.feed.hospital_a_claims.accepted", "value": "11"},
        {"id": "0.ingest.kinesisanalytics.feed.hospital_a_claims.deadLetters", "value": "3"},
        {"id": "1.ingest.kinesisanalytics.feed.hospital_a_claims.deadLetters", "value": "1"},
        {"id": "0.ingest.kinesisanalytics.feed.hospital_a_claims.reason.schema_violation.deadLetters", "value": "2"},
        {"id": "1.ingest.kinesisanalytics.feed.hospital_a_claims.reason.schema_violation.deadLetters", "value": "1"},
        {"id": "0.ingest.kinesisanalytics.feed.hospital_a_claims.reason.bad_npi.alertDeadLetters", "value": "1"},
        {"id": "0.ingest.kinesisanalytics.feed.hospital_a_claims.reason.bad_npi.deadLetters", "value": "1"},
        {"id": "0.ingest.kinesisanalytics.kmsCalls", "value": "9"},  # not a feed's
        {"id": "0.ingest.numRecordsIn", "value": "52"},
    ]
    quality = feed_quality(metrics)
    assert quality == {"hospital_a_claims": {"recordsIn": 52, "accepted": 48, "deadLetters": 4,
                                             "deadLettersByReason": {"schema_violation": 3, "bad_npi": 1}}}
    run = LineageEmitter(None).run("ingest", run_id=run_id("cd" * 16))
    event = json.loads(Serde.to_json(run.event("COMPLETE", _run_facets({"savepoint": "s3://sp/1"}, quality))))
    facets = event["run"]["facets"]
    assert facets["dataQuality"]["feeds"] == quality and facets["medistream"]["savepoint"] == "s3://sp/1"
    assert _run_facets({}, {}) == {}


@pytest.fixture
def silent_listener() -> Iterator[int]:
    """A loopback port that accepts connections (the kernel's backlog) and never answers."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(16)
    yield sock.getsockname()[1]
    sock.close()


def test_a_lineage_backend_that_is_down_or_hangs_never_blocks_or_fails_the_caller(silent_listener: int) -> None:
    down = LineageEmitter(f"http://127.0.0.1:{process.free_loopback_port()}", max_pending=8, timeout_s=0.5)
    run = down.run("ingest")
    for _ in range(3):
        run.start()
    assert down.close(timeout_s=10) == {"sent": 0, "failed": 3, "dropped": 0}

    hung = LineageEmitter(f"http://127.0.0.1:{silent_listener}", max_pending=2, timeout_s=1.0)
    run = hung.run("ingest")
    for _ in range(20):  # one in flight, two queued, the rest dropped: emit returns at once every time
        run.start()
    stats = hung.close(timeout_s=10)
    assert stats["dropped"] >= 17 and stats["sent"] == 0 and sum(stats.values()) == 20


def test_the_store_keeps_events_refuses_malformed_ones_and_walks_the_graph(tmp_path: Path) -> None:
    client = TestClient(build_app(EventStore(tmp_path / "events.db")))
    inputs, outputs = job_datasets("ingest", GROUPS)
    p_inputs, p_outputs = job_datasets("partner_delivery", GROUPS)
    emitter = LineageEmitter(None)
    for job, ins, outs in (("ingest", inputs, outputs), ("partner_delivery", p_inputs, p_outputs)):
        event = emitter.run(job, [openlineage_dataset(d, "input") for d in ins],
                            [openlineage_dataset(d, "output") for d in outs]).event("START")
        assert client.post("/api/v1/lineage", content=Serde.to_json(event)).status_code == 201
    refused = client.post("/api/v1/lineage", content=json.dumps({"eventType": "START"}))
    assert refused.status_code == 400 and refused.json() == {"error": "eventTime is missing or not a string"}
    assert client.post("/api/v1/lineage", content=b"{not json").status_code == 400

    answer = client.get("/api/v1/lineage/graph", params={"dataset": "kafka://127.0.0.1:19092/raw.hospital_a_claims"})
    nodes = {n["id"] for n in answer.json()["nodes"]}
    # downstream of a claims feed: the ingest job, the claims table, the partner topic, the delivery job, the partner
    assert {"job:medistream/ingest", "dataset:s3://medistream-warehouse/medistream/claims",
            "dataset:kafka://127.0.0.1:19092/curated.partner.clearwater_health", "job:medistream/partner_delivery",
            "dataset:https://api.clearwater-health.example/v2/submissions"} <= nodes
    assert "dataset:kafka://127.0.0.1:19092/raw.insurer_b_payments" not in nodes  # another input, not its lineage
    # upstream of the partner topic: the feeds whose records its columns come from (claims and payments), no other
    answer = client.get("/api/v1/lineage/graph", params={
        "dataset": "kafka://127.0.0.1:19092/curated.partner.clearwater_health"})
    upstream = {n["name"] for n in answer.json()["nodes"] if "/raw." in n["name"]}
    assert "kafka://127.0.0.1:19092/raw.hospital_a_claims" in upstream
    assert "kafka://127.0.0.1:19092/raw.insurer_b_payments" in upstream
    assert not any("eligibility" in name for name in upstream)
    assert client.get("/api/v1/lineage/events", params={"job": "ingest"}).json()[0]["job"]["name"] == "ingest"
    assert graph([], "s3://nowhere/x") == {"nodes": [], "edges": []}


def test_a_runs_counts_are_read_only_when_lineage_is_on_and_never_fail_a_stop() -> None:
    from tools.lineage import run_quality

    class Rest:
        calls = 0

        def feed_quality(self) -> dict[str, dict[str, int]]:
            Rest.calls += 1
            return {"feed_a": {"recordsIn": 3}}

    def down() -> Rest:
        raise OSError("connection refused")

    assert run_quality({"lineage": {}}, Rest) == {} and Rest.calls == 0  # lineage off: the job is not asked
    on = {"lineage": {"url": "http://127.0.0.1:1"}}
    assert run_quality(on, Rest) == {"feed_a": {"recordsIn": 3}} and Rest.calls == 1
    assert run_quality(on, down) == {}


def test_the_fraud_signals_are_outputs_of_the_ingest_job_while_the_detectors_run() -> None:
    import dataclasses

    from connectors.properties import FraudConfig

    cfg, contracts = load_ingest_config(GROUPS), load_contracts()
    names = {d.name for d in ingest_datasets(cfg, contracts)[1]}
    assert any(n.endswith("/fraud_signals") for n in names) and f"{cfg.operational.database}.ops.fraud_signals" in names
    off = dataclasses.replace(cfg, fraud=FraudConfig(enabled=False))
    assert not any("fraud_signals" in d.name for d in ingest_datasets(off, contracts)[1])
