"""The REST ingestion API on uvicorn (127.0.0.1) with real HTTP clients, the broker and the stack's Secrets Manager
and DynamoDB APIs: accepted records land on raw.<feed> once; every bad request is refused with a PHI-free reason."""

from __future__ import annotations

import asyncio
import json
import socket
import time
from typing import Any

import aiohttp
import pytest

from tests.integration.ingest_api_harness import (  # noqa: F401 - api_fixture provides `api`
    HEADER_TIMEOUT_S,
    Api,
    api_fixture,
    auth,
    post,
    raw_messages,
    records_url,
)

pytestmark = pytest.mark.integration


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
    host, port = api.host_port
    with socket.create_connection((host, port), timeout=10) as conn:
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


def _request(api: Api, record_id: str) -> bytes:
    body = json.dumps(claim(0) | {"record_id": record_id}).encode()
    host, _port = api.host_port
    return (f"POST /v1/feeds/{api.feed('hospital_a_claims')}/records HTTP/1.1\r\nHost: {host}\r\n"
            f"Authorization: Bearer {api.keys['hospital_a_claims']}\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(body)}\r\n\r\n").encode() + body


def _read_answer(conn: socket.socket) -> bytes:
    """One whole response (head and Content-Length body) from a keep-alive connection."""
    data = b""
    while b"\r\n\r\n" not in data:
        data += conn.recv(4096)
    head, _, rest = data.partition(b"\r\n\r\n")
    length = next(int(line.split(b":")[1]) for line in head.split(b"\r\n")
                  if line.lower().startswith(b"content-length"))
    while len(rest) < length:
        rest += conn.recv(4096)
    return head + b"\r\n\r\n" + rest


def _dribble(conn: socket.socket, request: bytes, bound_s: float) -> tuple[bytes, float]:
    """Send `request` a byte every 0.1 s until the server answers or closes; (what it sent back, seconds taken)."""
    started = time.monotonic()
    conn.settimeout(0.1)
    for byte in request:
        assert time.monotonic() - started < bound_s, "the server let a dribbling client hold the connection"
        try:
            conn.sendall(bytes([byte]))
            answer = conn.recv(4096)
        except TimeoutError:
            continue
        except OSError:  # reset: the server closed on us mid-send
            return b"", time.monotonic() - started
        return answer, time.monotonic() - started
    raise AssertionError("the whole request went through byte by byte")


def test_a_client_dribbling_its_headers_is_cut_off_and_lands_nothing(api: Api) -> None:
    request = _request(api, "dribbled")
    assert len(request) * 0.1 > 4 * HEADER_TIMEOUT_S  # the head alone would take far longer than the deadline
    with socket.create_connection(api.host_port, timeout=10) as conn:
        answer, _seconds = _dribble(conn, request, bound_s=HEADER_TIMEOUT_S + 10)
    assert answer.startswith(b"HTTP/1.1 408") and b"headers_not_received_in_time" in answer
    assert raw_messages(f"raw.{api.feed('hospital_a_claims')}", 1, wait_s=1) == []
    assert post(records_url(api, "hospital_a_claims"), json.dumps(claim(1)).encode(),
                auth(api, "hospital_a_claims"))[0] == 202  # the server still serves


def test_the_header_deadline_applies_to_each_keep_alive_request_from_its_first_byte(api: Api) -> None:
    with socket.create_connection(api.host_port, timeout=10) as conn:
        conn.sendall(_request(api, "first"))
        assert _read_answer(conn).startswith(b"HTTP/1.1 202")
        time.sleep(HEADER_TIMEOUT_S + 0.5)  # idle, but within timeout_keep_alive (5 s): not a slow head
        conn.sendall(_request(api, "second"))
        assert _read_answer(conn).startswith(b"HTTP/1.1 202")
        answer, _seconds = _dribble(conn, _request(api, "third"), bound_s=HEADER_TIMEOUT_S + 10)
    assert answer.startswith(b"HTTP/1.1 408")
    landed = [json.loads(v)["record_id"] for v in raw_messages(f"raw.{api.feed('hospital_a_claims')}", 2)]
    assert sorted(landed) == ["first", "second"]


