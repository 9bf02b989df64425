"""Fixed in-memory key material for unit tests and CPU benchmarks that run without the stack.

Never used by a job: jobs take their keys from KMS and Secrets Manager (connectors/kms.py; the moto
server locally). StaticKeySource wraps data keys with AES-GCM under a fixed key and checks the
domain on unwrap, as KMS checks the encryption context, so envelope logic is exercised for real.
"""

from __future__ import annotations

import hashlib
import os
from collections import Counter

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from schemas.phi_policy import load_policy
from udfs.phi.envelope import DataKey, DataKeyCache
from udfs.phi.errors import KeyRevoked, WrongContext
from udfs.phi.protect import Protector
from udfs.phi.tokens import Tokenizer, TokenKeys

STATIC_CMK = "arn:aws:kms:us-east-1:000000000000:key/static-test-key"


def _derived(label: str) -> bytes:
    return hashlib.sha256(f"medistream static test key {label}".encode()).digest()


class StaticKeySource:
    """A DataKeySource without KMS: data keys wrapped under a fixed key, bound to their domain."""

    def __init__(self) -> None:
        self._wrap = AESGCM(_derived("wrapping"))
        self.revoked: set[str] = set()
        self.calls: Counter[str] = Counter()

    def generate(self, domain: str) -> DataKey:
        """A new random data key for `domain`."""
        self.calls["GenerateDataKey"] += 1
        plaintext, nonce = os.urandom(32), os.urandom(12)
        return DataKey(domain, STATIC_CMK, nonce + self._wrap.encrypt(nonce, plaintext, domain.encode()), plaintext)

    def decrypt(self, domain: str, encrypted: bytes, cmk: str) -> DataKey:
        """Unwrap; WrongContext for another domain, KeyRevoked for a revoked CMK."""
        self.calls["Decrypt"] += 1
        if cmk in self.revoked:
            raise KeyRevoked("the key is disabled")
        try:
            plaintext = self._wrap.decrypt(encrypted[:12], encrypted[12:], domain.encode())
        except InvalidTag:
            raise WrongContext("the encrypted key belongs to another domain, or was changed") from None
        return DataKey(domain, cmk, encrypted, plaintext)


def static_token_keys(current: int = 1) -> TokenKeys:
    """Token key versions 1..current and a linkage key, derived from fixed labels."""
    return TokenKeys(current, {v: _derived(f"token v{v}") for v in range(1, current + 1)}, _derived("linkage"))


def static_protectors(policies: tuple[str, ...] = ("default-v1",), token_version: int = 1,
                      keys: DataKeyCache | None = None) -> dict[str, Protector]:
    """Protectors per policy name over static keys (one shared data-key cache)."""
    cache = keys or DataKeyCache(StaticKeySource())
    tokenizer = Tokenizer(static_token_keys(token_version))
    return {name: Protector(load_policy(name), tokenizer, cache) for name in policies}
