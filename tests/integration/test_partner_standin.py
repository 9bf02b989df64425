"""The partner stand-in over real HTTP on loopback: rate limit, idempotency, faults, auth, stats, process mode."""

from __future__ import annotations

import asyncio
import base64
import json
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiohttp
import psutil
import pytest

from infra.local.partner import PartnerConfig, PartnerHandle, sign, start_in_thread
from infra.local.partner.rules import max_in_window, rejected
from infra.local.process import free_loopback_port

pytestmark = [pytest.mark.integration, pytest.mark.timeout(120)]

FAST = {"rate": 10_000.0, "burst": 1_000}  # a limit these tests never reach unless they mean to


@pytest.fixture
def partner(request: pytest.FixtureRequest) -> Iterator[PartnerHandle]:
    """A stand-in in a thread, configured by `@pytest.mark.parametrize("partner", [...], indirect=True)`."""
    handle = start_in_thread(PartnerConfig(**getattr(request, "param", FAST)))
    yield handle
    handle.stop()


def delivery(bk: str, version: int = 1, **payload: Any) -> dict[str, Any]:
    """A delivery body."""
    return {"business_key": bk, "version": version, "payload": payload or {"amount": "12.50"}}


async def post(
    session: aiohttp.ClientSession, url: str, key: str | None, doc: Any, headers: dict[str, str] | None = None,
    timeout_s: float = 10.0, raw: bytes | None = None,
) -> tuple[int, dict[str, Any], Any]:
    """POST /v1/deliveries; return status, JSON body and response headers."""
    hdrs = {"Content-Type": "application/json", **(headers or {})}
    if key is not None:
        hdrs["Idempotency-Key"] = key
    data = raw if raw is not None else json.dumps(doc).encode()
    timeout = aiohttp.ClientTimeout(total=timeout_s)
    async with session.post(f"{url}/v1/deliveries", data=data, headers=hdrs, timeout=timeout) as resp:
        return resp.status, await resp.json(), resp.headers


async def stats(session: aiohttp.ClientSession, url: str) -> dict[str, Any]:
    """GET /v1/_stats."""
    async with session.get(f"{url}/v1/_stats") as resp:
        assert resp.status == 200
        return await resp.json()


def test_binds_loopback_only(partner: PartnerHandle) -> None:
    assert partner.url.startswith("http://127.0.0.1:")


def test_max_in_window_counts_half_open_windows() -> None:
    # [0, 1) holds 0, 0.5, 0.99; [0.5, 1.5) holds 0.5, 0.99, 1.0, 1.49 - the peak.
    assert max_in_window([0.0, 0.5, 0.99, 1.0, 1.49, 2.6]) == 4
    assert max_in_window([]) == 0


@pytest.mark.parametrize("partner", [{"rate": 20.0, "burst": 5}], indirect=True)
def test_rate_limit_answers_429_with_retry_after_and_caps_every_window(partner: PartnerHandle) -> None:
    async def client(session: aiohttp.ClientSession, worker: int, deadline: float) -> list[tuple[int, Any]]:
        out, n = [], 0
        while time.monotonic() < deadline:
            status, _, headers = await post(session, partner.url, f"w{worker}-{n}", delivery(f"bk-{worker}-{n}"))
            out.append((status, headers.get("Retry-After")))
            n += 1
            await asyncio.sleep(0.005)
        return out

    async def run() -> tuple[list[tuple[int, Any]], dict[str, Any], float]:
        async with aiohttp.ClientSession() as session:
            start = time.monotonic()
            results = await asyncio.gather(*(client(session, w, start + 3.0) for w in range(4)))
            elapsed = time.monotonic() - start
            return [r for rs in results for r in rs], await stats(session, partner.url), elapsed

    results, st, elapsed = asyncio.run(run())
    limited = [retry for status, retry in results if status == 429]
    accepted = [s for s, _ in results if s == 201]
    assert {s for s, _ in results} == {201, 429}
    assert len(limited) > 50, "four clients pushing for 3 s at 20/s must hit the limit"
    assert all(r is not None and r.isdigit() and int(r) >= 1 for r in limited)
    # The token bucket's promise, on the server's own clock: no 1 s window holds more than rate + burst...
    assert st["max_admitted_per_1s"] <= 20 + 5
    # ...and the limiter is not simply refusing everything: under pressure some window comes close.
    assert st["max_admitted_per_1s"] >= 20
    assert len(accepted) <= 5 + 20 * elapsed
    assert st["deliveries"] == len(accepted) == st["by_status"]["201"]


