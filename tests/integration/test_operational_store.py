"""The `operational` route on the local stack: the ingest job keeps each routed business key's newest version in
PostgreSQL (TLS, the writer role's secret), through a server freeze; a replay of everything changes no row; a
newer version wins and an older one or the same record again changes nothing, whoever writes it."""

from __future__ import annotations

import dataclasses
import os
import signal
import time
from pathlib import Path
from typing import Any

import psutil
import pytest

from connectors.kms import aws_client
from connectors.operational import READER_SECRET, ROUTE, connection, current_keys, operational_tables
from infra.local import synthetic
from infra.local.device_events import RECORD_TYPE as DEVICE_EVENT
from infra.local.ground_truth import expected_outcome
from infra.local.isolation import bounded
from infra.local.process import free_loopback_port
from infra.local.publish import publish
from infra.local.reference import publish_reference
from jobs import preflight
from schemas.contracts import load_contracts
from tests.conftest import isolated_config
from tests.integration.conftest import land_device_events, with_device_events
from tools.minicluster_rest import MiniClusterRest
from tools.readback import linkage_digest, s3_client

pytestmark = [pytest.mark.integration, pytest.mark.flink]
SEED = 47


def _connect(cfg: Any, secret_id: str) -> Any:
    import psycopg

    doc = connection(aws_client(cfg.phi, "secretsmanager"), secret_id)
    return psycopg.connect(host=doc["host"], port=int(doc["port"]), dbname=doc["dbname"], user=doc["username"],
                           password=doc["password"], sslmode="verify-full",
                           sslrootcert=cfg.operational.sslrootcert, connect_timeout=10, autocommit=True)


def _rows(cfg: Any, feeds: list[str]) -> dict[str, list[tuple[Any, ...]]]:
    """Every column of every row of these feeds, per table, in key order (read as the reader role)."""
    with _connect(cfg, READER_SECRET) as conn:
        return {table: conn.execute(f"SELECT * FROM ops.{table} WHERE feed = ANY(%s) ORDER BY business_key",  # noqa: S608
                                    (feeds,)).fetchall() for table in operational_tables().values()}


def _server_processes(cfg: Any) -> list[psutil.Process]:
    """The PostgreSQL server's processes: the one listening on the secret's port, and its children."""
    port = int(connection(aws_client(cfg.phi, "secretsmanager"), READER_SECRET)["port"])
    owner = next(psutil.Process(c.pid) for c in psutil.net_connections(kind="inet")
                 if c.status == psutil.CONN_LISTEN and c.laddr.port == port and c.pid)
    return [owner, *owner.children(recursive=True)]


def _run(cfg: Any, name: str, freeze_s: float = 0.0) -> None:
    """The ingest job, bounded, to the end; with `freeze_s`, the server is frozen (SIGSTOP) that long mid-run."""
    from jobs.ingest import build, create_environments

    port = free_loopback_port()  # its REST API: why a restart happened, when one does
    env, t_env = create_environments(cfg, None, cluster_extra={"rest.port": str(port)})
    build(env, t_env, cfg, job_name=name)
    client = env.execute_async(name)
    rest = MiniClusterRest(port, str(client.get_job_id()))
    if freeze_s:
        time.sleep(8)  # the job is reading and writing by now
        frozen = _server_processes(cfg)
        for proc in frozen:
            os.kill(proc.pid, signal.SIGSTOP)
        try:
            time.sleep(freeze_s)
        finally:
            for proc in frozen:
                os.kill(proc.pid, signal.SIGCONT)
    finished, deadline = client.get_job_execution_result(), time.monotonic() + 300
    while not finished.done():
        if time.monotonic() > deadline:
            failures = rest.call("/exceptions").get("exceptionHistory", {}).get("entries", [])
            client.cancel().result()
            why = [f["exceptionName"] + ": " + f["stacktrace"].split("\n", 1)[0][:300] for f in failures]
            raise AssertionError(f"{name} did not finish in 300 s; its restarts: {why}")
        time.sleep(1)
    finished.result()  # raises the job's failure, if it failed


