"""Envelope encryption: AES-256-GCM under KMS data keys, cached and rotated by use count and age.

A data key comes from the key service (KMS GenerateDataKey, connectors/kms.py) for one data domain
(claims, payments, eligibility, dead_letters). Its plaintext lives only in this process's memory;
its encrypted copy (EDK) travels with the data, so any holder of decrypt rights on the domain's CMK
can open it later, after any number of key rotations. Each key encrypts at most `max_uses`
messages (random 96-bit nonces stay far below the 2^32 GCM bound) and lives at most `max_age_s`.

Two ciphertext forms, both authenticated with associated data that binds them to their place:
- field:  "e1.<key id>.<base64(nonce | ciphertext | tag)>", AAD = feed, record id, field path;
  the record's `_protection` header carries the key's EDK. A list of plain values (free-text notes)
  is one ciphertext of its JSON at path "<field>[]": one AES-GCM call instead of one per line.
- sealed: a self-contained JSON document (EDK, CMK, context, ciphertext) for whole records and
  dead letters; the context is stored in clear and checked before decryption.
"""

from __future__ import annotations

import base64
import binascii
import functools
import hashlib
import os
import time
from collections import OrderedDict
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Protocol

import orjson
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from udfs.phi.errors import Tampered, WrongContext

FIELD_PREFIX = "e1."
SEALED_VERSION = 1


@dataclass(frozen=True)
class DataKey:
    """A data key: plaintext (never logged or serialized) and its KMS-encrypted copy."""

    domain: str
    cmk: str  # ARN of the customer master key that wraps it
    encrypted: bytes
    plaintext: bytes = field(repr=False)

    @functools.cached_property
    def key_id(self) -> str:
        """Short id of the key (hash of its encrypted copy): names the key in ciphertexts."""
        return hashlib.sha256(self.encrypted).hexdigest()[:16]


class DataKeySource(Protocol):
    """Where data keys come from: KMS in every environment (moto server locally)."""

    def generate(self, domain: str) -> DataKey:
        """A new data key for `domain`."""
        ...

    def decrypt(self, domain: str, encrypted: bytes, cmk: str) -> DataKey:
        """The data key behind an encrypted copy; raises KeyRevoked / KeyUnavailable / WrongContext."""
        ...


_URLSAFE = bytes.maketrans(b"+/", b"-_")


def b64(data: bytes) -> str:
    """URL-safe base64 without padding (base64.urlsafe_b64encode(data).rstrip(b"=") in one C pass and a translate)."""
    return binascii.b2a_base64(data, newline=False).rstrip(b"=").translate(_URLSAFE).decode()


def unb64(text: str) -> bytes:
    """Inverse of b64; Tampered on anything that is not base64url."""
    try:
        return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    except (binascii.Error, ValueError):
        raise Tampered("ciphertext is not base64url") from None


class ActiveKey:
    """The data key currently encrypting for one domain, with its use count."""

    __slots__ = ("aead", "born", "edk", "key", "prefix", "uses")

    def __init__(self, key: DataKey, born: float) -> None:
        self.key, self.aead, self.born, self.uses = key, AESGCM(key.plaintext), born, 0
        self.prefix = f"{FIELD_PREFIX}{key.key_id}."
        self.edk = b64(key.encrypted)  # written into every record header and sealed copy: encoded once


class DataKeyCache:
    """One encryption key per domain (rotated by count and age) and an LRU of decryption keys by id."""

    def __init__(self, source: DataKeySource, max_uses: int = 1 << 20, max_age_s: float = 300.0,
                 capacity: int = 256, clock: Callable[[], float] = time.monotonic) -> None:
        self.source, self.max_uses, self.max_age_s, self.capacity, self.clock = (
            source, max_uses, max_age_s, capacity, clock)
        self._active: dict[str, ActiveKey] = {}
        self._opened: OrderedDict[str, AESGCM] = OrderedDict()
        self.generated = 0  # data keys requested from the key service
        self.decrypted = 0  # encrypted data keys opened through the key service

    def encryption_key(self, domain: str) -> ActiveKey:
        """The domain's current key, counting one use; a fresh one when the old is used up or too old."""
        active = self._active.get(domain)
        now = self.clock()
        if active is None or active.uses >= self.max_uses or now - active.born >= self.max_age_s:
            active = ActiveKey(self.source.generate(domain), now)
            self.generated += 1
            self._active[domain] = active
            self._remember(active.key.key_id, active.aead)
        active.uses += 1
        return active

    def decryption_key(self, domain: str, key_id: str, encrypted: bytes, cmk: str) -> AESGCM:
        """The AEAD for a key id, opening its encrypted copy through the key service once."""
        aead = self._opened.get(key_id)
        if aead is not None:
            self._opened.move_to_end(key_id)
            return aead
        if hashlib.sha256(encrypted).hexdigest()[:16] != key_id:
            raise Tampered("the encrypted data key does not match the key id it is filed under")
        key = self.source.decrypt(domain, encrypted, cmk)
        self.decrypted += 1
        aead = AESGCM(key.plaintext)
        self._remember(key_id, aead)
        return aead

    def _remember(self, key_id: str, aead: AESGCM) -> None:
        self._opened[key_id] = aead
        while len(self._opened) > self.capacity:
            self._opened.popitem(last=False)


