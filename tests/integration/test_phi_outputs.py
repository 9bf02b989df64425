"""PHI end to end on the local stack: the leak scan over every output finds zero, and the archived
records re-identify for an allowed role only, with every decision in a verifiable audit log."""

from __future__ import annotations

import dataclasses
import hashlib
import os
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import boto3
import orjson
import pytest

from connectors.audit import AuditLog, ensure_audit_table
from connectors.iceberg import TABLES
from infra.local import synthetic
from infra.local.ground_truth import expected_outcome
from infra.local.publish import publish
from infra.local.reference import publish_reference
from jobs.topics import output_topics
from schemas.contracts import FeedContract, load_contracts
from schemas.phi_policy import load_policy
from tests.conftest import isolated_config
from tests.integration.conftest import wait_for, write_properties
from tools.checks.leak_scan import LeakScanner, Needles, sha16
from tools.job_processes import start_job, stop_job
from tools.readback import covered, linkage_digest, read_sinks, s3_client, split_s3_url
from tools.reveal import RevealRequest, find_archived, reveal

pytestmark = [pytest.mark.integration]
SEED = 47


def _leaves(node: Any, path: str = "") -> Iterable[tuple[str, str]]:
    if isinstance(node, dict):
        for key, value in node.items():
            yield from _leaves(value, f"{path}.{key}" if path else key)
    elif isinstance(node, list):
        for value in node:
            yield from _leaves(value, f"{path}[]")
    elif isinstance(node, str):
        yield path, node


_SYLLABLES = ("zor", "qua", "vex", "lin", "dru", "kai", "mor", "tez", "ulb", "wex", "yph", "ost", "fip", "gha")


def canary_name(value: str) -> str:
    """A made-up name for `value`, the same for the same value: real surnames are also words of the
    outputs' own vocabulary ("Long" in an Avro schema, "Branch" in Iceberg metadata)."""
    digest = hashlib.sha256(value.encode()).digest()
    return "".join(_SYLLABLES[b % len(_SYLLABLES)] for b in digest[:3]).capitalize()


def with_canary_names(g: synthetic.Generated) -> synthetic.Generated:
    """A valid record with every first and last name replaced by its canary (invalid ones stay as sent)."""
    if g.expect != "valid":
        return g

    def rename(node: Any) -> Any:
        if isinstance(node, dict):
            return {k: canary_name(v) if k in ("first_name", "last_name") and isinstance(v, str) else rename(v)
                    for k, v in node.items()}
        return [rename(v) for v in node] if isinstance(node, list) else node

    payload = orjson.dumps(rename(orjson.loads(g.payload)))
    return dataclasses.replace(g, payload=payload, payload_sha256=hashlib.sha256(payload).hexdigest())


def phi_values(generated: list[synthetic.Generated], contracts: dict[str, FeedContract]) -> list[str]:
    """Every value the policy protects (not "clear"), minus values that also occur in clear fields
    (a patient named like a provider's clinic is not a leak when the clinic's name appears) and
    numbers of fewer than 7 digits (a 5-digit ZIP cannot be told from a byte count or an offset;
    the unit tests check ZIPs in the protected form itself)."""
    protected: set[str] = set()
    clear: list[str] = []
    for g in generated:
        try:
            record = orjson.loads(g.payload)
        except orjson.JSONDecodeError:
            continue  # an unparseable test record holds no field values
        if not isinstance(record, dict) or g.feed not in contracts:
            continue
        policy = load_policy(contracts[g.feed].phi_policy)
        rules = policy.rules[g.record_type]
        for path, value in _leaves(record):
            if g.expect != "valid" and path.endswith(("first_name", "last_name")):
                continue  # real-looking names of invalid records: see canary_name
            rule = rules.get(path)
            (clear.append(value) if rule is None or rule.action == "clear" else protected.add(value))
    shared = {hit.digest for hit in Needles(protected).hits("\x00".join(clear))}
    return sorted(v for v in protected if sha16(v) not in shared and not (v.isdigit() and len(v) < 7))