def test_a_connection_that_sends_nothing_is_closed(api: Api) -> None:
    with socket.create_connection(api.host_port, timeout=HEADER_TIMEOUT_S + 10) as conn:
        assert conn.recv(4096) == b""  # closed without an answer: there was no request to answer


def test_ndjson_bodies_are_one_record_per_line(api: Api) -> None:
    body = b"".join(json.dumps(claim(n)).encode() + b"\n" for n in (1, 2, 3))
    status, answer, _ = post(records_url(api, "hospital_a_claims"), body,
                             auth(api, "hospital_a_claims", "application/x-ndjson"))
    assert (status, answer["records"]) == (202, 3)
    landed = [json.loads(v) for v in raw_messages(f"raw.{api.feed('hospital_a_claims')}", 3)]
    assert sorted(r["record_id"] for r in landed) == ["api-1", "api-2", "api-3"]


def test_unrouted_paths_and_methods_answer_json_reason_codes(api: Api) -> None:
    async def main() -> list[tuple[int, Any, str | None]]:
        async with aiohttp.ClientSession() as session:
            answers = []
            for method, path in (("GET", "/nope"), ("GET", f"/v1/feeds/{api.feed('hospital_a_claims')}/records")):
                async with session.request(method, f"{api.url}{path}") as answer:
                    answers.append((answer.status, await answer.json(), answer.headers.get("allow")))
            return answers

    assert asyncio.run(main()) == [(404, {"error": "not_found"}, None), (405, {"error": "method_not_allowed"}, "POST")]


def test_keys_added_and_revoked_take_effect_without_a_restart(stack: Any, run_id: str) -> None:
    from connectors.ingest_api.keys import RefreshingKeys
    from connectors.kms import aws_client
    from connectors.properties import LOCAL_PROPERTIES, load_phi_config, read_property_groups
    from jobs.ingest_api import add_key, revoke_key

    base = read_property_groups(LOCAL_PROPERTIES)
    groups = {**base, "ingest_api": {**base["ingest_api"], "keys.secret": f"medistream/ingest-api/t{run_id}"}}
    feed = f"t{run_id}_hospital_a_claims"
    first = add_key(groups, feed)
    keys = RefreshingKeys(aws_client(load_phi_config(groups), "secretsmanager"), groups["ingest_api"]["keys.secret"],
                          refresh_s=0.2)
    try:
        assert keys.allows(feed, first) and not keys.allows(f"t{run_id}_other", first)
        second = add_key(groups, feed)
        assert revoke_key(groups, feed, first) and not revoke_key(groups, feed, first)
        deadline = time.monotonic() + 10
        while keys.allows(feed, first) or not keys.allows(feed, second):
            assert time.monotonic() < deadline, "the running key set did not follow the secret"
            time.sleep(0.1)
    finally:
        keys.close()


def test_the_service_creates_its_rest_feeds_raw_topics(stack: Any, run_id: str, tmp_path: Any) -> None:
    from confluent_kafka.admin import AdminClient

    from connectors.properties import LOCAL_PROPERTIES, read_property_groups
    from jobs.ingest_api import add_key, build_service, load_api_config
    from tests.integration.ingest_api_harness import BOOTSTRAP, KAFKA_ONLY, _contracts

    base = read_property_groups(LOCAL_PROPERTIES)
    groups = {**base, "feeds": {**base["feeds"], "contracts.dir": str(_contracts(tmp_path / "feeds", run_id))},
              "ingest_api": {**base["ingest_api"], "keys.secret": f"medistream/ingest-api/t{run_id}",
                             "idempotency.table": f"ingest-idem-t{run_id}"}}
    add_key(groups, f"t{run_id}_hospital_a_claims")  # the service does not start without its key secret
    _app, producer = build_service(load_api_config(groups), groups)
    try:
        topics = AdminClient({"bootstrap.servers": BOOTSTRAP}).list_topics(timeout=10).topics
        ours = {t for t in topics if t.startswith(f"raw.t{run_id}_")}
        assert f"raw.t{run_id}_hospital_a_claims" in ours and f"raw.t{run_id}_{KAFKA_ONLY}" not in ours
    finally:
        producer.close()
