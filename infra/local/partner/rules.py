"""The partner stand-in's pure rules: config, token bucket, auth checks, idempotency, the request ledger.

No I/O and no aiohttp here, so every rule is unit-testable with a fake clock. This is a STAND-IN for
real partner APIs: it reproduces the behaviours a delivery client must cope with (rate limits, 5xx,
timeouts, idempotency keys, signed requests), not any one partner's contract.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import math
import random
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from infra.local import oauth

TIMESTAMP_HEADER = "X-Partner-Timestamp"
SIGNATURE_HEADER = "X-Partner-Signature"


@dataclass(frozen=True)
class PartnerConfig:
    """How the stand-in behaves; every fault is drawn from `seed`, so runs are reproducible."""

    port: int = 0  # 0: pick a free port
    rate: float = 50.0  # tokens per second, shared by all clients
    burst: int = 10  # bucket capacity
    fail_rate: float = 0.0  # fraction of admitted deliveries answered 503 (nothing recorded)
    timeout_rate: float = 0.0  # fraction recorded, then held `hold_s` before answering
    hold_s: float = 5.0  # longer than any sane client timeout
    latency_ms: int = 0  # added to every delivery response
    seed: int = 0
    bearer_token: str | None = None  # if set, `Authorization: Bearer <token>` is required
    hmac_secret: bytes | None = field(default=None, repr=False)  # if set, a signature is required
    replay_window_s: int = 300  # signed timestamps older or newer than this are refused
    # OAuth2 client credentials: if set, POST /oauth2/token issues bearer tokens valid token_ttl_s.
    client_id: str | None = None
    client_secret: str | None = field(default=None, repr=False)
    token_ttl_s: int = 3600
    # Deterministic 422s: this fraction of business keys (by hash) is refused as a validation error.
    reject_fraction: float = 0.0

    def __post_init__(self) -> None:
        if self.rate <= 0:
            raise ValueError("partner config: rate must be > 0")
        if self.burst < 1:
            raise ValueError("partner config: burst must be >= 1")
        if not 0 <= self.fail_rate <= 1 or not 0 <= self.timeout_rate <= 1:
            raise ValueError("partner config: fail_rate and timeout_rate must be in [0, 1]")
        if self.fail_rate + self.timeout_rate > 1:
            raise ValueError("partner config: fail_rate + timeout_rate must be <= 1")
        if self.latency_ms < 0 or self.hold_s < 0:
            raise ValueError("partner config: latency_ms and hold_s must be >= 0")
        if (self.client_id is None) != (self.client_secret is None):
            raise ValueError("partner config: client_id and client_secret go together")
        if not 0 <= self.reject_fraction <= 1 or self.token_ttl_s < 1:
            raise ValueError("partner config: reject_fraction must be in [0, 1] and token_ttl_s >= 1")

    @property
    def oauth(self) -> bool:
        """Whether bearer tokens come from the stand-in's own token endpoint."""
        return self.client_id is not None


class TokenBucket:
    """A token bucket over the caller's clock: at most burst + rate * T admissions in any T seconds."""

    def __init__(self, rate: float, burst: int, now: float) -> None:
        self.rate, self.burst = rate, burst
        self._tokens, self._last = float(burst), now

    def take(self, now: float) -> int:
        """Take one token; return 0 if admitted, else the whole seconds (>= 1) to wait."""
        self._tokens = min(self.burst, self._tokens + (now - self._last) * self.rate)
        self._last = now
        if self._tokens >= 1:
            self._tokens -= 1
            return 0
        return max(1, math.ceil((1 - self._tokens) / self.rate))


def sign(secret: bytes, body: bytes, timestamp: int) -> dict[str, str]:
    """Headers that authenticate `body`: HMAC-SHA256 over `<timestamp>.<body>`."""
    digest = hmac.new(secret, str(timestamp).encode() + b"." + body, hashlib.sha256).hexdigest()
    return {TIMESTAMP_HEADER: str(timestamp), SIGNATURE_HEADER: f"sha256={digest}"}


def auth_failure(config: PartnerConfig, headers: Any, body: bytes, wall_now: float,
                 issued: dict[str, float] | None = None) -> str | None:
    """Why the request fails authentication, or None if it passes (or no auth is configured).

    `issued` maps OAuth2 access tokens this stand-in handed out to their expiry (wall clock).
    """
    if config.bearer_token is not None:
        given = headers.get("Authorization", "")
        if not hmac.compare_digest(given.encode(), f"Bearer {config.bearer_token}".encode()):
            return "bad_bearer_token"
    if config.oauth:
        scheme, _, token = headers.get("Authorization", "").partition(" ")
        expiry = (issued or {}).get(token) if scheme == "Bearer" else None
        if expiry is None:
            return "unknown_access_token"
        if expiry <= wall_now:
            return "expired_access_token"
    if config.hmac_secret is not None:
        stamp, signature = headers.get(TIMESTAMP_HEADER, ""), headers.get(SIGNATURE_HEADER, "")
        if not stamp.isdigit() or not signature:
            return "missing_signature"
        if abs(wall_now - int(stamp)) > config.replay_window_s:
            return "stale_timestamp"
        expected = sign(config.hmac_secret, body, int(stamp))[SIGNATURE_HEADER]
        if not hmac.compare_digest(signature.encode(), expected.encode()):
            return "bad_signature"
    return None


