"""Deliver one curated record to one partner: ledger lease, rate gate, signed POST, retries, ack or dead letter.

`PartnerSender.deliver` is the whole per-record protocol, as an asyncio coroutine; the Flink job
(jobs/partner_delivery.py) only wraps it in an AsyncFunction, and tests drive it directly against
the partner stand-in and the ledger on the local DynamoDB API.

Per record, after the records of the same business key that came before it in this subtask (the job
routes one key to one subtask, so one key's versions reach the partner in the order they were written):
1. `ledger.begin` (conditional write): SKIP_ACKED -> nothing is sent; SKIP_DEAD -> the dead letter is
   emitted again (same id); BUSY -> another worker holds a live lease: wait for it to run out and ask
   again; SEND -> this worker holds the lease for one attempt.
2. The body is built from the protected record by the contract's mapping; the fields the contract
   reveals (granted by the access rules at start-up) come from the sealed copy, opened through KMS.
3. The gate: circuit breaker (an open breaker holds records without spending attempts), the
   concurrency bound, a partner-wide pause after a 429 (its Retry-After), and this subtask's share of
   the partner's token bucket (udfs.delivery.share: the shares sum exactly to the partner's limit).
4. POST with the idempotency key header and auth (OAuth2 bearer or HMAC signature), no redirects.
5. The answer is classified (udfs.delivery.classify / next_step): 2xx -> `ledger.ack`; 408/425/429/
   5xx/timeouts/connection errors -> back off with full jitter (at least Retry-After) and go to 1
   with the same key, up to the retry policy's bound, then dead letter; 400/404/409/413/422 -> dead
   letter at once; 401/403 -> refresh the token and retry `auth_retries` times, then `DeliveryFailed`
   (the job fails loudly); anything else (3xx, 405, 415...) -> `DeliveryFailed`: our request is wrong
   for every record.

Dead letters carry codes, digests and the partner's error code (when it is a short token), never a
body: PHI-free by construction.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import random
import re
import time
from collections import Counter, deque
from collections.abc import AsyncIterator, Callable, Mapping
from concurrent.futures import Executor
from dataclasses import asdict, dataclass
from functools import partial
from typing import Any, TypeVar

import aiohttp
import orjson

from connectors.partners.auth import AuthError, Credentials, OAuthTokens, TokenUnavailable, hmac_headers
from connectors.partners.ledger import PARTNER_CODE, AckResponse, DeliveryLedger, LeaseLost, Verdict
from schemas.partner_contract import PartnerContract
from udfs.delivery import (
    Action,
    CircuitBreaker,
    Classification,
    ErrorKind,
    RateShare,
    RetryPolicy,
    TokenBucket,
    classify,
    idempotency_key,
    next_step,
    parse_retry_after,
    record_version,
)
from udfs.partner_body import BodyError, build_body

T = TypeVar("T")
_REF = re.compile(r"[A-Za-z0-9._:/-]{1,128}")
MAX_ANSWER_BYTES = 16 * 1024  # an answer is read for its status, error code and reference only
LATENCY_WINDOW = 4096

DELIVERED, ALREADY_DELIVERED = "delivered", "already_delivered"
DEAD_LETTER, ALREADY_DEAD = "dead_letter", "already_dead"


class DeliveryFailed(Exception):
    """A fatal delivery error (auth refused after the retries, a request the partner cannot take at all).

    The job fails and restarts from its last checkpoint; the ledger keeps the record IN_FLIGHT, so it
    is re-sent with the same key once the cause is fixed. The message is PHI-free.
    """


@dataclass(frozen=True)
class Outcome:
    """What happened to one record for one partner (PHI-free)."""

    partner: str
    result: str  # delivered | already_delivered | dead_letter | already_dead
    feed: str
    record_type: str
    record_id: str
    business_key: str
    idempotency_key: str
    attempts: int
    reason: str
    status: int | None = None
    partner_error: str | None = None
    partner_ref: str | None = None
    latency_ms: int | None = None  # curated record's ingest time -> acknowledgement

    def dead_letter(self, dead_at_ms: int) -> str | None:
        """The dead-letter message for a dead or already-dead outcome (None otherwise); its id is deterministic."""
        if self.result not in (DEAD_LETTER, ALREADY_DEAD):
            return None
        letter = {
            "dead_letter_id": "p" + self.idempotency_key.removeprefix("d1-"),
            "stage": "partner_delivery",
            "reason_code": self.reason,
            "category": "retries_exhausted" if self.reason.startswith("retries_exhausted") else "refused",
            **{k: v for k, v in asdict(self).items() if k not in ("result", "reason", "latency_ms", "partner_ref")},
            "dead_at_ms": dead_at_ms,
        }
        return json.dumps(letter, sort_keys=True, separators=(",", ":"))


class DeliveryStats:
    """Counters and a latency window for one partner in one subtask (exported as Flink metrics)."""

    def __init__(self) -> None:
        self.counts: Counter[str] = Counter()
        self.latencies_ms: deque[int] = deque(maxlen=LATENCY_WINDOW)

    def percentile_ms(self, q: float) -> int:
        """The q-quantile (0..1) of the recent ack latencies; 0 before the first ack."""
        if not self.latencies_ms:
            return 0
        ordered = sorted(self.latencies_ms)
        return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


class _Gate:
    """Breaker, concurrency bound, 429 pause and token bucket of one partner in one subtask (one event loop)."""

    def __init__(self, contract: PartnerContract, part: RateShare, concurrency: int) -> None:
        self.bucket = TokenBucket.for_share(part, time.monotonic_ns)
        self.breaker = CircuitBreaker(contract.failure_threshold, contract.cooldown_s, time.monotonic)
        self.concurrency = concurrency
        self._slots: asyncio.Semaphore | None = None
        self.paused_until = 0.0

    @property
    def slots(self) -> asyncio.Semaphore:
        if self._slots is None:  # created on the event loop that uses it
            self._slots = asyncio.Semaphore(self.concurrency)
        return self._slots

    async def open(self) -> None:
        """Wait until the breaker lets a request through."""
        while not self.breaker.allow():
            await asyncio.sleep(min(1.0, max(0.05, self.breaker.retry_in_s())))

    async def token(self) -> None:
        """Wait out a 429 pause, then take one token of this subtask's share."""
        while True:
            pause = self.paused_until - time.monotonic()
            if pause > 0:
                await asyncio.sleep(pause)
                continue
            if self.bucket.try_acquire():
                return
            await asyncio.sleep(max(0.001, self.bucket.wait_s()))

    def pause(self, seconds: float) -> None:
        """Hold every send to this partner for `seconds` (the partner's Retry-After)."""
        self.paused_until = max(self.paused_until, time.monotonic() + seconds)


