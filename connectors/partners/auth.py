"""Partner authentication: credentials from Secrets Manager, OAuth2 client-credentials tokens, HMAC signatures.

Secrets never appear in a contract, a property file, a log line or an exception message. The secret
named by the contract's `auth.secret_id` is a JSON object:
- oauth2_client_credentials: {"client_id": ..., "client_secret": ...}
- hmac: {"key": ...}
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import aiohttp

from connectors.secrets import read_json_object
from schemas.partner_contract import Auth

TOKEN_MARGIN_S = 60.0  # refresh an access token this long before it expires


class AuthError(Exception):
    """Credentials are missing, malformed or refused (fatal: the job fails loudly). PHI-free and secret-free."""


@dataclass(frozen=True)
class Credentials:
    """What a partner's secret holds; repr never shows the values."""

    client_id: str | None = field(default=None, repr=False)
    client_secret: str | None = field(default=None, repr=False)
    hmac_key: bytes | None = field(default=None, repr=False)


def load_credentials(secrets_client: Any, auth: Auth, partner: str) -> Credentials:
    """Read and check the partner's secret; AuthError names the partner and secret id, never a value."""
    where = f"partner {partner}: secret {auth.secret_id}"
    doc = read_json_object(secrets_client, auth.secret_id, where, AuthError)
    wanted = ("client_id", "client_secret") if auth.type == "oauth2_client_credentials" else ("key",)
    missing = [name for name in wanted if not isinstance(doc.get(name), str) or not doc[name]]
    if missing:
        raise AuthError(f"{where}: needs non-empty {', '.join(missing)} for {auth.type} auth")
    if auth.type == "hmac":
        return Credentials(hmac_key=doc["key"].encode())
    return Credentials(client_id=doc["client_id"], client_secret=doc["client_secret"])


def hmac_headers(auth: Auth, key: bytes, body: bytes, timestamp: int) -> dict[str, str]:
    """Signature headers: `<algorithm>=hex(HMAC(key, "<timestamp>.<body>"))` plus the timestamp."""
    algorithm = auth.algorithm or "sha256"
    digest = hmac.new(key, str(timestamp).encode() + b"." + body, getattr(hashlib, algorithm)).hexdigest()
    return {auth.timestamp_header or "X-Timestamp": str(timestamp),
            auth.header or "X-Signature": f"{algorithm}={digest}"}


class OAuthTokens:
    """Client-credentials access tokens for one partner, cached until shortly before they expire.

    One instance per event loop; concurrent callers share one token request.
    """

    def __init__(self, token_url: str, scope: str | None, credentials: Credentials, timeout_s: float,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.token_url, self.scope, self._credentials = token_url, scope, credentials
        self._timeout = aiohttp.ClientTimeout(total=timeout_s)
        self._clock = clock
        self._token: str | None = None
        self._expires_at = 0.0
        self._lock: asyncio.Lock | None = None

    def invalidate(self) -> None:
        """Forget the cached token (after a 401): the next call fetches a new one."""
        self._token, self._expires_at = None, 0.0

    async def header(self, session: aiohttp.ClientSession) -> dict[str, str]:
        """The Authorization header, fetching a token when none is cached or it is about to expire."""
        if self._lock is None:
            self._lock = asyncio.Lock()
        async with self._lock:
            if self._token is None or self._clock() >= self._expires_at:
                await self._fetch(session)
        return {"Authorization": f"Bearer {self._token}"}

    async def _fetch(self, session: aiohttp.ClientSession) -> None:
        form = {"grant_type": "client_credentials"} | ({"scope": self.scope} if self.scope else {})
        basic = aiohttp.encode_basic_auth(self._credentials.client_id or "", self._credentials.client_secret or "")
        try:
            async with session.post(self.token_url, data=form, headers={"Authorization": basic},
                                    timeout=self._timeout, allow_redirects=False) as response:
                status = response.status
                doc = await response.json(content_type=None) if status == 200 else None
        except (TimeoutError, aiohttp.ClientError, ValueError) as err:
            raise TokenUnavailable(f"token endpoint unreachable ({type(err).__name__})") from None
        if status in (400, 401, 403):
            raise AuthError(f"token endpoint refused the client credentials (http {status})")
        if status != 200 or not isinstance(doc, dict) or not isinstance(doc.get("access_token"), str):
            raise TokenUnavailable(f"token endpoint answered http {status} without an access token")
        expires_in = doc.get("expires_in")
        lifetime = float(expires_in) if isinstance(expires_in, int | float) and expires_in > 0 else 300.0
        self._token = doc["access_token"]
        self._expires_at = self._clock() + max(lifetime - TOKEN_MARGIN_S, lifetime / 2)


class TokenUnavailable(Exception):
    """The token endpoint is down or answered nonsense: retriable, like a 5xx from the partner."""