def planted_run(run_id: str, home: Path, records: int, seed: int, invalid_rate: float) -> tuple[
        Any, Path, dict[str, FeedContract], list[synthetic.Generated], dict[str, Any]]:
    """(config, properties file, contracts, records, expected outcome) of a run over every sample feed with
    PHI planted (canary names), the records and the reference data already published."""
    cfg = isolated_config(run_id, home)
    properties = write_properties(run_id, home)
    contracts = load_contracts(Path(cfg.feeds.contracts_dir))
    generated = [with_canary_names(g) for g in synthetic.generate(
        records, seed=seed, feeds=synthetic.feeds_from_contracts(contracts.values()), duplicate_rate=0.03,
        invalid_rate=invalid_rate)]
    s3 = s3_client(cfg.s3)
    publish_reference(s3, "medistream-reference", f"t{run_id}/", seed, version=1)
    publish(generated, cfg.kafka.bootstrap_servers, s3, "medistream-landing", landing_prefix=f"t{run_id}/",
            records_per_file=40, contracts=contracts)
    return cfg, properties, contracts, generated, expected_outcome(generated, contracts, seed, linkage_digest(cfg))


@pytest.fixture(scope="module")
def pipeline(stack: object, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """One run of the job (a subprocess, as in production) over every sample feed; stopped at the end."""
    import uuid

    run_id = uuid.uuid4().hex[:10]
    home = tmp_path_factory.mktemp("phi")
    cfg, properties, contracts, generated, expected = planted_run(run_id, home, 500, SEED, invalid_rate=0.08)
    scanner = LeakScanner(Needles(phi_values(generated, contracts)))
    log = home / "ingest.log"
    os.environ["MEDISTREAM_PROPERTIES"] = str(properties)
    job = start_job(log, properties)
    try:
        def done() -> bool:
            sinks = read_sinks(cfg)
            return (covered(sinks.archived_keys, expected["archived"]) == sum(expected["archived"].values())
                    and covered(sinks.dead_letters, expected["dead_letters"])
                    == sum(expected["dead_letters"].values()))
        wait_for(done, 300, "every record archived or dead-lettered")
        # Metric names and labels, from the running job's Flink REST API (a random loopback port).
        list(scanner.scan_flink_metrics(flink_rest_url(job.pid)))
    finally:
        stop_job(job)
        os.environ.pop("MEDISTREAM_PROPERTIES", None)
    return {"cfg": cfg, "home": home, "log": log, "generated": generated, "contracts": contracts, "run_id": run_id,
            "scanner": scanner}


def flink_rest_url(pid: int) -> str:
    """The REST endpoint of the mini-cluster inside the job process: the listening port that answers /jobs."""
    import http.client
    import json
    import urllib.request

    import psutil

    # Up to three passes, each port given 10 s: on a loaded machine (load average 13, decision 0056) the REST API
    # answered /jobs only after more than 2 s.
    for _ in range(3):
        for proc in [psutil.Process(pid), *psutil.Process(pid).children(recursive=True)]:
            for conn in proc.net_connections(kind="tcp"):
                if conn.status != psutil.CONN_LISTEN or conn.laddr.ip not in ("127.0.0.1", "::ffff:127.0.0.1"):
                    continue
                url = f"http://127.0.0.1:{conn.laddr.port}"
                try:
                    with urllib.request.urlopen(f"{url}/jobs", timeout=10) as answer:  # noqa: S310 - loopback only
                        if "jobs" in json.loads(answer.read()):
                            return url
                except (OSError, ValueError, http.client.HTTPException):
                    continue  # another listener of the process (py4j, Flink RPC): not HTTP
    tree = [psutil.Process(pid), *psutil.Process(pid).children(recursive=True)]
    listening = [(c.laddr.ip, c.laddr.port) for p in tree for c in p.net_connections(kind="tcp")
                 if c.status == psutil.CONN_LISTEN]
    raise AssertionError(f"the job process serves no Flink REST API on 127.0.0.1 (listening: {listening})")


def operational_rows(cfg: Any) -> dict[str, list[tuple[Any, ...]]]:
    """Every row of the operational store's tables for this configuration's routed feeds, read as the reader."""
    import psycopg

    from connectors.kms import aws_client
    from connectors.operational import READER_SECRET, SIGNALS_TABLE, connection, operational_tables
    from tools.readback import operational_feeds

    doc = connection(aws_client(cfg.phi, "secretsmanager"), READER_SECRET)
    with psycopg.connect(host=doc["host"], port=int(doc["port"]), dbname=doc["dbname"], user=doc["username"],
                         password=doc["password"], sslmode="verify-full", sslrootcert=cfg.operational.sslrootcert,
                         connect_timeout=10) as conn:
        return {table: conn.execute(f"SELECT * FROM ops.{table} WHERE feed = ANY(%s)",  # noqa: S608 - our table names
                                    (operational_feeds(cfg),)).fetchall()
                for table in (*operational_tables().values(), SIGNALS_TABLE)}


def test_the_leak_scan_finds_no_phi_value_in_any_output(pipeline: dict[str, Any]) -> None:
    cfg, run_id = pipeline["cfg"], pipeline["run_id"]
    scanner: LeakScanner = pipeline["scanner"]
    assert len(scanner.needles) > 1000, "the sample must plant enough known PHI values for the scan to mean something"
    s3 = s3_client(cfg.s3)
    # The scan can fail: the raw input holds the values in clear, and the scanner finds them there.
    metric_findings = list(scanner.report().findings)
    landing = list(scanner.scan_s3(s3, "medistream-landing", f"t{run_id}/"))
    assert landing, "a scanner that misses the plaintext input would prove nothing"
    scanner.report().findings[:] = metric_findings
    for path in (cfg.archive.path, cfg.archive.dead_letters_path):
        bucket, prefix = split_s3_url(path)
        list(scanner.scan_s3(s3, bucket, prefix))
    warehouse, _ = split_s3_url(cfg.iceberg.warehouse)
    for table in TABLES:  # every analytics table's data and metadata files
        list(scanner.scan_s3(s3, warehouse, f"{cfg.iceberg.namespace}/{cfg.iceberg.table(table)}/"))
    # The operational store's rows of this run's feeds (every column, as services read them).
    stored = operational_rows(cfg)
    assert sum(len(rows) for rows in stored.values()) > 0, "the operational store holds none of this run's rows"
    for table, rows in stored.items():
        for row in rows:
            list(scanner.scan_text(f"postgres:ops.{table}", " | ".join("" if v is None else str(v) for v in row)))
    # This run's own topics (dead letters, curated): other runs on the same broker carry other
    # synthetic people, whose clear provider names and cities can coincide with this run's needles.
    topics = output_topics(cfg)
    assert len(topics) == 3  # dead letters, curated.snowflake, curated.partner.clearwater_health
    list(scanner.scan_kafka(cfg.kafka.bootstrap_servers, topics))
    checkpoints = Path(cfg.checkpoints.directory.removeprefix("file://"))
    list(scanner.scan_files([pipeline["log"], checkpoints]))
    report = scanner.report()
    assert report.scanned["s3"] and report.scanned["kafka"] and report.scanned["files"] and report.scanned["metrics"]
    assert report.clean, report.to_json()


def test_reveal_is_granted_to_an_allowed_role_only_and_every_decision_is_audited(
        pipeline: dict[str, Any]) -> None:
    cfg, run_id = pipeline["cfg"], pipeline["run_id"]
    feed = next(name for name, c in pipeline["contracts"].items() if c.record_type == "eligibility")
    wanted = next(g for g in pipeline["generated"]
                  if g.feed == feed and g.expect == "valid" and find_archived(cfg, feed, g.record_id))
    record = orjson.loads(wanted.payload)
    dynamodb = boto3.client("dynamodb", endpoint_url=cfg.phi.endpoint or None, region_name=cfg.phi.region)
    table = f"medistream-audit-t{run_id}"
    ensure_audit_table(dynamodb, table)
    audit = AuditLog(dynamodb, table)
    try:
        fields = ("member.first_name", "member.birth_date")
        granted = reveal(cfg, audit, RevealRequest("dana", "care_coordinator", "care_coordination", feed,
                                                   wanted.record_id, fields))
        assert granted.granted
        assert granted.values == {"member.first_name": record["member"]["first_name"],
                                  "member.birth_date": record["member"]["birth_date"]}
        denied = reveal(cfg, audit, RevealRequest("eve", "analyst", "care_coordination", feed, wanted.record_id,
                                                  ("member.ssn",)))
        assert not denied.granted and denied.values == {}
        wrong_field = reveal(cfg, audit, RevealRequest("dana", "care_coordinator", "care_coordination", feed,
                                                       wanted.record_id, ("member.ssn",)))
        assert not wrong_field.granted
        entries = list(audit.entries())
        assert [(e["actor"], e["decision"]) for e in entries] == [("dana", "grant"), ("eve", "deny"),
                                                                   ("dana", "deny")]
        assert audit.verify().ok
        body = orjson.dumps(entries).decode()
        assert record["member"]["first_name"] not in body  # the log names fields, never values
    finally:
        dynamodb.delete_table(TableName=table)
