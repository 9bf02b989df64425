"""Pure pieces of partner delivery: idempotency keys, rate shares, back-off, Retry-After, breaker, error classes.

Nothing here does I/O or reads a clock of its own: time comes in as an argument or an injected
clock, randomness as an injected `random.Random`, so every piece is tested in microseconds.

Idempotency key = SHA-256 over (partner, business key, version), 128 bits as hex. The version is the
record's `record_id`, not a hash of its payload: the payload is the *protected* record, and its
encrypted fields use random nonces (udfs/phi/envelope.py), so the same fact protected twice hashes
differently; `record_id` is fixed at ingest (the feed's own id, or a UUIDv5 of the file position) and
survives every replay of the curated topic byte for byte. The dedup stage has already dropped exact
re-sends, so each distinct record_id per business key is a distinct version the partner should get
once; a correction has its own business key. The business key is already a keyed digest (no PHI),
and the key is a digest again, so the partner learns nothing from it.
"""

from __future__ import annotations

import email.utils
import enum
import hashlib
import math
import random
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC
from fractions import Fraction
from typing import Any

KEY_VERSION = "d1"  # bump if the key derivation ever changes (it would re-send everything once)
Number = int | float | str | Fraction


def record_version(record: Mapping[str, Any]) -> str:
    """The version identity of a curated record: its record_id (see the module docstring for why)."""
    value = record.get("record_id")
    if not isinstance(value, str) or not value:
        raise ValueError("curated record has no record_id")
    return value


def idempotency_key(partner: str, business_key: str, version_digest: str) -> str:
    """Deterministic key for one version of one fact to one partner: 'd1-' + 32 hex characters."""
    for name, value in (("partner", partner), ("business_key", business_key), ("version_digest", version_digest)):
        if not isinstance(value, str) or not value:
            raise ValueError(f"idempotency key: {name} must be a non-empty string")
    # Length-prefixed parts, so ("ab", "c") and ("a", "bc") can never collide.
    text = "".join(f"{len(p)}:{p}" for p in (KEY_VERSION, partner, business_key, version_digest))
    return f"{KEY_VERSION}-{hashlib.sha256(text.encode()).hexdigest()[:32]}"


# Rate limiting ------------------------------------------------------------------------------------

def _fraction(value: Number) -> Fraction:
    # Through str: 0.1 means one tenth, not the binary float nearest to it.
    return value if isinstance(value, Fraction) else Fraction(str(value))


@dataclass(frozen=True)
class RateShare:
    """One subtask's part of a partner's limit: tokens per second (exact) and bucket capacity."""

    rate: Fraction
    burst: int


def share(rate: Number, burst: int, subtask_index: int, parallelism: int) -> RateShare:
    """Subtask `subtask_index`'s share of (rate/s, burst); over all subtasks the shares sum to exactly both."""
    total = _fraction(rate)
    if total <= 0:
        raise ValueError(f"rate must be positive, got {rate}")
    if parallelism < 1 or not 0 <= subtask_index < parallelism:
        raise ValueError(f"subtask {subtask_index} is not in 0..{parallelism - 1}")
    if burst < parallelism:
        # A bucket smaller than one request never sends: that subtask would starve.
        raise ValueError(f"burst {burst} is smaller than parallelism {parallelism}: every subtask needs 1 token")
    base, extra = divmod(burst, parallelism)
    return RateShare(total / parallelism, base + (1 if subtask_index < extra else 0))


class TokenBucket:
    """A token bucket (starts full); `clock` returns monotonic nanoseconds. Not thread-safe: one per subtask."""

    def __init__(self, rate: Number, burst: int, clock: Callable[[], int]) -> None:
        self.rate_per_ns = _fraction(rate) / 1_000_000_000
        if self.rate_per_ns <= 0 or burst < 1:
            raise ValueError("token bucket needs a positive rate and a burst of at least 1")
        self.burst, self._clock = burst, clock
        self._tokens, self._at = Fraction(burst), clock()

    @classmethod
    def for_share(cls, part: RateShare, clock: Callable[[], int]) -> TokenBucket:
        """A bucket sized to one subtask's share."""
        return cls(part.rate, part.burst, clock)

    def _refill(self) -> None:
        now = self._clock()
        if now > self._at:
            self._tokens = min(Fraction(self.burst), self._tokens + (now - self._at) * self.rate_per_ns)
            self._at = now

    def try_acquire(self, n: int = 1) -> bool:
        """Take n tokens if they are there now; False (and take nothing) otherwise."""
        self._refill()
        if self._tokens >= n:
            self._tokens -= n
            return True
        return False

    def wait_s(self, n: int = 1) -> float:
        """Seconds until n tokens will be there (0 if now); n above the burst never fits."""
        if n > self.burst:
            raise ValueError(f"{n} tokens can never fit a bucket of {self.burst}")
        self._refill()
        missing = n - self._tokens
        return 0.0 if missing <= 0 else float(missing / self.rate_per_ns) / 1e9