def client_credentials_failure(config: PartnerConfig, headers: Any, form: Mapping[str, str]) -> str | None:
    """Why a token request fails (RFC 6749 4.4: Basic auth or form credentials), or None."""
    return oauth.client_credentials_failure(config.client_id if config.oauth else None, config.client_secret,
                                            headers, form)


def validation_error(doc: Any) -> str | None:
    """Why a delivery body is malformed, or None if it has a business key and a version or record id."""
    if not isinstance(doc, dict):
        return "body must be a JSON object"
    if not isinstance(doc.get("business_key"), str) or not doc["business_key"]:
        return "business_key must be a non-empty string"
    version, record_id = doc.get("version"), doc.get("record_id")
    if not (isinstance(version, int) and not isinstance(version, bool)) and not isinstance(record_id, str):
        return "version (integer) or record_id (string) is required"
    if "payload" in doc and not isinstance(doc["payload"], dict):
        return "payload must be a JSON object"
    return None


def rejected(config: PartnerConfig, business_key: str) -> bool:
    """Whether this business key falls in the deterministic `reject_fraction` (same answer on every retry)."""
    if config.reject_fraction <= 0:
        return False
    draw = int.from_bytes(hashlib.sha256(b"reject:" + business_key.encode()).digest()[:8], "big") / 2**64
    return draw < config.reject_fraction


def fingerprint(doc: Any) -> str:
    """A hash of the body's canonical JSON, so key order and whitespace do not count as a change."""
    return hashlib.sha256(json.dumps(doc, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


def key_hash(key: str) -> str:
    """A short, non-reversible tag for logs; keys may embed business identifiers."""
    return hashlib.sha256(key.encode()).hexdigest()[:12]


@dataclass(frozen=True)
class Stored:
    """The response given to the first accepted request with an idempotency key."""

    fingerprint: str
    status: int
    body: dict[str, Any]


@dataclass(frozen=True)
class RequestRecord:
    """One request to /v1/deliveries: admission time (server clock), key, business key, outcome."""

    at: float
    idempotency_key: str | None
    business_key: str | None
    status: int
    replay: bool = False


def max_in_window(times: list[float], window_s: float = 1.0) -> int:
    """The most timestamps that fall in any half-open window [t, t + window_s)."""
    ordered, best, lo = sorted(times), 0, 0
    for hi, t in enumerate(ordered):
        while ordered[lo] <= t - window_s:
            lo += 1
        best = max(best, hi - lo + 1)
    return best


class PartnerState:
    """Everything the stand-in remembers; single-threaded (owned by the server's event loop)."""

    def __init__(self, config: PartnerConfig, now: float) -> None:
        self.config = config
        self.reset(now)

    def reset(self, now: float) -> None:
        """Forget every request and key, refill the bucket and reseed the fault draws."""
        self.bucket = TokenBucket(self.config.rate, self.config.burst, now)
        self.rng = random.Random(self.config.seed)
        self.records: list[RequestRecord] = []
        self.accepted: dict[str, Stored] = {}
        self.in_flight: set[str] = set()
        self.deliveries: Counter[str] = Counter()
        self.tokens: dict[str, float] = {}  # issued OAuth2 access token -> expiry (wall clock)
        self.first_delivered_at: dict[str, float] = {}  # business key -> wall clock of its first delivery

    def draw_fault(self) -> str | None:
        """One seeded draw per admitted delivery: "fail", "hold" or None."""
        u = self.rng.random()
        if u < self.config.fail_rate:
            return "fail"
        if u < self.config.fail_rate + self.config.timeout_rate:
            return "hold"
        return None

    def stats(self) -> dict[str, Any]:
        """Counts per status, deliveries per business key, and the peak admitted in any 1 s window."""
        by_status = Counter(str(r.status) for r in self.records)
        admitted = [r.at for r in self.records if r.status != 429]
        delivered = [r.at for r in self.records if r.status == 201 and not r.replay]
        return {
            "requests": len(self.records),
            "by_status": dict(sorted(by_status.items())),
            "deliveries": sum(self.deliveries.values()),
            "deliveries_by_business_key": dict(sorted(self.deliveries.items())),
            "replays": sum(1 for r in self.records if r.replay),
            "max_admitted_per_1s": max_in_window(admitted),
            # Seconds from the first to the last new delivery (server clock): deliveries / span = rate.
            "delivered_span_s": (max(delivered) - min(delivered)) if delivered else 0.0,
            # Wall clock, so a client can measure its own end-to-end delay (bench/partner_delivery_bench.py).
            "first_delivered_at": dict(sorted(self.first_delivered_at.items())),
        }
