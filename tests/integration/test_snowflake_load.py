"""The Snowflake loader against the real local Kafka broker and moto server.

Records are produced transactionally (one transaction aborted) while the loader runs; it is
SIGKILLed repeatedly mid-load and restarted, then drained with --until-idle. Every committed record
must be in the emulator exactly once and no aborted record at all. Bounded: loopback only, a few
thousand records, every wait has a deadline.
"""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from confluent_kafka import Producer
from confluent_kafka.admin import AdminClient, NewTopic
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from connectors.properties import LOCAL_PROPERTIES
from connectors.snowflake.auth import fetch_private_key, secrets_client
from connectors.snowflake.channel import Fatal
from infra.local.settings import StackSettings
from tests.integration.conftest import wait_for

pytestmark = [pytest.mark.integration, pytest.mark.kill]

ROOT = Path(__file__).resolve().parents[2]
PARTITIONS, TRANSACTIONS, PER_TRANSACTION = 3, 14, 600
ABORTED_TRANSACTIONS = (4, 9)
KILLS = 4


def make_topic(stack: StackSettings, topic: str) -> None:
    admin = AdminClient({"bootstrap.servers": stack.bootstrap_servers()})
    admin.create_topics([NewTopic(topic, num_partitions=PARTITIONS, replication_factor=1)])[topic].result(30)


def curated_value(record_id: str, n: int) -> bytes:
    return json.dumps({
        "record_id": record_id, "record_type": ("claim", "payment", "eligibility")[n % 3], "feed": "acme_837",
        "business_key": f"bk-{n}", "original_key": None if n % 2 else f"ok-{n}", "sent_at_ms": 1_700_000_000_000 + n,
        "ingested_at_ms": 1_700_000_001_000 + n, "source": "kafka:raw.acme_837", "dt": "2026-11-02",
        "payload": json.dumps({"member_id": f"tok:{n:08x}", "amount": n}),
    }).encode()


def produce(stack: StackSettings, topic: str, run_id: str, committed: set[str], aborted: set[str]) -> None:
    """Transactions of PER_TRANSACTION records spread over the partitions, with pauses; some aborted."""
    producer = Producer({"bootstrap.servers": stack.bootstrap_servers(), "transactional.id": f"sf-test-{run_id}",
                         "linger.ms": 5})
    producer.init_transactions(30)
    for t in range(TRANSACTIONS):
        producer.begin_transaction()
        ids = [f"{run_id}-{t}-{i}" for i in range(PER_TRANSACTION)]
        for i, record_id in enumerate(ids):
            producer.produce(topic, key=record_id.encode(), value=curated_value(record_id, t * PER_TRANSACTION + i),
                             partition=i % PARTITIONS)
        if t in ABORTED_TRANSACTIONS:
            producer.flush(30)  # the aborted records really are in the log, behind an abort marker
            producer.abort_transaction(30)
            aborted.update(ids)
        else:
            producer.commit_transaction(30)
            committed.update(ids)
        time.sleep(0.4)


def write_properties(stack: StackSettings, tmp_path: Path, run_id: str, topic: str) -> Path:
    groups = json.loads(LOCAL_PROPERTIES.read_text())
    overrides = {
        "kafka": {"bootstrap.servers": stack.bootstrap_servers()},
        "curated": {"snowflake.topic": topic},
        "snowflake": {"mode": "emulator", "emulator.path": str(tmp_path / "emulator.sqlite"),
                      "batch.max.rows": "64", "poll.timeout.ms": "200", "consumer.group.id": f"sf-t{run_id}",
                      "consumer.group.instance.id": f"sf-t{run_id}-0", "consumer.session.timeout.ms": "6000",
                      "retry.base.ms": "200", "retry.max.attempts": "6"},
    }
    for group in groups:
        group["PropertyMap"].update(overrides.get(group["PropertyGroupId"], {}))
    path = tmp_path / "application_properties.json"
    path.write_text(json.dumps(groups))
    return path


def start_loader(properties: Path, log: Path, *extra: str) -> subprocess.Popen[bytes]:
    with log.open("ab") as out:
        return subprocess.Popen([sys.executable, "-m", "jobs.snowflake_load", "--properties", str(properties), *extra],
                                cwd=ROOT, stdout=out, stderr=out, start_new_session=True)


def loaded_count(path: Path) -> int:
    if not path.exists():
        return 0
    try:
        with sqlite3.connect(path, timeout=10) as conn:
            return int(conn.execute("SELECT COUNT(*) FROM RECORDS").fetchone()[0])
    except sqlite3.OperationalError:
        return 0  # the loader is still creating the schema


