"""Fetch one page from a partner's pull API, with the error taxonomy of the Singer SDK.

- Retriable: 408, 425, 5xx, timeouts, connection errors, an unreachable token endpoint: full-jitter
  back-off (at least the Retry-After a 503 gives), at most `max_attempts` per page, then the feed fails.
- Rate limited: 429 waits its Retry-After (capped at `retry_after_max_s`), at most `max_rate_limited`
  times per page, then the feed fails.
- Auth: a 401/403 (or refused client credentials) re-reads the credentials and fetches a new token
  once; a second refusal fails the feed.
- Fatal: any other status, a page that is not the expected envelope (a reason code, never content).
"""

from __future__ import annotations

import asyncio
import random
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import aiohttp

from connectors.partners.auth import AuthError, Credentials, OAuthTokens, TokenUnavailable
from connectors.rest_pull.page import Page, PageRefused, parse_page

RETRIABLE = frozenset({408, 425, 500, 502, 503, 504})
_SAFE_CODE = re.compile(r"[a-z][a-z0-9_]{0,39}")


class FeedFailed(Exception):
    """The feed stops: `reason` is a code, `detail` names statuses and counts only (no PHI, no secret)."""

    def __init__(self, reason: str, detail: str = "") -> None:
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason, self.detail = reason, detail


class Stopped(Exception):
    """A stop was requested while waiting to retry; nothing of the page was produced."""


@dataclass(frozen=True)
class RetryPolicy:
    """Bounds on every wait and retry of one page."""

    max_attempts: int = 6
    backoff_base_s: float = 0.2
    backoff_max_s: float = 10.0
    retry_after_max_s: float = 30.0
    max_rate_limited: int = 50
    timeout_s: float = 30.0
    max_page_bytes: int = 64 * 1024 * 1024

    def backoff(self, attempt: int, rng: random.Random) -> float:
        """Full-jitter exponential back-off for the attempt-th retry (1-based)."""
        return rng.uniform(0, min(self.backoff_max_s, self.backoff_base_s * 2 ** (attempt - 1)))


@dataclass
class FetchCounts:
    """What fetching cost, added to the feed's metrics."""

    retries: int = 0
    rate_limited: int = 0
    auth_refreshes: int = 0


def _retry_after(headers: Any) -> float | None:
    raw = headers.get("Retry-After", "")
    return float(raw) if raw.isdigit() else None


async def _error_code(response: aiohttp.ClientResponse) -> str:
    """The partner's error code when it is a plain identifier; anything else is not repeated."""
    try:
        doc = await response.json(content_type=None)
    except (ValueError, aiohttp.ClientError):
        return ""
    code = doc.get("error") if isinstance(doc, dict) else None
    return code if isinstance(code, str) and _SAFE_CODE.fullmatch(code) else ""


class PageClient:
    """Pages of one feed: GET `url?cursor=<cursor>&limit=<page_size>` with an OAuth2 bearer token."""

    def __init__(self, feed: str, url: str, token_url: str, page_size: int, credentials: Callable[[], Credentials],
                 policy: RetryPolicy, lines: bool = False, stop: asyncio.Event | None = None,
                 rng: random.Random | None = None) -> None:
        self.feed, self.url, self.token_url, self.page_size = feed, url, token_url, page_size
        self._credentials, self.policy, self.lines = credentials, policy, lines
        self._tokens: OAuthTokens | None = None
        self._stop = stop or asyncio.Event()
        self._rng = rng or random.Random()  # noqa: S311 - back-off jitter, not crypto
        self.counts = FetchCounts()

    def _token_source(self, reload: bool = False) -> OAuthTokens:
        if self._tokens is None or reload:
            self._tokens = OAuthTokens(self.token_url, None, self._credentials(), self.policy.timeout_s)
        return self._tokens

    async def _wait(self, seconds: float) -> None:
        try:
            await asyncio.wait_for(self._stop.wait(), seconds)
        except TimeoutError:
            return
        raise Stopped()

    async def fetch(self, session: aiohttp.ClientSession, cursor: str | None) -> Page:
        """The page at `cursor` (None: the first); FeedFailed when it cannot be had within the policy."""
        attempts = rate_limited = 0
        refreshed = False
        params = {"limit": str(self.page_size)} | ({"cursor": cursor} if cursor is not None else {})
        timeout = aiohttp.ClientTimeout(total=self.policy.timeout_s)
        while True:
            wait: float | None = None
            cause = ""
            try:
                headers = await self._token_source().header(session)
                async with session.get(self.url, params=params, headers=headers, timeout=timeout,
                                       allow_redirects=False) as response:
                    status = response.status
                    if status == 200:
                        if (response.content_length or 0) > self.policy.max_page_bytes:
                            raise FeedFailed("page_too_large", f"feed {self.feed}")
                        body = bytearray()
                        async for chunk in response.content.iter_chunked(1 << 16):
                            body += chunk
                            if len(body) > self.policy.max_page_bytes:
                                raise FeedFailed("page_too_large", f"feed {self.feed}")
                        try:
                            return parse_page(bytes(body), self.lines)
                        except PageRefused as refused:
                            raise FeedFailed(refused.reason, f"feed {self.feed}: the partner's page was refused "
                                             "(nothing of it was produced)") from None
                    retry_after = _retry_after(response.headers)
                    code = await _error_code(response) if status < 500 else ""
            except AuthError as err:  # refused client credentials, or a secret that cannot be read
                status, retry_after, code = 401, None, str(err)
            except TokenUnavailable:
                status, retry_after, code, cause = 0, None, "", "token_endpoint"
            except (TimeoutError, aiohttp.ClientError) as err:
                status, retry_after, code = 0, None, ""
                cause = "timeout" if isinstance(err, TimeoutError | aiohttp.ServerTimeoutError) else "connection"
            if status in (401, 403):
                if refreshed:
                    raise FeedFailed("auth_refused", f"feed {self.feed}: http {status} {code or '-'} after "
                                     "re-reading the credentials and fetching a new token")
                refreshed = True
                self.counts.auth_refreshes += 1
                self._token_source(reload=True)
                continue
            if status == 429:
                rate_limited += 1
                self.counts.rate_limited += 1
                if rate_limited > self.policy.max_rate_limited:
                    raise FeedFailed("rate_limited_too_long",
                                     f"feed {self.feed}: {rate_limited - 1} answers 429 for one page")
                wait = min(retry_after if retry_after is not None else self.policy.backoff(rate_limited, self._rng),
                           self.policy.retry_after_max_s)
            elif status in RETRIABLE or status == 0:
                attempts += 1
                cause = cause or f"http_{status}"
                if attempts >= self.policy.max_attempts:
                    raise FeedFailed(f"retries_exhausted_{cause}", f"feed {self.feed}: {attempts} attempts")
                self.counts.retries += 1
                wait = max(self.policy.backoff(attempts, self._rng),
                           min(retry_after or 0.0, self.policy.retry_after_max_s))
            else:
                raise FeedFailed(f"http_{status}", f"feed {self.feed}: partner error {code or '-'}")
            await self._wait(wait)