def test_idempotent_replay_returns_the_original_response_and_counts_once(partner: PartnerHandle) -> None:
    async def run() -> list[tuple[int, dict[str, Any], Any]]:
        async with aiohttp.ClientSession() as session:
            doc = delivery("claim-1", 3)
            first = await post(session, partner.url, "key-1", doc)
            again = await post(session, partner.url, "key-1", doc)
            reordered = json.dumps(dict(reversed(list(doc.items()))), indent=2).encode()
            third = await post(session, partner.url, "key-1", None, raw=reordered)
            return [first, again, third, (0, await stats(session, partner.url), None)]

    first, again, third, (_, st, _) = asyncio.run(run())
    assert first[0] == 201 and first[2].get("Idempotent-Replayed") is None
    assert (again[0], again[1]) == (first[0], first[1]) and again[2]["Idempotent-Replayed"] == "true"
    assert (third[0], third[1]) == (first[0], first[1]), "key order and whitespace are not a different body"
    assert st["deliveries_by_business_key"] == {"claim-1": 1}
    assert st["replays"] == 2


def test_same_key_with_a_different_body_is_422_and_not_delivered(partner: PartnerHandle) -> None:
    async def run() -> tuple[int, int, dict[str, Any]]:
        async with aiohttp.ClientSession() as session:
            ok, _, _ = await post(session, partner.url, "key-2", delivery("claim-2", 1, amount="10.00"))
            changed, body, _ = await post(session, partner.url, "key-2", delivery("claim-2", 1, amount="99.00"))
            assert body["error"] == "idempotency_key_reused_with_different_body"
            return ok, changed, await stats(session, partner.url)

    ok, changed, st = asyncio.run(run())
    assert (ok, changed) == (201, 422)
    assert st["deliveries_by_business_key"] == {"claim-2": 1}


def test_missing_idempotency_key_or_bad_body_is_400(partner: PartnerHandle) -> None:
    async def run() -> tuple[list[int], dict[str, Any]]:
        async with aiohttp.ClientSession() as session:
            statuses = [
                (await post(session, partner.url, None, delivery("claim-3")))[0],
                (await post(session, partner.url, "k-nojson", None, raw=b"{not json"))[0],
                (await post(session, partner.url, "k-nobk", {"version": 1, "payload": {}}))[0],
                (await post(session, partner.url, "k-noversion", {"business_key": "x", "payload": {}}))[0],
            ]
            return statuses, await stats(session, partner.url)

    statuses, st = asyncio.run(run())
    assert statuses == [400, 400, 400, 400]
    assert st["deliveries"] == 0 and st["by_status"] == {"400": 4}


@pytest.mark.parametrize("partner", [{**FAST, "fail_rate": 0.3, "seed": 7}], indirect=True)
def test_fault_injection_503s_at_the_configured_rate_reproducibly(partner: PartnerHandle) -> None:
    async def one_pass(session: aiohttp.ClientSession) -> list[int]:
        return [(await post(session, partner.url, f"f-{i}", delivery(f"bk-{i}")))[0] for i in range(300)]

    async def run() -> tuple[list[int], list[int], dict[str, Any], int]:
        async with aiohttp.ClientSession() as session:
            first = await one_pass(session)
            async with session.post(f"{partner.url}/v1/_reset") as resp:
                assert resp.status == 200
            second = await one_pass(session)
            st = await stats(session, partner.url)
            # An injected 503 records nothing: retrying its key eventually delivers it, exactly once.
            failed_key = f"f-{second.index(503)}"
            retry = 503
            for _ in range(20):
                retry = (await post(session, partner.url, failed_key, delivery(failed_key.replace("f", "bk"))))[0]
                if retry != 503:
                    break
            return first, second, st, retry

    first, second, st, retry = asyncio.run(run())
    assert first == second, "the same seed must give the same fault sequence"
    assert set(first) == {201, 503}
    assert 0.22 <= first.count(503) / len(first) <= 0.38
    assert st["deliveries"] == second.count(201)
    assert retry == 201