# Retries --------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class RetryPolicy:
    """How often and how long to retry: attempts include the first send."""

    max_attempts: int = 6
    base_delay_s: float = 0.5
    max_delay_s: float = 30.0
    max_retry_after_s: float = 300.0  # a partner asking for longer is down: the breaker takes over
    auth_retries: int = 1  # 401/403: refresh credentials and retry this often, then fail the job

    def __post_init__(self) -> None:
        if self.max_attempts < 1 or self.auth_retries < 0:
            raise ValueError("retry policy: max_attempts must be >= 1 and auth_retries >= 0")
        if not 0 < self.base_delay_s <= self.max_delay_s or self.max_retry_after_s < 0:
            raise ValueError("retry policy: need 0 < base_delay_s <= max_delay_s and max_retry_after_s >= 0")


def backoff_s(attempt: int, policy: RetryPolicy, rng: random.Random) -> float:
    """Full jitter: uniform in [0, min(max_delay, base * 2**(attempt-1))] after failed attempt `attempt`."""
    if attempt < 1:
        raise ValueError("attempt counts from 1")
    ceiling = min(policy.max_delay_s, policy.base_delay_s * 2 ** min(attempt - 1, 62))
    return rng.uniform(0, ceiling)


def parse_retry_after(value: str | None, now_epoch_s: float) -> float | None:
    """Retry-After as seconds from now: delta-seconds or an HTTP date (past dates give 0); None if unusable."""
    if value is None:
        return None
    text = value.strip()
    if text.isdigit():
        return float(int(text))
    try:
        when = email.utils.parsedate_to_datetime(text)
    except (TypeError, ValueError, IndexError):
        return None
    if when is None:
        return None
    if when.tzinfo is None:  # RFC 9110 dates are GMT; a zone-less one is read as GMT too
        when = when.replace(tzinfo=UTC)
    delta = when.timestamp() - now_epoch_s
    return max(0.0, delta) if math.isfinite(delta) else None


# Error classification ---------------------------------------------------------------------------

class ErrorKind(enum.Enum):
    """What a delivery outcome means for the record and the job (Singer SDK taxonomy)."""

    OK = "ok"
    RETRIABLE = "retriable"  # back off with jitter and send again with the same key
    SKIPPABLE = "skippable"  # this record is bad for this partner: dead letter it
    FATAL = "fatal"  # auth or misconfiguration: fail the job loudly


@dataclass(frozen=True)
class Classification:
    """An outcome's kind, a PHI-free reason code, and whether to refresh credentials before a retry."""

    kind: ErrorKind
    reason: str
    refresh_auth: bool = False


_SKIPPABLE = frozenset({400, 404, 409, 413, 422})
_RETRIABLE_4XX = frozenset({408, 425, 429})


def classify(status: int | None, *, timed_out: bool = False) -> Classification:
    """Classify an HTTP status (None: no response; timed_out: the request timed out)."""
    if timed_out:
        return Classification(ErrorKind.RETRIABLE, "timeout")
    if status is None:
        return Classification(ErrorKind.RETRIABLE, "connection_error")
    reason = f"http_{status}"
    if 200 <= status < 300:
        return Classification(ErrorKind.OK, reason)
    if status in _RETRIABLE_4XX or 500 <= status < 600:
        return Classification(ErrorKind.RETRIABLE, reason)
    if status in _SKIPPABLE:
        return Classification(ErrorKind.SKIPPABLE, reason)
    if status in (401, 403):
        return Classification(ErrorKind.FATAL, reason, refresh_auth=True)
    # 1xx/3xx (we never follow redirects) and other 4xx (405, 415, ...): our request is wrong for
    # every record, so dead-lettering them one by one would hide a misconfiguration.
    return Classification(ErrorKind.FATAL, reason)


class Action(enum.Enum):
    """What the delivery operator does next."""

    ACK = "ack"
    RETRY = "retry"
    DEAD_LETTER = "dead_letter"
    FAIL = "fail"


