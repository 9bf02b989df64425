"""The ingestion API as a Starlette application: auth, limits, a cheap pre-check, idempotent produce to raw.<feed>.

POST /v1/feeds/{feed}/records
  1. The feed must exist and its contract must list the `rest` door (404 / 403).
  2. `Authorization: Bearer msk_...` (or `X-API-Key`) must be one of the feed's keys (401). A key of
     another feed is refused the same way, so the answer does not tell which feeds exist for a key.
  3. The feed's token bucket (429 + Retry-After).
  4. Content-Type must suit the contract's format (415); the body is read with the contract's unit
     size cap (413) within `body_timeout_s` (408: slow clients do not hold a worker).
  5. Pre-check (400, PHI-free reason): JSON feeds take one object or an array of up to `max_batch`
     objects; CSV needs a header line; X12 must start with an ISA segment; Avro is passed as bytes.
     The full checks (schema, rules, dedup) stay in the job.
  6. With `Idempotency-Key`: the key is claimed in DynamoDB before producing; a retry with the same
     key and body gets the same receipt (202, `Idempotent-Replayed: true`) and produces nothing.
  7. Produce with the idempotent producer and wait for Kafka's acknowledgement; then 202 with a receipt.
GET /healthz, GET /openapi.json.

No request body, header value or key ever reaches a log line or an answer.
"""

from __future__ import annotations

import asyncio
import hashlib
import time
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol

import orjson
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from connectors.ingest_api.keys import KeyCheck
from connectors.ingest_api.openapi import CONTENT_TYPES, openapi_document
from connectors.ingest_api.receipts import Claim, Receipts
from connectors.metrics.doors import DoorMetrics
from udfs.delivery import TokenBucket


class Producer(Protocol):
    """What the API needs from Kafka: produce values to a topic and wait until all are acknowledged."""

    async def send(self, topic: str, values: list[bytes]) -> None: ...


@dataclass(frozen=True)
class ApiSettings:
    """Limits of the API (per feed rate limits come from `rates`)."""

    max_batch: int = 1000
    body_timeout_s: float = 10.0
    default_rate: float = 200.0
    default_burst: int = 400


class Refusal(Exception):
    """An answer other than 202: status, PHI-free reason code, optional headers."""

    def __init__(self, status: int, reason: str, headers: Mapping[str, str] | None = None) -> None:
        super().__init__(reason)
        self.status, self.reason, self.headers = status, reason, dict(headers or {})


def _api_key(request: Request) -> str | None:
    scheme, _, token = request.headers.get("authorization", "").partition(" ")
    return token if scheme.lower() == "bearer" and token else request.headers.get("x-api-key")


async def _read_body(request: Request, cap: int, timeout_s: float) -> bytes:
    declared = request.headers.get("content-length")
    if declared is not None and declared.isascii() and declared.isdigit() and int(declared) > cap:
        raise Refusal(413, "body_too_large")
    chunks: list[bytes] = []
    size = 0

    async def collect() -> None:
        nonlocal size
        async for chunk in request.stream():
            size += len(chunk)
            if size > cap:
                raise Refusal(413, "body_too_large")
            chunks.append(chunk)

    try:
        await asyncio.wait_for(collect(), timeout_s)
    except TimeoutError:
        raise Refusal(408, "body_not_received_in_time") from None
    return b"".join(chunks)


def _json_records(body: bytes, ndjson: bool) -> list[Any]:
    """The records of a JSON body: one document (an object or an array), or one per line for NDJSON."""
    try:
        if ndjson:
            return [orjson.loads(line) for line in body.splitlines() if line.strip()]
        doc = orjson.loads(body)
    except orjson.JSONDecodeError:
        raise Refusal(400, "malformed_json") from None
    return doc if isinstance(doc, list) else [doc]


def split_records(fmt: str, options: Mapping[str, Any], body: bytes, max_batch: int,
                  media: str = "application/json") -> list[bytes]:
    """The Kafka messages for a body: one per JSON record (a unit for JSON Lines feeds), else the body whole."""
    if not body.strip():
        raise Refusal(400, "empty_body")
    if fmt == "json":
        records = _json_records(body, media == "application/x-ndjson")
        if not records or not all(isinstance(r, dict) for r in records):
            raise Refusal(400, "json_must_be_an_object_or_an_array_of_objects")
        if len(records) > max_batch:
            raise Refusal(413, "too_many_records_in_batch")
        if options.get("lines"):
            return [b"\n".join(orjson.dumps(r) for r in records) + b"\n"]
        return [orjson.dumps(r) for r in records]
    if fmt == "csv" and b"\n" not in body.strip():
        raise Refusal(400, "csv_needs_a_header_and_rows")
    if fmt == "x12" and not body.lstrip().startswith(b"ISA"):
        raise Refusal(400, "x12_must_start_with_isa")
    return [body]