def test_the_newest_version_per_key_survives_a_freeze_and_a_full_replay(
        stack: object, flink_process_env: None, run_id: str, tmp_path: Path) -> None:
    cfg = isolated_config(run_id, tmp_path)
    cfg = bounded(cfg)
    contracts = load_contracts(Path(cfg.feeds.contracts_dir))
    routed = {f: c for f, c in contracts.items() if any(r.sink == ROUTE for r in c.routes)}
    assert {c.record_type for c in routed.values()} == set(operational_tables())
    generated = list(synthetic.generate(240, seed=SEED, feeds=synthetic.feeds_from_contracts(routed.values()),
                                        duplicate_rate=0.05, invalid_rate=0.05))
    s3 = s3_client(cfg.s3)
    publish_reference(s3, "medistream-reference", f"t{run_id}/", SEED, version=1)
    publish(generated, cfg.kafka.bootstrap_servers, s3, "medistream-landing", landing_prefix=f"t{run_id}/",
            records_per_file=40, contracts=contracts)
    devices = land_device_events(routed, cfg.kafka.bootstrap_servers, 160, SEED)

    preflight.check_ingest_dependencies(cfg)  # the curated topics, the landing prefix
    _run(cfg, f"ops-{run_id}", freeze_s=10)
    expected = with_device_events(expected_outcome(generated, contracts, SEED, linkage_digest(cfg)), devices,
                                  contracts, linkage_digest(cfg))
    found, feeds = current_keys(cfg, routed), sorted(routed)
    for record_type in operational_tables():
        assert found[record_type] == expected["routed"][f"operational:{record_type}"], record_type
        assert sum(found[record_type].values()) > (5 if record_type == DEVICE_EVENT else 20)  # a row per device
    before = _rows(cfg, feeds)
    with _connect(cfg, READER_SECRET) as conn:  # instants cross the JDBC sink as wall time: the same instant arrives
        stamps = conn.execute("SELECT sent_at, sent_at_ms FROM ops.payments WHERE feed = ANY(%s)", (feeds,)).fetchall()
    assert stamps and all(sent.timestamp() * 1000 == ms for sent, ms in stamps)

    # Everything again, through a job with no memory (a new consumer group, no checkpoint): every record
    # reaches the store a second time, and no row changes (ingest times included).
    again = dataclasses.replace(cfg, kafka=dataclasses.replace(cfg.kafka, group_id=f"{cfg.kafka.group_id}-replay"),
                                checkpoints=dataclasses.replace(cfg.checkpoints,
                                                                directory=(tmp_path / "replay-checkpoints").as_uri()))
    _run(again, f"ops-replay-{run_id}")
    assert _rows(cfg, feeds) == before

    # Whoever writes: an older version and the same record again change nothing; a newer one wins.
    table = operational_tables()["claim"]
    with _connect(cfg, cfg.operational.secret_id) as conn:
        columns = [c.name for c in conn.execute(f"SELECT * FROM ops.{table} LIMIT 0").description]  # noqa: S608
        row = dict(zip(columns, before[table][0], strict=True))
        insert = (f"INSERT INTO ops.{table} ({', '.join(columns)}) "  # noqa: S608
                  f"VALUES ({', '.join(['%s'] * len(columns))})")
        for older in ({"sent_at_ms": row["sent_at_ms"] - 1, "record_id": "zzz-older"},
                      {"record_id": row["record_id"]},
                      {"record_id": "000-same-time-smaller-id"}):
            conn.execute(insert, [{**row, **older}[c] for c in columns])
        assert _rows(cfg, feeds)[table] == before[table]
        conn.execute(insert, [{**row, "sent_at_ms": row["sent_at_ms"] + 1, "record_id": "newer"}[c] for c in columns])
        current = conn.execute(f"SELECT record_id, sent_at_ms FROM ops.{table} WHERE feed = %s AND "  # noqa: S608
                               "business_key = %s", (row["feed"], row["business_key"])).fetchall()
    assert current == [("newer", row["sent_at_ms"] + 1)]