@dataclass(frozen=True)
class Step:
    """The next step for one record: action, delay before a retry, PHI-free reason, refresh credentials."""

    action: Action
    delay_s: float = 0.0
    reason: str = ""
    refresh_auth: bool = False


def next_step(outcome: Classification, attempt: int, policy: RetryPolicy, rng: random.Random,
              retry_after_s: float | None = None, auth_refusals_before: int = 0) -> Step:
    """Decide after attempt `attempt` (1-based) ended with `outcome`; never retries without bound.

    A 401/403 refreshes the credentials and retries while this record has had fewer than `auth_retries`
    such refusals before (`auth_refusals_before`), whatever its other attempts: a token the partner
    stopped honouring (it restarted, it rotated its keys) after an outage is refreshed, not fatal."""
    if outcome.kind is ErrorKind.OK:
        return Step(Action.ACK, reason=outcome.reason)
    if outcome.kind is ErrorKind.SKIPPABLE:
        return Step(Action.DEAD_LETTER, reason=outcome.reason)
    if outcome.kind is ErrorKind.FATAL:
        if outcome.refresh_auth and auth_refusals_before < policy.auth_retries:
            return Step(Action.RETRY, backoff_s(attempt, policy, rng), outcome.reason, refresh_auth=True)
        return Step(Action.FAIL, reason=outcome.reason)
    if attempt >= policy.max_attempts:
        return Step(Action.DEAD_LETTER, reason=f"retries_exhausted_{outcome.reason}")
    delay = backoff_s(attempt, policy, rng)
    if retry_after_s is not None:
        delay = max(delay, min(retry_after_s, policy.max_retry_after_s))
    return Step(Action.RETRY, delay, outcome.reason)


# Circuit breaker ------------------------------------------------------------------------------------

class BreakerState(enum.Enum):
    """Closed: send. Open: do not send until the cool-down ends. Half-open: one probe decides."""

    CLOSED = "closed"
    OPEN = "open"
    HALF_OPEN = "half_open"


class CircuitBreaker:
    """Per-partner breaker: opens after `failure_threshold` consecutive failures, probes after `cooldown_s`.

    Count as failures the retriable and fatal outcomes (the partner or our access to it is unwell),
    not skippable ones (one bad record says nothing about the partner). While open, records wait and
    spend no attempts, so an outage does not dead-letter them. `clock` returns seconds (monotonic).
    """

    def __init__(self, failure_threshold: int, cooldown_s: float, clock: Callable[[], float]) -> None:
        if failure_threshold < 1 or cooldown_s <= 0:
            raise ValueError("circuit breaker: failure_threshold >= 1 and cooldown_s > 0")
        self.failure_threshold, self.cooldown_s, self._clock = failure_threshold, cooldown_s, clock
        self._state, self._failures, self._opened_at, self._probing = BreakerState.CLOSED, 0, 0.0, False

    @property
    def state(self) -> BreakerState:
        """The current state (an open breaker whose cool-down ended reports half-open)."""
        if self._state is BreakerState.OPEN and self._clock() >= self._opened_at + self.cooldown_s:
            self._state, self._probing = BreakerState.HALF_OPEN, False
        return self._state

    def allow(self) -> bool:
        """May a request go now? In half-open, only one probe at a time."""
        state = self.state
        if state is BreakerState.CLOSED:
            return True
        if state is BreakerState.HALF_OPEN and not self._probing:
            self._probing = True
            return True
        return False

    def retry_in_s(self) -> float:
        """Seconds until an open breaker lets a probe through (0 when it would allow now)."""
        if self.state is not BreakerState.OPEN:
            return 0.0
        return max(0.0, self._opened_at + self.cooldown_s - self._clock())

    def record_success(self) -> None:
        """A request succeeded (or was refused as a bad record): close and reset the count."""
        self._state, self._failures, self._probing = BreakerState.CLOSED, 0, False

    def release(self) -> None:
        """A request ended without telling whether the partner is well (a 429): free the probe, count nothing."""
        self._probing = False

    def record_failure(self) -> None:
        """A request failed for partner reasons: count it; open at the threshold or when the probe fails."""
        state = self.state
        self._failures += 1
        if state is BreakerState.HALF_OPEN or self._failures >= self.failure_threshold:
            self._state, self._opened_at, self._probing = BreakerState.OPEN, self._clock(), False
