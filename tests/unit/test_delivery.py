"""Partner delivery building blocks: idempotency keys, rate shares, back-off, Retry-After, breaker, classes."""

from __future__ import annotations

import random
from fractions import Fraction

import pytest

from udfs.delivery import (
    Action,
    BreakerState,
    CircuitBreaker,
    ErrorKind,
    RetryPolicy,
    TokenBucket,
    backoff_s,
    classify,
    idempotency_key,
    next_step,
    parse_retry_after,
    record_version,
    share,
)

NS = 1_000_000_000


class FakeClock:
    """A clock the test moves by hand (nanoseconds for buckets, seconds for the breaker)."""

    def __init__(self) -> None:
        self.now = 0

    def ns(self) -> int:
        return self.now

    def s(self) -> float:
        return self.now / NS


# Idempotency keys --------------------------------------------------------------------------------

def test_idempotency_key_is_stable_and_distinct_per_partner_fact_and_version() -> None:
    key = idempotency_key("clearwater_health", "bk-1", "rec-1")
    assert key == idempotency_key("clearwater_health", "bk-1", "rec-1")
    assert key.startswith("d1-") and len(key) == 35 and all(c in "0123456789abcdef" for c in key[3:])
    others = {idempotency_key("acme_health", "bk-1", "rec-1"), idempotency_key("clearwater_health", "bk-2", "rec-1"),
              idempotency_key("clearwater_health", "bk-1", "rec-2"),
              # length-prefixed parts: moving a character across a boundary is a different key
              idempotency_key("clearwater_health", "bk-1r", "ec-1")}
    assert key not in others and len(others) == 4
    # pinned: a change in derivation would re-send everything once, so it must be deliberate
    assert key == "d1-" + __import__("hashlib").sha256(b"2:d117:clearwater_health4:bk-15:rec-1").hexdigest()[:32]


def test_record_version_is_the_record_id_and_a_record_without_one_is_refused() -> None:
    assert record_version({"record_id": "r-9", "payload": {"x": 1}}) == "r-9"
    with pytest.raises(ValueError, match="record_id"):
        record_version({"payload": {}})
    with pytest.raises(ValueError, match="business_key"):
        idempotency_key("p", "", "r")


# Rate shares and token buckets -------------------------------------------------------------------

@pytest.mark.parametrize("parallelism", range(1, 9))
@pytest.mark.parametrize(("rate", "burst"), [(50, 100), (7, 8), ("0.5", 9), (33.3, 17)])
def test_shares_sum_exactly_to_the_global_limit(rate: float | str, burst: int, parallelism: int) -> None:
    if burst < parallelism:
        with pytest.raises(ValueError, match="burst"):
            share(rate, burst, 0, parallelism)
        return
    parts = [share(rate, burst, i, parallelism) for i in range(parallelism)]
    assert sum(p.rate for p in parts) == Fraction(str(rate))
    assert sum(p.burst for p in parts) == burst
    assert max(p.burst for p in parts) - min(p.burst for p in parts) <= 1
    assert parts == [share(rate, burst, i, parallelism) for i in range(parallelism)]  # deterministic