@pytest.mark.parametrize("partner", [{**FAST, "timeout_rate": 1.0, "hold_s": 3.0}], indirect=True)
def test_held_response_exceeds_the_client_timeout_but_the_delivery_is_kept(partner: PartnerHandle) -> None:
    async def run() -> tuple[float, tuple[int, dict[str, Any], Any], dict[str, Any]]:
        async with aiohttp.ClientSession() as session:
            start = time.monotonic()
            with pytest.raises(asyncio.TimeoutError):
                await post(session, partner.url, "slow-1", delivery("claim-slow"), timeout_s=0.5)
            waited = time.monotonic() - start
            retry = await post(session, partner.url, "slow-1", delivery("claim-slow"), timeout_s=2.0)
            return waited, retry, await stats(session, partner.url)

    waited, retry, st = asyncio.run(run())
    assert 0.4 <= waited < 2.0
    assert retry[0] == 201 and retry[2]["Idempotent-Replayed"] == "true"
    assert st["deliveries_by_business_key"] == {"claim-slow": 1}


@pytest.mark.parametrize("partner", [{**FAST, "latency_ms": 300}], indirect=True)
def test_added_latency_delays_every_delivery(partner: PartnerHandle) -> None:
    async def run() -> tuple[float, int]:
        async with aiohttp.ClientSession() as session:
            with pytest.raises(asyncio.TimeoutError):
                await post(session, partner.url, "lat-1", delivery("claim-lat"), timeout_s=0.1)
            start = time.monotonic()
            status = (await post(session, partner.url, "lat-2", delivery("claim-lat", 2)))[0]
            return time.monotonic() - start, status

    took, status = asyncio.run(run())
    assert status == 201 and took >= 0.3


@pytest.mark.parametrize("partner", [{**FAST, "bearer_token": "local-test-token"}], indirect=True)
def test_bearer_token_is_required(partner: PartnerHandle) -> None:
    async def run() -> list[int]:
        async with aiohttp.ClientSession() as session:
            doc = delivery("claim-auth")
            return [
                (await post(session, partner.url, "a-1", doc))[0],
                (await post(session, partner.url, "a-1", doc, {"Authorization": "Bearer wrong"}))[0],
                (await post(session, partner.url, "a-1", doc, {"Authorization": "Bearer local-test-token"}))[0],
            ]

    assert asyncio.run(run()) == [401, 401, 201]


@pytest.mark.parametrize("partner", [{**FAST, "hmac_secret": b"local-shared-secret"}], indirect=True)
def test_hmac_signature_and_replay_window_are_enforced(partner: PartnerHandle) -> None:
    secret = b"local-shared-secret"

    async def run() -> tuple[list[int], dict[str, Any]]:
        async with aiohttp.ClientSession() as session:
            body = json.dumps(delivery("claim-hmac")).encode()
            other = json.dumps(delivery("claim-hmac", 2)).encode()
            now = int(time.time())

            async def send(headers: dict[str, str]) -> int:
                return (await post(session, partner.url, "h-1", None, headers, raw=body))[0]

            statuses = [
                await send({}),
                await send(sign(b"wrong-secret", body, now)),
                await send(sign(secret, other, now)),  # a signature for another body
                await send(sign(secret, body, now - 3600)),  # outside the replay window
                await send(sign(secret, body, now)),
            ]
            return statuses, await stats(session, partner.url)

    statuses, st = asyncio.run(run())
    assert statuses == [401, 401, 401, 401, 201]
    assert st["by_status"] == {"201": 1, "401": 4}
    assert st["deliveries_by_business_key"] == {"claim-hmac": 1}


