"""The ingestion API on uvicorn (127.0.0.1, an ephemeral port) over the real broker, Secrets Manager and DynamoDB
APIs, for the API's integration tests: run-unique feeds (every shipped contract plus the rest door, but
insurer_b_payments), a key per feed, a run-unique idempotency table; and the HTTP and Kafka helpers they share."""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
import uuid
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import uvicorn
import yaml

from connectors.ingest_api.app import ApiSettings, build_app
from connectors.ingest_api.keys import load_keys, new_key
from connectors.ingest_api.producer import KafkaSender
from connectors.ingest_api.receipts import Receipts, ensure_receipts_table
from connectors.ingest_api.server import uvicorn_config
from connectors.kafka import create_missing_topics
from connectors.kms import aws_client
from connectors.properties import LOCAL_PROPERTIES, load_phi_config, read_property_groups
from connectors.secrets import put_secret
from schemas.contracts import FEEDS_DIR, load_contracts

BOOTSTRAP = "127.0.0.1:19092"
HEADER_TIMEOUT_S = 1.5
KAFKA_ONLY = "insurer_b_payments"  # its copy loses the rest door: the API must refuse it


@dataclass
class Api:
    """A running API, its feeds (run-unique names) and their keys (by shipped feed name)."""

    url: str
    run: str
    keys: dict[str, str]

    def feed(self, shipped: str) -> str:
        """The run-unique name of a shipped feed."""
        return f"t{self.run}_{shipped}"

    @property
    def host_port(self) -> tuple[str, int]:
        """(host, port) for raw sockets."""
        host, port = self.url.removeprefix("http://").split(":")
        return host, int(port)


def _contracts(folder: Path, run: str) -> Path:
    """Every shipped contract under a run-unique name, with the rest door; one with a small size cap."""
    folder.mkdir(parents=True)
    for path in FEEDS_DIR.glob("*.yaml"):
        doc = yaml.safe_load(path.read_text())
        shipped = doc["feed"]
        doc["feed"] = f"t{run}_{shipped}"
        doc["sources"] = ["kafka"] if shipped == KAFKA_ONLY else sorted({*doc["sources"], "rest"})
        if shipped == "county_f_eligibility_csv":
            doc["limits"] = {"max_unit_bytes": 2048}
        (folder / f"{doc['feed']}.yaml").write_text(yaml.safe_dump(doc, sort_keys=False))
    return folder


@contextlib.contextmanager
def serving_api(folder: Path, settings: ApiSettings,
                rates: Mapping[str, tuple[float, int]] | None = None, metrics: Any = None) -> Iterator[Api]:
    """Serve the API until the block ends; `rates` are keyed by shipped feed name; `metrics`: a DoorMetrics."""
    run = uuid.uuid4().hex[:8]
    contracts = load_contracts(_contracts(folder / "feeds", run))
    phi = load_phi_config(read_property_groups(LOCAL_PROPERTIES))
    secrets, dynamodb = aws_client(phi, "secretsmanager"), aws_client(phi, "dynamodb")
    keys = {path.stem: new_key() for path in FEEDS_DIR.glob("*.yaml")}
    secret_id = f"medistream/ingest-api/test-{run}"
    put_secret(secrets, secret_id, {f"t{run}_{f}": [digest] for f, (_key, digest) in keys.items()})
    table = f"ingest-idem-{run}"
    ensure_receipts_table(dynamodb, table)
    create_missing_topics(BOOTSTRAP, [f"raw.t{run}_{f}" for f in keys])
    producer = KafkaSender(BOOTSTRAP)
    app = build_app(contracts, load_keys(secrets, secret_id), producer, Receipts(dynamodb, table), settings,
                    rates={f"t{run}_{f}": rate for f, rate in (rates or {}).items()}, metrics=metrics)
    server = uvicorn.Server(uvicorn_config(app, 0, HEADER_TIMEOUT_S, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + 15
        while not server.started:
            assert thread.is_alive() and time.monotonic() < deadline, "uvicorn did not start"
            time.sleep(0.05)
        port = server.servers[0].sockets[0].getsockname()[1]
        yield Api(f"http://127.0.0.1:{port}", run, {f: key for f, (key, _digest) in keys.items()})
    finally:
        server.should_exit = True
        thread.join(10)
        producer.close()
        dynamodb.delete_table(TableName=table)


@pytest.fixture(name="api")
def api_fixture(stack: object, tmp_path: Path) -> Iterator[Api]:
    """The API with small limits: batches of 50, a 1.5 s body timeout, clearinghouse_i_837p at 0.5/s burst 2."""
    with serving_api(tmp_path, ApiSettings(max_batch=50, body_timeout_s=1.5),
                     rates={"clearinghouse_i_837p": (0.5, 2)}) as running:
        yield running


def post(url: str, body: bytes, headers: dict[str, str]) -> tuple[int, dict[str, Any], dict[str, str]]:
    """(status, JSON answer, lower-cased headers) of one POST."""
    async def main() -> tuple[int, dict[str, Any], dict[str, str]]:
        async with aiohttp.ClientSession() as session, session.post(url, data=body, headers=headers) as answer:
            received = {name.lower(): value for name, value in answer.headers.items()}
            return answer.status, await answer.json(content_type=None), received

    return asyncio.run(main())


def records_url(api: Api, shipped: str) -> str:
    """The records URL of a shipped feed's run-unique copy."""
    return f"{api.url}/v1/feeds/{api.feed(shipped)}/records"


def auth(api: Api, shipped: str, media: str = "application/json", **extra: str) -> dict[str, str]:
    """Headers with the feed's key and a content type."""
    return {"Authorization": f"Bearer {api.keys[shipped]}", "Content-Type": media, **extra}


def raw_messages(topic: str, expect: int, wait_s: float = 15) -> list[bytes]:
    """Committed values on `topic`: up to `expect` within `wait_s`, plus whatever more arrives in a second."""
    from confluent_kafka import Consumer, TopicPartition

    consumer = Consumer({"bootstrap.servers": BOOTSTRAP, "group.id": f"check-{uuid.uuid4().hex[:8]}",
                         "enable.auto.commit": False, "isolation.level": "read_committed"})
    try:
        partitions = consumer.list_topics(topic, timeout=10).topics[topic].partitions
        consumer.assign([TopicPartition(topic, p, 0) for p in partitions])
        values: list[bytes] = []
        deadline = time.monotonic() + wait_s
        while time.monotonic() < deadline and len(values) < expect:
            message = consumer.poll(0.3)
            if message is not None and not message.error():
                values.append(message.value() or b"")
        time.sleep(1)  # and nothing more than expected arrives
        while (message := consumer.poll(0.5)) is not None:
            if not message.error():
                values.append(message.value() or b"")
        return values
    finally:
        consumer.close()
