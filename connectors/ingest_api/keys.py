"""Per-feed API keys, stored hashed in Secrets Manager; a key for feed A never opens feed B.

The secret (`ingest_api.keys.secret`) is a JSON object {feed: ["sha256:<hex>", ...]}: the keys
themselves are shown once, to the feed's owner, and never stored. A key is `msk_<random>`; its
digest is SHA-256 over the whole key (keys carry 192 random bits, so no salt or slow hash is
needed: there is nothing to brute-force). Comparison is constant-time.
"""

from __future__ import annotations

import functools
import hashlib
import hmac
import logging
import secrets
import threading
from collections.abc import Mapping
from typing import Any, Protocol

from connectors.secrets import read_json_object

PREFIX = "msk_"
log = logging.getLogger("medistream.ingest_api")


class KeyCheck(Protocol):
    """What the app asks of its keys."""

    def allows(self, feed: str, key: str | None) -> bool: ...


class KeysError(Exception):
    """The key store is missing or malformed (the service does not start); names the secret, never a key."""


def new_key() -> tuple[str, str]:
    """A new API key and the digest to store for it."""
    key = PREFIX + secrets.token_urlsafe(24)
    return key, digest(key)


def digest(key: str) -> str:
    """The stored form of a key."""
    return "sha256:" + hashlib.sha256(key.encode()).hexdigest()


class FeedKeys:
    """Digests per feed, checked in constant time per candidate."""

    def __init__(self, digests: Mapping[str, list[str]]) -> None:
        self._digests = {feed: tuple(d.encode() for d in values) for feed, values in digests.items()}

    def allows(self, feed: str, key: str | None) -> bool:
        """Whether `key` is one of `feed`'s keys."""
        if not key or not key.startswith(PREFIX):
            return False
        given = digest(key).encode()
        # Compare against every candidate (no early exit), so timing says nothing about which matched.
        return sum(hmac.compare_digest(given, d) for d in self._digests.get(feed, ())) > 0


def load_keys(secrets_client: Any, secret_id: str) -> FeedKeys:
    """Read the key digests; KeysError if the secret is missing or not {feed: [digest, ...]}."""
    doc = read_json_object(secrets_client, secret_id, f"API key secret {secret_id}", KeysError)
    if not all(
            isinstance(v, list) and all(isinstance(d, str) and d.startswith("sha256:") for d in v)
            for v in doc.values()):
        raise KeysError(f"API key secret {secret_id}: must be {{feed: [\"sha256:<hex>\", ...]}}")
    return FeedKeys(doc)


class RefreshingKeys:
    """The feeds' key digests, re-read every `refresh_s` by a daemon thread: a key added or revoked takes
    effect within that time, without a restart. The first read must succeed (the service does not start
    without keys); a later failed read keeps the last good digests and is logged by error code."""

    def __init__(self, secrets_client: Any, secret_id: str, refresh_s: float) -> None:
        self._load = functools.partial(load_keys, secrets_client, secret_id)
        self._current = self._load()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._refresh, args=(refresh_s,), name="api-keys", daemon=True)
        self._thread.start()

    def _refresh(self, every_s: float) -> None:
        while not self._stop.wait(every_s):
            try:
                self._current = self._load()
            except KeysError as err:
                log.warning("API keys not refreshed, the last good ones stay in force: %s", err)

    def allows(self, feed: str, key: str | None) -> bool:
        """Whether `key` is one of `feed`'s keys as last read."""
        return self._current.allows(feed, key)

    def close(self) -> None:
        self._stop.set()
