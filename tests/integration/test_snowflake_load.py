"""The Snowflake loader against the real local Kafka broker and moto server: its key from Secrets Manager, and
the helpers (topic, properties, loader process, emulator count, curated records) of its contract run, where it
is SIGKILLed mid-load with aborted transactions in the stream (tests/contract/snowflake_run.py)."""

from __future__ import annotations

import json
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest
from confluent_kafka.admin import AdminClient, NewTopic
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from connectors.properties import LOCAL_PROPERTIES
from connectors.snowflake.auth import fetch_private_key, secrets_client
from connectors.snowflake.channel import Fatal
from infra.local.settings import StackSettings

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
PARTITIONS = 3


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
