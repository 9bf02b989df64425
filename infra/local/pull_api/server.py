"""The pull stand-in's HTTP side: an aiohttp app on 127.0.0.1 (run it with `python -m infra.local.pull_api`).

    POST /oauth2/token            client credentials (Basic auth or form) -> {"access_token", "expires_in"}
    GET  /v1/records?cursor=&limit=  Bearer token -> {"records": [...], "next_cursor": "..."}
    POST /v1/_records             append records, one JSON value per line (test and demo set-up)
    POST /v1/_faults              {"fail_rate", "latency_ms", "malformed_pages"}: change injected faults
    POST /v1/_revoke              forget every issued token (the next page request gets 401)
    GET  /v1/_stats               counts: answers by status, how often each page and record was served

A page starts at the cursor's offset; `next_cursor` names the offset after it, so an empty last page
returns the cursor it was given and records appended later are served from there. Logs carry
statuses, offsets and counts only.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import orjson
from aiohttp import web

from infra.local.loopback_http import start_loopback
from infra.local.oauth import client_credentials_failure
from infra.local.pull_api.rules import (
    CursorInvalid,
    PullApiConfig,
    PullState,
    issue_cursor,
    read_cursor,
)

STATE_KEY = web.AppKey("pull_state", PullState)
log = logging.getLogger("medistream.pull_api")


def _error(state: PullState, status: int, code: str, headers: dict[str, str] | None = None) -> web.Response:
    state.by_status[status] += 1
    return web.json_response({"error": code}, status=status, headers=headers)


async def _records(request: web.Request) -> web.Response:
    state = request.app[STATE_KEY]
    if not state.token_valid(request.headers.get("Authorization", ""), time.time()):
        return _error(state, 401, "invalid_token", {"WWW-Authenticate": 'Bearer error="invalid_token"'})
    wait_s = state.bucket.take(time.monotonic())
    if wait_s:
        return _error(state, 429, "rate_limited", {"Retry-After": str(wait_s)})
    try:
        limit = int(request.query.get("limit", "100"))
    except ValueError:
        return _error(state, 400, "invalid_limit")
    if not 1 <= limit <= state.config.max_limit:
        return _error(state, 400, "invalid_limit")
    cursor = request.query.get("cursor")
    try:
        offset = read_cursor(state.config.cursor_key, cursor) if cursor else 0
    except CursorInvalid:
        return _error(state, 400, "invalid_cursor")
    if offset > len(state.records):
        return _error(state, 400, "invalid_cursor")
    if state.inject_503():
        return _error(state, 503, "unavailable", {"Retry-After": "1"})
    if state.latency_ms:
        await asyncio.sleep(state.latency_ms / 1000)
    if state.malformed_pages:
        state.malformed_pages -= 1
        state.by_status[200] += 1
        return web.json_response({"data": None, "next": 7})
    chunk, after = state.page(offset, limit)
    state.by_status[200] += 1
    log.info("page offset=%d records=%d", offset, len(chunk))
    body = b'{"records":[' + b",".join(chunk) + b'],"next_cursor":"' + issue_cursor(
        state.config.cursor_key, after).encode() + b'"}'
    return web.Response(body=body, content_type="application/json")


async def _token(request: web.Request) -> web.Response:
    state = request.app[STATE_KEY]
    form = {k: v for k, v in (await request.post()).items() if isinstance(v, str)}
    problem = client_credentials_failure(state.config.client_id, state.config.client_secret, request.headers, form)
    if problem:
        log.info("token refused reason=%s", problem)
        return _error(state, 401 if problem == "invalid_client" else 400, problem)
    token = state.issue_token(time.time())
    return web.json_response({"access_token": token, "token_type": "Bearer", "expires_in": state.config.token_ttl_s},
                             headers={"Cache-Control": "no-store"})


async def _append(request: web.Request) -> web.Response:
    state = request.app[STATE_KEY]
    lines = [line for line in (await request.read()).split(b"\n") if line.strip()]
    try:
        for line in lines:
            orjson.loads(line)
    except orjson.JSONDecodeError:
        return _error(state, 400, "not_json_lines")
    state.records.extend(lines)
    log.info("appended records=%d total=%d", len(lines), len(state.records))
    return web.json_response({"appended": len(lines), "records": len(state.records)})


async def _faults(request: web.Request) -> web.Response:
    state = request.app[STATE_KEY]
    doc: Any = await request.json()
    state.fail_rate = float(doc.get("fail_rate", state.fail_rate))
    state.latency_ms = int(doc.get("latency_ms", state.latency_ms))
    state.malformed_pages = int(doc.get("malformed_pages", state.malformed_pages))
    return web.json_response({"fail_rate": state.fail_rate, "latency_ms": state.latency_ms,
                              "malformed_pages": state.malformed_pages})


async def _revoke(request: web.Request) -> web.Response:
    state = request.app[STATE_KEY]
    revoked = len(state.tokens)
    state.tokens.clear()
    return web.json_response({"revoked": revoked})


async def _stats(request: web.Request) -> web.Response:
    return web.json_response(request.app[STATE_KEY].stats())


def build_app(config: PullApiConfig) -> web.Application:
    """The aiohttp application over a fresh, empty state."""
    app = web.Application(client_max_size=64 * 1024 * 1024)  # appends carry many 4-12 KB records
    app[STATE_KEY] = PullState(config, time.monotonic())
    app.router.add_get("/v1/records", _records)
    app.router.add_post("/oauth2/token", _token)
    app.router.add_post("/v1/_records", _append)
    app.router.add_post("/v1/_faults", _faults)
    app.router.add_post("/v1/_revoke", _revoke)
    app.router.add_get("/v1/_stats", _stats)
    return app


@asynccontextmanager
async def running(config: PullApiConfig) -> AsyncIterator[str]:
    """Serve on the current event loop, bound to 127.0.0.1; yield the base URL, stop on exit."""
    runner, url = await start_loopback(build_app(config), config.port)
    try:
        yield url
    finally:
        stats = runner.app[STATE_KEY].stats()
        log.info("stopping: records=%d pages_served=%d by_status=%s", stats["records"], stats["pages_served"],
                 stats["by_status"])
        await runner.cleanup()