def build_app(contracts: Mapping[str, Any], keys: KeyCheck, producer: Producer, receipts: Receipts | None,
              settings: ApiSettings = ApiSettings(), rates: Mapping[str, tuple[float, int]] | None = None,
              run_blocking: Callable[..., Any] | None = None, metrics: DoorMetrics | None = None) -> Starlette:
    """The application over loaded contracts, key digests, a producer and (optionally) the idempotency store.

    `metrics`: requests by feed and status, records produced, answer time (feed "unknown" for any
    name that is not a contract's, so a caller cannot grow the label set).
    """
    buckets = {feed: TokenBucket(*(rates or {}).get(feed, (settings.default_rate, settings.default_burst)),
                                 clock=time.monotonic_ns) for feed in contracts}
    blocking = run_blocking or (lambda fn, *a: asyncio.get_running_loop().run_in_executor(None, fn, *a))

    async def records(request: Request) -> Response:
        feed = request.path_params["feed"]
        started = time.perf_counter()
        try:
            response = await _accept(request, feed)
        except Refusal as refusal:
            response = JSONResponse({"error": refusal.reason}, refusal.status, refusal.headers)
        if metrics is not None:
            label = feed if feed in contracts else "unknown"
            metrics.requests.labels(label, str(response.status_code)).inc()
            metrics.seconds.labels(label).observe(time.perf_counter() - started)
        return response

    async def _accept(request: Request, feed: str) -> Response:
        contract = contracts.get(feed)
        if contract is None:
            raise Refusal(404, "unknown_feed")
        if "rest" not in contract.sources:
            raise Refusal(403, "feed_does_not_accept_rest")
        if not keys.allows(feed, _api_key(request)):
            raise Refusal(401, "invalid_api_key", {"WWW-Authenticate": "Bearer"})
        bucket = buckets[feed]
        if not bucket.try_acquire():
            raise Refusal(429, "rate_limited", {"Retry-After": str(max(1, round(bucket.wait_s() + 0.5)))})
        media = request.headers.get("content-type", "").split(";")[0].strip().lower()
        if media not in CONTENT_TYPES.get(contract.format, ()):
            raise Refusal(415, "unsupported_content_type")
        body = await _read_body(request, contract.max_unit_bytes, settings.body_timeout_s)
        messages = split_records(contract.format, contract.options, body, settings.max_batch, media)
        key = request.headers.get("idempotency-key")
        if key is not None and not 1 <= len(key) <= 128:
            raise Refusal(400, "idempotency_key_must_be_1_to_128_characters")
        receipt = f"rcpt-{uuid.uuid4().hex}"  # per request; with an Idempotency-Key, the claim's own
        if key is not None and receipts is not None:
            claim = await blocking(receipts.claim, feed, key, hashlib.sha256(body).hexdigest())
            if claim.claim is Claim.CONFLICT:
                raise Refusal(422, "idempotency_key_reused_with_another_body")
            if claim.claim is Claim.IN_PROGRESS:
                raise Refusal(409, "idempotency_key_in_use", {"Retry-After": "1"})
            if claim.claim is Claim.REPLAY:
                return JSONResponse({"receipt_id": claim.receipt_id, "records": claim.records}, 202,
                                    {"Idempotent-Replayed": "true"})
            receipt = claim.receipt_id
        try:
            await producer.send(f"raw.{feed}", messages)
        except Exception:
            if key is not None and receipts is not None:
                await blocking(receipts.release, feed, key)
            raise Refusal(503, "broker_unavailable", {"Retry-After": "5"}) from None
        if key is not None and receipts is not None:
            await blocking(receipts.done, feed, key, len(messages))
        if metrics is not None:
            metrics.moved(feed, len(messages), "produced")
        return JSONResponse({"receipt_id": receipt, "records": len(messages)}, 202)

    async def healthz(_request: Request) -> Response:
        return JSONResponse({"status": "ok", "feeds": sorted(f for f, c in contracts.items() if "rest" in c.sources)})

    async def openapi(_request: Request) -> Response:
        return JSONResponse(openapi_document(contracts, settings))

    return Starlette(routes=[
        Route("/v1/feeds/{feed}/records", records, methods=["POST"]),
        Route("/healthz", healthz, methods=["GET"]),
        Route("/openapi.json", openapi, methods=["GET"]),
    ], exception_handlers={HTTPException: _http_error, Exception: _server_error})


async def _http_error(_request: Request, exc: Exception) -> Response:
    """Starlette's own refusals (no route 404, wrong method 405 with Allow) as JSON reason codes like ours."""
    assert isinstance(exc, HTTPException)  # noqa: S101 - registered for HTTPException only
    reason = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code, "bad_request")
    return JSONResponse({"error": reason}, exc.status_code, exc.headers)


async def _server_error(_request: Request, _exc: Exception) -> Response:
    """A bug answers a JSON reason code too, never the exception (uvicorn still logs the traceback)."""
    return JSONResponse({"error": "internal_error"}, 500)
