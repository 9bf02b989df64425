"""Protection errors: each fails closed with a PHI-free message and a stable code."""

from __future__ import annotations


class ProtectionError(Exception):
    """Protection or its reversal failed; `code` is stable, the message names keys and paths, never values."""

    code = "protection_failed"

    def __init__(self, detail: str) -> None:
        super().__init__(f"{self.code}: {detail}")
        self.detail = detail


class KeyUnavailable(ProtectionError):
    """The key service cannot be reached, or the key does not exist or may not be used by this caller."""

    code = "key_unavailable"


class KeyRevoked(ProtectionError):
    """The key is disabled or scheduled for deletion (crypto-shredded): its data stays unreadable."""

    code = "key_revoked"


class WrongContext(ProtectionError):
    """The ciphertext belongs to another feed, record, field or purpose than the caller names."""

    code = "wrong_context"


class Tampered(ProtectionError):
    """The ciphertext is malformed or does not authenticate: changed, truncated or moved."""

    code = "tampered"


class UnknownKeyVersion(ProtectionError):
    """A token or ciphertext names a key version this keyring does not hold."""

    code = "unknown_key_version"


class PolicyGap(ProtectionError):
    """A record holds a field the PHI policy has no rule for; it is dead-lettered sealed, never passed."""

    code = "phi_policy_gap"
