"""The REST ingestion API on uvicorn (127.0.0.1) with real HTTP clients, the broker and the stack's Secrets Manager
and DynamoDB APIs: accepted records land on raw.<feed> once; every bad request is refused with a PHI-free reason."""

from __future__ import annotations

import asyncio
import json
import socket
import threading
import time
import uuid
from collections.abc import Iterator
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
from connectors.kafka import create_missing_topics
from connectors.kms import aws_client
from connectors.secrets import put_secret
from jobs.config import LOCAL_PROPERTIES, load_phi_config, read_property_groups
from schemas.contracts import FEEDS_DIR, load_contracts

pytestmark = pytest.mark.integration

BOOTSTRAP = "127.0.0.1:19092"


@dataclass
class Api:
    """A running API, its feeds (run-unique names) and their keys."""

    url: str
    run: str
    keys: dict[str, str]

    def feed(self, shipped: str) -> str:
        return f"t{self.run}_{shipped}"


def _contracts(folder: Path, run: str) -> Path:
    """Every shipped contract under a run-unique name, with the rest door; one with a small size cap."""
    folder.mkdir(parents=True)
    for path in FEEDS_DIR.glob("*.yaml"):
        doc = yaml.safe_load(path.read_text())
        shipped = doc["feed"]
        doc["feed"] = f"t{run}_{shipped}"
        if shipped != "insurer_b_payments":  # kept kafka-only: the API must refuse it
            doc["sources"] = sorted({*doc["sources"], "rest"})
        if shipped == "county_f_eligibility_csv":
            doc["limits"] = {"max_unit_bytes": 2048}
        (folder / f"{doc['feed']}.yaml").write_text(yaml.safe_dump(doc, sort_keys=False))
    return folder


@pytest.fixture
def api(stack: object, tmp_path: Path) -> Iterator[Api]:
    run = uuid.uuid4().hex[:8]
    contracts = load_contracts(_contracts(tmp_path / "feeds", run))
    phi = load_phi_config(read_property_groups(LOCAL_PROPERTIES))
    secrets, dynamodb = aws_client(phi, "secretsmanager"), aws_client(phi, "dynamodb")
    keys = {shipped: new_key() for shipped in ("hospital_a_claims", "county_f_eligibility_csv",
                                               "clearinghouse_i_837p", "insurer_b_payments")}
    secret_id = f"medistream/ingest-api/test-{run}"
    put_secret(secrets, secret_id, {f"t{run}_{f}": [digest] for f, (_key, digest) in keys.items()})
    table = f"ingest-idem-{run}"
    ensure_receipts_table(dynamodb, table)
    create_missing_topics(BOOTSTRAP, [f"raw.t{run}_{f}" for f in keys])
    producer = KafkaSender(BOOTSTRAP)
    app = build_app(contracts, load_keys(secrets, secret_id), producer, Receipts(dynamodb, table),
                    ApiSettings(max_batch=50, body_timeout_s=1.5),
                    rates={f"t{run}_clearinghouse_i_837p": (0.5, 2)})
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=0, access_log=False, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 15
    while not server.started:
        assert time.monotonic() < deadline, "uvicorn did not start"
        time.sleep(0.05)
    port = server.servers[0].sockets[0].getsockname()[1]
    try:
        yield Api(f"http://127.0.0.1:{port}", run, {f: key for f, (key, _digest) in keys.items()})
    finally:
        server.should_exit = True
        thread.join(10)
        producer.close()
        dynamodb.delete_table(TableName=table)


def post(url: str, body: bytes, headers: dict[str, str]) -> tuple[int, dict[str, Any], dict[str, str]]:
    async def main() -> tuple[int, dict[str, Any], dict[str, str]]:
        async with aiohttp.ClientSession() as session, session.post(url, data=body, headers=headers) as answer:
            received = {name.lower(): value for name, value in answer.headers.items()}
            return answer.status, await answer.json(content_type=None), received

    return asyncio.run(main())


