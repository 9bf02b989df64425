"""The partner stand-in's HTTP side: an aiohttp app on 127.0.0.1, in-process or in a thread.

A STAND-IN for real partner APIs, for local runs and tests only. It binds the loopback interface only.
Guarantees it offers a delivery client, as a real partner would:
- a delivery is recorded at most once per idempotency key; a repeat with the same body gets the first
  response again (header `Idempotent-Replayed: true`) and is not counted; a different body gets 422;
- an injected 503 records nothing, so a retry with the same key may succeed;
- an injected hold records the delivery first, then withholds the answer for `hold_s` (the lost-response
  case); a retry after the client's timeout gets the replayed response.
Logs carry statuses, counts and key hashes only; bodies and business keys never reach a log line.
"""

from __future__ import annotations

import asyncio
import json
import logging
import secrets
import threading
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

from aiohttp import web

from infra.local.loopback_http import start_loopback
from infra.local.partner.rules import (
    PartnerConfig,
    PartnerState,
    RequestRecord,
    Stored,
    auth_failure,
    client_credentials_failure,
    fingerprint,
    key_hash,
    rejected,
    validation_error,
)

STATE_KEY = web.AppKey("partner_state", PartnerState)
log = logging.getLogger("medistream.partner")


def _answer(status: int, body: dict[str, Any], headers: dict[str, str] | None = None) -> web.Response:
    return web.json_response(body, status=status, headers=headers)


async def _deliver(request: web.Request) -> web.Response:
    state = request.app[STATE_KEY]
    config, now = state.config, time.monotonic()
    key = request.headers.get("Idempotency-Key") or None
    body = await request.read()

    def finish(
        status: int, doc: dict[str, Any], bk: str | None = None, *, replay: bool = False,
        headers: dict[str, str] | None = None,
    ) -> web.Response:
        state.records.append(RequestRecord(now, key, bk, status, replay))
        log.info("delivery status=%d key=%s replay=%s", status, key_hash(key) if key else "-", replay)
        return _answer(status, doc, headers)

    reason = auth_failure(config, request.headers, body, time.time(), state.tokens)
    if reason:
        return finish(401, {"error": "unauthorized", "reason": reason})
    wait_s = state.bucket.take(now)
    if wait_s:
        return finish(429, {"error": "rate_limited"}, headers={"Retry-After": str(wait_s)})
    if key is None:
        return finish(400, {"error": "missing_idempotency_key"})
    try:
        doc = json.loads(body)
    except ValueError:
        return finish(400, {"error": "invalid_json"})
    problem = validation_error(doc)
    if problem:
        return finish(400, {"error": "invalid_body", "detail": problem})
    bk, fp = doc["business_key"], fingerprint(doc)
    if rejected(config, bk):  # a business rule refusal: same answer every time, nothing recorded
        return finish(422, {"error": "validation_failed", "code": "member_not_found"}, bk)
    if key in state.in_flight:
        return finish(409, {"error": "idempotency_key_in_use"}, bk)
    stored = state.accepted.get(key)
    if stored is not None and stored.fingerprint != fp:
        return finish(422, {"error": "idempotency_key_reused_with_different_body"}, bk)
    fault = state.draw_fault()
    if fault == "fail":
        return finish(503, {"error": "injected_unavailable"}, bk, headers={"Retry-After": "1"})
    state.in_flight.add(key)
    try:
        if config.latency_ms:
            await asyncio.sleep(config.latency_ms / 1000)
        if stored is not None:
            replay_headers = {"Idempotent-Replayed": "true"}
            return finish(stored.status, stored.body, bk, replay=True, headers=replay_headers)
        state.deliveries[bk] += 1
        state.first_delivered_at.setdefault(bk, time.time())
        ident = {k: doc[k] for k in ("version", "record_id") if k in doc}
        answer = {"delivery_id": f"dlv-{sum(state.deliveries.values()):08d}", "business_key": bk, **ident}
        state.accepted[key] = Stored(fp, 201, answer)
    finally:
        state.in_flight.discard(key)
    if fault == "hold":
        # Recorded already: the client sees a timeout although the partner has the delivery.
        await asyncio.sleep(config.hold_s)
    return finish(201, answer, bk)