def test_stats_count_deliveries_per_business_key_exactly_and_reset_clears_them(partner: PartnerHandle) -> None:
    plan = {"claim-a": 3, "claim-b": 1, "claim-c": 2}

    async def run() -> tuple[dict[str, Any], dict[str, Any]]:
        async with aiohttp.ClientSession() as session:
            for bk, versions in plan.items():
                for v in range(1, versions + 1):
                    doc = delivery(bk, v)
                    assert (await post(session, partner.url, f"{bk}-v{v}", doc))[0] == 201
                    assert (await post(session, partner.url, f"{bk}-v{v}", doc))[0] == 201  # a replay
            assert (await post(session, partner.url, "claim-a-v1", delivery("claim-a", 9)))[0] == 422
            assert (await post(session, partner.url, None, delivery("claim-b", 5)))[0] == 400
            before = await stats(session, partner.url)
            async with session.post(f"{partner.url}/v1/_reset") as resp:
                assert resp.status == 200
            return before, await stats(session, partner.url)

    before, after = asyncio.run(run())
    assert before["deliveries_by_business_key"] == plan
    assert before["deliveries"] == 6 and before["replays"] == 6
    assert before["by_status"] == {"201": 12, "400": 1, "422": 1}
    assert after["requests"] == 0 and after["deliveries_by_business_key"] == {}



OAUTH_ID, OAUTH_SECRET = "test-client", "test-client-secret"  # made up for the stand-in; not a credential


@pytest.fixture
def oauth_partner(request: pytest.FixtureRequest) -> Iterator[PartnerHandle]:
    """A stand-in that issues its own OAuth2 bearer tokens; `token_ttl_s` via indirect parametrize."""
    ttl = getattr(request, "param", 3600)
    config = PartnerConfig(rate=FAST["rate"], burst=int(FAST["burst"]), client_id=OAUTH_ID,
                           client_secret=OAUTH_SECRET, token_ttl_s=ttl)
    handle = start_in_thread(config)
    yield handle
    handle.stop()


def basic(client_id: str, secret: str) -> dict[str, str]:
    """An HTTP Basic `Authorization` header."""
    return {"Authorization": "Basic " + base64.b64encode(f"{client_id}:{secret}".encode()).decode()}


async def token_request(
    session: aiohttp.ClientSession, url: str, form: dict[str, str], headers: dict[str, str] | None = None,
) -> tuple[int, dict[str, Any], Any]:
    """POST /oauth2/token as a form; return status, JSON body and response headers."""
    async with session.post(f"{url}/oauth2/token", data=form, headers=headers) as resp:
        return resp.status, await resp.json(), resp.headers


def test_oauth_client_credentials_issue_tokens_that_deliveries_require(oauth_partner: PartnerHandle) -> None:
    url = oauth_partner.url
    grant = {"grant_type": "client_credentials"}

    async def run() -> dict[str, Any]:
        async with aiohttp.ClientSession() as session:
            out: dict[str, Any] = {}
            out["basic"] = await token_request(session, url, grant, basic(OAUTH_ID, OAUTH_SECRET))
            out["form"] = await token_request(
                session, url, grant | {"client_id": OAUTH_ID, "client_secret": OAUTH_SECRET})
            out["wrong_secret"] = await token_request(session, url, grant, basic(OAUTH_ID, "wrong"))
            out["wrong_grant"] = await token_request(
                session, url, {"grant_type": "password"}, basic(OAUTH_ID, OAUTH_SECRET))
            token = out["basic"][1]["access_token"]
            doc = delivery("claim-oauth")
            out["no_token"] = await post(session, url, "o-1", doc)
            out["bad_token"] = await post(session, url, "o-1", doc, {"Authorization": "Bearer not-issued"})
            out["with_token"] = await post(session, url, "o-1", doc, {"Authorization": f"Bearer {token}"})
            form_token = out["form"][1]["access_token"]
            out["form_token"] = await post(session, url, "o-2", delivery("claim-oauth", 2),
                                           {"Authorization": f"Bearer {form_token}"})
            out["stats"] = await stats(session, url)
            return out

    out = asyncio.run(run())
    for how in ("basic", "form"):
        status, body, headers = out[how]
        assert status == 200, body
        assert isinstance(body["access_token"], str) and len(body["access_token"]) >= 16
        assert body["token_type"] == "Bearer" and body["expires_in"] == 3600
        assert headers["Cache-Control"] == "no-store"
    assert out["basic"][1]["access_token"] != out["form"][1]["access_token"]
    assert out["wrong_secret"][:2] == (401, {"error": "invalid_client"})
    assert out["wrong_grant"][:2] == (400, {"error": "unsupported_grant_type"})
    assert out["no_token"][:2] == (401, {"error": "unauthorized", "reason": "unknown_access_token"})
    assert out["bad_token"][:2] == (401, {"error": "unauthorized", "reason": "unknown_access_token"})
    assert out["with_token"][0] == 201 and out["form_token"][0] == 201
    assert out["stats"]["deliveries_by_business_key"] == {"claim-oauth": 2}
    assert out["stats"]["by_status"] == {"201": 2, "401": 2}, "token requests are not deliveries"