def records_url(api: Api, shipped: str) -> str:
    return f"{api.url}/v1/feeds/{api.feed(shipped)}/records"


def auth(api: Api, shipped: str, media: str = "application/json", **extra: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {api.keys[shipped]}", "Content-Type": media, **extra}


def raw_messages(topic: str, expect: int, wait_s: float = 15) -> list[bytes]:
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


def claim(n: int) -> dict[str, Any]:
    """A synthetic claim-shaped object (the API checks shape only; the job checks the schema)."""
    return {"record_id": f"api-{n}", "claim_id": f"C-{n}", "total_charge": "10.00"}


def test_a_record_and_a_batch_land_on_the_raw_topic_once_each(api: Api) -> None:
    status, single, _ = post(records_url(api, "hospital_a_claims"), json.dumps(claim(1)).encode(),
                             auth(api, "hospital_a_claims"))
    assert status == 202 and single["records"] == 1 and single["receipt_id"].startswith("rcpt-")
    batch = [claim(n) for n in range(2, 7)]
    status, answer, _ = post(records_url(api, "hospital_a_claims"), json.dumps(batch).encode(),
                             auth(api, "hospital_a_claims"))
    assert (status, answer["records"]) == (202, 5)
    landed = [json.loads(v) for v in raw_messages(f"raw.{api.feed('hospital_a_claims')}", 6)]
    assert sorted(r["record_id"] for r in landed) == [f"api-{n}" for n in range(1, 7)]


def test_csv_and_x12_bodies_are_units(api: Api) -> None:
    csv_body = b"member_id,first_name\nM-1,Test\n"
    status, _, _ = post(records_url(api, "county_f_eligibility_csv"), csv_body,
                        auth(api, "county_f_eligibility_csv", "text/csv"))
    assert status == 202
    assert raw_messages(f"raw.{api.feed('county_f_eligibility_csv')}", 1) == [csv_body]
    status, answer, _ = post(records_url(api, "clearinghouse_i_837p"), b"GS*HC~",
                             auth(api, "clearinghouse_i_837p", "application/edi-x12"))
    assert (status, answer) == (400, {"error": "x12_must_start_with_isa"})


def test_keys_are_per_feed_and_refusals_name_no_feed_or_value(api: Api) -> None:
    body = json.dumps(claim(1)).encode()
    url = records_url(api, "hospital_a_claims")
    other_feeds_key = {"Authorization": f"Bearer {api.keys['county_f_eligibility_csv']}",
                       "Content-Type": "application/json"}
    for headers in ({"Content-Type": "application/json"}, other_feeds_key,
                    {"X-API-Key": "msk_not-a-key", "Content-Type": "application/json"}):
        assert post(url, body, headers)[:2] == (401, {"error": "invalid_api_key"})
    assert post(f"{api.url}/v1/feeds/nope/records", body, auth(api, "hospital_a_claims"))[:2] == (
        404, {"error": "unknown_feed"})
    assert post(records_url(api, "insurer_b_payments"), body, auth(api, "insurer_b_payments"))[:2] == (
        403, {"error": "feed_does_not_accept_rest"})


@pytest.mark.parametrize(("body", "media", "status", "reason"), [
    (b'{"record_id": ', "application/json", 400, "malformed_json"),
    (b'[{"a": 1}, 2]', "application/json", 400, "json_must_be_an_object_or_an_array_of_objects"),
    (b"[]", "application/json", 400, "json_must_be_an_object_or_an_array_of_objects"),
    (b"   ", "application/json", 400, "empty_body"),
    (json.dumps([claim(n) for n in range(51)]).encode(), "application/json", 413, "too_many_records_in_batch"),
    (b"{}", "text/plain", 415, "unsupported_content_type"),
])
def test_bad_bodies_are_refused_with_a_reason_and_nothing_lands(api: Api, body: bytes, media: str, status: int,
                                                                reason: str) -> None:
    answer = post(records_url(api, "hospital_a_claims"), body, auth(api, "hospital_a_claims", media))
    assert answer[:2] == (status, {"error": reason})
    assert raw_messages(f"raw.{api.feed('hospital_a_claims')}", 1, wait_s=1) == []


def test_an_oversized_body_is_refused_before_it_is_read_whole(api: Api) -> None:
    body = b"member_id,first_name\n" + b"M-1,Test\n" * 400  # above this feed's 2,048-byte unit cap
    answer = post(records_url(api, "county_f_eligibility_csv"), body, auth(api, "county_f_eligibility_csv",
                                                                            "text/csv"))
    assert answer[:2] == (413, {"error": "body_too_large"})


def test_a_retry_with_the_same_idempotency_key_is_not_ingested_twice(api: Api) -> None:
    url, body = records_url(api, "hospital_a_claims"), json.dumps([claim(1), claim(2)]).encode()
    first = post(url, body, auth(api, "hospital_a_claims", **{"Idempotency-Key": "retry-1"}))
    again = post(url, body, auth(api, "hospital_a_claims", **{"Idempotency-Key": "retry-1"}))
    assert first[0] == again[0] == 202 and first[1] == again[1] == {"receipt_id": first[1]["receipt_id"],
                                                                     "records": 2}
    assert again[2].get("idempotent-replayed") == "true"
    changed = post(url, json.dumps([claim(3)]).encode(), auth(api, "hospital_a_claims",
                                                               **{"Idempotency-Key": "retry-1"}))
    assert changed[:2] == (422, {"error": "idempotency_key_reused_with_another_body"})
    assert len(raw_messages(f"raw.{api.feed('hospital_a_claims')}", 2)) == 2


def test_the_feed_rate_limit_answers_429_with_retry_after(api: Api) -> None:
    url = records_url(api, "clearinghouse_i_837p")
    answers = [post(url, b"ISA*00*~", auth(api, "clearinghouse_i_837p", "application/edi-x12")) for _ in range(3)]
    assert [a[0] for a in answers] == [202, 202, 429]
    assert answers[2][1] == {"error": "rate_limited"} and int(answers[2][2]["retry-after"]) >= 1


def test_a_slow_client_is_cut_off_and_lands_nothing(api: Api) -> None:
    host, port = api.url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=10) as conn:
        head = (f"POST /v1/feeds/{api.feed('hospital_a_claims')}/records HTTP/1.1\r\nHost: {host}\r\n"
                f"Authorization: Bearer {api.keys['hospital_a_claims']}\r\nContent-Type: application/json\r\n"
                "Content-Length: 100\r\n\r\n{")
        conn.sendall(head.encode())
        for _ in range(3):  # a byte per second: slower than the 1.5 s body timeout allows
            time.sleep(1)
            try:
                conn.sendall(b" ")
            except OSError:
                break
        answer = conn.recv(4096).decode(errors="replace")
    assert answer.startswith("HTTP/1.1 408") and "body_not_received_in_time" in answer
    assert raw_messages(f"raw.{api.feed('hospital_a_claims')}", 1, wait_s=1) == []


def test_openapi_document_and_health(api: Api) -> None:
    async def main() -> tuple[dict[str, Any], int]:
        async with aiohttp.ClientSession() as session:
            async with session.get(f"{api.url}/openapi.json") as answer:
                document = await answer.json()
            async with session.get(f"{api.url}/healthz") as answer:
                return document, answer.status

    document, health = asyncio.run(main())
    assert health == 200 and document["openapi"] == "3.1.0"
    post_op = document["paths"]["/v1/feeds/{feed}/records"]["post"]
    feeds = post_op["parameters"][0]["schema"]["enum"]
    assert api.feed("hospital_a_claims") in feeds and api.feed("insurer_b_payments") not in feeds
    assert {"202", "400", "401", "413", "415", "429"} <= set(post_op["responses"])
