"""The puller's pure rules: which remote names are taken, when a file has settled, manifests, landed keys.

Remote file names are untrusted (a partner's server may list "../../x") and may carry PHI (a patient's
name in a file name), so they are never used in a landed key, a log line or an error: those carry the
name's digest (`name_digest`) and the content's SHA-256.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass

# A plain file name: letters, digits, dot, dash, underscore; no leading dot, no "..", no separators.
_SAFE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,199}")
# Uploads in progress by common SFTP clients' conventions (WinSCP .filepart, lftp/others .part/.tmp).
IN_PROGRESS_SUFFIXES = (".part", ".filepart", ".tmp", ".partial", ".uploading")
PGP_SUFFIXES = (".pgp", ".gpg", ".asc")
MANIFEST_SUFFIX = ".sha256"
# Extensions kept on landed keys (readers find files by them); anything else lands as .dat.
_KEPT_EXTENSIONS = frozenset({"csv", "txt", "json", "jsonl", "ndjson", "avro", "x12", "edi", "dat",
                              "834", "835", "837"})


def name_digest(name: str) -> str:
    """The name as logs, ledger keys and errors show it: 16 hex of its SHA-256."""
    return hashlib.sha256(name.encode("utf-8", "surrogateescape")).hexdigest()[:16]


def unsafe_name_reason(name: str) -> str | None:
    """Why a listed name is refused (`unsafe_file_name`), or None for a plain file name."""
    if not _SAFE_NAME.fullmatch(name) or ".." in name:
        return "unsafe_file_name"
    return None


def in_progress(name: str) -> bool:
    """An upload its client has not renamed to its final name yet."""
    return name.lower().endswith(IN_PROGRESS_SUFFIXES)


def is_manifest(name: str) -> bool:
    """A checksum sidecar (`<file>.sha256`), read with its file, never landed itself."""
    return name.lower().endswith(MANIFEST_SUFFIX)


def is_pgp(name: str) -> bool:
    """An OpenPGP-encrypted drop, by its extension."""
    return name.lower().endswith(PGP_SUFFIXES)


def plain_name(name: str) -> str:
    """The name without its PGP extension ("claims.csv.pgp" -> "claims.csv")."""
    return name[: name.rindex(".")] if is_pgp(name) else name


def landing_extension(name: str) -> str:
    """The extension a landed file keeps: the plain name's, when it is one readers know, else `dat`."""
    ext = plain_name(name).rsplit(".", 1)[-1].lower() if "." in plain_name(name) else ""
    return ext if ext in _KEPT_EXTENSIONS else "dat"


def landed_key(prefix: str, feed: str, sha256: str, ext: str) -> str:
    """`<prefix><feed>/sftp/<sha256>.<ext>`: content-addressed, so a re-land after a crash writes the same key
    (which the job's file source has already seen or reads once), and the remote name never reaches S3."""
    return f"{prefix}{feed}/sftp/{sha256}.{ext}"


def quarantine_key(prefix: str, feed: str, sha256: str) -> str:
    """Where a refused file waits for an operator: outside the prefix the job reads."""
    return f"{prefix}{feed}/{sha256}"


class ManifestError(ValueError):
    """A sidecar that is not `<64 hex>  <name>` for its file."""


def parse_sha256_manifest(text: str, name: str) -> str:
    """The expected SHA-256 from a `sha256sum` sidecar of `name` (one line; the name, if given, must match)."""
    lines = [line for line in text.splitlines() if line.strip()]
    if len(lines) != 1:
        raise ManifestError("manifest_not_one_line")
    digest, _, listed = lines[0].strip().partition(" ")
    listed = listed.strip().lstrip("*")
    if not re.fullmatch(r"[0-9a-fA-F]{64}", digest):
        raise ManifestError("manifest_not_sha256")
    if listed and listed != name:
        raise ManifestError("manifest_names_another_file")
    return digest.lower()


@dataclass(frozen=True)
class RemoteFile:
    """A listed regular file: name, size and modification time (seconds) as the server reports them."""

    name: str
    size: int
    mtime: int

    @property
    def version(self) -> tuple[int, int]:
        return self.size, self.mtime


class Settling:
    """A file is taken only once two listings at least `settle_s` apart saw the same size and mtime.

    Partners' clients write in place; a file still growing changes between listings and waits. The
    state is in memory: after a restart a file simply settles again.
    """

    def __init__(self, settle_s: float) -> None:
        self.settle_s = settle_s
        self._first_seen: dict[str, tuple[tuple[int, int], float]] = {}

    def settled(self, files: list[RemoteFile], now: float) -> list[RemoteFile]:
        """Files unchanged since first seen at least settle_s ago; forgets names no longer listed."""
        ready = []
        listed = {f.name for f in files}
        for gone in set(self._first_seen) - listed:
            del self._first_seen[gone]
        for f in files:
            seen = self._first_seen.get(f.name)
            if seen is None or seen[0] != f.version:
                self._first_seen[f.name] = (f.version, now)
            elif now - seen[1] >= self.settle_s:
                ready.append(f)
        return ready

    def forget(self, name: str) -> None:
        """Settle a file again (it changed while it was being read)."""
        self._first_seen.pop(name, None)