def test_sigkill_mid_load_loses_and_duplicates_nothing(stack: StackSettings, run_id: str, tmp_path: Path) -> None:
    topic = f"curated.snowflake.t{run_id}"
    make_topic(stack, topic)
    properties = write_properties(stack, tmp_path, run_id, topic)
    emulator, log = tmp_path / "emulator.sqlite", tmp_path / "loader.log"
    committed: set[str] = set()
    aborted: set[str] = set()
    producer = threading.Thread(target=produce, args=(stack, topic, run_id, committed, aborted), daemon=True)
    producer.start()
    expected_total = (TRANSACTIONS - len(ABORTED_TRANSACTIONS)) * PER_TRANSACTION

    kills_mid_load = 0
    loader = start_loader(properties, log)
    try:
        for kill in range(KILLS):
            floor = loaded_count(emulator)
            wait_for(lambda floor=floor: loaded_count(emulator) > floor, 60, f"progress before kill {kill + 1}")
            time.sleep(0.3 + 0.2 * kill)
            at_kill = loaded_count(emulator)
            os.killpg(loader.pid, signal.SIGKILL)
            assert loader.wait(10) == -signal.SIGKILL
            kills_mid_load += 0 < at_kill < expected_total
            loader = start_loader(properties, log)
        # A graceful stop too: SIGTERM finishes the batch, closes the channels, exits 0.
        wait_for(lambda: log.read_text().count("assigned partitions") > KILLS, 60, "the restarted loader to resume")
        loader.send_signal(signal.SIGTERM)
        assert loader.wait(30) == 0, log.read_text()[-3000:]
        producer.join(120)
        assert not producer.is_alive()
        drain = start_loader(properties, log, "--until-idle", "4")
        assert drain.wait(120) == 0, log.read_text()[-3000:]
    finally:
        for proc in (loader, locals().get("drain")):
            if proc is not None and proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL)

    assert kills_mid_load >= 3, f"only {kills_mid_load} kills landed mid-load; the test proved too little"
    with sqlite3.connect(emulator) as conn:
        ids = [r for (r,) in conn.execute("SELECT RECORD_ID FROM RECORDS")]
        positions = conn.execute("SELECT COUNT(*), COUNT(DISTINCT KAFKA_PARTITION || ':' || KAFKA_OFFSET) "
                                 "FROM RECORDS").fetchone()
        tokens = dict(conn.execute("SELECT CHANNEL_NAME, OFFSET_TOKEN FROM CHANNELS"))
        tops = dict(conn.execute("SELECT CHANNEL_NAME, MAX(KAFKA_OFFSET) FROM RECORDS GROUP BY CHANNEL_NAME"))
        payload_ok = conn.execute("SELECT COUNT(*) FROM RECORDS WHERE json_valid(PAYLOAD)").fetchone()[0]
    assert len(committed) == expected_total
    assert len(ids) == len(set(ids)), f"{len(ids) - len(set(ids))} records loaded twice"
    assert set(ids) == committed, f"missing {len(committed - set(ids))}, unexpected {len(set(ids) - committed)}"
    assert not set(ids) & aborted
    assert positions[0] == positions[1] == expected_total
    assert payload_ok == expected_total
    assert {name: int(token) for name, token in tokens.items()} == tops
    assert set(tokens) == {f"medistream-{topic}-{p}" for p in range(PARTITIONS)}
    text = log.read_text()
    assert "tok:" not in text and "bk-" not in text, "the loader logged record content"


def test_private_key_is_fetched_from_secrets_manager(stack: StackSettings, run_id: str) -> None:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                            serialization.NoEncryption()).decode()
    client = secrets_client(stack.s3_endpoint(), stack.region)
    client.create_secret(Name=f"t{run_id}/snowflake/private-key", SecretString=pem)
    client.create_secret(Name=f"t{run_id}/not-a-key", SecretString="hunter2")

    secret = fetch_private_key(client, f"t{run_id}/snowflake/private-key")
    assert secret.reveal().strip() == pem.strip()
    assert "PRIVATE" not in repr(secret)
    with pytest.raises(Fatal, match="does not exist"):
        fetch_private_key(client, f"t{run_id}/missing")
    with pytest.raises(Fatal, match="PEM") as err:
        fetch_private_key(client, f"t{run_id}/not-a-key")
    assert "hunter2" not in str(err.value)