@pytest.mark.parametrize("oauth_partner", [1], indirect=True)
def test_oauth_token_expires_after_its_ttl(oauth_partner: PartnerHandle) -> None:
    url = oauth_partner.url

    async def run() -> tuple[int, list[tuple[int, dict[str, Any]]]]:
        async with aiohttp.ClientSession() as session:
            status, body, _ = await token_request(session, url, {"grant_type": "client_credentials"},
                                                  basic(OAUTH_ID, OAUTH_SECRET))
            assert status == 200, body
            bearer = {"Authorization": f"Bearer {body['access_token']}"}
            fresh = await post(session, url, "e-1", delivery("claim-exp"), bearer)
            await asyncio.sleep(1.2)
            stale = await post(session, url, "e-2", delivery("claim-exp", 2), bearer)
            return body["expires_in"], [fresh[:2], stale[:2]]

    expires_in, (fresh, stale) = asyncio.run(run())
    assert expires_in == 1
    assert fresh[0] == 201
    assert stale == (401, {"error": "unauthorized", "reason": "expired_access_token"})


def test_token_endpoint_without_oauth_configured_refuses(partner: PartnerHandle) -> None:
    async def run() -> tuple[int, dict[str, Any], Any]:
        async with aiohttp.ClientSession() as session:
            return await token_request(session, partner.url, {"grant_type": "client_credentials"},
                                       basic("anyone", "anything"))

    assert asyncio.run(run())[:2] == (401, {"error": "invalid_client"})


@pytest.mark.parametrize("partner", [{**FAST, "reject_fraction": 0.3}], indirect=True)
def test_reject_fraction_refuses_the_same_business_keys_every_time(partner: PartnerHandle) -> None:
    keys = [f"claim-{i:03d}" for i in range(60)]
    predicted = {bk for bk in keys if rejected(partner.config, bk)}
    assert 0 < len(predicted) < len(keys), "the sample must hold both outcomes"

    async def one_pass(session: aiohttp.ClientSession, tag: str) -> dict[str, tuple[int, dict[str, Any]]]:
        out = {}
        for bk in keys:
            status, body, _ = await post(session, partner.url, f"{tag}-{bk}", delivery(bk))
            out[bk] = (status, body)
        return out

    async def run() -> tuple[dict[str, tuple[int, dict[str, Any]]], dict[str, tuple[int, dict[str, Any]]],
                             dict[str, Any]]:
        async with aiohttp.ClientSession() as session:
            first = await one_pass(session, "a")
            again = await one_pass(session, "a")  # the same keys: a retry gets the same answer
            return first, again, await stats(session, partner.url)

    first, again, st = asyncio.run(run())
    refusal = (422, {"error": "validation_failed", "code": "member_not_found"})
    assert {bk for bk, (status, _) in first.items() if status == 422} == predicted
    assert all(first[bk] == refusal and again[bk] == refusal for bk in predicted)
    assert all(first[bk][0] == 201 and again[bk][0] == 201 for bk in keys if bk not in predicted)
    assert st["deliveries_by_business_key"] == {bk: 1 for bk in keys if bk not in predicted}
    assert st["by_status"]["422"] == 2 * len(predicted)


