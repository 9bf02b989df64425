"""Who may use the ops console: bearer tokens whose SHA-256 digests live in Secrets Manager, two roles.

The secret (`ops_console.tokens.secret`, default medistream/ops-console/tokens) is a JSON object
{"sha256:<hex>": {"user": NAME, "role": "viewer" | "operator"}}. A token (`mso_` + 192 random bits) is
printed once by `medistream ops token add` and never stored, so no salt or slow hash is needed; a
digest is compared in constant time against every stored one. The console re-reads the secret at most
every `refresh_s`: an added or revoked token takes effect within that time, without a restart; a failed
re-read keeps the last good tokens (a first read that fails stops the console from starting).

Roles map onto schemas/access/operations.yaml: `viewer` may list and read, `operator` may also replay
dead letters; the write itself is authorized and audited by tools.job_control.authorize.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from connectors.secrets import put_secret, read_json_object

PREFIX = "mso_"
ROLES = ("viewer", "operator")
DEFAULT_SECRET = "medistream/ops-console/tokens"  # noqa: S105 -- a secret's name


class TokensError(Exception):
    """The token secret is missing or malformed; names the secret, never a token."""


@dataclass(frozen=True)
class Principal:
    """An authenticated user and the role its token carries."""

    user: str
    role: str


def digest(token: str) -> str:
    """The stored form of a token."""
    return "sha256:" + hashlib.sha256(token.encode()).hexdigest()


def parse_tokens(doc: Mapping[str, Any], secret_id: str) -> dict[str, Principal]:
    """{digest: Principal} from the secret's document; TokensError naming the first bad entry's user."""
    found = {}
    for key, entry in doc.items():
        if not (isinstance(key, str) and key.startswith("sha256:") and isinstance(entry, Mapping)
                and isinstance(entry.get("user"), str) and entry.get("role") in ROLES):
            who = entry.get("user") if isinstance(entry, Mapping) else None
            raise TokensError(f"ops console token secret {secret_id}: an entry (user {who!r}) is not "
                              f"{{\"sha256:<hex>\": {{\"user\": NAME, \"role\": one of {ROLES}}}}}")
        found[key] = Principal(entry["user"], entry["role"])
    return found


class Tokens:
    """The tokens as last read; `who(token)` is the Principal of a valid token, else None."""

    def __init__(self, load: Callable[[], dict[str, Principal]], refresh_s: float = 30.0) -> None:
        self._load, self._refresh_s = load, refresh_s
        self._current = load()
        self._read_at = time.monotonic()
        self._lock = threading.Lock()

    @classmethod
    def from_secret(cls, secrets_client: Any, secret_id: str, refresh_s: float = 30.0) -> Tokens:
        """Tokens read from Secrets Manager (TokensError when the first read fails)."""
        def load() -> dict[str, Principal]:
            doc = read_json_object(secrets_client, secret_id, f"ops console token secret {secret_id}", TokensError)
            return parse_tokens(doc, secret_id)
        return cls(load, refresh_s)

    def _fresh(self) -> dict[str, Principal]:
        with self._lock:
            if time.monotonic() - self._read_at >= self._refresh_s:
                self._read_at = time.monotonic()
                try:
                    self._current = self._load()
                except TokensError:
                    pass  # the last good tokens stay in force; the next request tries again after refresh_s
            return self._current

    def who(self, token: str | None) -> Principal | None:
        """The token's user and role, or None (no early exit: timing says nothing about which matched)."""
        if not token or not token.startswith(PREFIX):
            return None
        given = digest(token).encode()
        match = None
        for stored, principal in self._fresh().items():
            if hmac.compare_digest(given, stored.encode()):
                match = principal
        return match


def _edit(secrets_client: Any, secret_id: str, change: Callable[[dict[str, Any]], Any]) -> Any:
    try:
        doc = read_json_object(secrets_client, secret_id, secret_id, TokensError)
    except TokensError as err:
        if "ResourceNotFoundException" not in str(err):
            raise
        doc = {}
    result = change(doc)
    parse_tokens(doc, secret_id)
    put_secret(secrets_client, secret_id, doc)
    return result


def add_token(secrets_client: Any, secret_id: str, user: str, role: str) -> str:
    """A new token for `user` in `role`; only its digest is stored. Returned once, to be handed over."""
    if role not in ROLES:
        raise TokensError(f"role {role!r} is not one of {ROLES}")
    if not user.strip():
        raise TokensError("a token needs a user name")
    token = PREFIX + secrets.token_urlsafe(24)
    _edit(secrets_client, secret_id, lambda doc: doc.__setitem__(digest(token), {"user": user, "role": role}))
    return token


def revoke_user(secrets_client: Any, secret_id: str, user: str) -> int:
    """Remove every token of `user`; how many there were."""
    def change(doc: dict[str, Any]) -> int:
        gone = [k for k, v in doc.items() if isinstance(v, Mapping) and v.get("user") == user]
        for key in gone:
            del doc[key]
        return len(gone)
    return int(_edit(secrets_client, secret_id, change))
