"""OpenPGP-encrypted drops, opened with Sequoia-PGP (pysequoia): no gpg binary, no keyring on disk.

A feed that sends `.pgp`/`.gpg`/`.asc` files names a Secrets Manager secret holding
`{"private_key": <armored secret key>, "signer_cert": <armored public cert, optional>}`. With a signer
cert, a file must carry a valid signature by it; without one, decryption alone is required. Errors name
a PHI-free reason only (the library's messages are not passed on).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


class PgpRefused(ValueError):
    """The drop cannot be opened or is not signed as required; args[0] is the quarantine reason."""


@dataclass(frozen=True)
class PgpKeys:
    """The feed's decryption key and, optionally, the sender's certificate."""

    secret_key: Any
    signer: Any | None

    @classmethod
    def from_secret(cls, doc: dict[str, Any]) -> PgpKeys:
        """Parse the secret's armored keys; ValueError (PHI-free) when they are missing or not keys."""
        import pysequoia

        if not isinstance(doc.get("private_key"), str):
            raise ValueError("the PGP secret has no 'private_key'")
        try:
            secret_key = pysequoia.Tsk.from_bytes(doc["private_key"].encode())
            signer = pysequoia.Cert.from_bytes(doc["signer_cert"].encode()) if doc.get("signer_cert") else None
        except Exception:  # the library raises RuntimeError/ValueError with its own text
            raise ValueError("the PGP secret's keys cannot be read") from None
        return cls(secret_key, signer)


def decrypt(keys: PgpKeys, ciphertext: bytes) -> bytes:
    """The plaintext; PgpRefused("pgp_decrypt_failed" / "pgp_signature_missing") otherwise."""
    import pysequoia

    def certs(_key_ids: list[str]) -> list[Any]:
        return [keys.signer] if keys.signer is not None else []

    try:
        opened = pysequoia.decrypt(ciphertext, decryptor=keys.secret_key.decryptor(), store=certs)
    except Exception as err:  # wrong key, corrupt or truncated message, no valid signature
        unsigned = keys.signer is not None and str(err).startswith("Signature verification failed")
        raise PgpRefused("pgp_signature_missing" if unsigned else "pgp_decrypt_failed") from None
    if keys.signer is not None and not any(
            sig.certificate == keys.signer.fingerprint for sig in opened.valid_sigs):
        raise PgpRefused("pgp_signature_missing")
    if opened.bytes is None:
        raise PgpRefused("pgp_decrypt_failed")
    return bytes(opened.bytes)