@pytest.mark.parametrize("parallelism", range(1, 9))
def test_subtask_buckets_together_never_exceed_the_global_limit(parallelism: int) -> None:
    rate, burst, step_ns, seconds = Fraction(37, 2), 24, NS // 200, 6  # 18.5/s; 5 ms steps
    clock = FakeClock()
    buckets = [TokenBucket.for_share(share(rate, burst, i, parallelism), clock.ns) for i in range(parallelism)]
    sent: list[int] = []  # times of every request, all subtasks
    for tick in range(seconds * NS // step_ns + 1):
        clock.now = tick * step_ns
        for bucket in buckets:  # each subtask sends as fast as its bucket lets it
            while bucket.try_acquire():
                sent.append(clock.now)
    # Over every window [t0, t1] at most burst + rate * (t1 - t0) requests, and the limit is used.
    for i, start in enumerate(sent):
        for j in range(i, len(sent)):
            assert j - i + 1 <= burst + rate * Fraction(sent[j] - start, NS)
    assert len(sent) >= burst + rate * seconds - parallelism


def test_bucket_wait_and_limits() -> None:
    clock = FakeClock()
    bucket = TokenBucket(2, 2, clock.ns)
    assert bucket.try_acquire() and bucket.try_acquire() and not bucket.try_acquire()
    assert bucket.wait_s() == pytest.approx(0.5)
    clock.now = NS // 2
    assert bucket.wait_s() == 0.0 and bucket.try_acquire()
    with pytest.raises(ValueError, match="never fit"):
        bucket.wait_s(3)
    with pytest.raises(ValueError):
        share(0, 4, 0, 1)
    with pytest.raises(ValueError):
        share(1, 4, 4, 4)


# Back-off and Retry-After ------------------------------------------------------------------------

def test_full_jitter_is_bounded_by_attempt_and_cap() -> None:
    policy = RetryPolicy(max_attempts=10, base_delay_s=0.5, max_delay_s=8)
    rng = random.Random(7)
    for attempt in range(1, 12):
        ceiling = min(8.0, 0.5 * 2 ** (attempt - 1))
        delays = [backoff_s(attempt, policy, rng) for _ in range(300)]
        assert all(0 <= d <= ceiling for d in delays)
        assert max(delays) > ceiling * 0.8  # jitter spreads over the whole range, not a fixed delay
    assert backoff_s(10_000, policy, rng) <= 8  # no overflow for absurd attempt numbers


def test_retry_after_seconds_and_http_dates() -> None:
    now = 1_700_000_000.0  # 2023-11-14T22:13:20Z
    assert parse_retry_after("120", now) == 120.0
    assert parse_retry_after(" 0 ", now) == 0.0
    assert parse_retry_after("Tue, 14 Nov 2023 22:14:20 GMT", now) == pytest.approx(60.0)
    assert parse_retry_after("Tue, 14 Nov 2023 22:00:00 GMT", now) == 0.0  # in the past: now
    for bad in (None, "", "-5", "1.5", "soon", "Tue, 99 Nov 2023 99:99:99 GMT"):
        assert parse_retry_after(bad, now) is None


# Classification and next step --------------------------------------------------------------------

@pytest.mark.parametrize(("status", "timed_out", "kind"), [
    (200, False, ErrorKind.OK), (201, False, ErrorKind.OK), (204, False, ErrorKind.OK),
    (429, False, ErrorKind.RETRIABLE), (500, False, ErrorKind.RETRIABLE), (502, False, ErrorKind.RETRIABLE),
    (503, False, ErrorKind.RETRIABLE), (504, False, ErrorKind.RETRIABLE), (408, False, ErrorKind.RETRIABLE),
    (None, True, ErrorKind.RETRIABLE), (None, False, ErrorKind.RETRIABLE),
    (400, False, ErrorKind.SKIPPABLE), (404, False, ErrorKind.SKIPPABLE), (409, False, ErrorKind.SKIPPABLE),
    (422, False, ErrorKind.SKIPPABLE), (413, False, ErrorKind.SKIPPABLE),
    (401, False, ErrorKind.FATAL), (403, False, ErrorKind.FATAL), (405, False, ErrorKind.FATAL),
    (301, False, ErrorKind.FATAL), (415, False, ErrorKind.FATAL),
])
def test_classification_table(status: int | None, timed_out: bool, kind: ErrorKind) -> None:
    result = classify(status, timed_out=timed_out)
    assert result.kind is kind
    assert result.refresh_auth == (status in (401, 403))


def test_next_step_never_retries_without_bound() -> None:
    policy, rng = RetryPolicy(max_attempts=3, base_delay_s=1, max_delay_s=4, auth_retries=1), random.Random(1)
    assert next_step(classify(200), 1, policy, rng).action is Action.ACK
    assert next_step(classify(422), 1, policy, rng) == next_step(classify(422), 1, policy, rng)
    assert next_step(classify(422), 1, policy, rng).action is Action.DEAD_LETTER
    first, second = next_step(classify(503), 1, policy, rng), next_step(classify(503), 2, policy, rng)
    assert first.action is second.action is Action.RETRY and 0 <= first.delay_s <= 1 and 0 <= second.delay_s <= 2
    last = next_step(classify(503), 3, policy, rng)
    assert (last.action, last.reason) == (Action.DEAD_LETTER, "retries_exhausted_http_503")
    # Retry-After is honoured (at least), up to max_retry_after_s
    assert next_step(classify(429), 1, policy, rng, retry_after_s=42).delay_s == 42
    assert next_step(classify(429), 1, policy, rng, retry_after_s=10**6).delay_s == policy.max_retry_after_s
    auth = next_step(classify(401), 1, policy, rng)
    assert auth.action is Action.RETRY and auth.refresh_auth
    assert next_step(classify(401), 2, policy, rng, auth_refusals_before=1).action is Action.FAIL
    # A first 401 after transient failures (a partner back from an outage that no longer honours the old token)
    # refreshes the token, even at or past the last retriable attempt: it is not a credentials failure yet.
    late = next_step(classify(401), 3, policy, rng)
    assert late.action is Action.RETRY and late.refresh_auth
    assert next_step(classify(405), 1, policy, rng).action is Action.FAIL


# Circuit breaker -----------------------------------------------------------------------------------

def test_breaker_opens_at_threshold_probes_after_cooldown_and_closes_or_reopens() -> None:
    clock = FakeClock()
    breaker = CircuitBreaker(failure_threshold=3, cooldown_s=10, clock=clock.s)
    assert breaker.state is BreakerState.CLOSED and breaker.allow()
    breaker.record_failure()
    breaker.record_failure()
    breaker.record_success()  # resets the consecutive count
    breaker.record_failure()
    breaker.record_failure()
    assert breaker.state is BreakerState.CLOSED
    breaker.record_failure()
    assert breaker.state is BreakerState.OPEN and not breaker.allow() and breaker.retry_in_s() == 10
    clock.now = 9 * NS
    assert not breaker.allow() and breaker.retry_in_s() == pytest.approx(1)
    clock.now = 10 * NS
    assert breaker.state is BreakerState.HALF_OPEN
    assert breaker.allow() and not breaker.allow()  # one probe at a time
    breaker.record_failure()  # the probe failed: open for another cool-down
    assert breaker.state is BreakerState.OPEN and not breaker.allow()
    clock.now = 20 * NS
    assert breaker.allow()
    breaker.record_success()
    assert breaker.state is BreakerState.CLOSED and breaker.allow() and breaker.allow()
    with pytest.raises(ValueError):
        CircuitBreaker(0, 1, clock.s)
