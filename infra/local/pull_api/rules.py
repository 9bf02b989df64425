"""The pull stand-in's pure rules: config, signed opaque cursors, the record log, seeded faults, serve counts.

No I/O here, so every rule is unit-testable. It reproduces what a puller must cope with on a partner's
paginated API: OAuth2 client-credentials tokens, opaque cursors (a forged or foreign one is refused with
400), a token-bucket rate limit answering 429 + Retry-After, injected 503s, and records appended while
it runs. Records are kept as their JSON bytes and served untouched.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import random
import secrets
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from infra.local.partner.rules import TokenBucket

CURSOR_VERSION = b"c1"


@dataclass(frozen=True)
class PullApiConfig:
    """How the stand-in behaves; injected faults are drawn from `seed`, so runs are reproducible."""

    port: int = 0  # 0: pick a free port
    rate: float = 50.0  # page requests per second, across all clients
    burst: int = 10
    fail_rate: float = 0.0  # fraction of admitted page requests answered 503
    latency_ms: int = 0  # added to every page response (a slow partner)
    max_limit: int = 500  # the largest page a client may ask for
    seed: int = 0
    client_id: str = "medistream-puller"
    client_secret: str = field(default="", repr=False)
    token_ttl_s: int = 3600
    # Signs cursors; random per process unless given, so a cursor of another stand-in is refused.
    cursor_key: bytes = field(default_factory=lambda: secrets.token_bytes(32), repr=False)

    def __post_init__(self) -> None:
        if self.rate <= 0 or self.burst < 1:
            raise ValueError("pull stand-in config: rate must be > 0 and burst >= 1")
        if not 0 <= self.fail_rate < 1:
            raise ValueError("pull stand-in config: fail_rate must be in [0, 1)")
        if self.latency_ms < 0 or self.max_limit < 1 or self.token_ttl_s < 1:
            raise ValueError("pull stand-in config: latency_ms >= 0, max_limit >= 1, token_ttl_s >= 1")
        if not self.client_secret:
            raise ValueError("pull stand-in config: a client secret is required")


class CursorInvalid(ValueError):
    """A cursor this stand-in did not issue (forged, truncated, from another stand-in)."""


def issue_cursor(key: bytes, offset: int) -> str:
    """An opaque cursor for `offset`: version, offset and an HMAC over both, base64url."""
    body = CURSOR_VERSION + offset.to_bytes(8, "big")
    return base64.urlsafe_b64encode(body + hmac.new(key, body, hashlib.sha256).digest()[:16]).decode().rstrip("=")


def read_cursor(key: bytes, cursor: str) -> int:
    """The offset a cursor stands for; CursorInvalid unless this key signed it."""
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
    except ValueError:
        raise CursorInvalid("cursor is not base64url") from None
    body, tag = raw[:10], raw[10:]
    if len(raw) != 26 or not body.startswith(CURSOR_VERSION):
        raise CursorInvalid("cursor has the wrong shape")
    if not hmac.compare_digest(tag, hmac.new(key, body, hashlib.sha256).digest()[:16]):
        raise CursorInvalid("cursor signature does not match")
    return int.from_bytes(body[2:], "big")


class PullState:
    """Records (JSON bytes, append-only), issued tokens, the rate bucket, faults and what was served."""

    def __init__(self, config: PullApiConfig, now: float) -> None:
        self.config = config
        self.records: list[bytes] = []
        self.tokens: dict[str, float] = {}  # access token -> expiry (wall clock)
        self.bucket = TokenBucket(config.rate, config.burst, now)
        self.fail_rate = config.fail_rate
        self.latency_ms = config.latency_ms
        self.malformed_pages = 0  # the next N admitted page requests get a broken envelope
        self._rng = random.Random(f"pull-standin:{config.seed}")
        self.served_pages: Counter[int] = Counter()  # page start offset -> times served
        self.served_records: Counter[int] = Counter()  # record offset -> times served
        self.by_status: Counter[int] = Counter()

    def issue_token(self, wall_now: float) -> str:
        """A new bearer token valid for token_ttl_s."""
        token = secrets.token_urlsafe(24)
        self.tokens[token] = wall_now + self.config.token_ttl_s
        return token

    def token_valid(self, authorization: str, wall_now: float) -> bool:
        """Whether `Authorization: Bearer <token>` names a token this stand-in issued and has not expired."""
        scheme, _, token = authorization.partition(" ")
        expiry = self.tokens.get(token) if scheme == "Bearer" else None
        return expiry is not None and wall_now < expiry

    def inject_503(self) -> bool:
        """Draw whether this admitted request fails with 503."""
        return self.fail_rate > 0 and self._rng.random() < self.fail_rate

    def page(self, offset: int, limit: int) -> tuple[list[bytes], int]:
        """Records from `offset` (at most `limit`) and the offset after them; counted as served."""
        chunk = self.records[offset:offset + limit]
        self.served_pages[offset] += 1
        for index in range(offset, offset + len(chunk)):
            self.served_records[index] += 1
        return chunk, offset + len(chunk)

    def stats(self) -> dict[str, Any]:
        """Counts only, never a record: how often each page and record was served, answers by status."""
        return {
            "records": len(self.records),
            "by_status": {str(k): v for k, v in sorted(self.by_status.items())},
            "pages_served": sum(self.served_pages.values()),
            "served_pages": {str(k): v for k, v in sorted(self.served_pages.items())},
            "records_served_more_than_once": sum(1 for v in self.served_records.values() if v > 1),
            "records_never_served": len(self.records) - len(self.served_records),
        }
