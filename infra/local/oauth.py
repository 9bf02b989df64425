"""OAuth2 client-credentials token requests, as the local stand-ins check them (RFC 6749 section 4.4)."""

from __future__ import annotations

import base64
import hmac
from collections.abc import Mapping
from typing import Any


def client_credentials_failure(client_id: str | None, client_secret: str | None, headers: Any,
                               form: Mapping[str, str]) -> str | None:
    """Why a token request fails (`unsupported_grant_type`, `invalid_client`), or None.

    Credentials come by HTTP Basic auth or in the form; comparisons are constant-time. With no expected
    client (None), every request is `invalid_client`.
    """
    if form.get("grant_type") != "client_credentials":
        return "unsupported_grant_type"
    given_id, given_secret = form.get("client_id", ""), form.get("client_secret", "")
    scheme, _, encoded = headers.get("Authorization", "").partition(" ")
    if scheme == "Basic":
        try:
            given_id, _, given_secret = base64.b64decode(encoded, validate=True).decode().partition(":")
        except (ValueError, UnicodeDecodeError):
            return "invalid_client"
    ok_id = hmac.compare_digest(given_id.encode(), (client_id or "").encode())
    ok_secret = hmac.compare_digest(given_secret.encode(), (client_secret or "").encode())
    return None if client_id is not None and ok_id and ok_secret else "invalid_client"