def field_aad(feed: str, record_id: str, path: str) -> bytes:
    """Associated data of a field ciphertext: where it belongs."""
    return f"{feed}\x1f{record_id}\x1f{path}".encode()


def encrypt_field(active: ActiveKey, value: str, aad: bytes) -> str:
    """A field ciphertext of `value` under the active key (standard base64: no dots, JSON-safe)."""
    nonce = os.urandom(12)
    return active.prefix + binascii.b2a_base64(nonce + active.aead.encrypt(nonce, value.encode(), aad),
                                               newline=False).decode()


def field_key_id(ciphertext: str) -> str:
    """The key id a field ciphertext names; Tampered when it is not one."""
    parts = ciphertext.split(".")
    if len(parts) != 3 or parts[0] + "." != FIELD_PREFIX or len(parts[1]) != 16:
        raise Tampered("not a field ciphertext of the form e1.<key id>.<data>")
    return parts[1]


def decrypt_field(aead: AESGCM, ciphertext: str, aad: bytes) -> str:
    """The plaintext of a field ciphertext; Tampered when it does not authenticate here."""
    try:
        blob = binascii.a2b_base64(ciphertext.split(".")[2])
    except (binascii.Error, ValueError):
        raise Tampered("field ciphertext is not base64") from None
    try:
        return aead.decrypt(blob[:12], blob[12:], aad).decode()
    except (InvalidTag, ValueError):
        raise Tampered("field ciphertext does not authenticate for this feed, record and field "
                       "(changed, or moved from elsewhere)") from None


def _context_aad(context: Mapping[str, str]) -> bytes:
    return orjson.dumps(dict(context), option=orjson.OPT_SORT_KEYS)


def seal(cache: DataKeyCache, domain: str, data: bytes, context: Mapping[str, str]) -> str:
    """A self-contained encrypted document of `data`, bound to `context` (feed, record id, purpose)."""
    active = cache.encryption_key(domain)
    nonce = os.urandom(12)
    body = active.aead.encrypt(nonce, data, _context_aad(context))
    return orjson.dumps({
        "v": SEALED_VERSION, "domain": domain, "cmk": active.key.cmk, "kid": active.key.key_id,
        "edk": active.edk, "ctx": dict(context), "ct": b64(nonce + body),
    }).decode()


def unseal(cache: DataKeyCache, sealed: str | bytes, expected: Mapping[str, str]) -> bytes:
    """The data of a sealed document, when its context is `expected` (WrongContext otherwise)."""
    try:
        doc = orjson.loads(sealed)
        version, domain, cmk, kid, edk, ctx, ct = (doc["v"], doc["domain"], doc["cmk"], doc["kid"], doc["edk"],
                                                   doc["ctx"], doc["ct"])
    except (orjson.JSONDecodeError, KeyError, TypeError):
        raise Tampered("not a sealed document") from None
    if version != SEALED_VERSION or not isinstance(ctx, dict):
        raise Tampered(f"unsupported sealed document version {version!r}")
    if ctx != dict(expected):
        differs = sorted(k for k in set(ctx) | set(expected) if ctx.get(k) != expected.get(k))
        raise WrongContext(f"sealed for another {', '.join(differs)}")
    aead = cache.decryption_key(domain, kid, unb64(edk), cmk)
    blob = unb64(ct)
    try:
        return aead.decrypt(blob[:12], blob[12:], _context_aad(ctx))
    except (InvalidTag, ValueError):
        raise Tampered("sealed document does not authenticate (changed or truncated)") from None