def test_any_post_path_is_a_delivery(partner: PartnerHandle) -> None:
    async def run() -> tuple[list[tuple[int, dict[str, Any]]], dict[str, Any]]:
        async with aiohttp.ClientSession() as session:
            out = []
            for path, key, doc in [("/v2/submissions", "p-1", delivery("claim-path")),
                                   ("/v2/submissions", "p-1", delivery("claim-path")),  # a replay
                                   ("/api/claims/intake", "p-2", delivery("claim-path", 2)),
                                   ("/v2/submissions", None, delivery("claim-path", 3))]:
                headers = {"Idempotency-Key": key} if key else {}
                async with session.post(f"{partner.url}{path}", json=doc, headers=headers) as resp:
                    out.append((resp.status, await resp.json()))
            return out, await stats(session, partner.url)

    out, st = asyncio.run(run())
    assert [s for s, _ in out] == [201, 201, 201, 400]
    assert out[0][1]["business_key"] == "claim-path" and out[1][1] == out[0][1]
    assert out[3][1] == {"error": "missing_idempotency_key"}
    assert st["deliveries_by_business_key"] == {"claim-path": 2} and st["replays"] == 1


def test_stats_delivered_span_covers_first_to_last_new_delivery(partner: PartnerHandle) -> None:
    async def run() -> tuple[dict[str, Any], dict[str, Any], dict[str, Any], float]:
        async with aiohttp.ClientSession() as session:
            empty = await stats(session, partner.url)
            assert (await post(session, partner.url, "s-1", delivery("claim-s1")))[0] == 201
            one = await stats(session, partner.url)
            start = time.monotonic()
            await asyncio.sleep(0.3)
            assert (await post(session, partner.url, "s-2", delivery("claim-s2")))[0] == 201
            elapsed = time.monotonic() - start
            await asyncio.sleep(0.3)
            # Neither a replay nor a refusal moves the end of the span.
            assert (await post(session, partner.url, "s-2", delivery("claim-s2")))[0] == 201
            assert (await post(session, partner.url, None, delivery("claim-s3")))[0] == 400
            return empty, one, await stats(session, partner.url), elapsed

    empty, one, two, elapsed = asyncio.run(run())
    assert empty["delivered_span_s"] == 0.0 and one["delivered_span_s"] == 0.0
    assert 0.3 <= two["delivered_span_s"] <= elapsed + 0.05
    assert two["deliveries"] == 2 and two["replays"] == 1



def test_process_mode_serves_on_loopback_logs_no_phi_and_stops_on_sigterm(tmp_path: Path) -> None:
    port, log_file = free_loopback_port(), tmp_path / "partner.log"
    argv = [sys.executable, "-m", "infra.local.partner", "--port", str(port), "--rate", "100", "--burst", "10",
            "--fail-rate", "0", "--latency-ms", "0", "--seed", "1", "--log-file", str(log_file)]
    proc = subprocess.Popen(argv, cwd=Path(__file__).resolve().parents[2], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE)
    try:
        url, deadline = f"http://127.0.0.1:{port}", time.monotonic() + 20
        while "listening" not in (log_file.read_text() if log_file.exists() else ""):
            assert proc.poll() is None, proc.stderr.read().decode() if proc.stderr else ""
            assert time.monotonic() < deadline, "stand-in did not start in 20 s"
            time.sleep(0.1)
        listening = [c.laddr for c in psutil.Process(proc.pid).net_connections("tcp") if c.status == "LISTEN"]
        assert listening and all(addr.ip == "127.0.0.1" for addr in listening)

        async def run() -> int:
            async with aiohttp.ClientSession() as session:
                return (await post(session, url, "proc-key", delivery("MRN-0042-SECRET", 1, name="Jane Roe")))[0]

        assert asyncio.run(run()) == 201
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=10) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    text = log_file.read_text()
    assert "status=201" in text and "stopping: requests=1 deliveries=1" in text
    assert "MRN-0042-SECRET" not in text and "Jane Roe" not in text and "proc-key" not in text
    assert [p.name for p in tmp_path.iterdir()] == ["partner.log"]
    assert proc.stdout is not None and proc.stdout.read() == b""
