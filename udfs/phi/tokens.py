"""Deterministic keyed tokens (HMAC-SHA256) that name their key version, and the linkage digest.

token = "t<version>." + base64url(HMAC-SHA256(key[version], namespace 0x1F value)[:16]): 128 bits,
22 characters. Equal values in one namespace give equal tokens under one key version, across feeds
and record types, so analysts join on them; nobody without the key can compute or test one. Keys
rotate by version: new tokens use the current version, every held version still verifies (and
joins across a rotation go through re-identification or a re-token backfill, docs/phi-protection.md).
"""

from __future__ import annotations

import binascii
import hashlib
import hmac
import re
from collections.abc import Mapping
from dataclasses import dataclass, field

from udfs.phi.errors import Tampered, UnknownKeyVersion

_TOKEN = re.compile(r"^t([0-9]{1,6})\.([A-Za-z0-9_-]{22})$")
_SEP = b"\x1f"


@dataclass(frozen=True)
class TokenKeys:
    """Token key versions (plaintext, in memory only) and the linkage key behind dedup digests."""

    current: int
    versions: Mapping[int, bytes] = field(repr=False)
    linkage: bytes = field(repr=False)

    def __post_init__(self) -> None:
        if self.current not in self.versions:
            raise UnknownKeyVersion(f"current token key version {self.current} is not among the loaded versions")


_URLSAFE = bytes.maketrans(b"+/", b"-_")


def _token(prefix: str, key: bytes, namespace: str, value: str) -> str:
    mac = hmac.digest(key, namespace.encode() + _SEP + value.encode("utf-8"), "sha256")
    # base64url of 16 bytes without its "==" padding, as base64.urlsafe_b64encode(...).rstrip(b"=") gives it.
    return prefix + binascii.b2a_base64(mac[:16], newline=False)[:22].translate(_URLSAFE).decode()


class Tokenizer:
    """Tokens under the current key version; verification under any loaded version."""

    def __init__(self, keys: TokenKeys) -> None:
        self.keys = keys
        self._prefix = f"t{keys.current}."
        self._key = keys.versions[keys.current]
        # Keyed once: a copy of a keyed HMAC skips the key schedule and digest lookup of hmac.digest
        # (~0.5 µs a call); the MACs are the same bytes (tests/unit/test_phi_fast_paths.py).
        self._mac = hmac.new(self._key, digestmod=hashlib.sha256)
        self._linkage_mac = hmac.new(keys.linkage, digestmod=hashlib.sha256)

    def token(self, namespace: str, value: str) -> str:
        """The token of `value` in `namespace` under the current key version."""
        mac = self._mac.copy()
        mac.update(namespace.encode() + _SEP + value.encode("utf-8"))
        return self._prefix + binascii.b2a_base64(mac.digest()[:16], newline=False)[:22].translate(_URLSAFE).decode()

    def version_of(self, token: str) -> int:
        """The key version a token names; Tampered when it is not a token, UnknownKeyVersion when not held."""
        match = _TOKEN.match(token)
        if not match:
            raise Tampered("not a token of the form t<version>.<22 base64url characters>")
        version = int(match.group(1))
        if version not in self.keys.versions:
            raise UnknownKeyVersion(f"token key version {version} is not held")
        return version

    def matches(self, token: str, namespace: str, value: str) -> bool:
        """True when `token` is the token of `value` in `namespace` under the version it names."""
        version = self.version_of(token)
        return hmac.compare_digest(_token(f"t{version}.", self.keys.versions[version], namespace, value), token)

    def linkage(self, text: str) -> str:
        """Keyed digest (32 hex) for dedup and business keys: stable across token-key rotations."""
        mac = self._linkage_mac.copy()
        mac.update(text.encode("utf-8"))
        return mac.digest()[:16].hex()
