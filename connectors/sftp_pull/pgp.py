"""OpenPGP-encrypted drops, opened with Sequoia-PGP (pysequoia): no gpg binary, no keyring on disk.

A feed that sends `.pgp`/`.gpg`/`.asc` files names a Secrets Manager secret holding
`{"private_key": <armored secret key>, "signer_cert": <armored public cert, optional>}`. With a signer
cert, a file must carry a valid signature by it; without one, decryption alone is required. Errors name
a PHI-free reason only (the library's messages are not passed on).

An OpenPGP message may be compressed, and pysequoia has no bound on the plaintext: a small drop could
expand to gigabytes in memory (a decompression bomb; anyone can encrypt to our public key). So each
message is opened in a child process (`python -m connectors.sftp_pull.pgp`) that caps its own address
space, and the puller reads at most `max_bytes` of its output: a plaintext above either bound is
`pgp_plaintext_too_large`, and the puller itself never holds more than the limit. Keys reach the child
on its standard input, never in argv or the environment.
"""

from __future__ import annotations

import contextlib
import json
import subprocess  # nosec B404 # -- argv lists only, never a shell
import sys
import threading
from dataclasses import dataclass, field
from typing import Any

# The child's address space: room for the interpreter and library, plus the plaintext a few times over.
CHILD_BASE_BYTES = 512 * 1024 * 1024
_EXIT_REASONS = {3: "pgp_decrypt_failed", 4: "pgp_signature_missing"}  # anything else: too large


class PgpRefused(ValueError):
    """The drop cannot be opened or is not signed as required; args[0] is the quarantine reason."""


@dataclass(frozen=True)
class PgpKeys:
    """The feed's decryption key and, optionally, the sender's certificate (parsed, and as armored text)."""

    secret_key: Any
    signer: Any | None
    armored: dict[str, str] = field(repr=False, default_factory=dict)

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
        armored = {"private_key": doc["private_key"]} | ({"signer_cert": doc["signer_cert"]} if signer else {})
        return cls(secret_key, signer, armored)


def open_message(keys: PgpKeys, ciphertext: bytes) -> bytes:
    """The plaintext, in this process (the child's work); PgpRefused otherwise."""
    import pysequoia

    def certs(_key_ids: list[str]) -> list[Any]:
        return [keys.signer]

    # With a store, Sequoia requires a valid signature; a feed without a signer cert passes none.
    store = certs if keys.signer is not None else None
    try:
        opened = pysequoia.decrypt(ciphertext, decryptor=keys.secret_key.decryptor(), store=store)
    except Exception as err:  # wrong key, corrupt or truncated message, no valid signature
        unsigned = keys.signer is not None and str(err).startswith("Signature verification failed")
        raise PgpRefused("pgp_signature_missing" if unsigned else "pgp_decrypt_failed") from None
    if keys.signer is not None and not any(
            sig.certificate == keys.signer.fingerprint for sig in opened.valid_sigs):
        raise PgpRefused("pgp_signature_missing")
    if opened.bytes is None:
        raise PgpRefused("pgp_decrypt_failed")
    return bytes(opened.bytes)


def decrypt(keys: PgpKeys, ciphertext: bytes, max_bytes: int, memory_bytes: int | None = None) -> bytes:
    """The plaintext, opened in a memory-capped child and read up to `max_bytes`; PgpRefused otherwise
    (`pgp_decrypt_failed`, `pgp_signature_missing`, `pgp_plaintext_too_large`)."""
    memory = memory_bytes or CHILD_BASE_BYTES + 4 * max_bytes
    # B603 - our own interpreter running our own module, fixed argv, no shell
    child = subprocess.Popen([sys.executable, "-m", "connectors.sftp_pull.pgp", str(memory)],  # noqa: S603
                             stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
    stdin, stdout = child.stdin, child.stdout
    if stdin is None or stdout is None:
        raise RuntimeError("the PGP child has no pipes")

    def feed() -> None:
        # A child that ended early (refused, out of memory) breaks the pipe: its exit code says why.
        with contextlib.suppress(BrokenPipeError):
            try:
                stdin.write(json.dumps(keys.armored).encode() + b"\n" + ciphertext)
            finally:
                stdin.close()

    writer = threading.Thread(target=feed, name="pgp-feed", daemon=True)
    writer.start()
    plain = stdout.read(max_bytes + 1)
    too_large = len(plain) > max_bytes
    if too_large:
        child.kill()
    code = child.wait()
    writer.join()
    stdout.close()
    if code == 0 and not too_large:
        return plain
    raise PgpRefused(_EXIT_REASONS.get(code, "pgp_plaintext_too_large"))


def _child(argv: list[str]) -> int:
    """Cap this process's address space, read keys and message from stdin, write the plaintext to stdout."""
    import resource

    limit = int(argv[0])
    resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
    header, _, ciphertext = sys.stdin.buffer.read().partition(b"\n")
    try:
        plain = open_message(PgpKeys.from_secret(json.loads(header)), ciphertext)
    except PgpRefused as refused:
        return 4 if refused.args[0] == "pgp_signature_missing" else 3
    except ValueError:  # keys that do not parse here parsed in the puller: treat as unopenable
        return 3
    except MemoryError:
        return 5
    sys.stdout.buffer.write(plain)
    sys.stdout.buffer.flush()
    return 0


if __name__ == "__main__":
    sys.exit(_child(sys.argv[1:]))