class KeyOrder:
    """Turns per key: the records of one key are handled one at a time, in the order they asked.

    asyncio.Lock wakes its waiters first in, first out, and a record asks for its turn before its
    first await, so the order is the order `deliver` was called in: the order the subtask read them.
    """

    def __init__(self) -> None:
        self._locks: dict[str, asyncio.Lock] = {}
        self._waiting: Counter[str] = Counter()

    @contextlib.asynccontextmanager
    async def turn(self, key: str) -> AsyncIterator[None]:
        """Hold `key` until the block ends; forget it once nobody waits for it."""
        lock = self._locks.setdefault(key, asyncio.Lock())
        self._waiting[key] += 1
        try:
            async with lock:
                yield
        finally:
            self._waiting[key] -= 1
            if not self._waiting[key]:
                del self._waiting[key], self._locks[key]

    def __len__(self) -> int:
        return len(self._locks)


class PartnerSender:
    """One partner's delivery protocol in one subtask; all methods run on one event loop."""

    def __init__(self, contract: PartnerContract, url: str, token_url: str | None, credentials: Credentials,
                 ledger: DeliveryLedger, part: RateShare, concurrency: int, owner: str, executor: Executor,
                 open_sealed: Callable[[Mapping[str, Any]], dict[str, Any]] | None = None,
                 rng: random.Random | None = None) -> None:
        self.contract, self.url, self.ledger, self.owner = contract, url, ledger, owner
        self.credentials, self._executor, self._open_sealed = credentials, executor, open_sealed
        self.policy = RetryPolicy(**contract.retry)
        self.gate = _Gate(contract, part, concurrency)
        self.rng = rng or random.Random()  # noqa: S311 - jitter, not crypto
        self.stats = DeliveryStats()
        self.tokens = (OAuthTokens(token_url or contract.auth.token_url or "", contract.auth.scope, credentials,
                                   contract.timeout_s) if contract.auth.type == "oauth2_client_credentials" else None)
        self._timeout = aiohttp.ClientTimeout(total=contract.timeout_s)
        self.order = KeyOrder()

    async def _blocking(self, call: Callable[[], T]) -> T:
        return await asyncio.get_running_loop().run_in_executor(self._executor, call)

    def _body(self, message: Mapping[str, Any]) -> bytes:
        mapping = self.contract.payload[message["record_type"]]
        protected = orjson.loads(message["payload"])
        opened = None
        if mapping.reveal:
            if self._open_sealed is None:
                raise DeliveryFailed(f"partner {self.contract.partner}: the mapping reveals fields but the sender "
                                     "has no key access configured")
            if not message.get("sealed"):  # e.g. written by an ingest job older than the partner topics' sealed copy
                raise BodyError("sealed_copy_missing")
            opened = self._open_sealed(message)
        return orjson.dumps(build_body(mapping, message, protected, opened))

    async def _auth_headers(self, session: aiohttp.ClientSession, body: bytes) -> dict[str, str]:
        if self.tokens is not None:
            return await self.tokens.header(session)
        return hmac_headers(self.contract.auth, self.credentials.hmac_key or b"", body, int(time.time()))

    async def _send(self, session: aiohttp.ClientSession, key: str,
                    body: bytes) -> tuple[Classification, int | None, dict[str, Any], str | None]:
        """One request: (classification, status, parsed small JSON answer, Retry-After header)."""
        headers = {self.contract.idempotency_header: key, "Content-Type": "application/json"}
        try:
            headers |= await self._auth_headers(session, body)
            async with session.request(self.contract.method, self.url, data=body, headers=headers,
                                       timeout=self._timeout, allow_redirects=False) as response:
                raw = await response.content.read(MAX_ANSWER_BYTES)
                try:
                    answer = json.loads(raw) if raw else {}
                except ValueError:
                    answer = {}
                answer = answer if isinstance(answer, dict) else {}
                return classify(response.status), response.status, answer, response.headers.get("Retry-After")
        except TimeoutError:
            return classify(None, timed_out=True), None, {}, None
        except AuthError:  # the token endpoint refused our client credentials: the partner's 401
            return classify(401), None, {}, None
        except (aiohttp.ClientError, TokenUnavailable, OSError):
            return classify(None), None, {}, None

    def _outcome(self, message: Mapping[str, Any], key: str, result: str, attempts: int, reason: str,
                 **extra: Any) -> Outcome:
        return Outcome(partner=self.contract.partner, result=result, feed=message["feed"],
                       record_type=message["record_type"], record_id=message["record_id"],
                       business_key=message["business_key"], idempotency_key=key, attempts=attempts, reason=reason,
                       **extra)

    async def deliver(self, session: aiohttp.ClientSession, message: Mapping[str, Any]) -> Outcome:
        """Deliver one curated record (its JSON as a dict) to this partner, after the earlier ones of its key."""
        async with self.order.turn(str(message["business_key"])):
            return await self._deliver(session, message)

    async def _deliver(self, session: aiohttp.ClientSession, message: Mapping[str, Any]) -> Outcome:
        partner, lease_s = self.contract.partner, self.contract.lease_s
        key = idempotency_key(partner, message["business_key"], record_version(message))
        if message.get("record_type") not in self.contract.payload:
            raise DeliveryFailed(f"partner {partner}: the contract maps no {message.get('record_type')} records, "
                                 "but the routing sends them (fix the feed contract's routes or the partner's)")
        body: bytes | None = None
        attempt = auth_refusals = 0
        while True:
            decision = await self._blocking(partial(self.ledger.begin, partner, key, self.owner, lease_s))
            if decision.verdict is Verdict.SKIP_ACKED:
                self.stats.counts["skipped_acked"] += 1
                return self._outcome(message, key, ALREADY_DELIVERED, decision.attempts, "already_acked")
            if decision.verdict is Verdict.SKIP_DEAD:
                self.stats.counts["skipped_dead"] += 1
                status = decision.response.status if decision.response else None
                return self._outcome(message, key, ALREADY_DEAD, decision.attempts, decision.reason or "dead",
                                     status=status, partner_error=decision.partner_error)
            if decision.verdict is Verdict.BUSY:  # a crashed or concurrent worker's lease: wait for it to end
                self.stats.counts["busy_waits"] += 1
                remaining_s = ((decision.lease_expires_ms or 0) - time.time() * 1000) / 1000
                await asyncio.sleep(min(lease_s, max(0.1, remaining_s)) + self.rng.uniform(0, 0.2))
                continue
            attempt += 1
            if body is None:
                try:
                    body = await self._blocking(partial(self._body, message))
                except BodyError as err:  # this record cannot be mapped for this partner: nothing is sent
                    return await self._dead(message, key, decision.attempts, err.reason, None, {})
            await self.gate.open()
            async with self.gate.slots:
                await self.gate.token()
                outcome, status, answer, retry_after = await self._send(session, key, body)
            wait_s = parse_retry_after(retry_after, time.time())
            if status == 429:  # the partner is well, we are too fast: pause, but it is no breaker failure
                self.stats.counts["rate_limited"] += 1
                self.gate.pause(min(wait_s if wait_s is not None else 1.0, self.policy.max_retry_after_s))
                self.gate.breaker.release()
            elif outcome.kind in (ErrorKind.OK, ErrorKind.SKIPPABLE):
                self.gate.breaker.record_success()
            else:
                self.gate.breaker.record_failure()
            step = next_step(outcome, attempt, self.policy, self.rng, wait_s, auth_refusals)
            auth_refusals += outcome.refresh_auth
            if step.action is Action.ACK:
                return await self._ack(message, key, decision.attempts, status or 200, answer)
            if step.action is Action.RETRY:
                self.stats.counts["retried"] += 1
                if step.refresh_auth and self.tokens is not None:
                    self.tokens.invalidate()
                await asyncio.sleep(step.delay_s)
                continue
            if step.action is Action.DEAD_LETTER:
                return await self._dead(message, key, decision.attempts, step.reason, status, answer)
            raise DeliveryFailed(f"partner {partner}: {step.reason} after {attempt} attempt(s); "
                                 "fix the credentials or the contract, then restart")

    async def _ack(self, message: Mapping[str, Any], key: str, attempts: int, status: int,
                   answer: Mapping[str, Any]) -> Outcome:
        field = self.contract.reference_field
        ref = answer.get(field) if field else None
        ref = ref if isinstance(ref, str) and _REF.fullmatch(ref) else None
        try:
            await self._blocking(partial(self.ledger.ack, self.contract.partner, key, self.owner,
                                         AckResponse(status, ref)))
        except LeaseLost:
            # Our lease ran out mid-send and another worker re-sent with the same key; it records the ack.
            self.stats.counts["lease_lost"] += 1
        latency = None
        if isinstance(message.get("ingested_at_ms"), int):
            latency = max(0, int(time.time() * 1000) - message["ingested_at_ms"])
            self.stats.latencies_ms.append(latency)
        self.stats.counts["delivered"] += 1
        return self._outcome(message, key, DELIVERED, attempts, f"http_{status}", status=status, partner_ref=ref,
                             latency_ms=latency)

    async def _dead(self, message: Mapping[str, Any], key: str, attempts: int, reason: str, status: int | None,
                    answer: Mapping[str, Any]) -> Outcome:
        code = answer.get("code") or answer.get("error")
        code = code if isinstance(code, str) and PARTNER_CODE.fullmatch(code) else None
        try:
            await self._blocking(partial(self.ledger.dead, self.contract.partner, key, self.owner, reason, status,
                                         code))
        except LeaseLost:
            self.stats.counts["lease_lost"] += 1
        self.stats.counts["dead_lettered"] += 1
        return self._outcome(message, key, DEAD_LETTER, attempts, reason, status=status, partner_error=code)