async def _token(request: web.Request) -> web.Response:
    state = request.app[STATE_KEY]
    form = {k: v for k, v in (await request.post()).items() if isinstance(v, str)}
    problem = client_credentials_failure(state.config, request.headers, form)
    if problem:
        log.info("token refused reason=%s", problem)
        return _answer(401 if problem == "invalid_client" else 400, {"error": problem})
    token = secrets.token_urlsafe(24)
    state.tokens[token] = time.time() + state.config.token_ttl_s
    return _answer(200, {"access_token": token, "token_type": "Bearer", "expires_in": state.config.token_ttl_s},
                   {"Cache-Control": "no-store"})


async def _stats(request: web.Request) -> web.Response:
    return _answer(200, request.app[STATE_KEY].stats())


async def _reset(request: web.Request) -> web.Response:
    request.app[STATE_KEY].reset(time.monotonic())
    log.info("state reset")
    return _answer(200, {"reset": True})


def build_app(config: PartnerConfig) -> web.Application:
    """The aiohttp application: deliveries, stats and reset routes over a fresh state."""
    app = web.Application()
    app[STATE_KEY] = PartnerState(config, time.monotonic())
    app.router.add_post("/v1/deliveries", _deliver)
    app.router.add_post("/oauth2/token", _token)
    app.router.add_post("/v1/_reset", _reset)
    # Any other POST path is a delivery, so a contract's real endpoint path works against the stand-in.
    app.router.add_post("/{path:.*}", _deliver)
    app.router.add_get("/v1/_stats", _stats)
    return app


def _log_counts(state: PartnerState) -> None:
    stats = state.stats()
    log.info("stopping: requests=%d deliveries=%d by_status=%s", stats["requests"], stats["deliveries"],
             stats["by_status"])


@asynccontextmanager
async def running(config: PartnerConfig) -> AsyncIterator[str]:
    """Serve on the current event loop; yield the base URL, stop on exit."""
    runner, url = await start_loopback(build_app(config), config.port)
    try:
        yield url
    finally:
        _log_counts(runner.app[STATE_KEY])
        await runner.cleanup()


@dataclass
class PartnerHandle:
    """A stand-in serving from its own thread; `stop()` shuts it down and joins the thread."""

    url: str
    config: PartnerConfig
    _loop: asyncio.AbstractEventLoop
    _stopped: asyncio.Event
    _thread: threading.Thread

    def stop(self, timeout_s: float = 10.0) -> None:
        """Stop serving and wait for the thread to end."""
        if self._thread.is_alive():
            self._loop.call_soon_threadsafe(self._stopped.set)
            self._thread.join(timeout_s)


def start_in_thread(config: PartnerConfig, timeout_s: float = 10.0) -> PartnerHandle:
    """Start the stand-in on a daemon thread with its own event loop; return once it accepts requests."""
    loop = asyncio.new_event_loop()
    ready, result = threading.Event(), dict[str, Any]()

    async def main() -> None:
        stopped = asyncio.Event()
        try:
            async with running(config) as url:
                result.update(url=url, stopped=stopped)
                ready.set()
                await stopped.wait()
        except BaseException as exc:
            result["error"] = exc
            ready.set()
            raise

    def serve() -> None:
        try:
            loop.run_until_complete(main())
        finally:
            loop.close()

    thread = threading.Thread(target=serve, name="partner-standin", daemon=True)
    thread.start()
    if not ready.wait(timeout_s):
        raise TimeoutError(f"partner stand-in did not start within {timeout_s} s")
    if "error" in result:
        raise RuntimeError("partner stand-in failed to start") from result["error"]
    return PartnerHandle(result["url"], config, loop, result["stopped"], thread)
